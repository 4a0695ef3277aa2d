// tunnel-relay as a process: the loop, the signals, the WebSocket server, the
// optional admin API and the ready line. main.cpp only parses the command line.
#pragma once

#include <string_view>

#include "relay_config.h"

namespace relay {

// Named loggers ("relay", "admin") on stderr at `level` (spdlog level
// name); false for an unknown level.
bool setup_logging(std::string_view level);

// Serves until SIGTERM/SIGINT. Returns the process exit code: 0 after a clean
// shutdown, 1 when the relay could not start.
int run_relay(const RelayConfig& config);

}  // namespace relay
