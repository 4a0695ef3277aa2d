#include <doctest/doctest.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <spdlog/logger.h>
#include <spdlog/sinks/base_sink.h>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "journal_log.h"
#include "unix_datagram_receiver.h"

using namespace tunneld::platform;
using tunneld::test::UnixDatagramReceiver;

namespace {

using Entry = std::multimap<std::string, std::string>;

// Parses one entry of journald's native protocol: "NAME=value\n", or
// "NAME\n" + 64-bit little-endian length + value + "\n".
Entry parse_native(const std::string& data) {
  Entry entry;
  std::size_t at = 0;
  while (at < data.size()) {
    std::size_t end = data.find_first_of("=\n", at);
    REQUIRE(end != std::string::npos);
    std::string name = data.substr(at, end - at);
    if (data[end] == '=') {
      std::size_t newline = data.find('\n', end);
      REQUIRE(newline != std::string::npos);
      entry.emplace(name, data.substr(end + 1, newline - end - 1));
      at = newline + 1;
    } else {
      REQUIRE(end + 9 <= data.size());
      std::uint64_t size = 0;
      for (int i = 7; i >= 0; --i) {
        size =
            (size << 8) | static_cast<unsigned char>(data[end + 1 + static_cast<std::size_t>(i)]);
      }
      std::size_t value = end + 9;
      REQUIRE(value + size < data.size());
      REQUIRE(data[value + size] == '\n');
      entry.emplace(name, data.substr(value, size));
      at = value + size + 1;
    }
  }
  return entry;
}

std::string field(const Entry& entry, const std::string& name) {
  REQUIRE(entry.count(name) == 1);
  return entry.find(name)->second;
}

// A logger writing to a JournalSink that talks to a fake journal.
struct FakeJournal {
  UnixDatagramReceiver socket{"journal-socket"};
  std::shared_ptr<JournalSink> sink = std::make_shared<JournalSink>("tunneld", socket.path());
  std::shared_ptr<spdlog::logger> log = std::make_shared<spdlog::logger>("session", sink);

  FakeJournal() { log->set_level(spdlog::level::trace); }

  Entry next() {
    auto datagram = socket.receive();
    REQUIRE(datagram.has_value());
    REQUIRE(datagram->fd == -1);
    return parse_native(datagram->data);
  }
};

}  // namespace

TEST_CASE("native protocol: plain and binary-safe fields") {
  std::string entry;
  append_journal_field(entry, "MESSAGE", "hello");
  CHECK(entry == "MESSAGE=hello\n");

  entry.clear();
  append_journal_field(entry, "MESSAGE", "a\nb");
  CHECK(entry == std::string("MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n", 20));
}

TEST_CASE("every record reaches the journal with message, priority and identifier") {
  FakeJournal journal;
  journal.log->info("listening on {}", "127.0.0.1:5555");
  Entry entry = journal.next();
  CHECK(field(entry, "MESSAGE") == "[session] listening on 127.0.0.1:5555");
  CHECK(field(entry, "PRIORITY") == "6");
  CHECK(field(entry, "SYSLOG_IDENTIFIER") == "tunneld");
  CHECK(field(entry, "TUNNEL_LOGGER") == "session");
  CHECK(entry.count("TUNNEL_SESSION_ID") == 0);
  CHECK(entry.count("CODE_FILE") == 0);
  CHECK(journal.sink->dropped() == 0);
}

TEST_CASE("spdlog levels map to syslog priorities") {
  FakeJournal journal;
  const std::pair<spdlog::level::level_enum, const char*> levels[] = {
      {spdlog::level::trace, "7"}, {spdlog::level::debug, "7"}, {spdlog::level::info, "6"},
      {spdlog::level::warn, "4"},  {spdlog::level::err, "3"},   {spdlog::level::critical, "2"},
  };
  for (auto [level, priority] : levels) {
    journal.log->log(level, "x");
    CHECK(field(journal.next(), "PRIORITY") == priority);
  }
}

