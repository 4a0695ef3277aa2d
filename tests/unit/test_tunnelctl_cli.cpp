// tunnelctl's command line and output: every way to spell open, where the
// access token may come from (and the ways it must not), what is printed for
// each answer of the daemon and with which exit status.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli_fixture.h"
#include "temp_dir.h"
#include "tunnelctl/cli.h"

using namespace std::chrono_literals;
using namespace tunnel::tunnelctl;
using tunneld::control::ListResponse;
using tunneld::control::OpenRequest;
using tunneld::control::Request;
using tunneld::control::Response;
using tunneld::control::SessionInfo;

namespace {

using cli_fixture::Argv;
using cli_fixture::env_of;
using cli_fixture::EnvMap;
using cli_fixture::kClientToken;
using cli_fixture::kToken;
using cli_fixture::kTokenEnv;

// Standard input for a test: a terminal, or a pipe holding `line` (nullopt =
// end of input). `reads` counts the lines taken.
struct FakeStdin {
  bool terminal = true;
  std::optional<std::string> line;
  int reads = 0;
  Stdin get() {
    Stdin in;
    in.is_terminal = terminal;
    in.read_line = [this]() -> std::optional<std::string> {
      ++reads;
      return std::exchange(line, std::nullopt);
    };
    return in;
  }
};

Invocation parse(std::vector<std::string> args, const EnvMap& env = kTokenEnv,
                 FakeStdin* in = nullptr) {
  FakeStdin terminal;
  if (in == nullptr) in = &terminal;
  const Argv argv("tunnelctl", std::move(args));
  return parse_command_line(argv.argc(), argv.argv(), env_of(env), in->get());
}

// The UsageError message of a command line that must be refused.
std::string usage_error(std::vector<std::string> args, const EnvMap& env = kTokenEnv,
                        FakeStdin* in = nullptr) {
  try {
    parse(std::move(args), env, in);
  } catch (const UsageError& e) {
    std::string what = e.what();
    CHECK(what.find(kToken) == std::string::npos);
    CHECK(what.find(kClientToken) == std::string::npos);
    return what;
  }
  FAIL("expected a UsageError");
  return "";
}

bool has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

std::string bytes(const OpenRequest& r) { return r.SerializeAsString(); }

SessionInfo sample_session() {
  SessionInfo s;
  s.set_id("s-7f3a");
  s.set_name("web");
  s.set_mode(tunneld::control::MODE_SOURCE);
  s.set_state(SessionInfo::CONNECTED);
  s.set_endpoint("data.tunneling.iot.eu-west-1.amazonaws.com:443");
  s.set_protocol("aws.iot.securetunneling-3.0");
  s.set_stream_id(3);
  s.set_local_address("localhost:5000");
  s.set_bytes_in(1536);
  s.set_bytes_out(5ULL << 20);
  s.set_rate_in(2048);
  s.set_rate_out(0);
  s.set_reconnects(2);
  s.set_ping_rtt_us(12345);
  s.set_uptime_s(3723);
  s.set_last_error("service closed the WebSocket (1006)");
  s.set_channel_id("chan-0042");
  return s;
}

Response ok(std::uint64_t id = 1) { return tunneld::control::make_response(id, Response::OK); }

}  // namespace

