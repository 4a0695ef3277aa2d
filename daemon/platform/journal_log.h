// Logging to journald with structured fields.
//
// Choosing the target: `--log journal|stderr`, or automatically journald when
// systemd connected stderr to it (JOURNAL_STREAM). Sending: JournalSink, an
// spdlog sink speaking journald's native protocol
// (https://systemd.io/JOURNAL_NATIVE_PROTOCOL/) to a socket path that tests
// can replace. Fields: a logger made by make_field_logger() carries fields
// (session id and name, mode, endpoint, channel id) that JournalSink adds to
// every record logged through it:
//
//   auto log = make_field_logger(session_base, "session " + name,
//                                {{kFieldSessionId, id}, {kFieldSessionName, name},
//                                 {kFieldMode, "source"}, {kFieldEndpoint, endpoint}});
//   log->info("connected");  // MESSAGE=[session web] connected, TUNNEL_SESSION_ID=...
//   auto channel = make_field_logger(log, log->name(), {{kFieldChannelId, "3"}});
//
// A field logger works with any sink; sinks that know nothing of fields (the
// stderr sink) print the logger name, which names the session.
#pragma once

#include <unistd.h>

#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tunneld::platform {

// ---- Where logs go ----------------------------------------------------------

enum class LogTarget { automatic, stderr_stream, journal };

// "auto", "stderr" or "journal" (the values of --log and of the config key).
std::optional<LogTarget> parse_log_target(std::string_view text);

// True when the environment variable JOURNAL_STREAM ("<st_dev>:<st_ino>")
// names the file open on `fd`: systemd connected it to journald, so output
// there would land in the journal as unstructured text.
bool is_journal_stream(int fd = STDERR_FILENO);

// automatic becomes journal when stderr is a journal stream, else
// stderr_stream (always stderr_stream when built with -Dsystemd=disabled).
// An explicit choice is returned unchanged.
LogTarget resolve_log_target(LogTarget requested);

// ---- Fields -----------------------------------------------------------------

using LogField = std::pair<std::string, std::string>;
using LogFields = std::vector<LogField>;

inline constexpr char kFieldSessionId[] = "TUNNEL_SESSION_ID";
inline constexpr char kFieldSessionName[] = "TUNNEL_SESSION_NAME";
inline constexpr char kFieldMode[] = "TUNNEL_MODE";  // "source" or "destination"
inline constexpr char kFieldEndpoint[] = "TUNNEL_ENDPOINT";
inline constexpr char kFieldChannelId[] = "TUNNEL_CHANNEL_ID";
// Added by JournalSink to every record: the spdlog logger's name.
inline constexpr char kFieldLogger[] = "TUNNEL_LOGGER";

// journald's rule for field names a client may send: 1-64 characters of A-Z,
// 0-9 and '_', not starting with a digit or '_' (those are trusted fields).
bool is_valid_journal_field_name(std::string_view name);

// A logger that carries journal fields. Records logged through it reach its
// sinks (shared with the logger it was made from) with current_log_fields()
// returning the fields. Synchronous loggers only: the fields are visible to
// sinks only while the logging call runs on the caller's thread.
class FieldLogger : public spdlog::logger {
 public:
  // Throws std::invalid_argument when a field name is not a valid journal
  // field name (a programming error, caught at start-up).
  FieldLogger(std::string name, std::vector<spdlog::sink_ptr> sinks, LogFields fields);

  const LogFields& fields() const { return fields_; }
  // Adds a field or replaces its value; an empty value removes it. Call it
  // from the thread that logs through this logger (the loop's): records
  // read the fields while they are written. Throws std::invalid_argument for
  // an invalid name, like the constructor.
  void set_field(std::string_view name, std::string value);
  std::shared_ptr<spdlog::logger> clone(std::string logger_name) override;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;

 private:
  LogFields fields_;
};

// A FieldLogger named `name` logging to base's sinks at base's level and
// flush level. When base is a FieldLogger its fields are inherited; `fields`
// add to them and replace those of the same name (session -> channel).
std::shared_ptr<FieldLogger> make_field_logger(const std::shared_ptr<spdlog::logger>& base,
                                               std::string name, LogFields fields);

// The fields of the FieldLogger whose record is being written on this thread;
// empty for records from any other logger. For sinks.
std::span<const LogField> current_log_fields();

// ---- journald ---------------------------------------------------------------

inline constexpr const char* kJournalSocketPath = "/run/systemd/journal/socket";

// Appends one field in the native protocol: "NAME=value\n", or, when the
// value contains a newline, "NAME\n" + 64-bit little-endian length + value +
// "\n".
void append_journal_field(std::string& entry, std::string_view name, std::string_view value);

// syslog(3) priority for an spdlog level (trace and debug -> 7 ... critical -> 2).
int journal_priority(spdlog::level::level_enum level);

// Sends every record as one journal entry with MESSAGE (the formatted record,
// pattern "[%n] %v" by default, no time stamp: journald keeps its own),
// PRIORITY, SYSLOG_IDENTIFIER, TUNNEL_LOGGER, CODE_FILE/CODE_LINE/CODE_FUNC
// when the record has a source location, and current_log_fields().
//
// Never blocks the event loop: an entry journald cannot take right now is
// dropped and counted. Entries too large for a datagram go through a sealed
// memfd, as sd_journal_sendv() does. No journald (socket missing) means
// records are dropped silently, like the libsystemd client.
class JournalSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JournalSink(std::string syslog_identifier = "tunneld",
                       std::string socket_path = kJournalSocketPath);
  ~JournalSink() override;
  JournalSink(const JournalSink&) = delete;
  JournalSink& operator=(const JournalSink&) = delete;

  // Entries lost because journald was missing, busy or refused them.
  std::uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override;
  void flush_() override {}
  void set_pattern_(const std::string& pattern) override;

 private:
  bool send_entry();

  std::string identifier_;
  std::string socket_path_;
  int fd_ = -1;
  std::string entry_;  // reused across records
  spdlog::memory_buf_t formatted_;
  std::atomic<std::uint64_t> dropped_{0};
};

}  // namespace tunneld::platform
