// The V1 session state machine (protocol.md section 4), driven with records
// and local events; a recording fake stands in for the proxy loop.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "session_machine.h"

using tunnel::Message;
using tunnel::Mode;
using tunnel::SessionEffects;
using tunnel::SessionMachine;

namespace {

// Every effect as one line, so a test reads as the expected conversation.
class RecordingEffects : public SessionEffects {
 public:
  std::vector<std::string> log;
  std::vector<Message> sent;
  std::vector<std::string> notes;
  std::string written;  // concatenation of every write_local

  void send_record(const Message& m) override {
    sent.push_back(m);
    std::string line = "send " + Message::Type_Name(m.type()) + " " + std::to_string(m.streamid());
    if (!m.serviceid().empty()) line += " service=" + m.serviceid();
    log.push_back(line);
  }
  void send_data(std::int32_t id, std::string_view chunk) override {
    log.push_back("data " + std::to_string(id) + " " + std::to_string(chunk.size()));
    data_bytes += chunk;
  }
  void open_local(std::int32_t id) override { log.push_back("open " + std::to_string(id)); }
  void write_local(std::int32_t id, std::string&& bytes) override {
    log.push_back("write " + std::to_string(id) + " " + bytes);
    written += bytes;
  }
  void close_local(std::int32_t id, bool flush) override {
    log.push_back("close " + std::to_string(id) + (flush ? " flush" : " abort"));
  }
  void protocol_error(std::string reason) override { log.push_back("error " + reason); }
  void note(std::string_view what) override { notes.emplace_back(what); }
  // Kept apart from `log`, so the conversations above read as before.
  void schedule_nudge(std::int32_t id, std::uint32_t delay_ms) override {
    nudges.push_back(std::to_string(id) + " after " + std::to_string(delay_ms) + " ms");
  }
  std::vector<std::string> nudges;

  std::string data_bytes;  // concatenation of every send_data chunk

  // The log since the last take(), then cleared.
  std::vector<std::string> take() {
    auto out = std::move(log);
    log.clear();
    return out;
  }
};

using Lines = std::vector<std::string>;

Message record(Message::Type type, std::int32_t stream, std::string payload = {}) {
  Message m;
  m.set_type(type);
  m.set_streamid(stream);
  m.set_payload(std::move(payload));
  return m;
}

void deliver(SessionMachine& sm, Message m) { sm.on_record(m); }

Message service_ids(std::vector<std::string> ids) {
  Message m;
  m.set_type(Message::SERVICE_IDS);
  for (auto& id : ids) m.add_availableserviceids(id);
  return m;
}

bool starts_with(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

TEST_CASE("session: mode names") {
  CHECK(tunnel::to_string(Mode::source) == "source");
  CHECK(tunnel::to_string(Mode::destination) == "destination");
}

TEST_CASE("session: source happy path") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  CHECK(sm.mode() == Mode::source);
  CHECK_FALSE(sm.link_up());
  sm.on_link_up();
  CHECK(sm.link_up());

  const auto id = sm.on_local_accepted();
  CHECK(id == 1);
  CHECK(sm.active_stream() == 1);
  CHECK(fx.take() == Lines{"send STREAM_START 1"});

  sm.on_local_data(1, "hello");
  CHECK(fx.take() == Lines{"data 1 5"});
  deliver(sm, record(Message::DATA, 1, "world"));
  CHECK(fx.take() == Lines{"write 1 world"});

  sm.on_local_closed(1);
  CHECK(fx.take() == Lines{"send STREAM_RESET 1"});
  CHECK_FALSE(sm.active_stream());

  // A second close of the same connection sends nothing more.
  sm.on_local_closed(1);
  CHECK(fx.take().empty());

  CHECK(sm.counters().records_in == 1);
  CHECK(sm.counters().records_out == 3);
  CHECK(sm.counters().streams_started == 1);
  CHECK(sm.counters().stale_records_ignored == 0);
}

TEST_CASE("session: source peer reset flushes and frees the slot") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(sm.on_local_accepted() == 1);
  fx.take();
  deliver(sm, record(Message::DATA, 1, "bye"));
  deliver(sm, record(Message::STREAM_RESET, 1));
  CHECK(fx.take() == Lines{"write 1 bye", "close 1 flush"});
  CHECK_FALSE(sm.active_stream());
  // The local side closes afterwards: the stream is already gone, no reset.
  sm.on_local_closed(1);
  sm.on_local_data(1, "late");
  CHECK(fx.take().empty());
}