TEST_SUITE("tunnelctl_cli") {
  // ---------------------------------------------------------------- open forms

  TEST_CASE("--mode source --listen PORT is -s PORT") {
    const auto a = parse({"open", "--mode", "source", "--listen", "5000", "-r", "us-east-1"});
    const auto b = parse({"open", "-s", "5000", "-r", "us-east-1"});
    CHECK(a.command == Command::open);
    CHECK(a.open.mode() == tunneld::control::MODE_SOURCE);
    CHECK(a.open.listen() == "5000");
    CHECK(a.open.target().empty());
    CHECK(a.open.region() == "us-east-1");
    CHECK(a.open.endpoint().empty());
    CHECK(a.open.access_token() == kToken);
    CHECK(bytes(a.open) == bytes(b.open));
    // Other spellings: src, -m, localproxy's long name, --opt=value, -sVALUE.
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"open", "--mode", "src", "--listen", "5000", "-r", "us-east-1"},
             {"open", "-m", "SOURCE", "-s", "5000", "-r", "us-east-1"},
             {"open", "--source-listen-port", "5000", "--region", "us-east-1"},
             {"open", "--listen=5000", "--region=us-east-1"},
             {"open", "-s5000", "-rus-east-1"},
         }) {
      CAPTURE(args.size());
      CHECK(bytes(parse(args).open) == bytes(b.open));
    }
  }

  TEST_CASE("--mode dest --target HOST:PORT is -d HOST:PORT") {
    const auto a = parse({"open", "--mode", "dest", "--target", "localhost:22", "-r", "us-east-1"});
    const auto b = parse({"open", "-d", "localhost:22", "-r", "us-east-1"});
    CHECK(a.open.mode() == tunneld::control::MODE_DESTINATION);
    CHECK(a.open.target() == "localhost:22");
    CHECK(a.open.listen().empty());
    CHECK(bytes(a.open) == bytes(b.open));
    for (const auto& mode : {"destination", "dst", "Dest"}) {
      CHECK(bytes(parse({"open", "--mode", mode, "-d", "localhost:22", "-r", "us-east-1"}).open) ==
            bytes(b.open));
    }
    CHECK(bytes(parse({"open", "--destination-app", "localhost:22", "-r", "us-east-1"}).open) ==
          bytes(b.open));
  }

  TEST_CASE("every open option lands in the request") {
    test_support::TempDir dir;
    std::filesystem::create_directory(dir / "certs");
    const std::string cafile = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\n");
    const std::string settings = dir.write(
        "settings.json", R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"7000"}}}})");
    const auto inv =
        parse({"open", "-s", "127.0.0.1:0", "-b", "127.0.0.1", "-e", "wss://relay.example:8443",
               "-c", dir / "certs", "--cafile", cafile, "-k", "--settings-json", settings, "-i",
               kClientToken, "--name", "web"});
    const OpenRequest& r = inv.open;
    CHECK(r.listen() == "127.0.0.1:0");
    CHECK(r.bind_address() == "127.0.0.1");
    CHECK(r.endpoint() == "wss://relay.example:8443");
    CHECK(r.region().empty());
    CHECK(r.capath() == dir / "certs");
    CHECK(r.cafile() == cafile);
    CHECK(r.no_ssl_host_verify());
    // The contents travel, not the path: the daemon may not see the file.
    CHECK(r.settings_json() ==
          R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"7000"}}}})");
    CHECK(r.client_token() == kClientToken);
    CHECK(r.name() == "web");
    // -k and -i on argv are worth a warning, neither repeats the token.
    REQUIRE(inv.warnings.size() == 2);
    for (const auto& w : inv.warnings) CHECK_FALSE(has(w, kClientToken));
  }

  TEST_CASE("localproxy long spellings are accepted") {
    const auto inv = parse({"open", "--destination-app", "22", "--proxy-endpoint", "relay.example",
                            "--local-bind-address", "10.0.0.1", "--no-ssl-host-verify",
                            "--client-token", kClientToken});
    CHECK(inv.open.target() == "22");
    CHECK(inv.open.endpoint() == "relay.example");
    CHECK(inv.open.bind_address() == "10.0.0.1");
    CHECK(inv.open.no_ssl_host_verify());
    CHECK(inv.open.client_token() == kClientToken);
  }

  TEST_CASE("relative CA paths are made absolute: the daemon has another working directory") {
    test_support::TempDir dir;
    std::filesystem::create_directory(dir / "certs");
    const auto cwd = std::filesystem::current_path();
    std::filesystem::current_path(dir.path());
    const auto inv = parse({"open", "-s", "5000", "-r", "us-east-1", "-c", "certs"});
    std::filesystem::current_path(cwd);
    CHECK(inv.open.capath() == dir / "certs");
  }

  TEST_CASE("the endpoint comes from the environment like localproxy's") {
    auto env = kTokenEnv;
    env["AWSIOT_TUNNEL_REGION"] = "eu-west-1";
    CHECK(parse({"open", "-s", "5000"}, env).open.region() == "eu-west-1");
    env.erase("AWSIOT_TUNNEL_REGION");
    env["AWSIOT_TUNNEL_ENDPOINT"] = "relay.example:443";
    CHECK(parse({"open", "-s", "5000"}, env).open.endpoint() == "relay.example:443");
    // The command line wins, with a warning.
    const auto inv = parse({"open", "-s", "5000", "-r", "us-east-1"}, env);
    CHECK(inv.open.region() == "us-east-1");
    CHECK(inv.open.endpoint().empty());
    REQUIRE(inv.warnings.size() == 1);
    CHECK(has(inv.warnings[0], "AWSIOT_TUNNEL_ENDPOINT ignored"));
    env["AWSIOT_TUNNEL_REGION"] = "eu-west-1";
    CHECK(has(usage_error({"open", "-s", "5000"}, env), "both set"));
  }

  TEST_CASE("endpoint mistakes") {
    CHECK(has(usage_error({"open", "-s", "5000"}), "no service endpoint"));
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1", "-e", "relay.example"}),
              "mutually exclusive"));
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "US EAST"}), "-r/--region"));
    CHECK(has(usage_error({"open", "-s", "5000", "-e", "ws://relay.example"}), "-e/--endpoint"));
  }

  TEST_CASE("mode and role conflicts") {
    const std::vector<std::string> r = {"-r", "us-east-1"};
    const auto with_region = [&](std::vector<std::string> args) {
      args.insert(args.begin(), "open");
      args.insert(args.end(), r.begin(), r.end());
      return usage_error(args);
    };
    CHECK(has(with_region({"-s", "5000", "-d", "22"}), "mutually exclusive"));
    CHECK(has(with_region({"--mode", "source", "-d", "22"}), "--mode source conflicts"));
    CHECK(has(with_region({"--mode", "dest", "-s", "5000"}), "--mode dest conflicts"));
    CHECK(has(with_region({"--mode", "source"}), "source mode needs -s/--listen"));
    CHECK(has(with_region({"--mode", "destination"}), "destination mode needs -d/--target"));
    CHECK(has(with_region({}), "no mode"));
    CHECK(has(with_region({"--mode", "sauce", "-s", "5000"}), "invalid --mode 'sauce'"));
    CHECK(has(with_region({"-s", "SSH1=5555,SSH1=6666"}), "twice"));
    CHECK(has(with_region({"-s", "SSH1=5555,6666"}), "NAME=[HOST:]PORT"));
    CHECK(has(with_region({"-d", "A=1,B=2,C=3,D=4"}), "at most 3"));
    CHECK(has(with_region({"--service", "A=1"}), "--service needs --mode"));
    CHECK(has(with_region({"-s", "5000", "--service", "A=1"}), "replaces -s/--listen"));
    CHECK(has(with_region({"-s", "5000", "-y", "V4"}), "expected V1, V2 or V3"));
    CHECK(has(with_region({"-d", "0"}), "1..65535"));
    CHECK(has(with_region({"-s", "99999"}), "-s/--listen"));
    CHECK(has(with_region({"-s", "10.0.0.1:5000", "-b", "127.0.0.1"}), "one place"));
    CHECK(has(with_region({"-s", "5000", "--listen", "5001"}), "more than once"));
    CHECK(has(with_region({"-s", "-d", "22"}), "needs a value"));
    CHECK(has(with_region({"-s", "5000", "--name", ""}), "non-empty"));
    CHECK(has(with_region({"-s", "5000", "--name", "two words"}), "--name: expected 1 to 64"));
    CHECK(has(with_region({"-s", "5000", "--name", "\xff"}), "--name: expected 1 to 64"));
    CHECK(has(with_region({"-s", "5000", "--name", std::string(65, 'a')}), "--name: expected"));
    CHECK(has(with_region({"-s", "5000", "-c", "/nonexistent/certs"}), "not a directory"));
    CHECK(has(with_region({"-s", "5000", "--cafile", "/nonexistent/ca.pem"}), "not a file"));
    CHECK(has(with_region({"-s", "5000", "--bogus"}), "unknown option '--bogus'"));
  }

  TEST_CASE("bad settings JSON is refused with the file and the key") {
    test_support::TempDir dir;
    const std::string f =
        dir.write("s.json", R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"abc"}}}})");
    const auto e = usage_error({"open", "-s", "5000", "-r", "us-east-1", "--settings-json", f});
    CHECK(has(e, f));
    CHECK(has(e, "ping_period_ms"));
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1", "--settings-json",
                           dir / "missing.json"}),
              "cannot read"));
    const std::string huge = dir.write("huge.json", std::string(std::size_t{40} * 1024, ' '));
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1", "--settings-json", huge}),
              "larger than"));
  }

  TEST_CASE("client tokens are checked, never echoed") {
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1", "-i", "short-token"}),
              "32 to 128"));
    auto env = kTokenEnv;
    env["AWSIOT_TUNNEL_CLIENT_TOKEN"] = kClientToken;
    const auto inv = parse({"open", "-s", "5000", "-r", "us-east-1"}, env);
    CHECK(inv.open.client_token() == kClientToken);
    CHECK(inv.warnings.empty());
    env["AWSIOT_TUNNEL_CLIENT_TOKEN"] = "bad token!";
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1"}, env),
              "AWSIOT_TUNNEL_CLIENT_TOKEN"));
  }

  // ------------------------------------------------------------ access token

  TEST_CASE("the access token from the environment") {
    const auto inv = parse({"open", "-s", "5000", "-r", "us-east-1"});
    CHECK(inv.open.access_token() == kToken);
    CHECK(inv.warnings.empty());
  }

  TEST_CASE("the access token from a file of mode 0600 (its first line)") {
    test_support::TempDir dir;
    const std::string f = dir.write("token", std::string(kToken) + "\r\n", 0600);
    const auto inv = parse({"open", "-s", "5000", "-r", "us-east-1", "--access-token-file", f}, {});
    CHECK(inv.open.access_token() == kToken);
    // The file wins over the environment, which is then worth a warning.
    const auto both = parse({"open", "-s", "5000", "-r", "us-east-1", "--access-token-file", f},
                            {{"AWSIOT_TUNNEL_ACCESS_TOKEN", "other-token"}});
    CHECK(both.open.access_token() == kToken);
    REQUIRE(both.warnings.size() == 1);
    CHECK(has(both.warnings[0], "--access-token-file takes precedence"));
  }

  TEST_CASE("a token file others may read is refused, like ssh does") {
    test_support::TempDir dir;
    for (const mode_t mode : {0644, 0640, 0604, 0620}) {
      CAPTURE(mode);
      const std::string f = dir.write("token", kToken, mode);
      const auto e =
          usage_error({"open", "-s", "5000", "-r", "us-east-1", "--access-token-file", f}, {});
      CHECK(has(e, "too open"));
      CHECK(has(e, "chmod 600 " + f));
    }
    CHECK(has(
        usage_error(
            {"open", "-s", "5000", "-r", "us-east-1", "--access-token-file", dir / "missing"}, {}),
        "cannot read the access token file"));
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1", "--access-token-file",
                           dir.write("empty", "\n", 0600)},
                          {}),
              "is empty"));
    CHECK(has(usage_error(
                  {"open", "-s", "5000", "-r", "us-east-1", "--access-token-file", dir.path()}, {}),
              "is a directory"));
  }

  TEST_CASE("the access token from standard input") {
    FakeStdin in{.terminal = true, .line = std::string(kToken)};
    const auto explicit_dash =
        parse({"open", "-s", "5000", "-r", "us-east-1", "--access-token-file", "-"}, {}, &in);
    CHECK(explicit_dash.open.access_token() == kToken);
    CHECK(in.reads == 1);

    FakeStdin piped{.terminal = false, .line = "  " + std::string(kToken) + "  "};
    const auto implicit = parse({"open", "-s", "5000", "-r", "us-east-1"}, {}, &piped);
    CHECK(implicit.open.access_token() == kToken);

    // The environment wins over a pipe nobody asked to read.
    FakeStdin unused{.terminal = false, .line = "other"};
    CHECK(
        parse({"open", "-s", "5000", "-r", "us-east-1"}, kTokenEnv, &unused).open.access_token() ==
        kToken);
    CHECK(unused.reads == 0);
  }

  TEST_CASE("no access token anywhere") {
    FakeStdin terminal;
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1"}, {}, &terminal),
              "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN"));
    CHECK(terminal.reads == 0);
    FakeStdin eof{.terminal = false, .line = std::nullopt};
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1"}, {}, &eof),
              "no access token on standard input"));
    FakeStdin blank{.terminal = false, .line = "   "};
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1"}, {}, &blank),
              "no access token on standard input"));
  }

  TEST_CASE("a usage mistake does not consume the token on standard input") {
    FakeStdin piped{.terminal = false, .line = std::string(kToken)};
    usage_error({"open", "-r", "us-east-1"}, {}, &piped);
    CHECK(piped.reads == 0);
  }

  TEST_CASE("the access token is never taken from argv, nor repeated") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"open", "-s", "5000", "-r", "us-east-1", "-t", kToken},
             {"open", "-s", "5000", "-r", "us-east-1", std::string("-t") + kToken},
             {"open", "-s", "5000", "--access-token", kToken},
             {"open", "-s", "5000", std::string("--access-token=") + kToken},
             {"-t", kToken, "list"},
         }) {
      const auto e = usage_error(args, {});
      CHECK(has(e, "never taken from the command line"));
      CHECK(has(e, "AWSIOT_TUNNEL_ACCESS_TOKEN"));
    }
  }

  TEST_CASE("a token with spaces is refused without repeating it") {
    FakeStdin piped{.terminal = false, .line = std::string(kToken) + " extra"};
    CHECK(has(usage_error({"open", "-s", "5000", "-r", "us-east-1"}, {}, &piped),
              "spaces or control characters"));
  }

  TEST_CASE("no message repeats a secret, whatever went wrong") {
    auto env = kTokenEnv;
    env["AWSIOT_TUNNEL_CLIENT_TOKEN"] = kClientToken;
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"open", kToken},
             {"open", "-s", "5000", "-r", "us-east-1", kClientToken},
             {"open", "-s", "5000", "-r", "us-east-1", "-i", kClientToken, "-i", kClientToken},
             {"open", "-s", "5000", "-r", "us-east-1", std::string("--") + kToken},
             {kToken},
             {"close", "a", kToken},
             {"open", "-i", kClientToken},
             {"open", "--mode", kToken, "-s", "5000"},
             {"open", "--timeout", kToken, "-s", "5000"},
         }) {
      usage_error(args, env);  // checks both tokens are absent
    }
  }

  // ----------------------------------------------------- other commands, globals

  TEST_CASE("list, status, close, version") {
    CHECK(parse({"list"}).command == Command::list);
    const auto status = parse({"status", "web"});
    CHECK(status.command == Command::status);
    CHECK(status.session == "web");
    const auto close = parse({"close", "s-1"});
    CHECK(close.command == Command::close);
    CHECK(close.session == "s-1");
    CHECK(parse({"version"}).command == Command::version);
    // Read commands take --json before or after the command.
    CHECK(parse({"list", "--json"}).json);
    CHECK(parse({"--json", "status", "web"}).json);
    CHECK(parse({"version", "--json"}).json);
    CHECK_FALSE(parse({"list"}).json);
  }

  TEST_CASE("command mistakes") {
    CHECK(has(usage_error({}), "no command given"));
    CHECK(has(usage_error({"frobnicate"}), "unknown command 'frobnicate'"));
    // status without a session asks for the notify link instead (docs/notify.md).
    CHECK(parse({"status"}).command == Command::notify_status);
    CHECK(has(usage_error({"close"}), "tunnelctl close needs a session"));
    // Found by fuzzing (tests/fuzz/fuzz_tunnelctl_cli.cpp): an empty argument
    // was taken as the session.
    CHECK(has(usage_error({"close", ""}), "tunnelctl close got an empty session"));
    CHECK(has(usage_error({"status", ""}), "tunnelctl status got an empty session"));
    // Found by fuzzing: an argument protobuf cannot carry (not UTF-8) made
    // tunnelctl log a protobuf error and the daemon answer "malformed". No
    // session can be called that; the argument is not echoed.
    for (const char* bad : {"\xff\xfe", "two words", "line\nbreak", "web;rm"}) {
      const std::string e = usage_error({"close", bad});
      CHECK(has(e, "tunnelctl close: no session is called that"));
      CHECK(e.find(bad) == std::string::npos);
      CHECK(has(usage_error({"status", bad}), "tunnelctl status: no session is called that"));
    }
    CHECK(parse({"close", "a1b2c3d4"}).session == "a1b2c3d4");
    CHECK(parse({"status", "web-1.prod_2"}).session == "web-1.prod_2");
    CHECK(has(usage_error({"close", "a", "b"}), "takes one session"));
    CHECK(has(usage_error({"list", "extra"}), "unexpected argument 'extra' for tunnelctl list"));
    CHECK(has(usage_error({"list", "--bogus"}), "unknown option '--bogus'"));
    CHECK(has(usage_error({"--socket"}), "--socket needs a value"));
    CHECK(has(usage_error({"--timeout", "soon", "list"}), "invalid --timeout 'soon'"));
    CHECK(has(usage_error({"--timeout", "0", "list"}), "invalid --timeout"));
  }

  TEST_CASE("help and the client's version need no daemon") {
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"--help"}, {"-h"}, {"help"}, {"open", "--help"}, {"status", "-h"}}) {
      const auto inv = parse(args, {});
      CHECK(inv.command == Command::help);
      CHECK(has(inv.text, "Usage: tunnelctl"));
    }
    const auto v = parse({"--version"});
    CHECK(v.command == Command::client_version);
    CHECK(v.text == version_text());
    CHECK(has(v.text, "tunnelctl "));
  }

  TEST_CASE("socket: --socket, then TUNNELD_SOCKET, then the default") {
    CHECK(parse({"list"}).socket_path == "/run/tunneld/control.sock");
    CHECK(parse({"list"}, {{"TUNNELD_SOCKET", "/tmp/t.sock"}}).socket_path == "/tmp/t.sock");
    CHECK(parse({"--socket", "/a.sock", "list"}, {{"TUNNELD_SOCKET", "/tmp/t.sock"}}).socket_path ==
          "/a.sock");
    CHECK(parse({"list", "--socket=/b.sock"}).socket_path == "/b.sock");
    CHECK(parse({"list"}).timeout == kDefaultTimeout);
    CHECK(parse({"--timeout", "0.5", "list"}).timeout == 500ms);
  }

  TEST_CASE("open with several services and a forced protocol version") {
    auto req =
        make_request(
            parse({"open", "-d", "SSH1=22,HTTP1=127.0.0.1:80", "-r", "us-east-1", "-y", "v2"}), 1)
            .open_request();
    CHECK(req.mode() == tunneld::control::MODE_DESTINATION);
    REQUIRE(req.services_size() == 2);
    CHECK(req.services(0).name() == "SSH1");
    CHECK(req.services(1).address() == "127.0.0.1:80");
    CHECK(req.target().empty());
    CHECK(req.protocol_version() == 2);
    req = make_request(parse({"open", "--mode", "source", "--service", "SSH1=5555", "--service",
                              "WEB=0", "-r", "us-east-1"}),
                       1)
              .open_request();
    CHECK(req.mode() == tunneld::control::MODE_SOURCE);
    REQUIRE(req.services_size() == 2);
    CHECK(req.services(1).name() == "WEB");
    CHECK(req.protocol_version() == 0);
    // Found by replaying fuzz-tunnelctl-cli's corpus under ASan: a name that
    // is not UTF-8 made protobuf log a serialization error. Names are
    // printable ASCII; an unprintable one is not repeated.
    const std::string bad = usage_error({"open", "-d", "SSH1=22,S\xff\x01=80", "-r", "us-east-1"});
    CHECK(has(bad, ": a name is not a service name (1 to 128 printable ASCII"));
    CHECK_FALSE(has(bad, "\xff"));
    CHECK(has(usage_error({"open", "--mode", "dest", "--service", "a b=22", "-r", "us-east-1"}),
              "'a b' is not a service name"));
  }

  TEST_CASE("requests carry the version, the id and the command's body") {
    const auto r_open = make_request(parse({"open", "-s", "5000", "-r", "us-east-1"}), 42);
    CHECK(r_open.version() == tunneld::control::kProtocolVersion);
    CHECK(r_open.request_id() == 42);
    REQUIRE(r_open.has_open_request());
    CHECK(r_open.open_request().access_token() == kToken);
    CHECK(make_request(parse({"list"}), 1).has_list_request());
    CHECK(make_request(parse({"status", "web"}), 1).status_request().session() == "web");
    CHECK(make_request(parse({"close", "web"}), 1).close_request().session() == "web");
    CHECK(make_request(parse({"version"}), 1).has_version_request());
  }

  // ------------------------------------------------------------------ output

  TEST_CASE("numbers for humans") {
    CHECK(format_bytes(0) == "0 B");
    CHECK(format_bytes(1023) == "1023 B");
    CHECK(format_bytes(1536) == "1.5 KiB");
    CHECK(format_bytes(5ULL << 20) == "5.0 MiB");
    CHECK(format_bytes(3ULL << 40) == "3.0 TiB");
    CHECK(format_bytes(~0ULL) == "16.0 EiB");
    CHECK(format_rate(2048) == "2.0 KiB/s");
    CHECK(format_rtt(350) == "0.35 ms");
    CHECK(format_rtt(12345) == "12.3 ms");
    CHECK(format_rtt(1520000) == "1520 ms");
    CHECK(format_duration(42) == "42s");
    CHECK(format_duration(185) == "3m 05s");
    CHECK(format_duration(3723) == "1h 02m 03s");
    CHECK(format_duration(439384) == "5d 02h 03m");  // 5*86400 + 2*3600 + 3*60 + 4
    CHECK(state_name(SessionInfo::RECONNECTING) == "reconnecting");
    CHECK(state_name(static_cast<SessionInfo::State>(42)) == "unknown_42");
    CHECK(mode_name(tunneld::control::MODE_DESTINATION) == "destination");
  }

  TEST_CASE("list: one aligned row per session") {
    ListResponse list;
    *list.add_sessions() = sample_session();
    SessionInfo dest;
    dest.set_id("s-2");
    dest.set_mode(tunneld::control::MODE_DESTINATION);
    dest.set_state(SessionInfo::RECONNECTING);
    dest.set_endpoint("relay.example:443");
    dest.set_local_address("localhost:22");
    dest.set_bytes_in(12);
    *list.add_sessions() = dest;
    const std::string text = format_list(list);
    std::vector<std::string> lines;
    for (std::size_t pos = 0, nl; (nl = text.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      lines.push_back(text.substr(pos, nl - pos));
    }
    REQUIRE(lines.size() == 3);
    const std::string& header = lines[0];
    for (const auto* column : {"ID", "NAME", "MODE", "STATE", "ENDPOINT", "LOCAL", "STREAM", "IN",
                               "OUT", "RECONNECTS"}) {
      CHECK(has(header, column));
    }
    CHECK(header.find("NAME") == lines[1].find("web"));
    CHECK(header.find("STATE") == lines[2].find("reconnecting"));
    CHECK(has(lines[1], "s-7f3a"));
    CHECK(has(lines[1], "source"));
    CHECK(has(lines[1], "connected"));
    CHECK(has(lines[1], "localhost:5000"));
    CHECK(has(lines[1], "1.5 KiB"));
    CHECK(has(lines[1], "5.0 MiB"));
    CHECK(has(lines[2], "destination"));
    CHECK(has(lines[2], "12 B"));
    // Numbers are right-aligned: every row ends where the RECONNECTS header does.
    CHECK(lines[1].size() == header.size());
    CHECK(lines[2].size() == header.size());
    CHECK(format_list(ListResponse{}) == "no sessions; tunnelctl open starts one\n");
  }

  TEST_CASE("status: every field, readable") {
    const std::string text = format_status(sample_session());
    for (const std::string part :
         {"id:         s-7f3a\n", "name:       web\n", "mode:       source\n",
          "state:      connected\n", "endpoint:   data.tunneling.iot.eu-west-1.amazonaws.com:443\n",
          "protocol:   aws.iot.securetunneling-3.0\n", "channel id: chan-0042\n", "stream id:  3\n",
          "local:      localhost:5000\n", "bytes in:   1.5 KiB (1536 bytes, tunnel to local)\n",
          "bytes out:  5.0 MiB (5242880 bytes, local to tunnel)\n", "rate in:    2.0 KiB/s\n",
          "rate out:   0 B/s\n", "reconnects: 2\n", "ping rtt:   12.3 ms\n",
          "uptime:     1h 02m 03s\n", "last error: service closed the WebSocket (1006)\n"}) {
      CAPTURE(part);
      CHECK(has(text, part));
    }
    CHECK(has(text, "proxy:      none (direct)\n"));
    // One line per field, nothing else.
    CHECK(std::count(text.begin(), text.end(), '\n') == 18);
    SessionInfo fresh;
    fresh.set_id("s-3");
    const std::string empty = format_status(fresh);
    CHECK(has(empty, "ping rtt:   none yet\n"));
    CHECK(has(empty, "last error: none\n"));
    CHECK(has(empty, "stream id:  none\n"));
    CHECK(has(empty, "name:       -\n"));
  }

  TEST_CASE("JSON output keeps the proto's field names") {
    const auto j = nlohmann::json::parse(session_json(sample_session()));
    CHECK(j["id"] == "s-7f3a");
    CHECK(j["mode"] == "source");
    CHECK(j["state"] == "connected");
    CHECK(j["stream_id"] == 3);
    CHECK(j["bytes_out"] == 5ULL << 20);
    CHECK(j["ping_rtt_us"] == 12345);
    CHECK(j["uptime_s"] == 3723);
    CHECK(j["channel_id"] == "chan-0042");
    CHECK(j["https_proxy"] == "");
    CHECK(j["services"].is_array());
    CHECK(j["connections"].is_array());
    CHECK(j["origin"] == "");
    CHECK(j["notify_thing"] == "");
    CHECK(j.size() == 22);
    ListResponse list;
    *list.add_sessions() = sample_session();
    const auto l = nlohmann::json::parse(list_json(list));
    REQUIRE(l["sessions"].size() == 1);
    CHECK(l["sessions"][0]["name"] == "web");
    CHECK(nlohmann::json::parse(list_json(ListResponse{}))["sessions"].empty());
  }

  TEST_CASE("status without a session shows the notify link") {
    tunneld::control::NotifyStatusResponse s;
    CHECK(has(format_notify_status(s, 0), "disabled"));
    s.set_enabled(true);
    s.set_connected(true);
    s.set_broker("127.0.0.1:8883");
    s.set_thing_name("dev-1");
    s.set_accepted(3);
    s.set_refused(2);
    s.set_last_refusal("payload is not JSON");
    s.set_duplicates(4);
    s.set_last_notification_unix_ms(1'700'000'000'000);
    const std::string text = format_notify_status(s, 1'700'000'042'000);
    CHECK(has(text, "notify:            connected\n"));
    CHECK(has(text, "broker:            127.0.0.1:8883\n"));
    CHECK(has(text, "last notification: 2023-11-14T22:13:20Z (42s ago)\n"));
    CHECK(has(text, "refused:           2 (last: payload is not JSON)\n"));
    CHECK(has(text, "duplicates:        4 (redeliveries dropped)\n"));
    const auto j = nlohmann::json::parse(notify_status_json(s));
    CHECK(j["connected"] == true);
    CHECK(j["accepted"] == 3);
    CHECK(j["duplicates"] == 4);
    CHECK(j["thing_name"] == "dev-1");
    CHECK(j["last_notification_unix_ms"] == 1'700'000'000'000LL);
  }

  TEST_CASE("open prints the id, and for a source the port it listens on") {
    const auto source = parse({"open", "-s", "0", "-r", "us-east-1"});
    Response r = ok();
    r.mutable_open_response()->set_session_id("s-9");
    r.mutable_open_response()->set_bound_port(40123);
    auto o = render_response(source, r);
    CHECK(o.exit_code == kExitOk);
    CHECK(o.out == "s-9\nlistening on 40123\n");
    CHECK(o.err.empty());

    const auto dest = parse({"open", "-d", "22", "-r", "us-east-1"});
    r.mutable_open_response()->set_bound_port(0);
    CHECK(render_response(dest, r).out == "s-9\n");

    const auto json = parse({"open", "-s", "0", "-r", "us-east-1", "--json"});
    r.mutable_open_response()->set_bound_port(40123);
    const auto j = nlohmann::json::parse(render_response(json, r).out);
    CHECK(j["session_id"] == "s-9");
    CHECK(j["bound_port"] == 40123);
  }

  TEST_CASE("list, status, close and version answers") {
    Response list = ok();
    *list.mutable_list_response()->add_sessions() = sample_session();
    CHECK(has(render_response(parse({"list"}), list).out, "RECONNECTS"));
    CHECK(nlohmann::json::parse(render_response(parse({"list", "--json"}), list).out)
              .contains("sessions"));

    Response status = ok();
    *status.mutable_status_response()->mutable_session() = sample_session();
    CHECK(render_response(parse({"status", "web"}), status).out == format_status(sample_session()));

    const auto closed = render_response(parse({"close", "web"}), ok());
    CHECK(closed.exit_code == kExitOk);
    CHECK(closed.out == "closed web\n");

    Response version = ok();
    version.mutable_version_response()->set_daemon_version("0.1.0");
    version.mutable_version_response()->set_protocol_version(1);
    const auto v = render_response(parse({"version"}), version);
    CHECK(v.out == version_text() + "tunneld 0.1.0 (control protocol 1)\n");
    const auto vj =
        nlohmann::json::parse(render_response(parse({"version", "--json"}), version).out);
    CHECK(vj["daemon_version"] == "0.1.0");
    CHECK(vj["protocol_version"] == 1);
    CHECK(vj.contains("client_version"));
    CHECK(vj["client_protocol_version"] == tunneld::control::kProtocolVersion);
  }

  TEST_CASE("an OK without the expected body is a protocol error") {
    const auto o = render_response(parse({"list"}), ok());
    CHECK(o.exit_code == kExitProtocol);
    CHECK(has(o.err, "same release"));
    CHECK(render_response(parse({"status", "x"}), ok()).exit_code == kExitProtocol);
    CHECK(render_response(parse({"open", "-s", "1", "-r", "us-east-1"}), ok()).exit_code ==
          kExitProtocol);
  }

  TEST_CASE("daemon errors: the message, and the exit status of their kind") {
    using tunneld::control::make_error;
    const auto list = parse({"list"});
    const auto invalid = render_response(
        list, make_error(1, Response::INVALID_ARGUMENT, "listen: port 70000 is out of range"));
    CHECK(invalid.exit_code == kExitDaemonError);
    CHECK(invalid.err == "tunnelctl: listen: port 70000 is out of range\n");
    CHECK(invalid.out.empty());

    const auto missing = render_response(parse({"status", "x"}),
                                         make_error(1, Response::NOT_FOUND, "no session 'x'"));
    CHECK(missing.exit_code == kExitNotFound);
    CHECK(missing.err == "tunnelctl: no session 'x'; tunnelctl list shows the sessions\n");

    const auto denied = render_response(
        list, make_error(1, Response::UNAUTHORIZED, "only root and group tunneld may open"));
    CHECK(denied.exit_code == kExitPermission);
    CHECK(has(denied.err, "usermod -aG tunneld"));

    const auto bad_version = render_response(list, make_error(1, Response::BAD_VERSION, ""));
    CHECK(bad_version.exit_code == kExitProtocol);
    CHECK(has(bad_version.err, "BAD_VERSION"));

    // Control characters from the daemon do not reach the terminal.
    const auto hostile = render_response(list, make_error(1, Response::INTERNAL, "a\x1b[2Jb"));
    CHECK(hostile.err == "tunnelctl: a?[2Jb\n");

    // The client's version is still worth printing.
    const auto v = render_response(parse({"version"}), make_error(1, Response::INTERNAL, "x"));
    CHECK(v.out == version_text());
  }

  TEST_CASE("exit statuses") {
    CHECK(exit_code_for(Response::OK) == 0);
    CHECK(exit_code_for(Response::INVALID_ARGUMENT) == 1);
    CHECK(exit_code_for(Response::ALREADY_EXISTS) == 1);
    CHECK(exit_code_for(Response::INTERNAL) == 1);
    CHECK(exit_code_for(static_cast<Response::Status>(77)) == 1);
    CHECK(exit_code_for(Response::UNAUTHORIZED) == 4);
    CHECK(exit_code_for(Response::NOT_FOUND) == 5);
    CHECK(exit_code_for(Response::BAD_VERSION) == 6);
    CHECK(exit_code_for(Response::BAD_LENGTH) == 6);
    CHECK(exit_code_for(Response::MALFORMED) == 6);
    CHECK(exit_code_for(Response::STATUS_UNSPECIFIED) == 6);
    CHECK(exit_code_for(ControlErrorKind::unreachable) == 3);
    CHECK(exit_code_for(ControlErrorKind::timeout) == 3);
    CHECK(exit_code_for(ControlErrorKind::connection_lost) == 3);
    CHECK(exit_code_for(ControlErrorKind::permission_denied) == 4);
    CHECK(exit_code_for(ControlErrorKind::protocol) == 6);
    CHECK(kExitUsage == 2);
  }

  TEST_CASE("no answer: the client's message and exit status") {
    const auto o =
        render_failure(parse({"list"}), connect_error(ENOENT, "/run/tunneld/control.sock"));
    CHECK(o.exit_code == kExitUnreachable);
    CHECK(o.err ==
          "tunnelctl: tunneld is not running (no socket at /run/tunneld/control.sock): "
          "systemctl start tunneld\n");
    CHECK(o.out.empty());
    const auto denied = render_failure(parse({"close", "x"}), connect_error(EACCES, "/s"));
    CHECK(denied.exit_code == kExitPermission);
    const auto v = render_failure(parse({"version"}), connect_error(ENOENT, "/s"));
    CHECK(v.out == version_text());
    CHECK(v.exit_code == kExitUnreachable);
  }
}

