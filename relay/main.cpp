// tunnel-relay: the tunneling service side, for tests, benchmarks and demos.
// See docs/relay.md. This file only turns the command line into a RelayConfig.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "core_dumps.h"
#include "process_limits.h"
#include "relay.h"
#include "relay_config.h"
#include "text.h"

namespace {

int run(int argc, char** argv) {
  const tunnel::CoreDumps dumps = tunnel::keep_secrets_out_of_core_dumps();
  CLI::App app{"tunnel-relay: pairs the source and destination ends of secure tunnels"};
  std::string listen;
  std::string admin;
  std::string subprotocols;
  std::string level = "info";
  std::vector<std::string> tunnels;
  relay::RelayConfig config;

  app.add_option("--listen", listen, "HOST:PORT for the WebSocket endpoint (port 0: any)")
      ->required();
  app.add_option("--tls-cert", config.tls_cert, "PEM certificate chain (wss)")
      ->check(CLI::ExistingFile);
  app.add_option("--tls-key", config.tls_key, "PEM private key (wss)")->check(CLI::ExistingFile);
  app.add_option("--tunnel", tunnels, "SRC_TOKEN:DST_TOKEN[:svc1,svc2] (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--admin", admin,
                 "HOST:PORT for the admin HTTP API (other than loopback: with --admin-token-file "
                 "and --admin-tls)");
  std::string admin_token_file;
  app.add_option("--admin-token-file", admin_token_file,
                 "file (mode 0600) holding the bearer token the admin API then requires");
  app.add_flag("--admin-tls", config.admin_tls,
               "serve the admin API over TLS with --tls-cert and --tls-key");
  app.add_option("--admin-host", config.admin_hosts,
                 "a name the admin API answers to in Host besides its address (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--subprotocols", subprotocols,
                 "accepted subprotocols, e.g. 1.0,2.0,3.0 (default: all three)");
  std::string notify_broker;
  app.add_option("--notify-broker", notify_broker,
                 "HOST:PORT (loopback) of an MQTT broker (TLS) to publish tunnel notifications to");
  app.add_option("--notify-cafile", config.notify_cafile, "CA of the notify broker (PEM)")
      ->check(CLI::ExistingFile);
  app.add_option("--notify-cert", config.notify_cert, "client certificate for the notify broker")
      ->check(CLI::ExistingFile);
  app.add_option("--notify-key", config.notify_key, "its key (PEM)")->check(CLI::ExistingFile);
  app.add_option("--notify-region", config.notify_region,
                 "region written into notifications (default us-east-1)");
  app.add_option("--max-open-tunnels", config.registry_limits.max_open,
                 "open tunnels at most; POST /tunnels answers 503 beyond (default 10000)")
      ->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}));
  app.add_option("--keep-closed-tunnels", config.registry_limits.max_closed,
                 "closed tunnels remembered (their tokens get 410, older ones 401; default 1000)")
      ->check(CLI::Range(std::size_t{0}, std::size_t{1'000'000}));
  app.add_option("-v,--verbosity", level, "trace|debug|info|warn|error|off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "off"}));
  app.set_version_flag("--version", std::string("tunnel-relay ") + TUNNELD_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // Usage errors exit 2 (docs/relay.md), not CLI11's own codes (105, 106...).
    std::fprintf(stderr, "tunnel-relay: %s (try --help)\n", e.what());
    return 2;
  }

  const auto usage_error = [](const std::string& what, const std::string& why) {
    std::fprintf(stderr, "tunnel-relay: %s: %s\n", what.c_str(), why.c_str());
    return 2;
  };
  std::string error;
  const auto listen_at = relay::parse_host_port(listen, error);
  if (!listen_at) return usage_error("--listen " + listen, error);
  config.listen = *listen_at;
  if (!admin.empty()) {
    config.admin = relay::parse_host_port(admin, error);
    if (!config.admin) return usage_error("--admin " + admin, error);
  }
  if (!admin_token_file.empty()) {
    auto token = relay::load_admin_token(admin_token_file, error);
    if (!token) return usage_error("--admin-token-file " + admin_token_file, error);
    config.admin_token = std::move(*token);
  }
  for (std::string& name : config.admin_hosts) name = tunnel::text::lower(name);
  if (!notify_broker.empty()) {
    config.notify_broker = relay::parse_host_port(notify_broker, error);
    if (!config.notify_broker) return usage_error("--notify-broker " + notify_broker, error);
  }
  for (const std::string& t : tunnels) {
    auto spec = relay::parse_tunnel_spec(t, error);
    // The value holds secrets: name the option, not its text.
    if (!spec) return usage_error("--tunnel", error);
    config.tunnels.push_back(std::move(*spec));
  }
  if (!subprotocols.empty()) {
    auto list = relay::parse_subprotocols(subprotocols, error);
    if (!list) return usage_error("--subprotocols", error);
    config.subprotocols = std::move(*list);
  }
  if (!config.validate(error)) return usage_error("configuration", error);
  relay::setup_logging(level);
  if (dumps == tunnel::CoreDumps::allowed_by_variable)
    spdlog::get("relay")->warn("TUNNELD_ALLOW_CORE_DUMPS=1: a core of the relay holds every token");
  return relay::run_relay(config);
}

}  // namespace

int main(int argc, char** argv) {
  // A peer that vanishes mid-write must be an EPIPE for the connection that
  // wrote, not a signal that kills the relay and every tunnel it carries
  // (OpenSSL writes to the socket with write(2), without MSG_NOSIGNAL).
  std::signal(SIGPIPE, SIG_IGN);
  tunnel::raise_fd_limit();  // one fd per connected end: many tunnels need more than 1024
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tunnel-relay: %s\n", e.what());
    return 1;
  }
}
