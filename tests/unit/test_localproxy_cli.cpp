#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cli.h"
#include "cli_fixture.h"

using tunnel::Mode;
using tunnel::localproxy::Action;
using tunnel::localproxy::Env;
using tunnel::localproxy::Options;
using tunnel::localproxy::parse_command_line;
using tunnel::localproxy::UsageError;

namespace {

using cli_fixture::Argv;
using cli_fixture::env_of;
using cli_fixture::EnvMap;
using cli_fixture::kClientToken;
using cli_fixture::kToken;
using cli_fixture::kTokenEnv;

Options parse(std::vector<std::string> args, const EnvMap& env = kTokenEnv) {
  const Argv argv("localproxy", std::move(args));
  return parse_command_line(argv.argc(), argv.argv(), env_of(env));
}

// The UsageError message for a command line that must be refused.
std::string usage_error(std::vector<std::string> args, const EnvMap& env = kTokenEnv) {
  try {
    parse(std::move(args), env);
  } catch (const UsageError& e) {
    return e.what();
  }
  FAIL("expected a UsageError");
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

bool any_warning_contains(const Options& o, const std::string& needle) {
  for (const auto& w : o.warnings) {
    if (contains(w, needle)) {
      return true;
    }
  }
  return false;
}

// A file in /tmp removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& content, mode_t mode = 0600) {
    char name[] = "/tmp/tunneld-cli-test-XXXXXX";
    const int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
    ::fchmod(fd, mode);
    ::close(fd);
    path_ = name;
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "/tmp/tunneld-cli-test-dir-") {
    std::string name = prefix + "XXXXXX";
    REQUIRE(::mkdtemp(name.data()) != nullptr);
    path_ = name;
  }
  ~TempDir() { ::rmdir(path_.c_str()); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace

TEST_SUITE("localproxy_cli") {
  TEST_CASE("source mode: -r and -s with the token from the environment") {
    const auto o = parse({"-r", "us-east-1", "-s", "5000"});
    CHECK(o.action == Action::run);
    CHECK(o.config.mode == Mode::source);
    CHECK(o.config.endpoint.host == "data.tunneling.iot.us-east-1.amazonaws.com");
    CHECK(o.config.endpoint.port == 443);
    CHECK(o.config.endpoint.tls);
    CHECK(o.config.access_token == kToken);
    CHECK(o.config.local == tunnel::HostPort{"localhost", 5000});
    CHECK(o.config.bind_address.empty());
    CHECK(o.config.client_token.empty());
    CHECK(o.config.verify_tls);
    CHECK(o.verbosity == 4);
    CHECK(o.warnings.empty());
  }

  TEST_CASE("long option names and --name=value") {
    const auto o = parse(
        {"--region=eu-west-1", "--source-listen-port", "6000", "--local-bind-address", "::1"});
    CHECK(o.config.endpoint.host == "data.tunneling.iot.eu-west-1.amazonaws.com");
    CHECK(o.config.local == tunnel::HostPort{"::1", 6000});
  }

  TEST_CASE("-s forms: port, address:port, port 0, -b") {
    CHECK(parse({"-r", "us-east-1", "-s", "127.0.0.1:5000"}).config.local ==
          tunnel::HostPort{"127.0.0.1", 5000});
    CHECK(parse({"-r", "us-east-1", "-s", "[::1]:5000"}).config.local ==
          tunnel::HostPort{"::1", 5000});
    CHECK(parse({"-r", "us-east-1", "-s", "0"}).config.local == tunnel::HostPort{"localhost", 0});
    const auto o = parse({"-r", "us-east-1", "-s", "5000", "-b", "0.0.0.0"});
    CHECK(o.config.local == tunnel::HostPort{"0.0.0.0", 5000});
    // The same address in both places is not a conflict.
    CHECK(parse({"-r", "us-east-1", "-s", "10.1.1.1:5000", "-b", "10.1.1.1"}).config.local ==
          tunnel::HostPort{"10.1.1.1", 5000});
    const auto e = usage_error({"-r", "us-east-1", "-s", "127.0.0.1:5000", "-b", "0.0.0.0"});
    CHECK(contains(e, "-b/--local-bind-address"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "70000"}), "port"));
  }