TEST_CASE("session: a new local client replaces the active stream") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(sm.on_local_accepted() == 1);
  fx.take();
  CHECK(sm.on_local_accepted() == 2);
  CHECK(fx.take() == Lines{"send STREAM_RESET 1", "close 1 abort", "send STREAM_START 2"});
  CHECK(sm.active_stream() == 2);

  // The old connection's late events are ignored.
  sm.on_local_data(1, "old");
  sm.on_local_closed(1);
  CHECK(fx.take().empty());
  CHECK(sm.counters().streams_started == 2);
}

TEST_CASE("session: stream ids are never reused across accepts") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 5; ++i) {
    const auto id = sm.on_local_accepted();
    ids.push_back(id);
    if (i % 2 == 0) {
      sm.on_local_closed(id);
    } else {
      deliver(sm, record(Message::STREAM_RESET, id));
    }
  }
  // Including across a lost and restored link.
  sm.on_link_down();
  sm.on_link_up();
  ids.push_back(sm.on_local_accepted());
  deliver(sm, record(Message::SESSION_RESET, 0));
  ids.push_back(sm.on_local_accepted());
  CHECK(ids == std::vector<std::int32_t>{1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("session: no accept while the link is down") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  CHECK(sm.on_local_accepted() == 0);
  CHECK(fx.take().empty());
  CHECK_FALSE(sm.active_stream());
  sm.on_link_up();
  CHECK(sm.on_local_accepted() == 1);  // 0 consumed no id
}

TEST_CASE("session: a destination does not accept local clients") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  CHECK(sm.on_local_accepted() == 0);
  CHECK(fx.take().empty());
}

TEST_CASE("session: local data is chunked to the max payload") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(sm.on_local_accepted() == 1);
  fx.take();
  std::string bytes(150000, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  sm.on_local_data(1, bytes);
  CHECK(fx.take() == Lines{"data 1 64512", "data 1 64512", "data 1 20976"});
  CHECK(fx.data_bytes == bytes);
  CHECK(sm.counters().records_out == 4);

  SUBCASE("nothing for nothing") {
    sm.on_local_data(1, "");
    CHECK(fx.take().empty());
  }
  SUBCASE("exact multiple") {
    sm.on_local_data(1, std::string(2 * tunnel::kMaxPayloadSize, 'x'));
    CHECK(fx.take() == Lines{"data 1 64512", "data 1 64512"});
  }
}

TEST_CASE("session: a smaller configured max payload is honoured") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx, 4);
  sm.on_link_up();
  REQUIRE(sm.on_local_accepted() == 1);
  fx.take();
  sm.on_local_data(1, "abcdefghij");
  CHECK(fx.take() == Lines{"data 1 4", "data 1 4", "data 1 2"});
  CHECK(fx.data_bytes == "abcdefghij");
}

TEST_CASE("session: stale DATA and STREAM_RESET are ignored") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();

  // Before any stream exists.
  deliver(sm, record(Message::DATA, 1, "early"));
  CHECK(sm.counters().stale_records_ignored == 1);

  REQUIRE(sm.on_local_accepted() == 1);
  REQUIRE(sm.on_local_accepted() == 2);
  fx.take();
  deliver(sm, record(Message::DATA, 1, "stale"));
  deliver(sm, record(Message::STREAM_RESET, 1));
  deliver(sm, record(Message::DATA, 3, "future"));
  CHECK(fx.take().empty());
  CHECK(sm.active_stream() == 2);
  CHECK(sm.counters().stale_records_ignored == 4);
  CHECK(fx.notes.size() == 4);
  CHECK(fx.notes.back().find("stream 3") != std::string::npos);

  deliver(sm, record(Message::DATA, 2, "live"));
  CHECK(fx.take() == Lines{"write 2 live"});
}

TEST_CASE("session: SESSION_RESET closes the active stream") {
  for (const auto mode : {Mode::source, Mode::destination}) {
    CAPTURE(tunnel::to_string(mode));
    RecordingEffects fx;
    SessionMachine sm(mode, fx);
    sm.on_link_up();
    if (mode == Mode::source) {
      REQUIRE(sm.on_local_accepted() == 1);
    } else {
      deliver(sm, record(Message::STREAM_START, 1));
    }
    fx.take();
    deliver(sm, record(Message::SESSION_RESET, 0));
    CHECK(fx.take() == Lines{"close 1 flush"});
    CHECK_FALSE(sm.active_stream());
    // With nothing active it is a no-op.
    deliver(sm, record(Message::SESSION_RESET, 0));
    CHECK(fx.take().empty());
  }
}

