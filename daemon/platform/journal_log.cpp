#include "journal_log.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/pattern_formatter.h>
#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <stdexcept>

#include "unix_datagram.h"

#ifndef TUNNELD_WITH_SYSTEMD
#define TUNNELD_WITH_SYSTEMD 1
#endif

namespace tunneld::platform {

// ---- Where logs go ----------------------------------------------------------

std::optional<LogTarget> parse_log_target(std::string_view text) {
  if (text == "auto") return LogTarget::automatic;
  if (text == "stderr") return LogTarget::stderr_stream;
  if (text == "journal") return LogTarget::journal;
  return std::nullopt;
}

bool is_journal_stream(int fd) {
  const char* value = std::getenv("JOURNAL_STREAM");
  if (value == nullptr) return false;
  std::string_view text(value);
  auto colon = text.find(':');
  if (colon == std::string_view::npos) return false;
  auto parse = [](std::string_view digits, std::uint64_t& out) {
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
    return ec == std::errc() && end == digits.data() + digits.size() && !digits.empty();
  };
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  if (!parse(text.substr(0, colon), device) || !parse(text.substr(colon + 1), inode)) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return false;
  return static_cast<std::uint64_t>(st.st_dev) == device &&
         static_cast<std::uint64_t>(st.st_ino) == inode;
}

LogTarget resolve_log_target(LogTarget requested) {
  if (requested != LogTarget::automatic) return requested;
  return TUNNELD_WITH_SYSTEMD && is_journal_stream(STDERR_FILENO) ? LogTarget::journal
                                                                  : LogTarget::stderr_stream;
}

// ---- Fields -----------------------------------------------------------------

namespace {
// Set by FieldLogger::sink_it_ for the duration of one record.
thread_local const LogFields* t_current_fields = nullptr;
}  // namespace

bool is_valid_journal_field_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (name.front() == '_' || (name.front() >= '0' && name.front() <= '9')) return false;
  for (char c : name) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
    if (!ok) return false;
  }
  return true;
}

FieldLogger::FieldLogger(std::string name, std::vector<spdlog::sink_ptr> sinks, LogFields fields)
    : spdlog::logger(std::move(name), sinks.begin(), sinks.end()), fields_(std::move(fields)) {
  for (const auto& field : fields_) {
    if (!is_valid_journal_field_name(field.first)) {
      throw std::invalid_argument("invalid journal field name: '" + field.first + "'");
    }
  }
}

void FieldLogger::set_field(std::string_view name, std::string value) {
  if (!is_valid_journal_field_name(name)) {
    throw std::invalid_argument("invalid journal field name: '" + std::string(name) + "'");
  }
  const auto same = std::find_if(fields_.begin(), fields_.end(),
                                 [&](const LogField& f) { return f.first == name; });
  if (value.empty()) {
    if (same != fields_.end()) fields_.erase(same);
  } else if (same != fields_.end()) {
    same->second = std::move(value);
  } else {
    fields_.emplace_back(std::string(name), std::move(value));
  }
}

std::shared_ptr<spdlog::logger> FieldLogger::clone(std::string logger_name) {
  auto cloned = std::make_shared<FieldLogger>(*this);
  cloned->name_ = std::move(logger_name);
  return cloned;
}

void FieldLogger::sink_it_(const spdlog::details::log_msg& msg) {
  // Restores the previous value so that a sink logging through another
  // FieldLogger does not clear ours.
  const LogFields* previous = t_current_fields;
  t_current_fields = &fields_;
  struct Restore {
    const LogFields* previous;
    ~Restore() { t_current_fields = previous; }
  } restore{previous};
  spdlog::logger::sink_it_(msg);
}

std::shared_ptr<FieldLogger> make_field_logger(const std::shared_ptr<spdlog::logger>& base,
                                               std::string name, LogFields fields) {
  LogFields merged;
  if (auto* parent = dynamic_cast<const FieldLogger*>(base.get())) merged = parent->fields();
  for (auto& field : fields) {
    auto same = std::find_if(merged.begin(), merged.end(),
                             [&](const LogField& f) { return f.first == field.first; });
    if (same != merged.end()) {
      same->second = std::move(field.second);
    } else {
      merged.push_back(std::move(field));
    }
  }
  auto logger = std::make_shared<FieldLogger>(std::move(name), base->sinks(), std::move(merged));
  logger->set_level(base->level());
  logger->flush_on(base->flush_level());
  return logger;
}

std::span<const LogField> current_log_fields() {
  if (t_current_fields == nullptr) return {};
  return *t_current_fields;
}

// ---- journald ---------------------------------------------------------------

