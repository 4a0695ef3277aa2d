// Who may use tunnel-relay's admin API (relay/admin_api.h check_access), the
// request-head rules that keep a client's bytes out of the log, and the
// admin options (token file, --admin-host, non-loopback addresses).
#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "admin_api.h"
#include "relay_config.h"
#include "temp_dir.h"

using namespace std::string_literals;

namespace {

relay::HttpRequest parsed(const std::string& head) {
  relay::HttpRequest r;
  REQUIRE(relay::parse_request_head(head, r, 16384, 65536) == static_cast<long>(head.size()));
  return r;
}

int refusal(const relay::AdminAccess& a, const std::string& head) {
  const auto r = relay::check_access(a, parsed(head));
  return r ? r->status : 0;
}

relay::AdminAccess loopback() {
  relay::AdminAccess a;
  a.bound_host = "127.0.0.1";
  return a;
}

}  // namespace

TEST_CASE("admin API request head: a bare CR or LF, control characters, spaces are refused") {
  for (const std::string& head : {
           std::string("GET /tunnels\nFORGED HTTP/1.1\r\nHost: h\r\n\r\n"),
           std::string("GET /tunnels\rFORGED HTTP/1.1\r\nHost: h\r\n\r\n"),
           std::string("GET /t\x1b[31m HTTP/1.1\r\nHost: h\r\n\r\n"),
           "GET /t\0x HTTP/1.1\r\nHost: h\r\n\r\n"s,
           std::string("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"),
           std::string("G(T / HTTP/1.1\r\nHost: h\r\n\r\n"),
           std::string("GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\nFORGED: b\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost : h\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n"),
           std::string("GET / HTTP/1.1\x01\r\nHost: h\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: a\r\nOrigin: x\r\nOrigin: y\r\n\r\n"),
           std::string("GET / HTTP/1.1\r\nHost: a\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n"),
       }) {
    relay::HttpRequest r;
    INFO(head);
    CHECK(relay::parse_request_head(head, r, 16384, 65536) == -400);
  }
  // A tab and bytes over 0x7f are allowed in a header value (obs-text).
  const auto r = parsed("GET /tunnels?x=%0a HTTP/1.1\r\nHost: h\r\nX-Y: a\tb \xe9\r\n\r\n");
  CHECK(r.method == "GET");
  CHECK(r.target == "/tunnels?x=%0a");
  CHECK(r.host == "h");
}

