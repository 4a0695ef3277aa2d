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

TEST_CASE("the message table: event 1 shows the event's own text") {
  // The test program links tunneld_events.mc as tunneld.exe does; Event
  // Viewer formats an event with it as below.
  const std::wstring event = L"[session web] connected\r\nTUNNEL_MODE=source";
  DWORD_PTR args[] = {reinterpret_cast<DWORD_PTR>(event.c_str())};
  wchar_t* text = nullptr;
  const DWORD n = ::FormatMessageW(
      FORMAT_MESSAGE_FROM_HMODULE | FORMAT_MESSAGE_ALLOCATE_BUFFER | FORMAT_MESSAGE_ARGUMENT_ARRAY,
      ::GetModuleHandleW(nullptr), win::kEventIdMessage,
      MAKELANGID(LANG_ENGLISH, SUBLANG_ENGLISH_US), reinterpret_cast<wchar_t*>(&text), 0,
      reinterpret_cast<va_list*>(args));
  REQUIRE(n > 0);
  std::wstring shown(text, n);
  ::LocalFree(text);
  while (!shown.empty() && (shown.back() == L'\n' || shown.back() == L'\r')) shown.pop_back();
  CHECK(shown == event);
}
