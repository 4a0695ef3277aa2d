#include <doctest/doctest.h>

#include <string>

#include "config.h"
#include "temp_dir.h"

using test_support::TempDir;
using tunneld::Config;
using tunneld::ConfigError;
using tunneld::load_config;
using tunneld::LogTarget;
using tunneld::parse_config;

namespace {

constexpr std::string_view kAccessToken = "AQGAAXiZ-access-token-0123456789";
constexpr std::string_view kClientToken = "0b7c1b2e-8f6a-4c1e-9d3a-6e2f9a1c5b7d";

// A directory with a config path and private token files, as an admin sets it up.
struct Fixture {
  TempDir dir;
  std::string config_path = dir / "tunneld.toml";
  Fixture() {
    dir.write("access.token", std::string(kAccessToken) + "\n", 0600);
    dir.write("client.token", std::string(kClientToken) + "\n", 0600);
  }
  Config parse(std::string_view text) const { return parse_config(text, config_path); }
  // The message of the ConfigError that parsing `text` throws.
  std::string error_of(std::string_view text) const {
    try {
      parse(text);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  }
  std::string at(int line) const { return config_path + ":" + std::to_string(line) + ": "; }
};

// A minimal valid destination session, lines 1-6.
constexpr std::string_view kSession = R"([[session]]
name = "ssh"
mode = "destination"
target = "22"
region = "us-east-1"
access_token_file = "access.token"
)";

std::string with_session(std::string_view extra) {
  return std::string(kSession) + std::string(extra);
}

}  // namespace