TEST_CASE("admin API access: Host must name the bound address, localhost or an --admin-host") {
  const relay::AdminAccess a = loopback();
  CHECK(refusal(a, "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n") == 0);
  CHECK(refusal(a, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 0);
  CHECK(refusal(a, "GET / HTTP/1.1\r\nHost: localhost:9000\r\n\r\n") == 0);
  CHECK(refusal(a, "GET / HTTP/1.1\r\nHost: LocalHost\r\n\r\n") == 0);
  CHECK(refusal(a, "GET / HTTP/1.0\r\n\r\n") == 0);
  CHECK(refusal(a, "GET / HTTP/1.1\r\n\r\n") == 400);
  for (const char* host : {"evil.example", "evil.example:8080", "127.0.0.1.evil.example",
                           "127.0.0.2", "[::1]:8080", "localhost.evil.example", "", ":80",
                           "127.0.0.1:", "127.0.0.1:8o", "[::1", "relay.example"}) {
    INFO(host);
    CHECK(refusal(a, std::string("GET / HTTP/1.1\r\nHost: ") + host + "\r\n\r\n") == 403);
  }
  relay::AdminAccess named = a;
  named.names = {"relay.example"};
  CHECK(refusal(named, "GET / HTTP/1.1\r\nHost: RELAY.example:443\r\n\r\n") == 0);

  relay::AdminAccess v6;
  v6.bound_host = "::1";
  CHECK(refusal(v6, "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n") == 0);
  CHECK(refusal(v6, "GET / HTTP/1.1\r\nHost: [0:0:0:0:0:0:0:1]\r\n\r\n") == 0);
  CHECK(refusal(v6, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n") == 0);
  CHECK(refusal(v6, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n") == 403);

  // On every address: any IP literal (a rebinding page has a name), localhost,
  // and the names given; no other name.
  relay::AdminAccess any;
  any.bound_host = "0.0.0.0";
  any.names = {"relay.example"};
  CHECK(refusal(any, "GET / HTTP/1.1\r\nHost: 192.0.2.7:8443\r\n\r\n") == 0);
  CHECK(refusal(any, "GET / HTTP/1.1\r\nHost: relay.example\r\n\r\n") == 0);
  CHECK(refusal(any, "GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n") == 403);
  relay::AdminAccess public_address;
  public_address.bound_host = "192.0.2.7";
  CHECK(refusal(public_address, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n") == 403);
  CHECK(refusal(public_address, "GET / HTTP/1.1\r\nHost: 192.0.2.7\r\n\r\n") == 0);
}

TEST_CASE("admin API access: a foreign Origin or a cross-site fetch is refused") {
  relay::AdminAccess a = loopback();
  const std::string head = "POST /tunnels HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n";
  CHECK(refusal(a, head + "Origin: http://127.0.0.1:8080\r\n\r\n") == 0);
  CHECK(refusal(a, head + "Origin: HTTP://127.0.0.1:8080\r\n\r\n") == 0);
  CHECK(refusal(a, head + "Origin: http://evil.example\r\n\r\n") == 403);
  CHECK(refusal(a, head + "Origin: null\r\n\r\n") == 403);
  CHECK(refusal(a, head + "Origin: http://127.0.0.1:9090\r\n\r\n") == 403);
  CHECK(refusal(a, head + "Origin: https://127.0.0.1:8080\r\n\r\n") == 403);
  CHECK(refusal(a, "POST /tunnels HTTP/1.0\r\nOrigin: http://evil.example\r\n\r\n") == 403);
  CHECK(refusal(a, head + "Sec-Fetch-Site: same-origin\r\n\r\n") == 0);
  CHECK(refusal(a, head + "Sec-Fetch-Site: none\r\n\r\n") == 0);
  CHECK(refusal(a, head + "Sec-Fetch-Site: cross-site\r\n\r\n") == 403);
  CHECK(refusal(a, head + "Sec-Fetch-Site: same-site\r\n\r\n") == 403);
  a.tls = true;
  CHECK(refusal(a, head + "Origin: https://127.0.0.1:8080\r\n\r\n") == 0);
  CHECK(refusal(a, head + "Origin: http://127.0.0.1:8080\r\n\r\n") == 403);
}

TEST_CASE("admin API access: a body must be JSON") {
  const relay::AdminAccess a = loopback();
  const std::string head = "POST /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  CHECK(refusal(a, head + "Content-Length: 2\r\nContent-Type: application/json\r\n\r\n") == 0);
  CHECK(refusal(a, head + "Content-Length: 2\r\nContent-Type: Application/JSON ; charset=utf-8\r\n"
                          "\r\n") == 0);
  CHECK(refusal(a, head + "Content-Length: 2\r\n\r\n") == 415);
  CHECK(refusal(a, head + "Content-Length: 2\r\nContent-Type: text/plain\r\n\r\n") == 415);
  CHECK(refusal(a, head + "Content-Length: 2\r\nContent-Type: application/jsonx\r\n\r\n") == 415);
  CHECK(refusal(a, head + "Content-Length: 2\r\nContent-Type: multipart/form-data\r\n\r\n") == 415);
  CHECK(refusal(a, head + "Content-Length: 0\r\n\r\n") == 0);
}

TEST_CASE("admin API access: the bearer token, and a 401 that asks for it") {
  relay::AdminAccess a = loopback();
  a.token = "0123456789abcdef0123456789abcdef";
  const std::string head = "GET /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  CHECK(refusal(a, head + "Authorization: Bearer " + a.token + "\r\n\r\n") == 0);
  CHECK(refusal(a, head + "Authorization: bearer   " + a.token + "\r\n\r\n") == 0);
  for (const std::string& bad :
       {std::string(""), std::string("Authorization: Bearer\r\n"),
        "Authorization: Bearer " + a.token + "0\r\n",
        "Authorization: Bearer " + a.token.substr(1) + "\r\n", "Authorization: " + a.token + "\r\n",
        "Authorization: Basic " + a.token + "\r\n"}) {
    INFO(bad);
    const auto r = relay::check_access(a, parsed(head + bad + "\r\n"));
    REQUIRE(r);
    CHECK(r->status == 401);
    CHECK(r->ask_for_token);
    CHECK(r->body.find(a.token) == std::string::npos);
    CHECK(relay::format_response(*r).find("\r\nWWW-Authenticate: Bearer\r\n") != std::string::npos);
  }
}

TEST_CASE("--admin-token-file: only a private regular file of the relay's user") {
  test_support::TempDir dir;
  const std::string good = "s3cr3t-t0ken-0123456789abcdef";
  std::string error;
  const auto token = relay::load_admin_token(dir.write("ok", good + "\n", 0600), error);
  REQUIRE(token);
  CHECK(*token == good);
  CHECK(relay::load_admin_token(dir.write("crlf", good + "\r\n", 0400), error) == good);

  const auto refused = [&](const std::string& path, const char* why) {
    error.clear();
    INFO(path);
    CHECK_FALSE(relay::load_admin_token(path, error));
    CHECK(error.find(why) != std::string::npos);
    CHECK(error.find(good) == std::string::npos);
  };
  refused(dir.write("group", good, 0640), "mode 0640 lets other users read it; chmod 600");
  refused(dir.write("world", good, 0604), "mode 0604");
  refused(dir.write("short", "abc", 0600), "16 to 4096");
  refused(dir.write("empty", "", 0600), "16 to 4096");
  refused(dir.write("space", "a token with spaces in it", 0600), "without spaces");
  refused(dir.write("ctl", good + "\x01", 0600), "printable");
  refused(dir.write("big", std::string(5000, 'a'), 0600), "too large");
  refused(dir / "missing", "cannot open");
  refused(dir.path(), "not a regular file");
  REQUIRE(::symlink((dir / "ok").c_str(), (dir / "link").c_str()) == 0);
  refused(dir / "link", "cannot open");
  if (::geteuid() == 0) {
    const std::string other = dir.write("other", good, 0600);
    REQUIRE(::chown(other.c_str(), 65534, 65534) == 0);
    refused(other, "owned by uid 65534");
  }
}

TEST_CASE("relay config: an admin API off loopback needs the token and TLS") {
  relay::RelayConfig c;
  std::string error;
  c.listen = {"127.0.0.1", 0};
  c.admin = relay::HostPort{"0.0.0.0", 8443};
  CHECK_FALSE(c.validate(error));
  CHECK(error.find("--admin-token-file and --admin-tls") != std::string::npos);
  c.admin_token = "0123456789abcdef";
  CHECK_FALSE(c.validate(error));
  c.admin_tls = true;
  CHECK_FALSE(c.validate(error));  // --admin-tls needs the certificate
  CHECK(error.find("--tls-cert and --tls-key") != std::string::npos);
  c.tls_cert = "cert.pem";
  c.tls_key = "key.pem";
  error.clear();
  CHECK(c.validate(error));
  c.admin_hosts = {"relay.example", "bad_name"};
  CHECK_FALSE(c.validate(error));
  CHECK(relay::valid_admin_host_name("relay-1.example.net"));
  CHECK_FALSE(relay::valid_admin_host_name("-x"));
  CHECK_FALSE(relay::valid_admin_host_name("a b"));

  relay::RelayConfig local;
  local.listen = {"127.0.0.1", 0};
  local.admin = relay::HostPort{"127.0.0.1", 0};
  CHECK(local.validate(error));  // loopback: no token needed
  local.admin.reset();
  local.admin_token = "0123456789abcdef";
  CHECK_FALSE(local.validate(error));
}