  TEST_CASE("-s/-d service mappings (V2/V3), the reference's spelling") {
    auto o = parse({"-r", "us-east-1", "-s", "SSH1=5555,HTTP1=127.0.0.1:8080"});
    REQUIRE(o.config.services.size() == 2);
    CHECK(o.config.services[0] ==
          tunnel::ServiceMapping{"SSH1", tunnel::HostPort{"localhost", 5555}});
    CHECK(o.config.services[1] ==
          tunnel::ServiceMapping{"HTTP1", tunnel::HostPort{"127.0.0.1", 8080}});
    CHECK(o.config.local == tunnel::HostPort{"localhost", 5555});
    o = parse({"-r", "us-east-1", "-d", "SSH1=22,HTTP1=127.0.0.1:80"});
    CHECK(o.config.mode == Mode::destination);
    REQUIRE(o.config.services.size() == 2);
    CHECK(o.config.services[1].local == tunnel::HostPort{"127.0.0.1", 80});
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "SSH1=5555,SSH1=6666"}), "twice"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "SSH1=5555,6666"}), "NAME=PORT"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "A=1,B=2,C=3,D=4"}), "at most 3"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-d", "SSH1=0"}), "1..65535"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "=5555"}), "service name"));
    // Found by fuzz-tunnelctl-cli (replayed under ASan): a name that is not
    // printable ASCII reached protobuf (not UTF-8) and the logs. Refused,
    // and not repeated.
    for (const std::string bad : {"SSH\x01=5555", "S\xc3\xa9=5555", "S\x7f=5555"}) {
      const std::string e = usage_error({"-r", "us-east-1", "-s", bad});
      CHECK(contains(e, "a name is not a service name (1 to 128 printable ASCII"));
      CHECK_FALSE(contains(e, bad.substr(0, 2)));
    }
    CHECK(parse({"-r", "us-east-1", "-s", "arn:x_1-2.3=5555"}).config.services.size() == 1);
  }

  TEST_CASE("--config-dir: the reference's service-mapping files") {
    namespace fs = std::filesystem;
    const fs::path dir =
        fs::temp_directory_path() / ("lp-config-dir-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    { std::ofstream(dir / "a.ini") << "# services\nSSH1 = 22\n\nHTTP1 = 127.0.0.1:80  # web\n"; }
    auto o = parse({"-r", "us-east-1", "-m", "dst", "--config-dir", dir.string()});
    CHECK(o.config.mode == Mode::destination);
    REQUIRE(o.config.services.size() == 2);
    CHECK(o.config.services[0].id == "SSH1");
    CHECK(o.config.services[1].local == tunnel::HostPort{"127.0.0.1", 80});
    // The command line wins per name.
    o = parse({"-r", "us-east-1", "-d", "SSH1=2222", "--config-dir", dir.string()});
    REQUIRE(o.config.services.size() == 2);
    CHECK(o.config.services[0].local.port == 2222);
    { std::ofstream(dir / "b.ini") << "broken line\n"; }
    CHECK(contains(usage_error({"-r", "us-east-1", "-m", "dst", "--config-dir", dir.string()}),
                   "b.ini:1"));
    fs::remove_all(dir);
  }

  TEST_CASE("-y forces the protocol version; default offers all three") {
    auto o = parse({"-r", "us-east-1", "-s", "5000"});
    CHECK(o.config.protocol_version == 0);
    CHECK(o.config.offered_subprotocols() ==
          std::vector<std::string>{"aws.iot.securetunneling-3.0", "aws.iot.securetunneling-2.0",
                                   "aws.iot.securetunneling-1.0"});
    o = parse({"-r", "us-east-1", "-s", "5000", "-y", "v2"});
    CHECK(o.config.protocol_version == 2);
    CHECK(o.config.offered_subprotocols() ==
          std::vector<std::string>{"aws.iot.securetunneling-2.0"});
  }

  TEST_CASE("source listens on settings' default_bind_address without -b") {
    TempFile settings(R"({"tunneling":{"proxy":{"default_bind_address":"0.0.0.0"}}})");
    const auto o = parse({"-r", "us-east-1", "-s", "5000", "--settings-json", settings.path()});
    CHECK(o.config.local == tunnel::HostPort{"0.0.0.0", 5000});
    CHECK(o.config.settings.default_bind_address == "0.0.0.0");
  }

  TEST_CASE("destination mode: -d forms and -b") {
    auto o = parse({"-r", "us-east-1", "-d", "22"});
    CHECK(o.config.mode == Mode::destination);
    CHECK(o.config.local == tunnel::HostPort{"localhost", 22});
    CHECK(o.config.bind_address.empty());

    o = parse({"-r", "us-east-1", "-d", "db.internal:5432", "-b", "10.0.0.2"});
    CHECK(o.config.local == tunnel::HostPort{"db.internal", 5432});
    CHECK(o.config.bind_address == "10.0.0.2");

    CHECK(parse({"-r", "us-east-1", "-d", "[::1]:22"}).config.local == tunnel::HostPort{"::1", 22});

    // A bare port means this machine even when default_bind_address says otherwise.
    TempFile settings(R"({"tunneling":{"proxy":{"default_bind_address":"0.0.0.0"}}})");
    CHECK(parse({"-r", "us-east-1", "-d", "22", "--settings-json", settings.path()}).config.local ==
          tunnel::HostPort{"localhost", 22});

    CHECK(contains(usage_error({"-r", "us-east-1", "-d", "0"}), "1..65535"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-d", "host:"}), "-d/--destination-app"));
  }

  TEST_CASE("-e accepts host[:port] and wss:// / loopback ws:// URLs") {
    auto o = parse({"-e", "tunnel.example.com:8443", "-s", "5000"});
    CHECK(o.config.endpoint == tunnel::ServiceEndpoint{"tunnel.example.com", 8443, true});
    o = parse({"-e", "wss://tunnel.example.com/", "-s", "5000"});
    CHECK(o.config.endpoint == tunnel::ServiceEndpoint{"tunnel.example.com", 443, true});
    o = parse({"--proxy-endpoint", "ws://127.0.0.1:8080", "-s", "5000"});
    CHECK(o.config.endpoint == tunnel::ServiceEndpoint{"127.0.0.1", 8080, false});

    auto e = usage_error({"-e", "wss://tunnel.example.com/tunnel", "-s", "5000"});
    CHECK(contains(e, "-e/--proxy-endpoint"));
    CHECK(contains(e, "path"));
    e = usage_error({"-e", "ws://tunnel.example.com", "-s", "5000"});
    CHECK(contains(e, "ws://"));
    CHECK(contains(usage_error({"-r", "Not A Region", "-s", "5000"}), "-r/--region"));
  }

  TEST_CASE("-t works and warns about process listings") {
    const auto o = parse({"-t", kToken, "-r", "us-east-1", "-s", "5000"}, {});
    CHECK(o.config.access_token == kToken);
    CHECK(any_warning_contains(o, "AWSIOT_TUNNEL_ACCESS_TOKEN"));
    CHECK(any_warning_contains(o, "process listings"));
    for (const auto& w : o.warnings) {
      CHECK_FALSE(contains(w, kToken));
    }
    CHECK(parse({"--access-token", kToken, "-r", "us-east-1", "-s", "5000"}, {})
              .config.access_token == kToken);
  }

  TEST_CASE("a missing token says how to provide one") {
    const auto e = usage_error({"-r", "us-east-1", "-s", "5000"}, {});
    CHECK(contains(e, "access token"));
    CHECK(contains(e, "AWSIOT_TUNNEL_ACCESS_TOKEN"));
    CHECK(contains(e, "--config"));
    // An empty variable counts as unset.
    CHECK(contains(
        usage_error({"-r", "us-east-1", "-s", "5000"}, {{"AWSIOT_TUNNEL_ACCESS_TOKEN", ""}}),
        "no access token"));
  }

  TEST_CASE("a token that cannot go into an HTTP header is refused") {
    const auto e =
        usage_error({"-r", "us-east-1", "-s", "5000"},
                    {{"AWSIOT_TUNNEL_ACCESS_TOKEN", std::string(kToken) + "\r\nX-Injected: 1"}});
    CHECK(contains(e, "control characters"));
    CHECK_FALSE(contains(e, kToken));
    CHECK_FALSE(contains(e, "X-Injected"));
  }

  TEST_CASE("a missing endpoint or mode says what to give") {
    auto e = usage_error({"-s", "5000"});
    CHECK(contains(e, "-r/--region"));
    CHECK(contains(e, "-e/--proxy-endpoint"));
    CHECK(contains(e, "AWSIOT_TUNNEL_REGION"));
    e = usage_error({"-r", "us-east-1"});
    CHECK(contains(e, "-s"));
    CHECK(contains(e, "-d"));
  }

  TEST_CASE("-e and -r exclude each other within one source") {
    auto e = usage_error({"-e", "a.example.com", "-r", "us-east-1", "-s", "5000"});
    CHECK(contains(e, "mutually exclusive"));
    CHECK(contains(e, "-e/--proxy-endpoint"));
    CHECK(contains(e, "-r/--region"));

    TempFile cfg("proxy-endpoint = a.example.com\nregion = us-east-1\n");
    e = usage_error({"--config", cfg.path(), "-s", "5000"});
    CHECK(contains(e, "mutually exclusive"));
    CHECK(contains(e, cfg.path()));

    EnvMap env = kTokenEnv;
    env["AWSIOT_TUNNEL_ENDPOINT"] = "a.example.com";
    env["AWSIOT_TUNNEL_REGION"] = "us-east-1";
    e = usage_error({"-s", "5000"}, env);
    CHECK(contains(e, "AWSIOT_TUNNEL_ENDPOINT"));
    CHECK(contains(e, "AWSIOT_TUNNEL_REGION"));
  }

  TEST_CASE("an explicit -e/-r replaces the environment's endpoint or region, with a warning") {
    EnvMap env = kTokenEnv;
    env["AWSIOT_TUNNEL_ENDPOINT"] = "a.example.com";
    auto o = parse({"-r", "us-west-2", "-s", "5000"}, env);
    CHECK(o.config.endpoint.host == "data.tunneling.iot.us-west-2.amazonaws.com");
    CHECK(any_warning_contains(o, "AWSIOT_TUNNEL_ENDPOINT ignored"));

    // Both variables set is fine once the command line decides.
    env["AWSIOT_TUNNEL_REGION"] = "us-east-1";
    o = parse({"-e", "b.example.com", "-s", "5000"}, env);
    CHECK(o.config.endpoint.host == "b.example.com");
    CHECK(any_warning_contains(o, "AWSIOT_TUNNEL_ENDPOINT ignored"));
    CHECK(any_warning_contains(o, "AWSIOT_TUNNEL_REGION ignored"));

    // The config file outranks the environment the same way.
    TempFile cfg("region = eu-central-1\n");
    o = parse({"--config", cfg.path(), "-s", "5000"}, env);
    CHECK(o.config.endpoint.host == "data.tunneling.iot.eu-central-1.amazonaws.com");

    // Only one variable: used as is, no warning.
    o = parse({"-s", "5000"}, {{"AWSIOT_TUNNEL_ACCESS_TOKEN", kToken},
                               {"AWSIOT_TUNNEL_ENDPOINT", "c.example.com:9443"}});
    CHECK(o.config.endpoint == tunnel::ServiceEndpoint{"c.example.com", 9443, true});
    CHECK(o.warnings.empty());
  }

  TEST_CASE("-s and -d exclude each other; a higher source decides") {
    auto e = usage_error({"-r", "us-east-1", "-s", "5000", "-d", "22"});
    CHECK(contains(e, "-s/--source-listen-port"));
    CHECK(contains(e, "-d/--destination-app"));
    CHECK(contains(e, "mutually exclusive"));

    TempFile cfg("region = us-east-1\ndestination-app = 22\n");
    const auto o = parse({"--config", cfg.path(), "-s", "5000"});
    CHECK(o.config.mode == Mode::source);
    CHECK(o.config.local.port == 5000);
    CHECK(any_warning_contains(o, "ignored"));
  }

  TEST_CASE("-m names the mode and must agree with -s/-d") {
    CHECK(parse({"-r", "us-east-1", "-m", "src", "-s", "5000"}).config.mode == Mode::source);
    CHECK(parse({"-r", "us-east-1", "-m", "source", "-s", "5000"}).config.mode == Mode::source);
    CHECK(parse({"-r", "us-east-1", "--mode", "dst", "-d", "22"}).config.mode == Mode::destination);
    CHECK(parse({"-r", "us-east-1", "-m", "destination", "-d", "22"}).config.mode ==
          Mode::destination);
    auto e = usage_error({"-r", "us-east-1", "-m", "dst", "-s", "5000"});
    CHECK(contains(e, "-m/--mode"));
    CHECK(contains(e, "-s/--source-listen-port"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-m", "destination"}), "-d/--destination-app"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-m", "source"}), "-s/--source-listen-port"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-m", "sideways", "-s", "1"}), "sideways"));
  }

  TEST_CASE("-i client token: validated, from argv or AWSIOT_TUNNEL_CLIENT_TOKEN") {
    auto o = parse({"-r", "us-east-1", "-s", "5000", "-i", kClientToken});
    CHECK(o.config.client_token == kClientToken);
    CHECK(any_warning_contains(o, "AWSIOT_TUNNEL_CLIENT_TOKEN"));

    EnvMap env = kTokenEnv;
    env["AWSIOT_TUNNEL_CLIENT_TOKEN"] = kClientToken;
    o = parse({"-r", "us-east-1", "-s", "5000"}, env);
    CHECK(o.config.client_token == kClientToken);
    CHECK(o.warnings.empty());

    const std::string bad = "short-SECRET-client";
    const auto e = usage_error({"-r", "us-east-1", "-s", "5000", "--client-token", bad});
    CHECK(contains(e, "client token"));
    CHECK_FALSE(contains(e, bad));
    CHECK_FALSE(contains(
        usage_error({"-r", "us-east-1", "-s", "5000", "-i", std::string(kClientToken) + "_"}),
        kClientToken));
  }

  TEST_CASE("-h, -V") {
    CHECK(parse({"-h"}, {}).action == Action::help);
    CHECK(parse({"--help"}, {}).action == Action::help);
    CHECK(parse({"-V"}, {}).action == Action::version);
    CHECK(parse({"--version"}, {}).action == Action::version);
    // Help wins over whatever else is wrong on the line.
    CHECK(parse({"--bogus", "-s", "5000", "-d", "22", "-h"}, {}).action == Action::help);
    CHECK(parse({"-h", "-t"}, {}).action == Action::help);
    CHECK(contains(tunnel::localproxy::version_text(), "localproxy"));
  }

  TEST_CASE("the help text lists every option") {
    const auto help = tunnel::localproxy::help_text();
    for (const char* name :
         {"--help", "--version", "--access-token", "--client-token", "--proxy-endpoint", "--region",
          "--source-listen-port", "--destination-app", "--mode", "--local-bind-address", "--capath",
          "--cafile", "--no-ssl-host-verify", "--destination-client-type", "--verbose", "--config",
          "--settings-json", "--export-default-settings", "AWSIOT_TUNNEL_ACCESS_TOKEN"}) {
      CHECK_MESSAGE(contains(help, name), name);
    }
  }

  TEST_CASE("-y is accepted and stored") {
    CHECK(parse({"-r", "us-east-1", "-s", "5000", "-y", "V1"}).destination_client_type == "V1");
    CHECK(parse({"-r", "us-east-1", "-s", "5000", "--destination-client-type", "v2"})
              .destination_client_type == "V2");
    auto o = parse({"-r", "us-east-1", "-s", "5000", "-y", "V9"});
    CHECK(o.destination_client_type.empty());
    CHECK(any_warning_contains(o, "V3"));
    o = parse({"-r", "us-east-1", "-d", "22", "-y", "V1"});
    CHECK(any_warning_contains(o, "source mode"));
  }

  TEST_CASE("-k turns off host verification, with a warning") {
    for (const char* flag : {"-k", "--no-ssl-host-verify"}) {
      const auto o = parse({"-r", "us-east-1", "-s", "5000", flag});
      CHECK_FALSE(o.config.verify_tls);
      CHECK(any_warning_contains(o, "production"));
    }
  }

  TEST_CASE("-c and --cafile must exist") {
    TempDir dir;
    TempFile bundle("-----BEGIN CERTIFICATE-----\n");
    auto o = parse({"-r", "us-east-1", "-s", "5000", "-c", dir.path(), "--cafile", bundle.path()});
    CHECK(o.config.capath == dir.path());
    CHECK(o.config.cafile == bundle.path());
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "5000", "-c", bundle.path()}),
                   "not a directory"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "5000", "--cafile", dir.path()}),
                   "--cafile"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "5000", "-c", "/nonexistent/certs"}),
                   "/nonexistent/certs"));
  }

  TEST_CASE("-v: 0..255, above 6 is trace") {
    CHECK(parse({"-r", "us-east-1", "-s", "1", "-v", "0"}).verbosity == 0);
    CHECK(parse({"-r", "us-east-1", "-s", "1", "-v", "5"}).verbosity == 5);
    CHECK(parse({"-r", "us-east-1", "-s", "1", "--verbose", "6"}).verbosity == 6);
    CHECK(parse({"-r", "us-east-1", "-s", "1", "-v", "255"}).verbosity == 6);
    for (const char* bad : {"256", "-1", "abc", "4x", "1000000000000"}) {
      const auto e = usage_error({"-r", "us-east-1", "-s", "1", "-v", bad});
      CHECK_MESSAGE(contains(e, "-v/--verbose"), bad);
      CHECK_MESSAGE(contains(e, "0..255"), bad);
    }
  }

  TEST_CASE("--export-default-settings needs nothing else") {
    const auto o = parse({"--export-default-settings", "/tmp/out.json"}, {});
    CHECK(o.action == Action::export_settings);
    CHECK(o.export_path == "/tmp/out.json");
    CHECK(o.config.settings == tunnel::Settings{});
    CHECK(nlohmann::json::parse(tunnel::settings_to_json(o.config.settings)).contains("tunneling"));
  }

  TEST_CASE("--settings-json overlays the defaults") {
    TempFile settings(R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"20000"},
        "tcp":{"connection_retry_count":-1}, "unknown":{"x":1}}}})");
    const auto o = parse({"-r", "us-east-1", "-s", "5000", "--settings-json", settings.path()});
    CHECK(o.config.settings.ws_ping_period_ms == 20000);
    CHECK(o.config.settings.tcp_connection_retry_count == -1);
    CHECK(o.config.settings.ws_retry_delay_ms == tunnel::Settings{}.ws_retry_delay_ms);
    // Export with --settings-json writes the merged settings.
    const auto ex =
        parse({"--export-default-settings", "/tmp/x", "--settings-json", settings.path()});
    CHECK(ex.config.settings.ws_ping_period_ms == 20000);
  }

  TEST_CASE("--settings-json errors name the file and the key") {
    TempFile bad_value(R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"soon"}}}})");
    auto e = usage_error({"-r", "us-east-1", "-s", "5000", "--settings-json", bad_value.path()});
    CHECK(contains(e, bad_value.path()));
    CHECK(contains(e, "tunneling.proxy.websocket.ping_period_ms"));

    TempFile bad_json("{\"tunneling\": [\n");
    e = usage_error({"-r", "us-east-1", "-s", "5000", "--settings-json", bad_json.path()});
    CHECK(contains(e, bad_json.path()));
    CHECK(contains(e, "invalid JSON"));

    TempFile bad_range(R"({"tunneling":{"proxy":{"websocket":{"retry_delay_ms":"90000"}}}})");
    e = usage_error({"-r", "us-east-1", "-s", "5000", "--settings-json", bad_range.path()});
    CHECK(contains(e, "retry_max_delay_ms"));

    e = usage_error({"-r", "us-east-1", "-s", "5000", "--settings-json", "/nonexistent/s.json"});
    CHECK(contains(e, "/nonexistent/s.json"));
  }

  TEST_CASE("--settings-json reads a bounded amount") {
    // An endless file (or a huge one) is refused without reading it all.
    auto e = usage_error({"-r", "us-east-1", "-s", "5000", "--settings-json", "/dev/zero"});
    CHECK(contains(e, "/dev/zero"));
    CHECK(contains(e, "larger than 32 KiB"));
    TempFile big(std::string(std::size_t{40} * 1024, ' ') + "{}");
    e = usage_error({"-r", "us-east-1", "-s", "5000", "--settings-json", big.path()});
    CHECK(contains(e, "larger than 32 KiB"));
  }

  TEST_CASE("--config reads long option names, with comments") {
    TempFile cfg(
        "# a comment\n"
        "; another comment\n"
        "\n"
        "   region = us-west-2   \n"
        "source-listen-port=6000 # inline comment\n"
        "local-bind-address = ::1 ; inline comment\n"
        "capath = \"/tmp\"\n"
        "verbose = 5\n"
        "no-ssl-host-verify = true\n"
        "access-token = " +
        std::string(kToken) + "\r\n");
    const auto o = parse({"--config", cfg.path()}, {});
    CHECK(o.config.endpoint.host == "data.tunneling.iot.us-west-2.amazonaws.com");
    CHECK(o.config.local == tunnel::HostPort{"::1", 6000});
    CHECK(o.config.capath == "/tmp");
    CHECK(o.verbosity == 5);
    CHECK_FALSE(o.config.verify_tls);
    CHECK(o.config.access_token == kToken);
    // The token came from a file: no argv warning.
    CHECK_FALSE(any_warning_contains(o, "process listings"));
  }

  TEST_CASE("--config: a '#' inside a value is kept") {
    TempDir dir("/tmp/tunneld-cli#1;certs-");
    TempFile cfg("region = us-east-1\nsource-listen-port = 5000\ncapath = " + dir.path() + "\n");
    CHECK(parse({"--config", cfg.path()}).config.capath == dir.path());
  }

  TEST_CASE("--config file errors name file and line") {
    struct Case {
      std::string content;
      std::string expect;
    };
    const Case cases[] = {
        {"region = us-east-1\nfrobnicate = 1\n", ":2: unknown option 'frobnicate'"},
        {"\n\nregion\n", ":3: expected 'name = value'"},
        {"[section]\nregion = x\n", ":1: sections"},
        {"region = a\nregion = b\n", ":2: 'region' is already set on line 1"},
        {"config = other.ini\n", ":1: 'config' cannot be set"},
        {"help = true\n", ":1: 'help' cannot be set"},
        {"export-default-settings = x\n", ":1: 'export-default-settings' cannot be set"},
        {"region =\n", ":1: 'region' has an empty value"},
        {"no-ssl-host-verify = maybe\n", ":1: 'no-ssl-host-verify' expects true or false"},
        {"--region = us-east-1\n", ":1: unknown option '--region'"},
    };
    for (const auto& c : cases) {
      TempFile cfg(c.content);
      const auto e = usage_error({"--config", cfg.path(), "-s", "5000"});
      CHECK_MESSAGE(contains(e, cfg.path() + c.expect), e);
    }
    const auto e = usage_error({"--config", "/nonexistent/lp.ini"});
    CHECK(contains(e, "/nonexistent/lp.ini"));
  }

  TEST_CASE("a world-readable config file holding the token gets a warning") {
    TempFile cfg("access-token = " + std::string(kToken) + "\n", 0644);
    const auto o = parse({"--config", cfg.path(), "-r", "us-east-1", "-s", "5000"}, {});
    CHECK(any_warning_contains(o, "chmod 600"));
    TempFile private_cfg("access-token = " + std::string(kToken) + "\n", 0600);
    CHECK(parse({"--config", private_cfg.path(), "-r", "us-east-1", "-s", "5000"}, {})
              .warnings.empty());
  }

  TEST_CASE("precedence is command line > config file > environment, per option") {
    TempFile cfg(
        "region = eu-west-1\n"
        "access-token = FILE-TOKEN-0123456789\n"
        "verbose = 2\n");
    const EnvMap env = {{"AWSIOT_TUNNEL_ACCESS_TOKEN", "ENV-TOKEN-0123456789"},
                        {"AWSIOT_TUNNEL_REGION", "ap-south-1"},
                        {"AWSIOT_TUNNEL_CLIENT_TOKEN", kClientToken}};

    // Environment only.
    auto o = parse({"-s", "5000"}, env);
    CHECK(o.config.access_token == "ENV-TOKEN-0123456789");
    CHECK(o.config.endpoint.host == "data.tunneling.iot.ap-south-1.amazonaws.com");

    // The file beats the environment, option by option.
    o = parse({"--config", cfg.path(), "-s", "5000"}, env);
    CHECK(o.config.access_token == "FILE-TOKEN-0123456789");
    CHECK(o.config.endpoint.host == "data.tunneling.iot.eu-west-1.amazonaws.com");
    CHECK(o.verbosity == 2);
    CHECK(o.config.client_token == kClientToken);  // only the environment sets it

    // The command line beats both, for the options it names.
    o = parse({"--config", cfg.path(), "-s", "5000", "-r", "us-east-2", "-v", "6"}, env);
    CHECK(o.config.endpoint.host == "data.tunneling.iot.us-east-2.amazonaws.com");
    CHECK(o.verbosity == 6);
    CHECK(o.config.access_token == "FILE-TOKEN-0123456789");

    o = parse({"--config", cfg.path(), "-s", "5000", "-t", "CLI-TOKEN-0123456789"}, env);
    CHECK(o.config.access_token == "CLI-TOKEN-0123456789");
    CHECK(o.config.endpoint.host == "data.tunneling.iot.eu-west-1.amazonaws.com");

    // The README's composition example: --config plus -t on the line.
    TempFile readme(
        "capath = /tmp\nregion = us-west-2\nlocal-bind-address = ::1\n"
        "source-listen-port = 6000\n");
    o = parse({"--config", readme.path(), "-t", "foobar"}, {});
    CHECK(o.config.capath == "/tmp");
    CHECK(o.config.local == tunnel::HostPort{"::1", 6000});
    CHECK(o.config.access_token == "foobar");
  }

  TEST_CASE("unknown options and stray arguments") {
    CHECK(usage_error({"-r", "us-east-1", "-s", "5000", "--foo"}) ==
          "unknown option --foo; see localproxy --help");
    CHECK(usage_error({"--frob=VALUE", "-s", "1"}) ==
          "unknown option --frob; see localproxy --help");
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "5000", "-x"}), "unknown option -x"));
    CHECK(contains(usage_error({"-r", "us-east-1", "-s", "5000", "stray"}), "unexpected argument"));
  }

  TEST_CASE("options without values, given twice, or empty") {
    CHECK(
        contains(usage_error({"-r", "us-east-1", "-s"}), "-s/--source-listen-port needs a value"));
    CHECK(contains(usage_error({"-t", "-s", "5000", "-r", "us-east-1"}),
                   "-t/--access-token needs a value"));
    CHECK(
        contains(usage_error({"-r", "us-east-1", "-r", "us-east-2", "-s", "1"}), "more than once"));
    CHECK(contains(usage_error({"-r", "", "-s", "1"}), "non-empty"));
  }

  TEST_CASE("no usage error ever repeats a token") {
    TempFile cfg_missing_eq(std::string("access-token ") + kToken + "\n");
    TempFile cfg_unknown(std::string(kToken) + " = 1\n");
    TempFile cfg_dup(std::string("access-token = ") + kToken + "\naccess-token = " + kToken + "\n");
    const std::vector<std::vector<std::string>> lines = {
        {"-t", kToken},
        {"-t", kToken, "-r", "us-east-1"},
        {"-t", kToken, "-s", "5000"},
        {"-t", kToken, "-r", "us-east-1", "-s", "5000", "-d", "22"},
        {"-t", kToken, "-t", kToken, "-r", "us-east-1", "-s", "5000"},
        {"--access-token=" + std::string(kToken), "--bogus"},
        {"-t" + std::string(kToken), "-r", "nope nope", "-s", "1"},
        {"-r", "us-east-1", "-s", "5000", kToken},
        {"-r", "us-east-1", "-s", "5000", "--" + std::string(kToken)},
        {"-r", "us-east-1", "-s", "5000", "-v", kToken, "-t", kToken},
        {"-r", kToken, "-s", "5000", "-t", kToken},
        {"-e", kToken, "-s", "5000", "-t", kToken},
        {"-d", kToken, "-r", "us-east-1", "-t", kToken},
        {"-m", kToken, "-r", "us-east-1", "-t", kToken},
        {"-r", "us-east-1", "-s", "5000", "-i", kToken},
        {"-r", "us-east-1", "-s", "5000", "--client-token=" + std::string(kToken)},
        {"--config", cfg_missing_eq.path(), "-r", "us-east-1", "-s", "5000"},
        {"--config", cfg_unknown.path(), "-r", "us-east-1", "-s", "5000"},
        {"--config", cfg_dup.path(), "-r", "us-east-1", "-s", "5000"},
        {"--config", "/nonexistent/" + std::string(kToken), "-t", kToken},
        {"-r", "us-east-1", "-s", "5000", "-t"},
    };
    for (const auto& args : lines) {
      for (const auto& env : {EnvMap{}, kTokenEnv}) {
        try {
          const auto o = parse(args, env);
          for (const auto& w : o.warnings) {
            CHECK_FALSE(contains(w, kToken));
          }
        } catch (const UsageError& e) {
          const std::string message = e.what();
          CHECK_MESSAGE(!contains(message, kToken), message);
          CHECK_MESSAGE(!contains(message, "TOKEN-SECRET"), message);
          CHECK(message.find('\n') == std::string::npos);
        }
      }
    }
  }
}