void append_journal_field(std::string& entry, std::string_view name, std::string_view value) {
  entry.append(name);
  if (value.find('\n') == std::string_view::npos) {
    entry.push_back('=');
    entry.append(value);
  } else {
    entry.push_back('\n');
    std::uint64_t size = value.size();
    for (int i = 0; i < 8; ++i) entry.push_back(static_cast<char>((size >> (8 * i)) & 0xff));
    entry.append(value);
  }
  entry.push_back('\n');
}

int journal_priority(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
    case spdlog::level::debug:
      return 7;  // LOG_DEBUG
    case spdlog::level::info:
      return 6;  // LOG_INFO
    case spdlog::level::warn:
      return 4;  // LOG_WARNING
    case spdlog::level::err:
      return 3;  // LOG_ERR
    case spdlog::level::critical:
      return 2;  // LOG_CRIT
    default:
      return 6;
  }
}

namespace {

constexpr const char* kDefaultPattern = "[%n] %v";

std::unique_ptr<spdlog::formatter> make_message_formatter(const std::string& pattern) {
  // No end-of-line: MESSAGE= must not end in a newline.
  return std::make_unique<spdlog::pattern_formatter>(pattern, spdlog::pattern_time_type::local,
                                                     std::string());
}

// Passes `entry` to journald through a sealed memfd: the way of the native
// protocol for entries larger than a datagram. journald accepts only a memfd
// that can no longer change.
std::error_code send_through_memfd(int fd, const UnixAddress& to, std::string_view entry) {
  int memfd = ::memfd_create("tunneld-journal-entry", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (memfd < 0) return {errno, std::system_category()};
  std::error_code result;
  std::size_t written = 0;
  while (written < entry.size()) {
    ssize_t n = ::write(memfd, entry.data() + written, entry.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      result = {errno, std::system_category()};
      break;
    }
    written += static_cast<std::size_t>(n);
  }
  if (!result &&
      ::fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) != 0) {
    result = {errno, std::system_category()};
  }
  if (!result) result = send_unix_datagram(fd, to, {}, memfd);
  ::close(memfd);
  return result;
}

}  // namespace

JournalSink::JournalSink(std::string syslog_identifier, std::string socket_path)
    : spdlog::sinks::base_sink<std::mutex>(make_message_formatter(kDefaultPattern)),
      identifier_(std::move(syslog_identifier)),
      socket_path_(std::move(socket_path)) {}

JournalSink::~JournalSink() {
  if (fd_ >= 0) ::close(fd_);
}

void JournalSink::set_pattern_(const std::string& pattern) {
  formatter_ = make_message_formatter(pattern);
}

void JournalSink::sink_it_(const spdlog::details::log_msg& msg) {
  formatted_.clear();
  formatter_->format(msg, formatted_);
  std::string_view message(formatted_.data(), formatted_.size());
  // A formatter installed through set_formatter() may still end lines.
  while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) {
    message.remove_suffix(1);
  }

  entry_.clear();
  append_journal_field(entry_, "MESSAGE", message);
  char number[24];
  auto priority = std::to_chars(number, number + sizeof(number), journal_priority(msg.level));
  append_journal_field(entry_, "PRIORITY", std::string_view(number, priority.ptr - number));
  append_journal_field(entry_, "SYSLOG_IDENTIFIER", identifier_);
  append_journal_field(entry_, kFieldLogger,
                       std::string_view(msg.logger_name.data(), msg.logger_name.size()));
  if (!msg.source.empty()) {
    append_journal_field(entry_, "CODE_FILE", msg.source.filename);
    auto line = std::to_chars(number, number + sizeof(number), msg.source.line);
    append_journal_field(entry_, "CODE_LINE", std::string_view(number, line.ptr - number));
    if (msg.source.funcname != nullptr) {
      append_journal_field(entry_, "CODE_FUNC", msg.source.funcname);
    }
  }
  for (const auto& [name, value] : current_log_fields()) {
    append_journal_field(entry_, name, value);
  }
  if (!send_entry()) dropped_.fetch_add(1, std::memory_order_relaxed);
}

bool JournalSink::send_entry() {
  auto address = make_unix_address(socket_path_);
  if (!address) return false;
  if (fd_ < 0) {
    fd_ = open_unix_datagram_socket();
    if (fd_ < 0) return false;
  }
  iovec part{entry_.data(), entry_.size()};
  std::error_code result = send_unix_datagram(fd_, *address, {&part, 1});
  if (result == std::errc::message_size || result == std::errc::no_buffer_space) {
    result = send_through_memfd(fd_, *address, entry_);
  }
  // ENOENT/ECONNREFUSED (no journald) and EAGAIN (journald behind) all end
  // here: the record is lost, the event loop is not held up.
  return !result;
}

}  // namespace tunneld::platform