TEST_SUITE("config") {
  TEST_CASE("an empty file gives the documented defaults") {
    Fixture f;
    const Config c = f.parse("");
    CHECK(c.path == f.config_path);
    CHECK(c.control.socket == "/run/tunneld/control.sock");
    CHECK(c.control.mode == 0660);
    CHECK(c.control.group == "tunneld");
    CHECK(c.state_dir == "/var/lib/tunneld");
    CHECK(c.log.level == "info");
    CHECK(c.log.target == LogTarget::automatic);
    CHECK(c.settings == tunnel::Settings{});
    CHECK(c.sessions.empty());
  }

  TEST_CASE("a complete configuration") {
    Fixture f;
    f.dir.write("ca.pem", "not checked here", 0644);
    const Config c = f.parse(R"(# tunneld.toml
state_dir = "/srv/tunneld/state"

[control]
socket = "/run/t/ctl.sock"
mode = "0600"
group = "wheel"

[log]
level = "debug"
target = "journal"

[settings]
websocket.ping_period_ms = 2000
tcp.connection_retry_count = "7"
default_bind_address = "127.0.0.1"

[[session]]
name = "web"
mode = "source"
listen = "8080"
endpoint = "wss://tunnel.example.com:8443"
access_token_file = "access.token"
client_token_file = ")" + f.dir.path() +
                             R"(/client.token"
cafile = "ca.pem"
capath = ")" + f.dir.path() + R"("
verify = false
settings = { websocket = { ping_period_ms = 1000 } }

[[session]]
name = "db.primary"
mode = "dest"
target = "db.internal:5432"
bind_address = "10.0.0.5"
region = "eu-west-1"
access_token_file = "access.token"
)");
    CHECK(c.state_dir == "/srv/tunneld/state");
    CHECK(c.control.socket == "/run/t/ctl.sock");
    CHECK(c.control.mode == 0600);
    CHECK(c.control.group == "wheel");
    CHECK(c.log.level == "debug");
    CHECK(c.log.target == LogTarget::journal);
    CHECK(c.settings.ws_ping_period_ms == 2000);
    CHECK(c.settings.tcp_connection_retry_count == 7);
    CHECK(c.settings.default_bind_address == "127.0.0.1");
    CHECK(c.settings.ws_retry_delay_ms == tunnel::Settings{}.ws_retry_delay_ms);

    REQUIRE(c.sessions.size() == 2);
    const auto& web = c.sessions[0];
    CHECK(web.line == 18);
    CHECK(web.proxy.name == "web");
    CHECK(web.proxy.mode == tunnel::Mode::source);
    CHECK(web.proxy.local == tunnel::HostPort{"127.0.0.1", 8080});
    CHECK(web.proxy.endpoint.host == "tunnel.example.com");
    CHECK(web.proxy.endpoint.port == 8443);
    CHECK(web.proxy.access_token == kAccessToken);
    CHECK(web.access_token_file == f.dir / "access.token");
    CHECK(web.proxy.client_token == kClientToken);
    CHECK(web.proxy.cafile == f.dir / "ca.pem");
    CHECK(web.proxy.capath == f.dir.path());
    CHECK_FALSE(web.proxy.verify_tls);
    // The session's table overlays the [settings] defaults.
    CHECK(web.proxy.settings.ws_ping_period_ms == 1000);
    CHECK(web.proxy.settings.tcp_connection_retry_count == 7);

    const auto& db = c.sessions[1];
    CHECK(db.proxy.name == "db.primary");
    CHECK(db.proxy.mode == tunnel::Mode::destination);
    CHECK(db.proxy.local == tunnel::HostPort{"db.internal", 5432});
    CHECK(db.proxy.bind_address == "10.0.0.5");
    CHECK(db.proxy.endpoint.host == "data.tunneling.iot.eu-west-1.amazonaws.com");
    CHECK(db.proxy.client_token.empty());
    CHECK(db.proxy.verify_tls);
    CHECK(db.proxy.settings.ws_ping_period_ms == 2000);
  }

  TEST_CASE("settings: nested tables and dotted keys mean the same") {
    Fixture f;
    const Config dotted = f.parse("[settings]\nwebsocket.retry_delay_ms = 100\n");
    const Config nested = f.parse("[settings.websocket]\nretry_delay_ms = 100\n");
    CHECK(dotted.settings.ws_retry_delay_ms == 100);
    CHECK(dotted.settings == nested.settings);
  }

  TEST_CASE("a source's bind_address is its listening host") {
    Fixture f;
    const Config c = f.parse(R"([[session]]
name = "s"
mode = "source"
listen = "0"
bind_address = "::1"
region = "us-east-1"
access_token_file = "access.token"
)");
    CHECK(c.sessions.at(0).proxy.local == tunnel::HostPort{"::1", 0});
    CHECK(c.sessions.at(0).proxy.bind_address.empty());
    // The same address in both places is not a conflict.
    const Config same = f.parse(R"([[session]]
name = "s"
mode = "src"
listen = "[::1]:80"
bind_address = "::1"
region = "us-east-1"
access_token_file = "access.token"
)");
    CHECK(same.sessions.at(0).proxy.local == tunnel::HostPort{"::1", 80});
  }

  TEST_CASE("load_config reads the file and names it when it cannot") {
    Fixture f;
    f.dir.write("tunneld.toml", "state_dir = \"/x\"\n", 0644);
    CHECK(load_config(f.config_path).state_dir == "/x");
    try {
      load_config(f.dir / "missing.toml");
      FAIL("expected ConfigError");
    } catch (const ConfigError& e) {
      CHECK(std::string(e.what()) ==
            f.dir / "missing.toml: cannot open the configuration: No such file or directory");
      CHECK(e.line() == 0);
    }
  }

  TEST_CASE("every error names file, line and key") {
    Fixture f;
    struct Case {
      std::string text;
      int line;
      std::string key;
      std::string message;  // expected after "file:line: key: "
    };
    const Case cases[] = {
        {with_session("").replace(kSession.find("destination"), 11, "sauce"), 3, "session.mode",
         R"(expected "source" or "destination", got "sauce")"},
        {"[control]\nmode = 660\n", 2, "control.mode",
         R"(expected an octal mode as a string, such as "0660", got an integer)"},
        {"[control]\nmode = \"0999\"\n", 2, "control.mode",
         R"(expected an octal mode as a string, such as "0660", got "0999")"},
        {"[control]\nsocket = \"run/ctl.sock\"\n", 2, "control.socket",
         R"(expected an absolute path, got "run/ctl.sock")"},
        {"[control]\nsocket = \"/" + std::string(120, 'a') + "\"\n", 2, "control.socket",
         "path is 121 bytes long; a Unix socket path must be shorter than 108 bytes"},
        {"\n\nstate_dir = 5\n", 3, "state_dir", "expected a string, got an integer"},
        {"state_dir = \"var/lib\"\n", 1, "state_dir",
         R"(expected an absolute path, got "var/lib")"},
        {"log = \"debug\"\n", 1, "log", "expected a table, got a string"},
        {"[log]\nlevel = \"verbose\"\n", 2, "log.level",
         R"(expected one of trace, debug, info, warn, error, critical, off, got "verbose")"},
        {"[log]\ntarget = \"syslog\"\n", 2, "log.target",
         R"(expected "auto", "stderr" or "journal", got "syslog")"},
        {"[settings]\nwebsocket.ping_period_ms = \"abc\"\n", 2, "settings.websocket.ping_period_ms",
         R"(expected an integer in 1..86400000, got "abc")"},
        {"[settings]\n\ntcp.connection_retry_count = -5\n", 3,
         "settings.tcp.connection_retry_count",
         "expected -1 (forever) or a non-negative integer, got -5"},
        {"[settings]\nwebsocket.subprotocol = [\"a\"]\n", 2, "settings.websocket.subprotocol",
         "expected a number, a string or a boolean, got an array"},
        {"[settings]\nwebsocket = 5\n", 2, "settings.websocket",
         "expected a table, got an integer"},
        // A cross-field rule broken by the file: reported at the [settings] header.
        {"\n[settings]\nmessage.max_size = 1000\n", 2, "settings.message.max_payload_size",
         "must be less than message.max_size (1000), got 64512"},
        {with_session("settings.websocket.retry_delay_ms = 0\n"), 7,
         "session.settings.websocket.retry_delay_ms", "expected an integer in 1..86400000, got 0"},
        {"[[session]]\nmode = \"source\"\n", 1, "session.name",
         "missing; every [[session]] needs a unique name"},
        {"[[session]]\nname = \"a b\"\n", 2, "session.name",
         R"(expected 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' and '.', got "a b")"},
        {with_session("") + "\n" + std::string(kSession), 9, "session.name",
         R"("ssh" is already used by the session at line 1; names must be unique)"},
        {"[[session]]\nname = \"x\"\n", 1, "session.mode",
         R"(missing; expected "source" or "destination")"},
        {"[[session]]\nname = \"x\"\nmode = \"source\"\ntarget = \"22\"\n", 4, "session.target",
         "a source session takes listen, not target"},
        {"[[session]]\nname = \"x\"\nmode = \"source\"\n", 1, "session.listen",
         R"(missing; a source session needs listen = "[host:]port")"},
        {"[[session]]\nname = \"x\"\nmode = \"source\"\nlisten = \"99999\"\n", 4, "session.listen",
         "invalid port '99999': expected a number in 0..65535"},
        {"[[session]]\nname = \"x\"\nmode = \"source\"\nlisten = \"1.2.3.4:80\"\n"
         "bind_address = \"::1\"\n",
         4, "session.listen",
         R"(listens on "1.2.3.4" but bind_address is "::1"; give the address in one place)"},
        {"[[session]]\nname = \"x\"\nmode = \"destination\"\ntarget = \"22\"\n", 1,
         "session.endpoint", R"(missing; give endpoint = "host[:port]" or region = "us-east-1")"},
        {with_session("endpoint = \"relay.example:443\"\n"), 5, "session.region",
         "give either endpoint or region, not both (endpoint is at line 7)"},
        {with_session("").replace(kSession.find("us-east-1"), 9, "US_EAST"), 5, "session.region",
         "invalid region 'US_EAST': expected a name like us-east-1"},
        {"[[session]]\nname = \"x\"\nmode = \"destination\"\ntarget = \"22\"\nregion = "
         "\"us-east-1\"\n",
         1, "session.access_token_file",
         "missing; give the path of a file (mode 0600) holding the access token"},
        {with_session("").replace(kSession.find("access.token"), 12, "nope.token"), 6,
         "session.access_token_file",
         "cannot open " + f.dir / "nope.token" + ": No such file or directory"},
        {with_session("cafile = \"missing.pem\"\n"), 7, "session.cafile",
         "cannot use " + f.dir / "missing.pem" + ": No such file or directory"},
        {with_session("verify = \"no\"\n"), 7, "session.verify",
         "expected true or false, got a string"},
        {"session = { name = \"x\" }\n", 1, "session", "expected [[session]] tables, got a table"},
        // A control character in a service name would reach every record's
        // serviceId and the logs: refused, and the name is not repeated.
        {with_session("").replace(kSession.find("target"), 13,
                                  R"(services = { "SSH\u0001" = "22" })"),
         4, "session.services",
         "a service name must be 1 to 128 printable ASCII characters, without spaces, '=' or ','"},
    };
    for (const auto& c : cases) {
      CAPTURE(c.text);
      CHECK(f.error_of(c.text) == f.at(c.line) + c.key + ": " + c.message);
      try {
        f.parse(c.text);
      } catch (const ConfigError& e) {
        CHECK(e.file() == f.config_path);
        CHECK(e.line() == c.line);
        CHECK(e.key() == c.key);
      }
    }
  }

  TEST_CASE("a TOML syntax error names the line") {
    Fixture f;
    const std::string msg = f.error_of("[control]\nsocket = \"/x\"\nmode = \n");
    CHECK(msg.rfind(f.at(3) + "TOML syntax error: ", 0) == 0);
  }

  TEST_CASE("unknown keys are errors, with a suggestion for a typo") {
    Fixture f;
    CHECK(f.error_of("\nsate_dir = \"/x\"\n") ==
          f.at(2) + R"(sate_dir: unknown key; did you mean "state_dir"?)");
    CHECK(f.error_of("[control]\nsockt = \"/x\"\n") ==
          f.at(2) + R"(control.sockt: unknown key; did you mean "socket"?)");
    CHECK(f.error_of("[log]\ncolour = true\n") ==
          f.at(2) + "log.colour: unknown key; expected one of: level, target");
    CHECK(f.error_of(with_session("trget = \"22\"\n")) ==
          f.at(7) + R"(session.trget: unknown key; did you mean "target"?)");
    CHECK(
        f.error_of("[settings]\nwebsocket.ping_perod_ms = 1\n") ==
        f.at(2) +
            R"(settings.websocket.ping_perod_ms: unknown key; did you mean "websocket.ping_period_ms"?)");
    // The reference's full key path is not how the table is written.
    CHECK(f.error_of("[settings]\ntunneling.proxy.tcp.read_buffer_size = 1\n")
              .rfind(f.at(2) + "settings.tunneling: unknown key", 0) == 0);
    // The first unknown key in file order is reported.
    CHECK(f.error_of("[control]\nzzz = 1\naaa = 2\n").rfind(f.at(2) + "control.zzz:", 0) == 0);
  }

  TEST_CASE("token files must be private") {
    Fixture f;
    for (mode_t mode : {0640, 0604, 0660, 0606}) {
      CAPTURE(mode);
      const std::string token = f.dir.write("open.token", "secret\n", mode);
      char mode_text[8];
      std::snprintf(mode_text, sizeof mode_text, "%04o", static_cast<unsigned>(mode));
      CHECK(f.error_of(with_session("").replace(kSession.find("access.token"), 12, "open.token")) ==
            f.at(6) + "session.access_token_file: " + token +
                " is accessible by group or others (mode " + mode_text +
                "); a token file must be private: chmod 600 " + token);
    }
    for (mode_t mode : {0600, 0400}) {
      f.dir.write("private.token", "  secret-token\r\n", mode);
      const Config c =
          f.parse(with_session("").replace(kSession.find("access.token"), 12, "private.token"));
      CHECK(c.sessions.at(0).proxy.access_token == "secret-token");
    }
  }

  TEST_CASE("token file contents are checked") {
    Fixture f;
    f.dir.write("empty.token", "\n\n", 0600);
    CHECK(f.error_of(with_session("").replace(kSession.find("access.token"), 12, "empty.token")) ==
          f.at(6) + "session.access_token_file: " + f.dir / "empty.token" +
              " is empty; it must hold the token");
    f.dir.write("two.token", "one\ntwo\n", 0600);
    CHECK(f.error_of(with_session("").replace(kSession.find("access.token"), 12, "two.token")) ==
          f.at(6) + "session.access_token_file: " + f.dir / "two.token" +
              " holds spaces or control characters; it must hold the token alone");
    f.dir.write("short.client", "abc\n", 0600);
    CHECK(f.error_of(with_session("client_token_file = \"short.client\"\n")) ==
          f.at(7) + "session.client_token_file: " + f.dir / "short.client" +
              " does not hold a valid client token (32 to 128 characters of A-Z, a-z, 0-9 and "
              "'-')");
    CHECK(f.parse(with_session("client_token_file = \"client.token\"\n"))
              .sessions.at(0)
              .proxy.client_token == kClientToken);
  }

  TEST_CASE("log level warning is spdlog's warn") {
    Fixture f;
    CHECK(f.parse("[log]\nlevel = \"warning\"\ntarget = \"stderr\"\n").log ==
          tunneld::LogConfig{"warn", LogTarget::stderr_stream});
  }

  TEST_CASE("an empty group leaves the socket's group alone") {
    Fixture f;
    CHECK(f.parse("[control]\ngroup = \"\"\n").control.group.empty());
  }
}

