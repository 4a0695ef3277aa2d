// tunneld: the tunnel daemon. Runs in the foreground, as systemd runs it.
#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "config.h"
#include "core_dumps.h"
#include "daemon.h"
#include "journal_log.h"
#include "logging.h"
#include "process_limits.h"

namespace {

int run(int argc, char** argv) {
  const tunnel::CoreDumps dumps = tunnel::keep_secrets_out_of_core_dumps();
  CLI::App app{"tunneld: hosts secure tunnel sessions, controlled with tunnelctl"};
  std::string config_path;
  std::string socket_path;
  std::string state_dir;
  std::string log_target = "auto";
  std::string log_level;
  bool version = false;
  app.add_option(
      "--config", config_path,
      "configuration file (default " + std::string(tunneld::kDefaultConfigPath) + ", optional)");
  app.add_option("--socket", socket_path, "control socket path (overrides the config)");
  app.add_option("--state-dir", state_dir, "state directory (overrides the config)");
  app.add_option("--log", log_target, "where logs go: auto, stderr or journal")
      ->check(CLI::IsMember({"auto", "stderr", "journal"}));
  app.add_option("--log-level", log_level,
                 "trace, debug, info, warn, error, critical or off (overrides the config)");
  app.add_flag("-V,--version", version, "print the version and exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (version) {
    std::printf("tunneld %s\n", TUNNELD_VERSION);
    return 0;
  }

  tunneld::Config config;
  std::string reload_path = config_path;
  try {
    if (!config_path.empty()) {
      config = tunneld::load_config(config_path);
    } else {
      struct stat st {};
      const std::string def(tunneld::kDefaultConfigPath);
      if (::stat(def.c_str(), &st) == 0) {
        config = tunneld::load_config(def);
        reload_path = def;
      }
    }
  } catch (const tunneld::ConfigError& e) {
    std::fprintf(stderr, "tunneld: %s\n", e.what());
    return 1;
  }
  const tunneld::Daemon::Overrides overrides{socket_path, state_dir, log_level};
  tunneld::Daemon::apply(overrides, config);

  namespace platform = tunneld::platform;
  auto requested = *platform::parse_log_target(log_target);
  if (log_target == "auto") {
    switch (config.log.target) {
      case tunneld::LogTarget::journal:
        requested = platform::LogTarget::journal;
        break;
      case tunneld::LogTarget::stderr_stream:
        requested = platform::LogTarget::stderr_stream;
        break;
      case tunneld::LogTarget::automatic:
        break;
    }
  }
  if (platform::resolve_log_target(requested) == platform::LogTarget::journal) {
    tunnel::logging::set_sinks({std::make_shared<platform::JournalSink>("tunneld")});
  }
  const auto level = spdlog::level::from_str(config.log.level);
  tunnel::logging::set_level(level);
  if (reload_path.empty()) {
    tunnel::logging::get("tunneld")->info("no configuration file ({}): using defaults",
                                          tunneld::kDefaultConfigPath);
  }
  tunnel::logging::get("tunneld")->debug("file descriptor limit: {}", tunnel::raise_fd_limit());
  if (dumps != tunnel::CoreDumps::disabled) {
    tunnel::logging::get("tunneld")->warn(
        "core dumps are on ({}): a core of tunneld holds the sessions' tokens and proxy passwords",
        dumps == tunnel::CoreDumps::allowed_by_variable ? "TUNNELD_ALLOW_CORE_DUMPS=1"
                                                        : "prctl(PR_SET_DUMPABLE) failed");
  }
  tunneld::Daemon daemon(std::move(config), reload_path, overrides);
  return daemon.run();
}

}  // namespace

int main(int argc, char** argv) {
  // What escapes run() (e.g. std::bad_alloc, a failure to create the loop)
  // ends the process with a message and status 1 for systemd to act on,
  // not with std::terminate's abort and core dump.
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tunneld: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "tunneld: unknown exception\n");
  }
  return 1;
}
