// Logging to the Windows Event Log: the counterpart of the journald sink.
//
// Each record becomes one event of source "tunneld" in the Application log,
// of type error, warning or information by level. The event carries one
// string: the formatted record ("[session web] connected") followed by the
// record's structured fields, one "NAME=value" per line, the same fields the
// journald sink sends (TUNNEL_SESSION_ID, TUNNEL_MODE, ...), so that
// `Get-WinEvent` filters can match them as `journalctl` matches fields.
//
// The message text needs the source registered with a message file whose
// message 1 is "%1" (tunneld_events.mc, linked into tunneld.exe as a
// resource; register_event_source() writes the registry entry). Without it,
// Event Viewer still shows the string, after a "description cannot be found"
// note. Under Wine, events go to Wine's debug channel "eventlog"
// (WINEDEBUG=trace+eventlog,warn+eventlog,err+eventlog shows them on stderr).
// Windows only, except the pure helpers.
#pragma once

#include <windows.h>

#include <spdlog/sinks/base_sink.h>
#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace tunneld::platform::win {

inline constexpr wchar_t kEventSource[] = L"tunneld";
// Message 1 of tunneld_events.mc: "%1", the whole text.
inline constexpr DWORD kEventIdMessage = 1;
// ReportEventW takes at most 31,839 characters per string.
inline constexpr std::size_t kMaxEventChars = 31'839;

using EventField = std::pair<std::string, std::string>;
// The structured fields of the record being written: the journald sink's
// current_log_fields().
using EventFieldsSource = std::function<std::span<const EventField>()>;

// Pure: the event text, `message` then "\r\nNAME=value" per field, cut to
// `max_bytes` at a UTF-8 character boundary with "..." when longer.
std::string format_event_text(std::string_view message, std::span<const EventField> fields,
                              std::size_t max_bytes = kMaxEventChars);

// Pure: EVENTLOG_ERROR_TYPE for error and critical, EVENTLOG_WARNING_TYPE for
// warn, EVENTLOG_INFORMATION_TYPE otherwise.
WORD event_type(spdlog::level::level_enum level);

class EventLogSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit EventLogSink(EventFieldsSource fields = {}, const wchar_t* source = kEventSource);
  ~EventLogSink() override;
  EventLogSink(const EventLogSink&) = delete;
  EventLogSink& operator=(const EventLogSink&) = delete;

  // Records the Event Log did not take (source not openable, log full).
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}
  void set_pattern_(const std::string& pattern) override;

 private:
  HANDLE source_ = nullptr;
  EventFieldsSource fields_;
  spdlog::memory_buf_t formatted_;
  std::atomic<std::uint64_t> dropped_{0};
};

// Writes HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\tunneld
// with EventMessageFile = `message_file` (tunneld.exe, which carries the
// message table) and TypesSupported = error | warning | information.
// Needs Administrators. Returns an empty string on success, else a problem.
std::string register_event_source(const std::wstring& message_file,
                                  const wchar_t* source = kEventSource);
// Removes that key; succeeds when it is already gone.
std::string deregister_event_source(const wchar_t* source = kEventSource);

}  // namespace tunneld::platform::win