TEST_SUITE("client_token") {
  TEST_CASE("generated tokens are UUIDv4-shaped, valid and distinct") {
    std::set<std::string> seen;
    for (int i = 0; i < 200; ++i) {
      const auto t = tunnel::generate_client_token();
      REQUIRE(t.size() == 36);
      CHECK(t[8] == '-');
      CHECK(t[13] == '-');
      CHECK(t[18] == '-');
      CHECK(t[23] == '-');
      CHECK(t[14] == '4');
      CHECK(std::string("89ab").find(t[19]) != std::string::npos);
      CHECK(tunnel::is_valid_client_token(t));
      seen.insert(t);
    }
    CHECK(seen.size() == 200);
  }

  TEST_CASE("client token validation") {
    CHECK(tunnel::is_valid_client_token(std::string(32, 'a')));
    CHECK(tunnel::is_valid_client_token(std::string(128, 'Z')));
    CHECK(tunnel::is_valid_client_token(kClientToken));
    CHECK_FALSE(tunnel::is_valid_client_token(std::string(31, 'a')));
    CHECK_FALSE(tunnel::is_valid_client_token(std::string(129, 'a')));
    CHECK_FALSE(tunnel::is_valid_client_token(std::string(31, 'a') + "_"));
    CHECK_FALSE(tunnel::is_valid_client_token(std::string(31, 'a') + " "));
    CHECK_FALSE(tunnel::is_valid_client_token(""));
  }
}

