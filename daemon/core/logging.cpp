#include "logging.h"

#include <google/protobuf/stubs/logging.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

namespace tunnel::logging {

spdlog::sink_ptr make_stderr_sink() {
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l [%n] %v");
  return sink;
}

namespace {

struct Registry {
  std::mutex mu;
  std::vector<spdlog::sink_ptr> sinks{make_stderr_sink()};
  spdlog::level::level_enum level = spdlog::level::info;
  std::vector<std::shared_ptr<spdlog::logger>> loggers;
};

Registry& registry() {
  static Registry r;
  return r;
}

// protobuf complains on stderr about what a hostile peer sent (e.g. invalid
// UTF-8 in a string field); the record is rejected anyway, so this is debug
// detail, and it belongs in our log, not on a daemon's raw stderr.
void protobuf_emit(google::protobuf::LogLevel level, const char* file, int line,
                   const std::string& message) {
  auto log = get("protobuf");
  if (level >= google::protobuf::LOGLEVEL_FATAL) {
    log->critical("{} ({}:{})", message, file, line);
  } else {
    log->debug("{}", message);
  }
}

}  // namespace

std::shared_ptr<spdlog::logger> get(const std::string& subsystem) {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  for (auto& l : r.loggers) {
    if (l->name() == subsystem) return l;
  }
  auto l = std::make_shared<spdlog::logger>(subsystem, r.sinks.begin(), r.sinks.end());
  l->set_level(r.level);
  r.loggers.push_back(l);
  return l;
}

void set_sinks(std::vector<spdlog::sink_ptr> sinks) {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  r.sinks = std::move(sinks);
  for (auto& l : r.loggers) l->sinks() = r.sinks;
}

spdlog::level::level_enum level_from_verbosity(int v) {
  if (v <= 0) return spdlog::level::off;
  switch (v) {
    case 1:
      return spdlog::level::critical;
    case 2:
      return spdlog::level::err;
    case 3:
      return spdlog::level::warn;
    case 4:
      return spdlog::level::info;
    case 5:
      return spdlog::level::debug;
    default:
      return spdlog::level::trace;
  }
}

void set_level(spdlog::level::level_enum level) {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  r.level = level;
  for (auto& l : r.loggers) l->set_level(level);
}

spdlog::level::level_enum level() {
  auto& r = registry();
  std::lock_guard lock(r.mu);
  return r.level;
}

void route_library_logs() { google::protobuf::SetLogHandler(protobuf_emit); }

}  // namespace tunnel::logging