TEST_CASE("session: STREAM_START at a source is a protocol error") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 7));
  const auto lines = fx.take();
  REQUIRE(lines.size() == 1);
  CHECK(starts_with(lines[0], "error STREAM_START"));
  CHECK(lines[0].find("source") != std::string::npos);
  CHECK_FALSE(sm.active_stream());
}

TEST_CASE("session: destination happy path") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 4));
  CHECK(fx.take() == Lines{"open 4"});
  CHECK(sm.active_stream() == 4);
  sm.on_local_connected(4);
  deliver(sm, record(Message::DATA, 4, "GET /"));
  CHECK(fx.take() == Lines{"write 4 GET /"});
  sm.on_local_data(4, "200 OK");
  CHECK(fx.take() == Lines{"data 4 6"});
  sm.on_local_closed(4);
  CHECK(fx.take() == Lines{"send STREAM_RESET 4"});
  CHECK_FALSE(sm.active_stream());
  CHECK(sm.counters().streams_started == 1);
}

TEST_CASE("session: destination writes DATA that arrives before the connect completes") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 1));
  deliver(sm, record(Message::DATA, 1, "SSH-2.0"));
  deliver(sm, record(Message::DATA, 1, "-client"));
  CHECK(fx.take() == Lines{"open 1", "write 1 SSH-2.0", "write 1 -client"});
  sm.on_local_connected(1);
  CHECK(fx.written == "SSH-2.0-client");
  CHECK(fx.take().empty());
}

TEST_CASE("session: destination connect failure answers STREAM_RESET") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 9));
  fx.take();
  sm.on_local_connect_failed(9);
  CHECK(fx.take() == Lines{"send STREAM_RESET 9"});
  CHECK_FALSE(sm.active_stream());
  // Data the source sent before it learnt of the failure is stale.
  deliver(sm, record(Message::DATA, 9, "late"));
  CHECK(fx.take().empty());
  CHECK(sm.counters().stale_records_ignored == 1);
}

TEST_CASE("session: a new STREAM_START replaces the destination's stream") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 1));
  sm.on_local_connected(1);
  fx.take();
  deliver(sm, record(Message::STREAM_START, 2));
  // The old local connection is aborted; no STREAM_RESET goes out for it.
  CHECK(fx.take() == Lines{"close 1 abort", "open 2"});
  CHECK(sm.active_stream() == 2);
  // The old stream's late connect outcome and data change nothing.
  sm.on_local_connect_failed(1);
  sm.on_local_data(1, "old");
  deliver(sm, record(Message::DATA, 1, "old"));
  CHECK(fx.take().empty());

  SUBCASE("replacement while still connecting") {
    deliver(sm, record(Message::STREAM_START, 3));
    CHECK(fx.take() == Lines{"close 2 abort", "open 3"});
    sm.on_local_connected(2);
    CHECK(fx.take().empty());
    CHECK(sm.active_stream() == 3);
  }
}

TEST_CASE("session: destination peer reset flushes") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 5));
  sm.on_local_connected(5);
  fx.take();
  deliver(sm, record(Message::STREAM_RESET, 5));
  CHECK(fx.take() == Lines{"close 5 flush"});
  sm.on_local_closed(5);
  CHECK(fx.take().empty());
}

TEST_CASE("session: losing the link aborts the active stream") {
  SUBCASE("source") {
    RecordingEffects fx;
    SessionMachine sm(Mode::source, fx);
    sm.on_link_up();
    REQUIRE(sm.on_local_accepted() == 1);
    fx.take();
    sm.on_link_down();
    CHECK(fx.take() == Lines{"close 1 abort"});
    CHECK_FALSE(sm.link_up());
    CHECK_FALSE(sm.active_stream());
    // The closed connection reports back: nothing to send, no link anyway.
    sm.on_local_closed(1);
    sm.on_local_data(1, "x");
    CHECK(fx.take().empty());
    CHECK(sm.on_local_accepted() == 0);
  }
  SUBCASE("destination, while connecting") {
    RecordingEffects fx;
    SessionMachine sm(Mode::destination, fx);
    sm.on_link_up();
    deliver(sm, record(Message::STREAM_START, 3));
    fx.take();
    sm.on_link_down();
    CHECK(fx.take() == Lines{"close 3 abort"});
    sm.on_local_connect_failed(3);
    CHECK(fx.take().empty());
  }
  SUBCASE("with no stream") {
    RecordingEffects fx;
    SessionMachine sm(Mode::source, fx);
    sm.on_link_up();
    sm.on_link_down();
    CHECK(fx.take().empty());
  }
}

