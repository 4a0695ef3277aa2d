#include <doctest/doctest.h>

#include <map>
#include <string>

#include "http_proxy.h"

using tunnel::connect_request;
using tunnel::ConnectReplyParser;
using tunnel::HttpProxy;
using tunnel::no_proxy_matches;
using tunnel::parse_proxy_url;
using tunnel::proxy_url_without_credentials;
using tunnel::ProxyResolution;
using tunnel::resolve_https_proxy;

namespace {

HttpProxy parsed(const std::string& url) {
  std::string error;
  const auto p = parse_proxy_url(url, error);
  REQUIRE_MESSAGE(p.has_value(), url << ": " << error);
  CHECK(error.empty());
  return *p;
}

// The error for `url`, checked to repeat none of `secrets`.
std::string url_error(const std::string& url, std::initializer_list<std::string> secrets = {}) {
  std::string error;
  const auto p = parse_proxy_url(url, error);
  CHECK_MESSAGE(!p.has_value(), url);
  CHECK_MESSAGE(!error.empty(), url);
  for (const auto& s : secrets) CHECK_MESSAGE(error.find(s) == std::string::npos, error);
  return error;
}

using Result = ConnectReplyParser::Result;

tunnel::EnvLookup env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    const auto it = vars.find(std::string(name));
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
}

}  // namespace