TEST_CASE("a session logger adds its fields to every record") {
  FakeJournal journal;
  auto session = make_field_logger(journal.log, "session web",
                                   {{kFieldSessionId, "7f3a"},
                                    {kFieldSessionName, "web"},
                                    {kFieldMode, "source"},
                                    {kFieldEndpoint, "wss://relay.example:443"}});
  CHECK(session->level() == spdlog::level::trace);

  session->warn("stream reset by peer\nreconnecting");
  Entry entry = journal.next();
  // A multi-line message travels in the binary-safe form and arrives intact.
  CHECK(field(entry, "MESSAGE") == "[session web] stream reset by peer\nreconnecting");
  CHECK(field(entry, "PRIORITY") == "4");
  CHECK(field(entry, "TUNNEL_LOGGER") == "session web");
  CHECK(field(entry, "TUNNEL_SESSION_ID") == "7f3a");
  CHECK(field(entry, "TUNNEL_SESSION_NAME") == "web");
  CHECK(field(entry, "TUNNEL_MODE") == "source");
  CHECK(field(entry, "TUNNEL_ENDPOINT") == "wss://relay.example:443");

  SUBCASE("a channel logger inherits them and adds the channel id") {
    auto channel = make_field_logger(session, session->name(),
                                     {{kFieldChannelId, "3"}, {kFieldEndpoint, "127.0.0.1:22"}});
    channel->info("connection opened");
    Entry opened = journal.next();
    CHECK(field(opened, "TUNNEL_SESSION_ID") == "7f3a");
    CHECK(field(opened, "TUNNEL_CHANNEL_ID") == "3");
    CHECK(field(opened, "TUNNEL_ENDPOINT") == "127.0.0.1:22");
  }
  SUBCASE("records of other loggers carry none of them") {
    journal.log->info("unrelated");
    CHECK(journal.next().count("TUNNEL_SESSION_ID") == 0);
    CHECK(current_log_fields().empty());
  }
  SUBCASE("a clone keeps the fields") {
    session->clone("session web2")->error("failed");
    Entry failed = journal.next();
    CHECK(field(failed, "TUNNEL_LOGGER") == "session web2");
    CHECK(field(failed, "TUNNEL_SESSION_ID") == "7f3a");
  }
  SUBCASE("set_field: the channel of each connection to the service, as it changes") {
    session->set_field(kFieldChannelId, "c0ffee");
    session->info("connected");
    Entry first = journal.next();
    CHECK(field(first, "TUNNEL_CHANNEL_ID") == "c0ffee");
    CHECK(field(first, "TUNNEL_SESSION_ID") == "7f3a");
    session->set_field(kFieldChannelId, "beef");  // a reconnect: replaced, not repeated
    session->info("connected again");
    Entry second = journal.next();
    CHECK(field(second, "TUNNEL_CHANNEL_ID") == "beef");
    CHECK(session->fields().size() == 5);
    session->set_field(kFieldChannelId, "");  // a service that sends none
    session->info("connected without a channel-id");
    CHECK(journal.next().count("TUNNEL_CHANNEL_ID") == 0);
    CHECK(session->fields().size() == 4);
    CHECK_THROWS_AS(session->set_field("_PID", "1"), std::invalid_argument);
    CHECK_THROWS_AS(session->set_field("lower", "x"), std::invalid_argument);
  }
}

TEST_CASE("the source location becomes CODE_FILE, CODE_LINE and CODE_FUNC") {
  FakeJournal journal;
  journal.log->log(spdlog::source_loc{"proxy_session.cpp", 42, "on_close"}, spdlog::level::err,
                   "closed");
  Entry entry = journal.next();
  CHECK(field(entry, "CODE_FILE") == "proxy_session.cpp");
  CHECK(field(entry, "CODE_LINE") == "42");
  CHECK(field(entry, "CODE_FUNC") == "on_close");
}

TEST_CASE("the message pattern can be changed and never ends in a newline") {
  FakeJournal journal;
  journal.sink->set_pattern("%v (%n)");
  journal.log->info("up");
  CHECK(field(journal.next(), "MESSAGE") == "up (session)");
}