TEST_CASE("session: SERVICE_IDS") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();

  SUBCASE("an empty list is ignored") {
    deliver(sm, service_ids({}));
    CHECK(fx.take().empty());
    CHECK(sm.service_id().empty());
    CHECK(fx.notes.size() == 1);
  }
  SUBCASE("one service id is carried in the records the machine sends") {
    deliver(sm, service_ids({"ssh"}));
    CHECK(fx.take().empty());
    CHECK(sm.service_id() == "ssh");
    REQUIRE(sm.on_local_accepted() == 1);
    REQUIRE(sm.on_local_accepted() == 2);
    sm.on_local_closed(2);
    CHECK(fx.take() == Lines{"send STREAM_START 1 service=ssh", "send STREAM_RESET 1 service=ssh",
                             "close 1 abort", "send STREAM_START 2 service=ssh",
                             "send STREAM_RESET 2 service=ssh"});
  }
  SUBCASE("a destination echoes it in its STREAM_RESET") {
    RecordingEffects dfx;
    SessionMachine dst(Mode::destination, dfx);
    dst.on_link_up();
    deliver(dst, service_ids({"rdp"}));
    deliver(dst, record(Message::STREAM_START, 2));
    dst.on_local_connect_failed(2);
    CHECK(dfx.take() == Lines{"open 2", "send STREAM_RESET 2 service=rdp"});
  }
  SUBCASE("several services are a protocol error naming the count") {
    deliver(sm, service_ids({"ssh", "rdp", "http"}));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error tunnel has 3 services; V1 carries one"));
    CHECK(sm.service_id().empty());
  }
  SUBCASE("an over-long service id is a protocol error") {
    deliver(sm, service_ids({std::string(tunnel::kMaxServiceIdSize + 1, 'a')}));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error "));
    CHECK(sm.service_id().empty());
  }
}

TEST_CASE("session: unknown record types") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 1));
  fx.take();

  SUBCASE("ignorable is skipped") {
    Message m = record(static_cast<Message::Type>(42), 1, "future");
    m.set_ignorable(true);
    deliver(sm, m);
    CHECK(fx.take().empty());
    REQUIRE(fx.notes.size() == 1);
    CHECK(fx.notes[0].find("42") != std::string::npos);
    CHECK(sm.active_stream() == 1);
  }
  SUBCASE("not ignorable is a protocol error") {
    deliver(sm, record(static_cast<Message::Type>(42), 1));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error "));
    CHECK(lines[0].find("42") != std::string::npos);
  }
  SUBCASE("type UNKNOWN (0) is a protocol error, even if ignorable") {
    Message m = record(Message::UNKNOWN, 1);
    m.set_ignorable(true);
    deliver(sm, m);
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error "));
  }
  SUBCASE("an empty record (all defaults) is a protocol error") {
    deliver(sm, Message());
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error "));
  }
}

TEST_CASE("session: stream messages need a non-zero stream id") {
  for (const auto type : {Message::DATA, Message::STREAM_START, Message::STREAM_RESET}) {
    CAPTURE(Message::Type_Name(type));
    RecordingEffects fx;
    SessionMachine sm(Mode::destination, fx);
    sm.on_link_up();
    deliver(sm, record(type, 0, "x"));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error " + Message::Type_Name(type)));
    CHECK(lines[0].find("stream id 0") != std::string::npos);
    CHECK_FALSE(sm.active_stream());
  }
}

TEST_CASE("session: V3 connection records are a protocol error at V1") {
  for (const auto type : {Message::CONNECTION_START, Message::CONNECTION_RESET}) {
    CAPTURE(Message::Type_Name(type));
    RecordingEffects fx;
    SessionMachine sm(Mode::destination, fx);
    sm.on_link_up();
    deliver(sm, record(Message::STREAM_START, 1));
    fx.take();
    Message m = record(type, 1);
    m.set_connectionid(2);
    deliver(sm, m);
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error " + Message::Type_Name(type)));
    CHECK(lines[0].find("V1") != std::string::npos);
  }
}

