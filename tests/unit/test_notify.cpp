// The notify feature's pure parts: notification parsing, the gate (cap,
// rate limit), the memory of seen tokens and the [notify] table of
// tunneld.toml.
#include <doctest/doctest.h>

#include <string>

#include "config.h"
#include "notify/notify_gate.h"
#include "notify/notify_message.h"
#include "notify/seen_tokens.h"
#include "temp_dir.h"

using namespace tunneld::notify;
using test_support::TempDir;

namespace {

const std::string kToken = "AQGAAXiZ-notify-access-token-0123456789abcdef";

std::string good(const std::string& services = R"(["SSH"])") {
  return R"({"clientAccessToken":")" + kToken +
         R"(","clientMode":"destination","region":"us-east-1","services":)" + services + "}";
}

std::string refusal(const std::string& payload, const ServiceMap& map = default_service_map()) {
  const ParseResult r = parse_notification(payload, map);
  REQUIRE_FALSE(r.notification);
  CHECK(r.refusal.find(kToken) == std::string::npos);
  CHECK(r.refusal.find(kToken.substr(0, 16)) == std::string::npos);
  return r.refusal;
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("notify message") {
  TEST_CASE("a good notification maps its service") {
    const ParseResult r = parse_notification(good(), default_service_map());
    REQUIRE(r.notification);
    CHECK(r.notification->access_token == kToken);
    CHECK(r.notification->region == "us-east-1");
    REQUIRE(r.notification->targets.size() == 1);
    CHECK(r.notification->targets[0].service == "SSH");
    CHECK(r.notification->targets[0].target == "localhost:22");
  }

  TEST_CASE("unknown keys are ignored, as the service may add some") {
    const std::string p = R"({"extra":1,)" + good().substr(1);
    CHECK(parse_notification(p, default_service_map()).notification);
  }

  TEST_CASE("every bad payload is refused with a reason that quotes nothing secret") {
    CHECK(has(refusal(""), "empty"));
    CHECK(has(refusal("not json {" + kToken), "not JSON"));
    CHECK(has(refusal("[1,2]"), "not a JSON object"));
    CHECK(has(refusal(std::string(std::size_t{10} * 1024, 'x')), "limit"));
    CHECK(has(refusal(R"({"clientAccessToken":")" + kToken +
                      R"(","region":"us-east-1","services":["SSH"]})"),
              "clientMode is missing"));
    CHECK(has(refusal(R"({"clientAccessToken":")" + kToken +
                      R"(","clientMode":"source","region":"us-east-1","services":["SSH"]})"),
              "destination"));
    CHECK(has(refusal(R"({"clientMode":"destination","region":"us-east-1","services":["SSH"]})"),
              "clientAccessToken is missing"));
    CHECK(has(
        refusal(
            R"({"clientAccessToken":42,"clientMode":"destination","region":"r","services":["SSH"]})"),
        "not a string"));
    CHECK(has(
        refusal(
            R"({"clientAccessToken":"short","clientMode":"destination","region":"us-east-1","services":["SSH"]})"),
        "characters"));
    CHECK(has(refusal(R"({"clientAccessToken":")" + kToken +
                      R"( x","clientMode":"destination","region":"us-east-1","services":["SSH"]})"),
              "spaces"));
    CHECK(has(refusal(R"({"clientAccessToken":")" + kToken +
                      R"(","clientMode":"destination","services":["SSH"]})"),
              "region is missing"));
    CHECK(has(refusal(R"({"clientAccessToken":")" + kToken +
                      R"(","clientMode":"destination","region":"US EAST","services":["SSH"]})"),
              "region"));
    CHECK(has(refusal(good("[]")), "empty"));
    CHECK(has(refusal(good(R"("SSH")")), "not an array"));
    CHECK(has(refusal(good(R"(["A","B","C","D"])")), "at most 3"));
    CHECK(has(refusal(good(R"(["FTP"])")), "FTP is not in [notify.services]"));
    CHECK(has(refusal(good(R"(["SSH","SSH"])")), "twice"));
    CHECK(has(refusal(good(R"(["bad id!"])")), "not a service id"));
    // One unmapped service refuses the whole notification, naming it.
    CHECK(refusal(good(R"(["SSH","FTP","VNC"])")) == "service FTP is not in [notify.services]");
  }

  TEST_CASE("two and three services become one session's targets, in order") {
    const ServiceMap map = {{"SSH", "22"}, {"HTTP", "127.0.0.1:8080"}, {"VNC", "5900"}};
    const ParseResult two = parse_notification(good(R"(["HTTP","SSH"])"), map);
    REQUIRE(two.notification);
    REQUIRE(two.notification->targets.size() == 2);
    CHECK(two.notification->targets[0].service == "HTTP");
    CHECK(two.notification->targets[0].target == "127.0.0.1:8080");
    CHECK(two.notification->targets[1].service == "SSH");
    const ParseResult three = parse_notification(good(R"(["VNC","SSH","HTTP"])"), map);
    REQUIRE(three.notification);
    REQUIRE(three.notification->targets.size() == 3);
    CHECK(three.notification->targets[0].target == "5900");
  }

  TEST_CASE("names and topics") {
    CHECK(is_valid_thing_name("my-thing_1:a"));
    CHECK_FALSE(is_valid_thing_name(""));
    CHECK_FALSE(is_valid_thing_name("a/b"));
    CHECK_FALSE(is_valid_thing_name("#"));
    CHECK_FALSE(is_valid_thing_name(std::string(129, 'a')));
    CHECK(notify_topic("t1") == "$aws/things/t1/tunnels/notify");
  }
}