TEST_SUITE("tunnelctl_cli https proxy") {
  constexpr const char* kProxyPassword = "pr0xy-Pa55word-9f8e7d6c";

  TEST_CASE("open --https-proxy lands in the request; credentials warn") {
    auto inv = parse({"open", "-s", "0", "-r", "us-east-1"});
    CHECK(inv.open.https_proxy().empty());  // tunneld's environment decides
    inv = parse({"open", "-s", "0", "-r", "us-east-1", "--https-proxy", "http://proxy:3128"});
    CHECK(inv.open.https_proxy() == "http://proxy:3128");
    CHECK(inv.warnings.empty());
    inv = parse({"open", "-s", "0", "-r", "us-east-1", "--https-proxy", "direct"});
    CHECK(inv.open.https_proxy() == "direct");
    const std::string url = std::string("http://u:") + kProxyPassword + "@proxy:3128";
    inv = parse({"open", "-s", "0", "-r", "us-east-1", "--https-proxy", url});
    CHECK(inv.open.https_proxy() == url);
    REQUIRE(inv.warnings.size() == 1);
    CHECK(has(inv.warnings[0], "process listings"));
    CHECK(!has(inv.warnings[0], kProxyPassword));
  }

  TEST_CASE("a bad --https-proxy is a usage error that never repeats it") {
    const std::string pw = kProxyPassword;
    for (const std::string& url : {"https://u:" + pw + "@proxy:3128", "http://u:" + pw + "@p:0",
                                   "http://u:" + pw + "@p/x"}) {
      const auto e = usage_error({"open", "-s", "0", "-r", "us-east-1", "--https-proxy", url});
      CHECK(has(e, "--https-proxy"));
      CHECK(!has(e, pw));
    }
    const auto e =
        usage_error({"open", "-s", "0", "-r", "us-east-1",
                     "--https-proxy=" + std::string("http://u:") + pw + "@p:1", "--bogus"});
    CHECK(!has(e, pw));
  }

  TEST_CASE("status shows the proxy as host:port") {
    SessionInfo s = sample_session();
    s.set_https_proxy("proxy.corp:3128");
    CHECK(has(format_status(s), "proxy:      proxy.corp:3128\n"));
    CHECK(nlohmann::json::parse(session_json(s))["https_proxy"] == "proxy.corp:3128");
  }
}
