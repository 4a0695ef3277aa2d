#include <doctest/doctest.h>

#include <string>

#include "endpoint.h"

using tunnel::endpoint_for_region;
using tunnel::handshake_path;
using tunnel::HostPort;
using tunnel::is_loopback_host;
using tunnel::parse_endpoint;
using tunnel::parse_host_port;
using tunnel::ServiceEndpoint;

namespace {

std::string endpoint_error(const std::string& text) {
  std::string error;
  const auto ep = parse_endpoint(text, error);
  CHECK_MESSAGE(!ep.has_value(), text);
  CHECK_MESSAGE(!error.empty(), text);
  return error;
}

std::string host_port_error(const std::string& text) {
  std::string error;
  const auto hp = parse_host_port(text, "localhost", error);
  CHECK_MESSAGE(!hp.has_value(), text);
  CHECK_MESSAGE(!error.empty(), text);
  return error;
}

ServiceEndpoint endpoint(const std::string& text) {
  std::string error;
  const auto ep = parse_endpoint(text, error);
  REQUIRE_MESSAGE(ep.has_value(), text << ": " << error);
  return *ep;
}

}  // namespace

TEST_SUITE("endpoint") {
  TEST_CASE("region names map to the service host") {
    std::string error;
    CHECK(endpoint_for_region("us-east-1", error) ==
          ServiceEndpoint{"data.tunneling.iot.us-east-1.amazonaws.com", 443, true});
    CHECK(endpoint_for_region("cn-north-1", error) ==
          ServiceEndpoint{"data.tunneling.iot.cn-north-1.amazonaws.com.cn", 443, true});
    CHECK(endpoint_for_region("cn-northwest-1", error)->host ==
          "data.tunneling.iot.cn-northwest-1.amazonaws.com.cn");
    CHECK(endpoint_for_region("us-gov-west-1", error)->host ==
          "data.tunneling.iot.us-gov-west-1.amazonaws.com");
  }

  TEST_CASE("malformed region names are refused") {
    for (const char* bad : {"", "US-EAST-1", "us east 1", "us-east-1.evil.com", "-us", "us-",
                            "us/east", "us_east_1"}) {
      std::string error;
      CHECK_MESSAGE(!endpoint_for_region(bad, error), bad);
      CHECK(error.find("region") != std::string::npos);
    }
  }

  TEST_CASE("endpoints: host, host:port, [v6]:port") {
    CHECK(endpoint("example.com") == ServiceEndpoint{"example.com", 443, true});
    CHECK(endpoint("example.com:8443") == ServiceEndpoint{"example.com", 8443, true});
    CHECK(endpoint("10.0.0.5:9000") == ServiceEndpoint{"10.0.0.5", 9000, true});
    CHECK(endpoint("[2001:db8::1]:8443") == ServiceEndpoint{"2001:db8::1", 8443, true});
    CHECK(endpoint("[::1]") == ServiceEndpoint{"::1", 443, true});
    CHECK(endpoint("example.com/") == ServiceEndpoint{"example.com", 443, true});
  }

  TEST_CASE("endpoints: wss:// and ws:// URLs") {
    CHECK(endpoint("wss://data.tunneling.iot.us-east-1.amazonaws.com") ==
          ServiceEndpoint{"data.tunneling.iot.us-east-1.amazonaws.com", 443, true});
    CHECK(endpoint("wss://example.com:444/") == ServiceEndpoint{"example.com", 444, true});
    CHECK(endpoint("WSS://example.com") == ServiceEndpoint{"example.com", 443, true});
    CHECK(endpoint("ws://127.0.0.1:8080") == ServiceEndpoint{"127.0.0.1", 8080, false});
    CHECK(endpoint("ws://localhost") == ServiceEndpoint{"localhost", 80, false});
    CHECK(endpoint("ws://[::1]:9/") == ServiceEndpoint{"::1", 9, false});
  }

  TEST_CASE("ws:// is only for loopback") {
    CHECK(endpoint_error("ws://example.com:8080").find("ws://") != std::string::npos);
    CHECK(endpoint_error("ws://10.0.0.1").find("wss://") != std::string::npos);
  }

  TEST_CASE("a path other than / is refused with a clear message") {
    const auto e = endpoint_error("wss://example.com/tunnel");
    CHECK(e.find("/tunnel") != std::string::npos);
    CHECK(e.find("host[:port]") != std::string::npos);
    endpoint_error("example.com/x/");
    endpoint_error("wss://example.com/?local-proxy-mode=source");
    endpoint_error("example.com?x=1");
    endpoint_error("wss://user@example.com");
  }

  TEST_CASE("bad endpoints") {
    CHECK(endpoint_error("example.com:0").find("port") != std::string::npos);
    CHECK(endpoint_error("example.com:65536").find("port") != std::string::npos);
    CHECK(endpoint_error("example.com:abc").find("port") != std::string::npos);
    endpoint_error("example.com:");
    endpoint_error("example.com:-1");
    CHECK(endpoint_error("::1").find("brackets") != std::string::npos);
    CHECK(endpoint_error("2001:db8::1:443").find("brackets") != std::string::npos);
    endpoint_error("[::1");
    endpoint_error("[nothost]:443");
    endpoint_error("[::1]x");
    CHECK(endpoint_error("https://example.com").find("scheme") != std::string::npos);
    endpoint_error("");
    endpoint_error("wss://");
    endpoint_error(":443");
    endpoint_error("exa mple.com");
  }

  TEST_CASE("host:port for local addresses") {
    std::string error;
    CHECK(parse_host_port("22", "localhost", error) == HostPort{"localhost", 22});
    CHECK(parse_host_port("5000", "0.0.0.0", error) == HostPort{"0.0.0.0", 5000});
    CHECK(parse_host_port("db.internal:5432", "localhost", error) == HostPort{"db.internal", 5432});
    CHECK(parse_host_port("127.0.0.1:22", "localhost", error) == HostPort{"127.0.0.1", 22});
    CHECK(parse_host_port("[::1]:22", "localhost", error) == HostPort{"::1", 22});
    CHECK(parse_host_port("65535", "h", error) == HostPort{"h", 65535});
    // Port 0 is syntactically fine (an ephemeral listen port); callers that
    // need a real port check it.
    CHECK(parse_host_port("0", "localhost", error) == HostPort{"localhost", 0});
  }

  TEST_CASE("bad host:port") {
    CHECK(host_port_error("70000").find("port") != std::string::npos);
    CHECK(host_port_error("host:65536").find("port") != std::string::npos);
    CHECK(host_port_error("host:x").find("port") != std::string::npos);
    CHECK(host_port_error(":22").find("host") != std::string::npos);
    CHECK(host_port_error("host").find("port") != std::string::npos);
    CHECK(host_port_error("host:").find("port") != std::string::npos);
    host_port_error("::1");
    host_port_error("[::1]");
    host_port_error("");
    host_port_error("-5");
    std::string error;
    CHECK_FALSE(parse_host_port("22", "", error));
  }

  TEST_CASE("loopback hosts") {
    for (const char* h : {"127.0.0.1", "127.1.2.3", "127.255.255.255", "::1", "[::1]",
                          "0:0:0:0:0:0:0:1", "localhost", "LocalHost", "::ffff:127.0.0.1"}) {
      CHECK_MESSAGE(is_loopback_host(h), h);
    }
    for (const char* h : {"", "128.0.0.1", "10.0.0.1", "0.0.0.0", "::", "::2", "example.com",
                          "127.0.0.1.example.com", "localhost.example.com", "::ffff:10.0.0.1"}) {
      CHECK_MESSAGE(!is_loopback_host(h), h);
    }
  }

  TEST_CASE("handshake path") {
    CHECK(handshake_path("source") == "/tunnel?local-proxy-mode=source");
    CHECK(handshake_path("destination") == "/tunnel?local-proxy-mode=destination");
  }
}