TEST_CASE("an entry too large for a datagram travels in a sealed memfd") {
  FakeJournal journal;
  const std::string big(std::size_t{300} * 1024, 'x');
  journal.log->info("{}", big);
  auto datagram = journal.socket.receive();
  REQUIRE(datagram.has_value());
  CHECK(datagram->data.empty());
  REQUIRE(datagram->fd >= 0);
  int seals = ::fcntl(datagram->fd, F_GET_SEALS);
  CHECK((seals & F_SEAL_WRITE) != 0);
  CHECK((seals & F_SEAL_SHRINK) != 0);
  struct stat st {};
  REQUIRE(::fstat(datagram->fd, &st) == 0);
  std::string contents(static_cast<std::size_t>(st.st_size), '\0');
  REQUIRE(::pread(datagram->fd, contents.data(), contents.size(), 0) == st.st_size);
  ::close(datagram->fd);
  Entry entry = parse_native(contents);
  CHECK(field(entry, "MESSAGE") == "[session] " + big);
  CHECK(field(entry, "PRIORITY") == "6");
  CHECK(journal.sink->dropped() == 0);
}

TEST_CASE("without journald records are dropped and counted, not thrown") {
  auto sink = std::make_shared<JournalSink>("tunneld", "/nonexistent/journal/socket");
  spdlog::logger log("control", sink);
  log.info("nobody listens");
  log.info("still nobody");
  CHECK(sink->dropped() == 2);
}

TEST_CASE("field names follow journald's rules") {
  CHECK(is_valid_journal_field_name("TUNNEL_SESSION_ID"));
  CHECK(is_valid_journal_field_name("A1"));
  CHECK_FALSE(is_valid_journal_field_name(""));
  CHECK_FALSE(is_valid_journal_field_name("_PID"));
  CHECK_FALSE(is_valid_journal_field_name("1ABC"));
  CHECK_FALSE(is_valid_journal_field_name("session_id"));
  CHECK_FALSE(is_valid_journal_field_name(std::string(65, 'A')));
  auto base = std::make_shared<spdlog::logger>("session");
  CHECK_THROWS_AS(make_field_logger(base, "s", {{"bad-name", "x"}}), std::invalid_argument);
}

TEST_CASE("--log values") {
  CHECK(parse_log_target("auto") == LogTarget::automatic);
  CHECK(parse_log_target("stderr") == LogTarget::stderr_stream);
  CHECK(parse_log_target("journal") == LogTarget::journal);
  CHECK_FALSE(parse_log_target("syslog").has_value());
  CHECK(resolve_log_target(LogTarget::stderr_stream) == LogTarget::stderr_stream);
  CHECK(resolve_log_target(LogTarget::journal) == LogTarget::journal);
}

TEST_CASE("JOURNAL_STREAM decides whether stderr is connected to journald") {
  struct Restore {
    ~Restore() { ::unsetenv("JOURNAL_STREAM"); }
  } restore;
  auto stream_of = [](int fd) {
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  };
  int other = ::open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(other >= 0);

  ::unsetenv("JOURNAL_STREAM");
  CHECK_FALSE(is_journal_stream(STDERR_FILENO));
  CHECK(resolve_log_target(LogTarget::automatic) == LogTarget::stderr_stream);

  // systemd sets JOURNAL_STREAM for the stream it connected; a process whose
  // stderr was redirected since (or a child that inherited the variable) must
  // not take its own stderr for the journal.
  ::setenv("JOURNAL_STREAM", stream_of(other).c_str(), 1);
  CHECK(is_journal_stream(other));
  CHECK_FALSE(is_journal_stream(STDERR_FILENO));

  ::setenv("JOURNAL_STREAM", stream_of(STDERR_FILENO).c_str(), 1);
  CHECK(is_journal_stream(STDERR_FILENO));
#if TUNNELD_WITH_SYSTEMD
  CHECK(resolve_log_target(LogTarget::automatic) == LogTarget::journal);
#else
  CHECK(resolve_log_target(LogTarget::automatic) == LogTarget::stderr_stream);
#endif

  for (const char* garbled : {"", "12", "12:", ":34", "a:b", "1:2:3"}) {
    ::setenv("JOURNAL_STREAM", garbled, 1);
    CHECK_FALSE(is_journal_stream(STDERR_FILENO));
  }
  ::close(other);
}