TEST_SUITE("notify gate") {
  using Clock = NotifyGate::Clock;
  const Clock::time_point t0{};

  TEST_CASE("sessions below the cap are accepted side by side") {
    NotifyGate g({4, 5, 30});
    for (std::size_t n = 0; n < 4; ++n) CHECK(g.admit(t0, n).accept);
  }

  TEST_CASE("rate limit: a burst, then refills over time") {
    NotifyGate g({64, 3, 60});  // one per second
    for (int i = 0; i < 3; ++i) CHECK(g.admit(t0, 0).accept);
    const auto refused = g.admit(t0, 0);
    CHECK_FALSE(refused.accept);
    CHECK(has(refused.refusal, "rate limit"));
    CHECK_FALSE(g.admit(t0 + std::chrono::milliseconds(500), 0).accept);
    CHECK(g.admit(t0 + std::chrono::milliseconds(1600), 0).accept);
  }

  TEST_CASE("the configured burst is available from the start, not the default's") {
    NotifyGate g(GateLimits{});  // the defaults (burst 5), as the daemon constructs it
    g.set_limits({64, 100, 6000});
    for (int i = 0; i < 100; ++i) CHECK(g.admit(t0, 0).accept);
    CHECK_FALSE(g.admit(t0, 0).accept);
    // Once notifications flowed, a lower burst caps what is left.
    g.set_limits({64, 3, 6000});
    CHECK_FALSE(g.admit(t0, 0).accept);
    CHECK(g.admit(t0 + std::chrono::milliseconds(20), 0).accept);
  }

  TEST_CASE("at the cap the new notification is refused with the reason; no token is spent") {
    NotifyGate g({2, 1, 1});
    const auto d = g.admit(t0, 2);
    CHECK_FALSE(d.accept);
    CHECK(has(d.refusal, "cap: 2 notify-opened session(s)"));
    CHECK(has(d.refusal, "max_sessions = 2"));
    CHECK(has(d.refusal, "running sessions are kept"));
    // The burst of 1 is still there once a place is free.
    CHECK(g.admit(t0, 1).accept);
  }
}

TEST_SUITE("notify seen tokens") {
  TEST_CASE("a token is recognised by its SHA-256 digest, which is not the token") {
    SeenTokens seen;
    const TokenDigest d = digest_of(kToken);
    CHECK_FALSE(seen.contains(d));
    seen.remember(d);
    CHECK(seen.contains(digest_of(kToken)));
    CHECK_FALSE(seen.contains(digest_of(kToken + "x")));
    const std::string raw(d.begin(), d.end());
    CHECK(raw.find(kToken.substr(0, 8)) == std::string::npos);
    // SHA-256("abc"), FIPS 180-2 appendix B.1.
    CHECK(digest_of("abc")[0] == 0xba);
    CHECK(digest_of("abc")[31] == 0xad);
  }

  TEST_CASE("bounded: the oldest digests are forgotten first") {
    SeenTokens seen(3);
    for (int i = 0; i < 5; ++i) seen.remember(digest_of("token-" + std::to_string(i)));
    CHECK(seen.size() == 3);
    CHECK_FALSE(seen.contains(digest_of("token-0")));
    CHECK_FALSE(seen.contains(digest_of("token-1")));
    CHECK(seen.contains(digest_of("token-2")));
    CHECK(seen.contains(digest_of("token-4")));
    // Remembering one again makes it the newest, without a second entry.
    seen.remember(digest_of("token-2"));
    seen.remember(digest_of("token-5"));
    CHECK(seen.size() == 3);
    CHECK(seen.contains(digest_of("token-2")));
    CHECK_FALSE(seen.contains(digest_of("token-3")));
  }

  TEST_CASE("the default bound holds a flood") {
    SeenTokens seen;
    for (int i = 0; i < 10000; ++i) seen.remember(digest_of("flood-" + std::to_string(i)));
    CHECK(seen.size() == SeenTokens::kCapacity);
    CHECK(seen.contains(digest_of("flood-9999")));
    CHECK_FALSE(seen.contains(digest_of("flood-0")));
  }
}