TEST_SUITE("config https proxy") {
  TEST_CASE("https_proxy per session and in [settings]; the session's wins") {
    Fixture f;
    Config c = f.parse(with_session("https_proxy = \"http://proxy.corp:3128\"\n"));
    REQUIRE(c.sessions.size() == 1);
    CHECK(c.sessions[0].proxy.settings.https_proxy == "http://proxy.corp:3128");
    c = f.parse("[settings]\nhttps_proxy = \"proxy.corp:8080\"\n" + std::string(kSession));
    CHECK(c.settings.https_proxy == "proxy.corp:8080");
    CHECK(c.sessions[0].proxy.settings.https_proxy == "proxy.corp:8080");
    c = f.parse("[settings]\nhttps_proxy = \"proxy.corp:8080\"\n" +
                with_session("https_proxy = \"direct\"\n"));
    CHECK(c.sessions[0].proxy.settings.https_proxy == "direct");
    // The resolution against the environment happens when the session starts.
    CHECK(!c.sessions[0].proxy.https_proxy);
  }

  TEST_CASE("https_proxy errors name the line and never repeat credentials") {
    Fixture f;
    std::string e = f.error_of(with_session("https_proxy = \"socks5://u:pw-s3cret-77@p:1\"\n"));
    CHECK(e.find(f.at(7) + "session.https_proxy: ") == 0);
    CHECK(e.find("s3cret") == std::string::npos);
    e = f.error_of(with_session("https_proxy = \"http://u:pw-s3cret-77@proxy:3128\"\n"));
    CHECK(e.find(f.at(7) + "session.https_proxy: proxy credentials do not belong") == 0);
    CHECK(e.find("http://proxy:3128") != std::string::npos);
    CHECK(e.find("s3cret") == std::string::npos);
    e = f.error_of("[settings]\nhttps_proxy = \"http://u:pw-s3cret-77@proxy:3128\"\n");
    CHECK(e.find(f.at(2) + "settings.https_proxy: proxy credentials") == 0);
    CHECK(e.find("s3cret") == std::string::npos);
    e = f.error_of(with_session("[session.settings]\nhttps_proxy = \"http://u:pw-s3cret-77@p\"\n"));
    CHECK(e.find(f.at(8) + "session.settings.https_proxy: proxy credentials") == 0);
    e = f.error_of("[settings]\nhttps_proxy = \"ftp://u:pw-s3cret-77@proxy\"\n");
    CHECK(e.find(f.at(2) + "settings.https_proxy: ") == 0);
    CHECK(e.find("s3cret") == std::string::npos);
  }
}
