// tunneld: OpenRequest -> ProxyConfig (daemon/session_request.h).
#include <doctest/doctest.h>

#include <string>

#include "session_request.h"

using tunneld::InvalidRequest;
using tunneld::proxy_config_from;
namespace control = tunneld::control;

namespace {

control::OpenRequest dest_request() {
  control::OpenRequest r;
  r.set_mode(control::MODE_DESTINATION);
  r.set_target("localhost:22");
  r.set_endpoint("wss://127.0.0.1:8443");
  r.set_access_token("AQGAAXh-secret-destination-token");
  return r;
}

std::string error_of(const control::OpenRequest& r) {
  try {
    proxy_config_from(r, tunnel::Settings{});
  } catch (const InvalidRequest& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_SUITE("session_request") {
  TEST_CASE("a destination request becomes a destination config") {
    const auto c = proxy_config_from(dest_request(), tunnel::Settings{});
    CHECK(c.mode == tunnel::Mode::destination);
    CHECK(c.local == tunnel::HostPort{"localhost", 22});
    CHECK(c.endpoint.host == "127.0.0.1");
    CHECK(c.endpoint.port == 8443);
    CHECK(c.verify_tls);
    CHECK(c.access_token == "AQGAAXh-secret-destination-token");
    CHECK(c.client_token.empty());
  }

  TEST_CASE("several services (V2/V3) and a forced protocol version") {
    control::OpenRequest r = dest_request();
    r.clear_target();
    auto* m = r.add_services();
    m->set_name("SSH1");
    m->set_address("22");
    m = r.add_services();
    m->set_name("HTTP1");
    m->set_address("127.0.0.1:80");
    r.set_protocol_version(3);
    const auto c = proxy_config_from(r, tunnel::Settings{});
    REQUIRE(c.services.size() == 2);
    CHECK(c.services[0] == tunnel::ServiceMapping{"SSH1", tunnel::HostPort{"localhost", 22}});
    CHECK(c.services[1].local == tunnel::HostPort{"127.0.0.1", 80});
    CHECK(c.protocol_version == 3);
    r.set_target("22");
    CHECK(error_of(r).find("either services or one target") != std::string::npos);
    r.clear_target();
    *r.add_services() = r.services(0);
    CHECK(error_of(r).find("given twice") != std::string::npos);
    r.mutable_services(2)->set_name("SSH\n2");
    CHECK(error_of(r) == "services: a service name must be " + std::string(tunnel::kServiceIdRule));
    r.mutable_services(2)->set_name("arn:aws:x_1-2.3");  // printable ASCII is enough
    CHECK(error_of(r) == "");
    r.set_protocol_version(4);
    CHECK_FALSE(error_of(r).empty());
  }

  TEST_CASE("a source listens on the bind address, default from settings") {
    control::OpenRequest r = dest_request();
    r.set_mode(control::MODE_SOURCE);
    r.clear_target();
    r.set_listen("0");
    tunnel::Settings s;
    s.default_bind_address = "127.0.0.1";
    auto c = proxy_config_from(r, s);
    CHECK(c.mode == tunnel::Mode::source);
    CHECK(c.local == tunnel::HostPort{"127.0.0.1", 0});
    r.set_bind_address("::1");
    c = proxy_config_from(r, s);
    CHECK(c.local.host == "::1");
  }

  TEST_CASE("settings JSON is overlaid on the daemon's defaults") {
    control::OpenRequest r = dest_request();
    r.set_settings_json(R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"750"}}}})");
    tunnel::Settings defaults;
    defaults.ws_retry_delay_ms = 111;
    defaults.ws_retry_max_delay_ms = 5000;
    const auto c = proxy_config_from(r, defaults);
    CHECK(c.settings.ws_ping_period_ms == 750);
    CHECK(c.settings.ws_retry_delay_ms == 111);
  }

  TEST_CASE("bad requests name the field and never echo a token") {
    const std::string token = "AQGAAXh-secret-destination-token";
    control::OpenRequest r = dest_request();
    r.set_mode(control::MODE_UNSPECIFIED);
    CHECK(error_of(r).find("mode") != std::string::npos);

    r = dest_request();
    r.set_region("us-east-1");
    CHECK(error_of(r).find("mutually exclusive") != std::string::npos);

    r = dest_request();
    r.clear_endpoint();
    CHECK(error_of(r).find("endpoint") != std::string::npos);

    r = dest_request();
    r.clear_access_token();
    CHECK(error_of(r).find("access token") != std::string::npos);

    r = dest_request();
    r.set_access_token("has space " + token);
    const std::string e = error_of(r);
    CHECK(e.find("access token") != std::string::npos);
    CHECK(e.find(token) == std::string::npos);

    r = dest_request();
    r.set_client_token("short");
    CHECK(error_of(r).find("client token") != std::string::npos);

    r = dest_request();
    r.set_target("localhost:0");
    CHECK(error_of(r).find("target") != std::string::npos);

    r = dest_request();
    r.set_listen("5000");
    CHECK(error_of(r).find("listen") != std::string::npos);

    r = dest_request();
    r.set_settings_json(R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"abc"}}}})");
    const std::string se = error_of(r);
    CHECK(se.find("settings") != std::string::npos);
    CHECK(se.find("ping_period_ms") != std::string::npos);

    // A number no double holds: INVALID_ARGUMENT for the client, not an
    // exception that ends tunneld (found by fuzz-settings).
    r = dest_request();
    r.set_settings_json(R"({"tunneling":{"proxy":{"tcp":{"read_buffer_size":1e999}}}})");
    CHECK(error_of(r).find("settings: invalid JSON") == 0);
  }

  TEST_CASE("-k and CA options pass through") {
    control::OpenRequest r = dest_request();
    r.set_no_ssl_host_verify(true);
    r.set_capath("/etc/tunneld/ca");
    r.set_cafile("/etc/tunneld/ca.pem");
    const auto c = proxy_config_from(r, tunnel::Settings{});
    CHECK_FALSE(c.verify_tls);
    CHECK(c.capath == "/etc/tunneld/ca");
    CHECK(c.cafile == "/etc/tunneld/ca.pem");
  }
}

TEST_SUITE("session_request https proxy") {
  TEST_CASE("https_proxy overrides the settings; bad ones are refused without echo") {
    control::OpenRequest r = dest_request();
    tunnel::Settings defaults;
    defaults.https_proxy = "http://from-daemon-settings:1";
    CHECK(proxy_config_from(r, defaults).settings.https_proxy == "http://from-daemon-settings:1");
    r.set_https_proxy("http://u:pw-s3cret-42@proxy:3128");
    const auto c = proxy_config_from(r, defaults);
    CHECK(c.settings.https_proxy == "http://u:pw-s3cret-42@proxy:3128");
    CHECK(!c.https_proxy);  // resolved when the session starts (Daemon::start_session)
    r.set_https_proxy("direct");
    CHECK(proxy_config_from(r, defaults).settings.https_proxy == "direct");
    r.set_https_proxy("socks5://u:pw-s3cret-42@proxy:1080");
    const std::string e = error_of(r);
    CHECK(e.find("https proxy: ") == 0);
    CHECK(e.find("s3cret") == std::string::npos);
  }
}
