#include <doctest/doctest.h>
#include <spdlog/logger.h>

#include <memory>
#include <string>
#include <vector>

#include "event_log_sink.h"

namespace win = tunneld::platform::win;

TEST_CASE("event text: the message, then one NAME=value line per field") {
  const std::vector<win::EventField> fields{{"TUNNEL_SESSION_ID", "7"}, {"TUNNEL_MODE", "source"}};
  CHECK(win::format_event_text("[session web] connected\n", fields) ==
        "[session web] connected\r\nTUNNEL_SESSION_ID=7\r\nTUNNEL_MODE=source");
  CHECK(win::format_event_text("plain", {}) == "plain");
}

TEST_CASE("event text: cut at the limit on a character boundary") {
  // "é" is two bytes: a cut inside it must back off to the character start.
  const std::string text = std::string(8, 'a') + "\xc3\xa9" + std::string(20, 'b');
  const std::string cut = win::format_event_text(text, {}, 12);
  CHECK(cut.size() <= 12);
  CHECK(cut == std::string(8, 'a') + "...");
  CHECK(win::format_event_text(std::string(100, 'x'), {}, 10) == std::string(7, 'x') + "...");
  CHECK(win::format_event_text(std::string(100, 'x'), {}, 2).size() <= 2);
}

TEST_CASE("event types follow the level") {
  CHECK(win::event_type(spdlog::level::critical) == EVENTLOG_ERROR_TYPE);
  CHECK(win::event_type(spdlog::level::err) == EVENTLOG_ERROR_TYPE);
  CHECK(win::event_type(spdlog::level::warn) == EVENTLOG_WARNING_TYPE);
  CHECK(win::event_type(spdlog::level::info) == EVENTLOG_INFORMATION_TYPE);
  CHECK(win::event_type(spdlog::level::debug) == EVENTLOG_INFORMATION_TYPE);
}

TEST_CASE("event log sink: records reach the Event Log with their fields") {
  const std::vector<win::EventField> fields{{"TUNNEL_SESSION_NAME", "web"}};
  int asked = 0;
  auto sink = std::make_shared<win::EventLogSink>([&]() -> std::span<const win::EventField> {
    ++asked;
    return fields;
  });
  spdlog::logger log("session web", sink);
  log.info("connected to {}", "relay");
  log.warn("reconnecting");
  log.error("closed: {}", "gone");
  CHECK(asked == 3);
  CHECK(sink->dropped() == 0);
}