TEST_CASE("session: every record counts in records_in") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 1));
  deliver(sm, record(Message::DATA, 1, "a"));
  deliver(sm, record(Message::DATA, 2, "stale"));
  deliver(sm, service_ids({}));
  deliver(sm, record(Message::UNKNOWN, 1));
  CHECK(sm.counters().records_in == 5);
  CHECK(sm.counters().records_out == 0);
}

TEST_CASE("session: effects may call back into the machine") {
  // A proxy loop whose close_local reports the close synchronously must not
  // make the machine send a STREAM_RESET for a stream it already let go.
  struct Reentrant : RecordingEffects {
    SessionMachine* sm = nullptr;
    void close_local(std::int32_t id, bool flush) override {
      RecordingEffects::close_local(id, flush);
      sm->on_local_closed(id);
    }
  } fx;
  SessionMachine sm(Mode::source, fx);
  fx.sm = &sm;
  sm.on_link_up();
  REQUIRE(sm.on_local_accepted() == 1);
  REQUIRE(sm.on_local_accepted() == 2);
  deliver(sm, record(Message::STREAM_RESET, 2));
  CHECK(fx.take() == Lines{"send STREAM_START 1", "send STREAM_RESET 1", "close 1 abort",
                           "send STREAM_START 2", "close 2 flush"});
}

// docs/interop.md: the reference destination processes records that share a
// WebSocket read with STREAM_START only when a later message arrives. A
// source therefore follows the first DATA of each stream with three empty
// DATA records, 20, 200 and 2000 ms later.
TEST_CASE("session: a source nudges after the first DATA of a stream") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(sm.on_local_accepted() == 1);
  CHECK(fx.nudges.empty());
  fx.take();

  sm.on_local_data(1, "GET /");
  CHECK(fx.take() == Lines{"data 1 5"});
  CHECK(fx.nudges == Lines{"1 after 20 ms"});
  sm.on_local_data(1, "more");
  CHECK(fx.take() == Lines{"data 1 4"});
  CHECK(fx.nudges.size() == 1);  // armed once per stream

  sm.on_nudge_due(1);
  CHECK(fx.take() == Lines{"data 1 0"});
  CHECK(fx.nudges.back() == "1 after 180 ms");
  sm.on_nudge_due(1);
  CHECK(fx.take() == Lines{"data 1 0"});
  CHECK(fx.nudges.back() == "1 after 1800 ms");
  sm.on_nudge_due(1);
  CHECK(fx.take() == Lines{"data 1 0"});
  CHECK(fx.nudges.size() == 3);
  // The schedule is over: a late call sends nothing, more data arms nothing.
  sm.on_nudge_due(1);
  sm.on_local_data(1, "x");
  CHECK(fx.take() == Lines{"data 1 1"});
  CHECK(fx.nudges.size() == 3);
  CHECK(sm.counters().records_out == 7);  // START, 3 DATA, 3 nudges
}

TEST_CASE("session: nudges end with their stream and re-arm for the next") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(sm.on_local_accepted() == 1);
  sm.on_local_data(1, "a");
  sm.on_local_closed(1);
  fx.take();
  sm.on_nudge_due(1);  // the stream is gone: its id is stale for the peer
  CHECK(fx.take().empty());

  REQUIRE(sm.on_local_accepted() == 2);
  fx.take();
  sm.on_local_data(2, "b");
  CHECK(fx.nudges == Lines{"1 after 20 ms", "2 after 20 ms"});
  fx.take();
  sm.on_nudge_due(1);  // stale timer
  CHECK(fx.take().empty());
  sm.on_nudge_due(2);
  CHECK(fx.take() == Lines{"data 2 0"});

  sm.on_link_down();
  fx.take();
  sm.on_nudge_due(2);
  CHECK(fx.take().empty());
}

TEST_CASE("session: a destination never nudges and writes nothing for an empty DATA") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 4));
  sm.on_local_connected(4);
  deliver(sm, record(Message::DATA, 4));  // a source's nudge
  CHECK(fx.take() == Lines{"open 4"});
  sm.on_local_data(4, "200 OK");
  CHECK(fx.take() == Lines{"data 4 6"});
  CHECK(fx.nudges.empty());
  sm.on_nudge_due(4);
  CHECK(fx.take().empty());
  CHECK(sm.counters().stale_records_ignored == 0);
}
