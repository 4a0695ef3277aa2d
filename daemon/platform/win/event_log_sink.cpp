#include "event_log_sink.h"

#include <spdlog/pattern_formatter.h>

#include "win_text.h"

namespace tunneld::platform::win {
namespace {

constexpr char kDefaultPattern[] = "[%n] %v";
constexpr wchar_t kApplicationLogKey[] =
    L"SYSTEM\\CurrentControlSet\\Services\\EventLog\\Application\\";

// The longest prefix of `text` of at most `max` bytes that ends on a UTF-8
// character boundary.
std::size_t utf8_cut(std::string_view text, std::size_t max) {
  if (text.size() <= max) return text.size();
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

std::string format_event_text(std::string_view message, std::span<const EventField> fields,
                              std::size_t max_bytes) {
  std::string text(message);
  // spdlog's formatter ends records with a line break; the event does not.
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  for (const auto& [name, value] : fields) {
    text += "\r\n";
    text += name;
    text += '=';
    text += value;
  }
  if (text.size() > max_bytes) {
    constexpr std::string_view kEllipsis = "...";
    const std::size_t keep = max_bytes > kEllipsis.size() ? max_bytes - kEllipsis.size() : 0;
    text.resize(utf8_cut(text, keep));
    text += kEllipsis.substr(0, max_bytes - text.size());
  }
  return text;
}

WORD event_type(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical:
    case spdlog::level::err:
      return EVENTLOG_ERROR_TYPE;
    case spdlog::level::warn:
      return EVENTLOG_WARNING_TYPE;
    default:
      return EVENTLOG_INFORMATION_TYPE;
  }
}

EventLogSink::EventLogSink(EventFieldsSource fields, const wchar_t* source)
    : source_(::RegisterEventSourceW(nullptr, source)), fields_(std::move(fields)) {
  set_formatter_(std::make_unique<spdlog::pattern_formatter>(kDefaultPattern));
}

EventLogSink::~EventLogSink() {
  if (source_ != nullptr) ::DeregisterEventSource(source_);
}

void EventLogSink::set_pattern_(const std::string& pattern) {
  set_formatter_(std::make_unique<spdlog::pattern_formatter>(pattern));
}

void EventLogSink::sink_it_(const spdlog::details::log_msg& msg) {
  if (source_ == nullptr) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  formatted_.clear();
  formatter_->format(msg, formatted_);
  const std::span<const EventField> fields = fields_ ? fields_() : std::span<const EventField>();
  // The limit is in UTF-16 units; one UTF-8 byte never makes more than one.
  const std::wstring text = to_wide(format_event_text(
      std::string_view(formatted_.data(), formatted_.size()), fields, kMaxEventChars));
  const wchar_t* strings[] = {text.c_str()};
  if (!::ReportEventW(source_, event_type(msg.level), 0, kEventIdMessage, nullptr, 1, 0, strings,
                      nullptr)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

std::string register_event_source(const std::wstring& message_file, const wchar_t* source) {
  const std::wstring path = std::wstring(kApplicationLogKey) + source;
  HKEY key = nullptr;
  LSTATUS rc = ::RegCreateKeyExW(HKEY_LOCAL_MACHINE, path.c_str(), 0, nullptr, 0, KEY_SET_VALUE,
                                 nullptr, &key, nullptr);
  if (rc != ERROR_SUCCESS) {
    return "cannot create the event source " + to_utf8(path) + ": " +
           error_text(static_cast<DWORD>(rc));
  }
  const DWORD types = EVENTLOG_ERROR_TYPE | EVENTLOG_WARNING_TYPE | EVENTLOG_INFORMATION_TYPE;
  rc = ::RegSetValueExW(key, L"EventMessageFile", 0, REG_EXPAND_SZ,
                        reinterpret_cast<const BYTE*>(message_file.c_str()),
                        static_cast<DWORD>((message_file.size() + 1) * sizeof(wchar_t)));
  if (rc == ERROR_SUCCESS) {
    rc = ::RegSetValueExW(key, L"TypesSupported", 0, REG_DWORD,
                          reinterpret_cast<const BYTE*>(&types), sizeof types);
  }
  ::RegCloseKey(key);
  if (rc != ERROR_SUCCESS) {
    return "cannot write the event source " + to_utf8(path) + ": " +
           error_text(static_cast<DWORD>(rc));
  }
  return {};
}

std::string deregister_event_source(const wchar_t* source) {
  const std::wstring path = std::wstring(kApplicationLogKey) + source;
  const LSTATUS rc = ::RegDeleteKeyW(HKEY_LOCAL_MACHINE, path.c_str());
  if (rc != ERROR_SUCCESS && rc != ERROR_FILE_NOT_FOUND) {
    return "cannot remove the event source " + to_utf8(path) + ": " +
           error_text(static_cast<DWORD>(rc));
  }
  return {};
}

}  // namespace tunneld::platform::win