TEST_SUITE("http_proxy") {
  TEST_CASE("proxy URLs: host, port, default port 80, IPv6") {
    auto p = parsed("http://proxy.example.com:3128");
    CHECK(p.host == "proxy.example.com");
    CHECK(p.port == 3128);
    CHECK(!p.has_credentials());
    CHECK(p.display() == "proxy.example.com:3128");

    p = parsed("http://proxy.example.com");
    CHECK(p.port == 80);
    p = parsed("http://proxy.example.com/");
    CHECK(p.port == 80);
    p = parsed("HTTP://127.0.0.1:8080/");
    CHECK(p.host == "127.0.0.1");
    CHECK(p.port == 8080);
    p = parsed("proxy:3128");  // no scheme: http
    CHECK(p.host == "proxy");
    CHECK(p.port == 3128);
    p = parsed("http://[::1]:3128");
    CHECK(p.host == "::1");
    CHECK(p.display() == "[::1]:3128");
    p = parsed("http://[fd00::2]");
    CHECK(p.port == 80);
    p = parsed("  http://proxy:1\n");  // from a file or env var with a newline
    CHECK(p.port == 1);
  }

  TEST_CASE("proxy URLs: credentials are percent-decoded and never displayed") {
    auto p = parsed("http://alice:s3cret@proxy:3128");
    CHECK(p.user == "alice");
    CHECK(p.password == "s3cret");
    CHECK(p.has_credentials());
    CHECK(p.display() == "proxy:3128");

    p = parsed("http://al%69ce:p%40ss%3Aw%2Fd%25@proxy:3128");
    CHECK(p.user == "alice");
    CHECK(p.password == "p@ss:w/d%");

    p = parsed("http://bob:p@ss/w#rd?@[::1]:8080/");  // unencoded, last '@' wins
    CHECK(p.user == "bob");
    CHECK(p.password == "p@ss/w#rd?");
    CHECK(p.host == "::1");
    CHECK(p.port == 8080);

    p = parsed("http://onlyuser@proxy:3128");
    CHECK(p.user == "onlyuser");
    CHECK(p.password.empty());
    CHECK(p.has_credentials());

    p = parsed("http://:pw@proxy:3128");
    CHECK(p.user.empty());
    CHECK(p.password == "pw");

    CHECK(proxy_url_without_credentials("http://alice:s3cret@proxy:3128/") == "http://proxy:3128");
    CHECK(proxy_url_without_credentials("http://alice:s3cret@[::1]") == "http://[::1]:80");
    CHECK(proxy_url_without_credentials("not a url").empty());
    CHECK(proxy_url_without_credentials("").empty());
  }

  TEST_CASE("proxy URLs: errors say what is wrong and never repeat credentials") {
    CHECK(url_error("").find("empty") != std::string::npos);
    CHECK(url_error("https://alice:s3cret@proxy:443", {"alice", "s3cret"}).find("https://") !=
          std::string::npos);
    CHECK(url_error("socks5://alice:s3cret@proxy:1080", {"alice", "s3cret"}).find("'socks5'") !=
          std::string::npos);
    url_error("alice:pa55w://0rd9@proxy:1",
              {"alice", "pa55w", "0rd9"});  // no scheme, "://" in the password
    url_error("http://alice:s3cret@proxy:3128/path", {"alice", "s3cret"});
    url_error("http://alice:s3cret@proxy:3128?q=1", {"alice", "s3cret"});
    url_error("http://alice:s3%2cret@proxy:3128#f", {"alice", "s3%2cret"});
    CHECK(url_error("http://alice:s3cret%zz@proxy:3128", {"alice", "s3cret"}).find("%25") !=
          std::string::npos);
    url_error("http://alice:s3cret%4@proxy:3128", {"alice", "s3cret"});
    url_error("http://alice:s3cret%@proxy:3128", {"alice", "s3cret"});
    url_error("http://al%3Aice:s3cret@proxy:3128", {"al%3Aice", "s3cret"});
    url_error("http://alice:s3 cret@proxy:3128", {"alice", "s3 cret"});
    url_error("http://alice:s3cret\r\nX: y@proxy:3128", {"alice", "s3cret"});
    CHECK(url_error("http://alice:s3cret@proxy:0", {"alice", "s3cret"}).find("1..65535") !=
          std::string::npos);
    url_error("http://alice:s3cret@proxy:65536", {"alice", "s3cret"});
    url_error("http://alice:s3cret@proxy:", {"alice", "s3cret"});
    url_error("http://alice:s3cret@proxy:80x", {"alice", "s3cret"});
    url_error("http://alice:s3cret@:3128", {"alice", "s3cret"});
    url_error("http://alice:s3cret@", {"alice", "s3cret"});
    url_error("http://alice:s3cret@[::1", {"alice", "s3cret"});
    url_error("http://alice:s3cret@[nothex]:1", {"alice", "s3cret"});
    url_error("http://alice:s3cret@[::1]x", {"alice", "s3cret"});
    url_error("http://alice:s3cret@::1:3128", {"alice", "s3cret"});
    url_error("http://alice:s3cret@pro*xy:3128", {"alice", "s3cret"});
    url_error("http://", {});
  }

  TEST_CASE("NO_PROXY: suffixes, star, addresses, ports, case") {
    CHECK(no_proxy_matches("example.com", "example.com"));
    CHECK(no_proxy_matches("example.com", "sub.example.com"));
    CHECK(no_proxy_matches(".example.com", "sub.example.com"));
    CHECK(no_proxy_matches(".example.com", "example.com"));
    CHECK(no_proxy_matches("*.example.com", "a.b.example.com"));
    CHECK_FALSE(no_proxy_matches("example.com", "badexample.com"));
    CHECK_FALSE(no_proxy_matches("example.com", "example.com.evil.net"));
    CHECK(no_proxy_matches("EXAMPLE.com", "Sub.Example.COM."));
    CHECK(no_proxy_matches("example.com.", "example.com"));
    CHECK(no_proxy_matches("*", "anything.at.all"));
    CHECK(no_proxy_matches("foo, *", "127.0.0.1"));
    CHECK(no_proxy_matches("foo.org,example.com:443", "api.example.com"));
    CHECK(no_proxy_matches("foo.org  example.com", "example.com"));
    CHECK(no_proxy_matches("foo.org,\texample.com ,", "example.com"));
    CHECK_FALSE(no_proxy_matches("", "example.com"));
    CHECK_FALSE(no_proxy_matches(" , ,", "example.com"));
    CHECK_FALSE(no_proxy_matches("example.com", ""));

    CHECK(no_proxy_matches("127.0.0.1", "127.0.0.1"));
    CHECK(no_proxy_matches("127.0.0.1:8443", "127.0.0.1"));
    CHECK_FALSE(no_proxy_matches("127.0.0.1", "127.0.0.2"));
    CHECK_FALSE(no_proxy_matches("0.0.1", "127.0.0.1"));  // no suffix matching of addresses
    CHECK_FALSE(no_proxy_matches("1", "127.0.0.1"));
    CHECK(no_proxy_matches("::1", "::1"));
    CHECK(no_proxy_matches("[::1]", "::1"));
    CHECK(no_proxy_matches("[::1]:443", "::1"));
    CHECK(no_proxy_matches("0:0::1", "[::1]"));
    CHECK_FALSE(no_proxy_matches("::2", "::1"));
    CHECK_FALSE(no_proxy_matches("localhost", "127.0.0.1"));  // names are not resolved

    CHECK(no_proxy_matches("10.0.0.0/8", "10.20.30.40"));
    CHECK_FALSE(no_proxy_matches("10.0.0.0/8", "11.0.0.1"));
    CHECK(no_proxy_matches("127.0.0.0/8", "127.0.0.1"));
    CHECK(no_proxy_matches("192.168.1.128/25", "192.168.1.200"));
    CHECK_FALSE(no_proxy_matches("192.168.1.128/25", "192.168.1.100"));
    CHECK(no_proxy_matches("fd00::/8", "fd12::1"));
    CHECK(no_proxy_matches("[fd00::]/8", "fd12::1"));
    CHECK_FALSE(no_proxy_matches("fd00::/8", "fe80::1"));
    CHECK_FALSE(no_proxy_matches("10.0.0.0/33", "10.0.0.1"));
    CHECK_FALSE(no_proxy_matches("10.0.0.0/x", "10.0.0.1"));
    CHECK_FALSE(no_proxy_matches("10.0.0.0/8", "example.com"));
  }

  TEST_CASE("CONNECT request: target, Host, Basic credentials") {
    HttpProxy p{"proxy", 3128, "", ""};
    CHECK(connect_request(p, "data.example.com", 443) ==
          "CONNECT data.example.com:443 HTTP/1.1\r\nHost: data.example.com:443\r\n\r\n");
    CHECK(connect_request(p, "::1", 8443) ==
          "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n");
    p.user = "Aladdin";
    p.password = "open sesame";  // RFC 7617's example
    CHECK(connect_request(p, "h", 1) ==
          "CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\n"
          "Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n\r\n");
    p.user = "u";
    p.password = "";
    CHECK(connect_request(p, "h", 1).find("Basic dTo=\r\n") != std::string::npos);
  }

  TEST_CASE("CONNECT reply: whole, with leftover bytes kept") {
    ConnectReplyParser parser;
    const std::string reply = "HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n";
    const std::string tls = "\x16\x03\x03 rest of the stream";
    std::size_t consumed = 99;
    CHECK(parser.feed(reply + tls, consumed) == Result::done);
    CHECK(consumed == reply.size());
    CHECK(parser.status() == 200);
    CHECK(parser.reason() == "Connection established");
    CHECK(parser.success());
    CHECK(parser.feed("more", consumed) == Result::done);
    CHECK(consumed == 0);
  }

  TEST_CASE("CONNECT reply: every split point, CRLF and LF") {
    for (const std::string& reply :
         {std::string("HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\n\r\n"),
          std::string("HTTP/1.0 200 Connection established\n\n"),
          std::string("HTTP/1.1 407 Proxy Authentication Required\r\n"
                      "Proxy-Authenticate: Basic realm=\"corp\"\r\nContent-Length: 0\r\n\r\n")}) {
      const std::string stream = reply + "TAIL";
      for (std::size_t split = 0; split <= stream.size(); ++split) {
        ConnectReplyParser parser;
        std::size_t c1 = 0, c2 = 0;
        const auto r1 = parser.feed(std::string_view(stream).substr(0, split), c1);
        Result r2 = r1;
        if (r1 == Result::need_more) {
          CHECK(c1 == split);
          r2 = parser.feed(std::string_view(stream).substr(split), c2);
        }
        REQUIRE(r2 == Result::done);
        CHECK(c1 + c2 == reply.size());
        CHECK((parser.status() == 200 || parser.status() == 407));
      }
      // One byte at a time.
      ConnectReplyParser parser;
      std::size_t total = 0;
      Result r = Result::need_more;
      for (std::size_t i = 0; i < stream.size() && r == Result::need_more; ++i) {
        std::size_t c = 0;
        r = parser.feed(std::string_view(stream).substr(i, 1), c);
        total += c;
      }
      CHECK(r == Result::done);
      CHECK(total == reply.size());
    }
    ConnectReplyParser p407;
    std::size_t c = 0;
    CHECK(p407.feed("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", c) == Result::done);
    CHECK(p407.status() == 407);
    CHECK(p407.reason() == "Proxy Authentication Required");
    CHECK_FALSE(p407.success());
    ConnectReplyParser no_reason;
    CHECK(no_reason.feed("HTTP/1.1 503\r\n\r\n", c) == Result::done);
    CHECK(no_reason.status() == 503);
    CHECK(no_reason.reason().empty());
  }

  TEST_CASE("CONNECT reply: garbage is malformed early, with a reason") {
    std::size_t c = 0;
    {
      ConnectReplyParser p;  // a TLS server where a proxy was expected
      CHECK(p.feed("\x16\x03\x01\x02", c) == Result::malformed);
      CHECK(c == 1);
      CHECK(p.error().find("not HTTP") != std::string::npos);
      CHECK(p.feed("HTTP/1.1 200 OK\r\n\r\n", c) == Result::malformed);
      CHECK(c == 0);
    }
    for (const std::string& bad :
         {std::string("SSH-2.0-OpenSSH\r\n\r\n"), std::string("HTTP/2 200\r\n\r\n"),
          std::string("HTTP/1.1 20 OK\r\n\r\n"), std::string("HTTP/1.1 2000 OK\r\n\r\n"),
          std::string("HTTP/1.1 abc OK\r\n\r\n"), std::string("HTTP/1.1 099 x\r\n\r\n"),
          std::string("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"),
          std::string("HTTP/1.1 200 OK\r\n: empty name\r\n\r\n"),
          std::string("HTTP/1.1 200 OK\r\nA: \0b\r\n\r\n", 26), std::string("\r\n\r\n")}) {
      ConnectReplyParser p;
      CHECK_MESSAGE(p.feed(bad, c) == Result::malformed, bad);
      CHECK(!p.error().empty());
    }
    ConnectReplyParser ctl;  // control characters in the reason are neutralised
    CHECK(ctl.feed("HTTP/1.1 502 Bad\x1b[31m gate\r\n\r\n", c) == Result::done);
    CHECK(ctl.reason() == "Bad?[31m gate");
    ConnectReplyParser longer;
    CHECK(longer.feed("HTTP/1.1 502 " + std::string(500, 'r') + "\r\n\r\n", c) == Result::done);
    CHECK(longer.reason().size() == 100);
  }

  TEST_CASE("CONNECT reply: an endless header block stops at 8 KiB") {
    ConnectReplyParser p;
    std::size_t c = 0;
    CHECK(p.feed("HTTP/1.1 200 OK\r\n", c) == Result::need_more);
    const std::string header = "X-Filler: " + std::string(100, 'x') + "\r\n";
    Result r = Result::need_more;
    std::size_t total = 17;
    for (int i = 0; i < 1000 && r == Result::need_more; ++i) {
      r = p.feed(header, c);
      total += c;
    }
    CHECK(r == Result::malformed);
    CHECK(total == ConnectReplyParser::kMaxReplySize + 1);
    CHECK(p.error().find("8192") != std::string::npos);
    ConnectReplyParser exact;  // a block of exactly 8192 bytes is fine
    const std::string head = "HTTP/1.1 200 OK\r\nX: ";
    const std::string block = head + std::string(8192 - head.size() - 4, 'y') + "\r\n\r\n";
    REQUIRE(block.size() == 8192);
    CHECK(exact.feed(block, c) == Result::done);
  }

  TEST_CASE("resolution: explicit value, then HTTPS_PROXY, https_proxy; NO_PROXY") {
    ProxyResolution r;
    std::string error;
    const auto none = env_of({});
    CHECK(resolve_https_proxy("", "--https-proxy", none, "svc.example.com", r, error));
    CHECK(!r.proxy);
    CHECK(r.origin.empty());

    const auto env = env_of({{"HTTPS_PROXY", "http://u:pw@upper:1"},
                             {"https_proxy", "http://lower:2"},
                             {"NO_PROXY", ".internal, 10.0.0.0/8"},
                             {"no_proxy", "*"}});
    CHECK(resolve_https_proxy("", "--https-proxy", env, "svc.example.com", r, error));
    REQUIRE(r.proxy);
    CHECK(r.proxy->display() == "upper:1");
    CHECK(r.proxy->password == "pw");
    CHECK(r.origin == "HTTPS_PROXY");
    // NO_PROXY hides no_proxy ("*" there would bypass everything).
    CHECK(resolve_https_proxy("", "--https-proxy", env, "relay.internal", r, error));
    CHECK(!r.proxy);
    CHECK(r.origin == "NO_PROXY");
    CHECK(resolve_https_proxy("", "--https-proxy", env, "10.1.2.3", r, error));
    CHECK(!r.proxy);

    const auto lower_only = env_of({{"https_proxy", "lower:2"}, {"no_proxy", "other"}});
    CHECK(resolve_https_proxy("", "x", lower_only, "svc", r, error));
    REQUIRE(r.proxy);
    CHECK(r.proxy->display() == "lower:2");
    CHECK(r.origin == "https_proxy");
    const auto lower_no = env_of({{"https_proxy", "lower:2"}, {"no_proxy", "svc"}});
    CHECK(resolve_https_proxy("", "x", lower_no, "svc", r, error));
    CHECK(!r.proxy);

    // An explicit value wins over the environment and over NO_PROXY.
    CHECK(
        resolve_https_proxy("http://explicit:3", "--https-proxy", env, "relay.internal", r, error));
    REQUIRE(r.proxy);
    CHECK(r.proxy->display() == "explicit:3");
    CHECK(r.origin == "--https-proxy");
    CHECK(resolve_https_proxy("direct", "--https-proxy", env, "svc.example.com", r, error));
    CHECK(!r.proxy);
    CHECK(r.origin == "--https-proxy");
    CHECK(resolve_https_proxy("DIRECT", "--https-proxy", env, "svc.example.com", r, error));
    CHECK(!r.proxy);
  }

  TEST_CASE("resolution: malformed values name their origin, never the URL") {
    ProxyResolution r;
    std::string error;
    CHECK_FALSE(resolve_https_proxy("http://u:hunter22@proxy:99999", "--https-proxy", env_of({}),
                                    "svc", r, error));
    CHECK(error.starts_with("--https-proxy: "));
    CHECK(error.find("hunter22") == std::string::npos);
    error.clear();
    CHECK_FALSE(resolve_https_proxy("", "x", env_of({{"HTTPS_PROXY", "ftp://u:hunter22@p"}}), "svc",
                                    r, error));
    CHECK(error.starts_with("HTTPS_PROXY: "));
    CHECK(error.find("hunter22") == std::string::npos);
    // A malformed proxy that NO_PROXY bypasses anyway does not matter.
    error.clear();
    CHECK(resolve_https_proxy("", "x", env_of({{"HTTPS_PROXY", "ftp://p"}, {"NO_PROXY", "svc"}}),
                              "svc", r, error));
    CHECK(!r.proxy);
  }
}

TEST_CASE("proxy refusals that are final: 401, 403 and 407; the rest are retried") {
  using tunnel::proxy_refusal_is_final;
  // 401: what tinyproxy answers to wrong Basic credentials instead of 407.
  CHECK(proxy_refusal_is_final(401));
  CHECK(proxy_refusal_is_final(403));
  CHECK(proxy_refusal_is_final(407));
  for (const int retried : {400, 404, 405, 429, 500, 502, 503, 504}) {
    CAPTURE(retried);
    CHECK_FALSE(proxy_refusal_is_final(retried));
  }
}