TEST_SUITE("localproxy_cli https proxy") {
  constexpr const char* kProxyPassword = "pr0xy-Pa55word-9f8e7d6c";

  TEST_CASE("no proxy anywhere: direct") {
    const auto o = parse({"-r", "us-east-1", "-s", "5000"});
    CHECK(!o.config.https_proxy);
    CHECK(o.config.https_proxy_origin.empty());
  }

  TEST_CASE("HTTPS_PROXY applies, with percent-decoded credentials; NO_PROXY bypasses") {
    EnvMap env = kTokenEnv;
    env["HTTPS_PROXY"] = std::string("http://alice:") + kProxyPassword + "%40@proxy.corp:3128";
    auto o = parse({"-r", "us-east-1", "-s", "5000"}, env);
    REQUIRE(o.config.https_proxy);
    CHECK(o.config.https_proxy->display() == "proxy.corp:3128");
    CHECK(o.config.https_proxy->password == std::string(kProxyPassword) + "@");
    CHECK(o.config.https_proxy_origin == "HTTPS_PROXY");
    env["NO_PROXY"] = ".amazonaws.com";
    o = parse({"-r", "us-east-1", "-s", "5000"}, env);
    CHECK(!o.config.https_proxy);
    CHECK(o.config.https_proxy_origin == "NO_PROXY");
    o = parse({"-e", "relay.example.net", "-s", "5000"}, env);
    CHECK(o.config.https_proxy);
  }

  TEST_CASE("--https-proxy beats the settings key, which beats the environment") {
    EnvMap env = kTokenEnv;
    env["HTTPS_PROXY"] = "http://from-env:1";
    env["NO_PROXY"] = "*";  // explicit values are not subject to NO_PROXY
    TempFile settings(R"({"tunneling":{"proxy":{"https_proxy":"http://from-settings:2"}}})");
    auto o = parse({"-r", "us-east-1", "-s", "5000", "--settings-json", settings.path()}, env);
    REQUIRE(o.config.https_proxy);
    CHECK(o.config.https_proxy->display() == "from-settings:2");
    CHECK(contains(o.config.https_proxy_origin, settings.path()));
    o = parse({"-r", "us-east-1", "-s", "5000", "--settings-json", settings.path(), "--https-proxy",
               "http://from-flag:3"},
              env);
    REQUIRE(o.config.https_proxy);
    CHECK(o.config.https_proxy->display() == "from-flag:3");
    CHECK(o.config.https_proxy_origin == "--https-proxy on the command line");
    CHECK(o.warnings.empty());  // no credentials on argv: no warning
    o = parse({"-r", "us-east-1", "-s", "5000", "--https-proxy", "direct"}, env);
    CHECK(!o.config.https_proxy);
    TempFile config("https-proxy = http://from-config:4\n");
    o = parse({"-r", "us-east-1", "-s", "5000", "--config", config.path()}, env);
    REQUIRE(o.config.https_proxy);
    CHECK(o.config.https_proxy->display() == "from-config:4");
  }

  TEST_CASE("credentials on argv work but warn; a world-readable config file warns") {
    const std::string url = std::string("http://bob:") + kProxyPassword + "@proxy:3128";
    const auto o = parse({"-r", "us-east-1", "-s", "5000", "--https-proxy", url});
    REQUIRE(o.config.https_proxy);
    CHECK(o.config.https_proxy->user == "bob");
    CHECK(any_warning_contains(o, "process listings"));
    for (const auto& w : o.warnings) CHECK(!contains(w, kProxyPassword));
    TempFile config("https-proxy = " + url + "\n", 0644);
    const auto c = parse({"-r", "us-east-1", "-s", "5000", "--config", config.path()});
    CHECK(any_warning_contains(c, "proxy credentials"));
    for (const auto& w : c.warnings) CHECK(!contains(w, kProxyPassword));
  }

  TEST_CASE("bad proxy URLs are usage errors naming the origin, never the credentials") {
    const std::string pw = kProxyPassword;
    auto e = usage_error(
        {"-r", "us-east-1", "-s", "5000", "--https-proxy", "https://u:" + pw + "@proxy:3128"});
    CHECK(contains(e, "--https-proxy"));
    CHECK(!contains(e, pw));
    e = usage_error({"-r", "us-east-1", "-s", "5000", "--https-proxy=socks5://u:" + pw + "@p"});
    CHECK(!contains(e, pw));
    EnvMap env = kTokenEnv;
    env["https_proxy"] = "http://u:" + pw + "@proxy:0";
    e = usage_error({"-r", "us-east-1", "-s", "5000"}, env);
    CHECK(contains(e, "https_proxy"));
    CHECK(!contains(e, pw));
    TempFile settings(R"({"tunneling":{"proxy":{"https_proxy":"ftp://u:)" + pw + R"(@p"}}})");
    e = usage_error({"-r", "us-east-1", "-s", "5000", "--settings-json", settings.path()});
    CHECK(contains(e, "tunneling.proxy.https_proxy"));
    CHECK(!contains(e, pw));
  }

  TEST_CASE("--export-default-settings never writes proxy credentials") {
    TempFile settings(std::string(R"({"tunneling":{"proxy":{"https_proxy":"http://u:)") +
                      kProxyPassword + R"(@proxy:3128"}}})");
    const auto o = parse({"--settings-json", settings.path(), "--export-default-settings", "x"});
    REQUIRE(o.action == Action::export_settings);
    const std::string text = tunnel::settings_to_json(o.config.settings);
    CHECK(!contains(text, kProxyPassword));
    CHECK(contains(text, "\"https_proxy\": \"http://proxy:3128\""));
  }

  TEST_CASE("the help text documents --https-proxy") {
    CHECK(contains(tunnel::localproxy::help_text(), "--https-proxy URL"));
  }
}