TEST_SUITE("notify config") {
  struct Fixture {
    TempDir dir;
    std::string path = dir / "tunneld.toml";
    Fixture() {
      dir.write("ca.pem", "x", 0644);
      dir.write("dev.pem", "x", 0644);
      dir.write("dev.key", "x", 0600);
      dir.write("open.key", "x", 0644);
    }
    std::string base(const std::string& extra = "") const {
      return "[notify]\nbroker = \"127.0.0.1:8883\"\nthing_name = \"dev-1\"\n"
             "cert_file = \"dev.pem\"\nkey_file = \"dev.key\"\nca_file = \"ca.pem\"\n" +
             extra;
    }
    std::string error_of(const std::string& text) const {
      try {
        tunneld::parse_config(text, path);
      } catch (const tunneld::ConfigError& e) {
        return e.what();
      }
      return "(no error)";
    }
  };

  TEST_CASE("absent: disabled; present: enabled with defaults") {
    Fixture f;
    CHECK_FALSE(tunneld::parse_config("", f.path).notify.enabled);
    const auto c = tunneld::parse_config(f.base(), f.path).notify;
    CHECK(c.enabled);
    CHECK(c.broker_host == "127.0.0.1");
    CHECK(c.broker_port == 8883);
    CHECK(c.client_id == "dev-1");
    CHECK(c.key_file == f.dir / "dev.key");
    CHECK(c.services == default_service_map());
    CHECK(c.keepalive_s == 60);
    CHECK(c.max_sessions == 4);
    CHECK(c.alpn.empty());
  }

  TEST_CASE("alpn: automatic on port 443, explicit elsewhere, \"\" turns it off") {
    Fixture f;
    auto with = [&](const std::string& broker, const std::string& extra) {
      std::string text = f.base(extra);
      const auto at = text.find("127.0.0.1:8883");
      text.replace(at, 14, broker);
      return tunneld::parse_config(text, f.path).notify.alpn;
    };
    CHECK(with("a1-ats.iot.us-east-1.amazonaws.com:443", "") == "x-amzn-mqtt-ca");
    CHECK(with("127.0.0.1:8883", "").empty());
    CHECK(with("127.0.0.1:8883", "alpn = \"x-amzn-mqtt-ca\"\n") == "x-amzn-mqtt-ca");
    CHECK(with("broker.example.com:443", "alpn = \"\"\n").empty());
    CHECK(with("broker.example.com:443", "alpn = \"mqtt\"\n") == "mqtt");
    CHECK(has(f.error_of(f.base("alpn = \"x y\"\n")), ":7: notify.alpn: expected up to 255"));
    CHECK(has(f.error_of(f.base("alpn = \"" + std::string(256, 'a') + "\"\n")), "notify.alpn"));
    CHECK(has(f.error_of(f.base("alpn = 443\n")), "notify.alpn: expected a string"));
  }

  TEST_CASE("a services table replaces the defaults") {
    Fixture f;
    const auto c =
        tunneld::parse_config(
            f.base("[notify.services]\nSSH = \"2222\"\nWEB = \"127.0.0.1:8080\"\n"), f.path)
            .notify;
    CHECK(c.services == ServiceMap{{"SSH", "2222"}, {"WEB", "127.0.0.1:8080"}});
  }

  TEST_CASE("mistakes name the line and key") {
    Fixture f;
    CHECK(has(f.error_of("[notify]\nthing_name = \"x\"\n"), ":1: notify.broker: missing"));
    CHECK(has(f.error_of(f.base("brokr = 1\n")), "notify.brokr: unknown key; did you mean"));
    CHECK(has(f.error_of(f.base("keepalive_s = 1\n")), "notify.keepalive_s: expected an integer"));
    CHECK(has(f.error_of(f.base("[notify.services]\nSSH = \"0\"\n")), "port 0"));
    CHECK(has(f.error_of(f.base("[notify.services]\n\"a b\" = \"22\"\n")), "service id"));
    const std::string open_key =
        "[notify]\nbroker = \"127.0.0.1:8883\"\nthing_name = \"d\"\ncert_file = \"dev.pem\"\n"
        "key_file = \"open.key\"\nca_file = \"ca.pem\"\n";
    const std::string e = f.error_of(open_key);
    CHECK(has(e, ":5: notify.key_file:"));
    CHECK(has(e, "chmod 600"));
    CHECK(has(f.error_of("[notify]\nbroker = \"h:1\"\nthing_name = \"a/b\"\n"), "thing_name"));
    // enabled = false keeps an incomplete table without complaint.
    CHECK(f.error_of("[notify]\nenabled = false\n") == "(no error)");
  }
}
