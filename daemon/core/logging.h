// Named spdlog loggers per subsystem ("session", "ws", "tcp", "relay", ...)
// sharing one set of sinks. Front ends choose the sinks (stderr, journald) and
// the level; library code only asks for a logger by name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

namespace tunnel::logging {

// The logger for a subsystem, created on first use with the current sinks/level.
std::shared_ptr<spdlog::logger> get(const std::string& subsystem);

// A stderr sink with the project's pattern (time, level, [subsystem], text).
spdlog::sink_ptr make_stderr_sink();

// Replaces the sinks of every existing and future logger. Each sink keeps its
// own pattern (journald wants no time stamp).
void set_sinks(std::vector<spdlog::sink_ptr> sinks);

// The reference CLI's -v scale: 0 off, 1 fatal, 2 error, 3 warning, 4 info,
// 5 debug, 6..255 trace.
spdlog::level::level_enum level_from_verbosity(int verbosity);
void set_level(spdlog::level::level_enum level);
spdlog::level::level_enum level();

// Routes protobuf's own log lines into the "protobuf" logger.
void route_library_logs();

}  // namespace tunnel::logging
