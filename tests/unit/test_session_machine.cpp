// The session state machine, V1 to V3 (docs/protocol.md sections 4-6), driven with
// records and local events; a recording fake stands in for the proxy loop.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "session_machine.h"

using tunnel::ConnRef;
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
    if (m.connectionid() != 0) line += "/" + std::to_string(m.connectionid());
    if (!m.serviceid().empty()) line += " service=" + m.serviceid();
    log.push_back(line);
  }
  void send_data(const tunnel::WireAddress& to, std::string_view chunk) override {
    std::string line = "data " + std::to_string(to.stream_id);
    if (to.connection_id != 0) line += "/" + std::to_string(to.connection_id);
    line += " " + std::to_string(chunk.size());
    if (!to.service_id.empty()) line += " service=" + std::string(to.service_id);
    log.push_back(line);
    data_bytes += chunk;
  }
  static std::string name(const ConnRef& c) {
    std::string out = std::to_string(c.stream_id);
    if (c.connection_id != 1) out += "/" + std::to_string(c.connection_id);
    if (!c.service.empty()) out += "@" + c.service;
    return out;
  }
  void open_local(const ConnRef& c) override { log.push_back("open " + name(c)); }
  void write_local(const ConnRef& c, std::string_view bytes) override {
    log.push_back("write " + name(c) + " " + std::string(bytes));
    written += bytes;
  }
  void close_local(const ConnRef& c, bool flush) override {
    log.push_back("close " + name(c) + (flush ? " flush" : " abort"));
  }
  void protocol_error(std::string reason) override { log.push_back("error " + reason); }
  void session_error(std::string reason) override { log.push_back("fatal " + reason); }
  void accept_ready() override { ++accept_ready_calls; }
  void note(std::string_view what) override { notes.emplace_back(what); }
  // Kept apart from `log`, so the conversations above read as they are.
  void schedule_nudge(const ConnRef& c, std::uint32_t delay_ms) override {
    nudges.push_back(name(c) + " after " + std::to_string(delay_ms) + " ms");
  }

  int accept_ready_calls = 0;
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

Message service_ids(const std::vector<std::string>& ids) {
  Message m;
  m.set_type(Message::SERVICE_IDS);
  for (auto& id : ids) m.add_availableserviceids(id);
  return m;
}

// The V1 single unnamed service: connection 1 of a stream.
ConnRef R(std::int32_t stream) { return ConnRef{"", stream, 1}; }

// Accepts a local client; the stream id, or 0 when refused.
std::int32_t accept(SessionMachine& sm, std::string_view service = {}) {
  const auto r = sm.on_local_accepted(service);
  return r ? r->stream_id : 0;
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

  const auto id = accept(sm);
  CHECK(id == 1);
  CHECK(sm.active_stream() == 1);
  CHECK(fx.take() == Lines{"send STREAM_START 1"});

  sm.on_local_data(R(1), "hello");
  CHECK(fx.take() == Lines{"data 1 5"});
  deliver(sm, record(Message::DATA, 1, "world"));
  CHECK(fx.take() == Lines{"write 1 world"});

  sm.on_local_closed(R(1));
  CHECK(fx.take() == Lines{"send STREAM_RESET 1"});
  CHECK_FALSE(sm.active_stream());

  // A second close of the same connection sends nothing more.
  sm.on_local_closed(R(1));
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
  REQUIRE(accept(sm) == 1);
  fx.take();
  deliver(sm, record(Message::DATA, 1, "bye"));
  deliver(sm, record(Message::STREAM_RESET, 1));
  CHECK(fx.take() == Lines{"write 1 bye", "close 1 flush"});
  CHECK_FALSE(sm.active_stream());
  // The local side closes afterwards: the stream is already gone, no reset.
  sm.on_local_closed(R(1));
  sm.on_local_data(R(1), "late");
  CHECK(fx.take().empty());
}

TEST_CASE("session: a new local client replaces the active stream") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(accept(sm) == 1);
  fx.take();
  CHECK(accept(sm) == 2);
  CHECK(fx.take() == Lines{"send STREAM_RESET 1", "close 1 abort", "send STREAM_START 2"});
  CHECK(sm.active_stream() == 2);

  // The old connection's late events are ignored.
  sm.on_local_data(R(1), "old");
  sm.on_local_closed(R(1));
  CHECK(fx.take().empty());
  CHECK(sm.counters().streams_started == 2);
}

TEST_CASE("session: stream ids are never reused across accepts") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 5; ++i) {
    const auto id = accept(sm);
    ids.push_back(id);
    if (i % 2 == 0) {
      sm.on_local_closed(R(id));
    } else {
      deliver(sm, record(Message::STREAM_RESET, id));
    }
  }
  // Including across a lost and restored link.
  sm.on_link_down();
  sm.on_link_up();
  ids.push_back(accept(sm));
  deliver(sm, record(Message::SESSION_RESET, 0));
  ids.push_back(accept(sm));
  CHECK(ids == std::vector<std::int32_t>{1, 2, 3, 4, 5, 6, 7});
}

TEST_CASE("session: no accept while the link is down") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  CHECK(accept(sm) == 0);
  CHECK(fx.take().empty());
  CHECK_FALSE(sm.active_stream());
  sm.on_link_up();
  CHECK(accept(sm) == 1);  // 0 consumed no id
}

TEST_CASE("session: a destination does not accept local clients") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  CHECK(accept(sm) == 0);
  CHECK(fx.take().empty());
}

TEST_CASE("session: local data is chunked to the max payload") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(accept(sm) == 1);
  fx.take();
  std::string bytes(150000, '\0');
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7);
  sm.on_local_data(R(1), bytes);
  CHECK(fx.take() == Lines{"data 1 64512", "data 1 64512", "data 1 20976"});
  CHECK(fx.data_bytes == bytes);
  CHECK(sm.counters().records_out == 4);

  SUBCASE("nothing for nothing") {
    sm.on_local_data(R(1), "");
    CHECK(fx.take().empty());
  }
  SUBCASE("exact multiple") {
    sm.on_local_data(R(1), std::string(2 * tunnel::kMaxPayloadSize, 'x'));
    CHECK(fx.take() == Lines{"data 1 64512", "data 1 64512"});
  }
}

TEST_CASE("session: a smaller configured max payload is honoured") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx, 4);
  sm.on_link_up();
  REQUIRE(accept(sm) == 1);
  fx.take();
  sm.on_local_data(R(1), "abcdefghij");
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

  REQUIRE(accept(sm) == 1);
  REQUIRE(accept(sm) == 2);
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
      REQUIRE(accept(sm) == 1);
    } else {
      deliver(sm, record(Message::STREAM_START, 1));
    }
    fx.take();
    deliver(sm, record(Message::SESSION_RESET, 0));
    // The peer learns that the stream is gone (the service may have reset
    // only this end: tests/integration/test_faults.py).
    CHECK(fx.take() == Lines{"close 1 flush", "send STREAM_RESET 1"});
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
  sm.on_local_connected(R(4));
  deliver(sm, record(Message::DATA, 4, "GET /"));
  CHECK(fx.take() == Lines{"write 4 GET /"});
  sm.on_local_data(R(4), "200 OK");
  CHECK(fx.take() == Lines{"data 4 6"});
  sm.on_local_closed(R(4));
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
  sm.on_local_connected(R(1));
  CHECK(fx.written == "SSH-2.0-client");
  CHECK(fx.take().empty());
}

TEST_CASE("session: destination connect failure answers STREAM_RESET") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 9));
  fx.take();
  sm.on_local_connect_failed(R(9));
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
  sm.on_local_connected(R(1));
  fx.take();
  deliver(sm, record(Message::STREAM_START, 2));
  // The old local connection is aborted; no STREAM_RESET goes out for it.
  CHECK(fx.take() == Lines{"close 1 abort", "open 2"});
  CHECK(sm.active_stream() == 2);
  // The old stream's late connect outcome and data change nothing.
  sm.on_local_connect_failed(R(1));
  sm.on_local_data(R(1), "old");
  deliver(sm, record(Message::DATA, 1, "old"));
  CHECK(fx.take().empty());

  SUBCASE("replacement while still connecting") {
    deliver(sm, record(Message::STREAM_START, 3));
    CHECK(fx.take() == Lines{"close 2 abort", "open 3"});
    sm.on_local_connected(R(2));
    CHECK(fx.take().empty());
    CHECK(sm.active_stream() == 3);
  }
  SUBCASE("a repeated STREAM_START (same id) replaces too, and says so") {
    deliver(sm, record(Message::STREAM_START, 2));
    CHECK(fx.take() == Lines{"close 2 abort", "open 2"});
    CHECK(sm.active_stream() == 2);
    REQUIRE_FALSE(fx.notes.empty());
    CHECK(fx.notes.back() == "STREAM_START for stream 2 replaces active stream 2");
  }
}

TEST_CASE("session: destination peer reset flushes") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 5));
  sm.on_local_connected(R(5));
  fx.take();
  deliver(sm, record(Message::STREAM_RESET, 5));
  CHECK(fx.take() == Lines{"close 5 flush"});
  sm.on_local_closed(R(5));
  CHECK(fx.take().empty());
}

TEST_CASE("session: losing the link aborts the active stream") {
  SUBCASE("source") {
    RecordingEffects fx;
    SessionMachine sm(Mode::source, fx);
    sm.on_link_up();
    REQUIRE(accept(sm) == 1);
    fx.take();
    sm.on_link_down();
    CHECK(fx.take() == Lines{"close 1 abort"});
    CHECK_FALSE(sm.link_up());
    CHECK_FALSE(sm.active_stream());
    // The closed connection reports back: nothing to send, no link anyway.
    sm.on_local_closed(R(1));
    sm.on_local_data(R(1), "x");
    CHECK(fx.take().empty());
    CHECK(accept(sm) == 0);
  }
  SUBCASE("destination, while connecting") {
    RecordingEffects fx;
    SessionMachine sm(Mode::destination, fx);
    sm.on_link_up();
    deliver(sm, record(Message::STREAM_START, 3));
    fx.take();
    sm.on_link_down();
    CHECK(fx.take() == Lines{"close 3 abort"});
    sm.on_local_connect_failed(R(3));
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
    REQUIRE(accept(sm) == 1);
    REQUIRE(accept(sm) == 2);
    sm.on_local_closed(R(2));
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
    dst.on_local_connect_failed(R(2));
    CHECK(dfx.take() == Lines{"open 2", "send STREAM_RESET 2 service=rdp"});
  }
  SUBCASE("several services are a protocol error naming the count") {
    deliver(sm, service_ids({"ssh", "rdp", "http"}));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "fatal tunnel has 3 services {http, rdp, ssh}; V1 carries one"));
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
    void close_local(const ConnRef& c, bool flush) override {
      RecordingEffects::close_local(c, flush);
      sm->on_local_closed(c);
    }
  } fx;
  SessionMachine sm(Mode::source, fx);
  fx.sm = &sm;
  sm.on_link_up();
  REQUIRE(accept(sm) == 1);
  REQUIRE(accept(sm) == 2);
  deliver(sm, record(Message::STREAM_RESET, 2));
  CHECK(fx.take() == Lines{"send STREAM_START 1", "send STREAM_RESET 1", "close 1 abort",
                           "send STREAM_START 2", "close 2 flush"});
}

// ---------------------------------------------------------------- V2 / V3

namespace {

Message stream_rec(Message::Type type, std::int32_t stream, std::string service,
                   std::uint32_t conn = 0, std::string payload = {}) {
  Message m = record(type, stream, std::move(payload));
  if (!service.empty()) m.set_serviceid(std::move(service));
  if (conn != 0) m.set_connectionid(conn);
  return m;
}

tunnel::MachineOptions services(std::vector<std::string> ids, std::size_t max_conns = 128) {
  tunnel::MachineOptions o;
  o.services = std::move(ids);
  o.max_connections = max_conns;
  return o;
}

}  // namespace

TEST_CASE("v2: service set must match SERVICE_IDS, naming both sets") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx, services({"SSH1", "HTTP1"}));
  sm.on_link_up(2);
  SUBCASE("same set in another order") {
    deliver(sm, service_ids({"HTTP1", "SSH1"}));
    CHECK(fx.take().empty());
  }
  SUBCASE("a different set is fatal") {
    deliver(sm, service_ids({"SSH1", "RDP1"}));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0],
                      "fatal service mismatch: the tunnel has services {RDP1, SSH1} but "
                      "this session is configured for {HTTP1, SSH1}"));
  }
  SUBCASE("one unnamed service cannot carry several") {
    RecordingEffects f2;
    SessionMachine one(Mode::destination, f2);
    one.on_link_up(3);
    deliver(one, service_ids({"A", "B"}));
    REQUIRE(f2.log.size() == 1);
    CHECK(starts_with(f2.log[0], "fatal tunnel has 2 services {A, B}; name a local port"));
  }
  SUBCASE("the service's ids reach errors and notes as one printable line") {
    // Found by fuzz_session_machine: ids are bytes from the service, and a
    // newline in one forged a second line in tunneld's log and in the
    // reason tunnelctl shows.
    deliver(sm, service_ids({"SSH1\n[session x] connected", std::string("R\0\x7f\xff", 4)}));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0],
                      "fatal service mismatch: the tunnel has services {R???, SSH1?[session x] "
                      "connected} but"));
    RecordingEffects f3;
    SessionMachine named(Mode::destination, f3, services({"SSH1", "HTTP1"}));
    named.on_link_up(2);
    deliver(named, service_ids({"SSH1", "HTTP1"}));
    deliver(named, stream_rec(Message::STREAM_START, 1, "x\ny" + std::string(300, 'z')));
    REQUIRE(f3.notes.size() == 1);
    CHECK(f3.notes[0] ==
          "STREAM_START for unknown service 'x?y" + std::string(125, 'z') + "...' ignored");
  }
}

TEST_CASE("v2: one stream per service, serviceId on every record") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx, services({"SSH1", "HTTP1"}));
  sm.on_link_up(2);
  deliver(sm, service_ids({"SSH1", "HTTP1"}));
  CHECK(accept(sm, "SSH1") == 1);
  CHECK(accept(sm, "HTTP1") == 2);
  CHECK_FALSE(sm.can_accept("SSH1"));  // V2: one at a time per service
  sm.on_local_data(ConnRef{"HTTP1", 2, 1}, "GET");
  deliver(sm, stream_rec(Message::DATA, 1, "SSH1", 0, "banner"));
  deliver(sm, stream_rec(Message::DATA, 2, "HTTP1", 0, "200"));
  CHECK(fx.take() == Lines{"send STREAM_START 1 service=SSH1", "send STREAM_START 2 service=HTTP1",
                           "data 2 3 service=HTTP1", "write 1@SSH1 banner", "write 2@HTTP1 200"});
  deliver(sm, stream_rec(Message::STREAM_RESET, 2, "HTTP1"));
  CHECK(fx.take() == Lines{"close 2@HTTP1 flush"});
  CHECK(sm.active_stream("SSH1") == 1);
  CHECK(sm.can_accept("HTTP1"));
  SUBCASE("a record without serviceId on a multi-service tunnel is a protocol error") {
    deliver(sm, record(Message::DATA, 1, "x"));
    const auto lines = fx.take();
    REQUIRE(lines.size() == 1);
    CHECK(starts_with(lines[0], "error DATA without serviceId"));
  }
  SUBCASE("CONNECTION_START is not V2") {
    deliver(sm, stream_rec(Message::CONNECTION_START, 1, "SSH1", 2));
    CHECK(starts_with(fx.take().at(0),
                      "error CONNECTION_START received, but this session speaks V2"));
  }
}

TEST_CASE("v1 link with several services fails the session") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx, services({"SSH1", "HTTP1"}));
  sm.on_link_up(1);
  REQUIRE(fx.log.size() == 1);
  CHECK(starts_with(fx.log[0], "fatal the service chose protocol V1, which carries one service"));
}

TEST_CASE("v3 source: waits for the peer's version, then multiplexes") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx, services({"WEB"}, 3));
  sm.on_link_up(3);
  deliver(sm, service_ids({"WEB"}));
  const auto c1 = sm.on_local_accepted("WEB");
  REQUIRE(c1);
  CHECK(*c1 == ConnRef{"WEB", 1, 1});
  CHECK(fx.take() == Lines{"send STREAM_START 1/1 service=WEB"});
  // Unknown peer: a second client waits.
  CHECK_FALSE(sm.can_accept("WEB"));
  CHECK(sm.peer_connections() == tunnel::PeerConnections::unknown);

  SUBCASE("a DATA with connectionId proves V3") {
    deliver(sm, stream_rec(Message::DATA, 1, "WEB", 1, "hi"));
    CHECK(sm.peer_connections() == tunnel::PeerConnections::multiple);
    CHECK(fx.accept_ready_calls == 1);
    CHECK(sm.can_accept("WEB"));
    const auto c2 = sm.on_local_accepted("WEB");
    const auto c3 = sm.on_local_accepted("WEB");
    REQUIRE(c2);
    REQUIRE(c3);
    CHECK(c2->connection_id == 2);
    // The limit (3): the fourth is refused, nothing else changes.
    CHECK_FALSE(sm.on_local_accepted("WEB"));
    CHECK(sm.counters().connections_refused == 1);
    sm.on_local_data(*c3, "abc");
    deliver(sm, stream_rec(Message::DATA, 1, "WEB", 2, "two"));
    CHECK(fx.take() == Lines{"write 1@WEB hi", "send CONNECTION_START 1/2 service=WEB",
                             "send CONNECTION_START 1/3 service=WEB", "data 1/3 3 service=WEB",
                             "write 1/2@WEB two"});
    // CONNECTION_RESET closes just that client.
    deliver(sm, stream_rec(Message::CONNECTION_RESET, 1, "WEB", 2));
    CHECK(fx.take() == Lines{"close 1/2@WEB flush"});
    CHECK(sm.live(*c3));
    CHECK(sm.live(*c1));
    // A local close sends CONNECTION_RESET; the stream stays.
    sm.on_local_closed(*c1);
    CHECK(fx.take() == Lines{"send CONNECTION_RESET 1/1 service=WEB"});
    CHECK(sm.active_stream("WEB") == 1);
    // STREAM_RESET closes all of the stream's connections.
    deliver(sm, stream_rec(Message::STREAM_RESET, 1, "WEB"));
    CHECK(fx.take() == Lines{"close 1/3@WEB flush"});
    CHECK(sm.connection_count() == 0);
    CHECK_FALSE(sm.active_stream("WEB"));
  }
  SUBCASE("a DATA without connectionId proves V1/V2: one at a time") {
    deliver(sm, stream_rec(Message::DATA, 1, "WEB", 0, "hi"));
    CHECK(sm.peer_connections() == tunnel::PeerConnections::single);
    CHECK_FALSE(sm.can_accept("WEB"));
    sm.on_local_data(*c1, "x");
    sm.on_local_closed(*c1);
    CHECK(fx.take() ==
          Lines{"write 1@WEB hi", "data 1 1 service=WEB", "send STREAM_RESET 1 service=WEB"});
    CHECK(sm.can_accept("WEB"));
    CHECK(accept(sm, "WEB") == 2);
    CHECK(fx.take() == Lines{"send STREAM_START 2 service=WEB"});
  }
  SUBCASE("a STREAM_RESET teaches nothing (the relay sends it for any peer)") {
    deliver(sm, stream_rec(Message::STREAM_RESET, 1, "WEB"));
    CHECK(sm.peer_connections() == tunnel::PeerConnections::unknown);
  }
  SUBCASE("a source never accepts CONNECTION_START") {
    deliver(sm, stream_rec(Message::CONNECTION_START, 1, "WEB", 5));
    CHECK(starts_with(fx.take().at(0), "error CONNECTION_START (stream 1) received by a source"));
  }
  SUBCASE("link loss aborts every connection and forgets the peer") {
    sm.on_link_down();
    CHECK(fx.take() == Lines{"close 1@WEB abort"});
    CHECK(sm.peer_connections() == tunnel::PeerConnections::unknown);
  }
}

TEST_CASE("v3 source told -y V3 does not wait") {
  RecordingEffects fx;
  auto o = services({});
  o.assume_v3_peer = true;
  SessionMachine sm(Mode::source, fx, o);
  sm.on_link_up(3);
  CHECK(accept(sm) == 1);
  CHECK(sm.can_accept(""));
  const auto c2 = sm.on_local_accepted();
  REQUIRE(c2);
  CHECK(fx.take() == Lines{"send STREAM_START 1/1", "send CONNECTION_START 1/2"});
}

TEST_CASE("v3 destination") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx, services({"SSH1", "HTTP1"}, 2));
  sm.on_link_up(3);
  deliver(sm, service_ids({"SSH1", "HTTP1"}));

  SUBCASE("V3 source: connections open, duplicate and over-limit ids are reset") {
    deliver(sm, stream_rec(Message::STREAM_START, 7, "HTTP1", 1));
    deliver(sm, stream_rec(Message::CONNECTION_START, 7, "HTTP1", 2));
    deliver(sm, stream_rec(Message::DATA, 7, "HTTP1", 2, "GET"));
    CHECK(fx.take() == Lines{"open 7@HTTP1", "open 7/2@HTTP1", "write 7/2@HTTP1 GET"});
    deliver(sm, stream_rec(Message::CONNECTION_START, 7, "HTTP1", 3));  // limit 2
    CHECK(fx.take() == Lines{"send CONNECTION_RESET 7/3 service=HTTP1"});
    deliver(sm, stream_rec(Message::CONNECTION_START, 7, "HTTP1", 2));  // duplicate
    CHECK(fx.take() == Lines{"close 7/2@HTTP1 abort", "send CONNECTION_RESET 7/2 service=HTTP1"});
    // Answers carry the connectionId.
    sm.on_local_connected(ConnRef{"HTTP1", 7, 1});
    sm.on_local_data(ConnRef{"HTTP1", 7, 1}, "200");
    CHECK(fx.take() == Lines{"data 7/1 3 service=HTTP1"});
    // The other service is independent.
    deliver(sm, stream_rec(Message::STREAM_START, 8, "SSH1", 1));
    CHECK(fx.take() == Lines{"open 8@SSH1"});
    CHECK(sm.connection_count() == 2);
  }
  SUBCASE("local connect failure resets just that connection") {
    deliver(sm, stream_rec(Message::STREAM_START, 7, "HTTP1", 1));
    deliver(sm, stream_rec(Message::CONNECTION_START, 7, "HTTP1", 2));
    fx.take();
    sm.on_local_connect_failed(ConnRef{"HTTP1", 7, 2});
    CHECK(fx.take() == Lines{"send CONNECTION_RESET 7/2 service=HTTP1"});
    CHECK(sm.live(ConnRef{"HTTP1", 7, 1}));
  }
  SUBCASE("a V1/V2 source (no connectionId) gets answers without one") {
    deliver(sm, stream_rec(Message::STREAM_START, 3, "SSH1"));
    CHECK(sm.peer_connections() == tunnel::PeerConnections::single);
    deliver(sm, stream_rec(Message::DATA, 3, "SSH1", 0, "x"));
    sm.on_local_data(ConnRef{"SSH1", 3, 1}, "y");
    sm.on_local_closed(ConnRef{"SSH1", 3, 1});
    CHECK(fx.take() == Lines{"open 3@SSH1", "write 3@SSH1 x", "data 3 1 service=SSH1",
                             "send STREAM_RESET 3 service=SSH1"});
  }
  SUBCASE(
      "a peer that started several connections, then looks single: a local close ends them all") {
    // Found by fuzz_session_machine: a STREAM_START without connectionId on
    // another service makes the peer look V1/V2, whose only answer is
    // STREAM_RESET; the stream's other local connection was forgotten open.
    deliver(sm, stream_rec(Message::STREAM_START, 7, "HTTP1", 1));
    deliver(sm, stream_rec(Message::CONNECTION_START, 7, "HTTP1", 2));
    deliver(sm, stream_rec(Message::STREAM_START, 8, "SSH1"));
    CHECK(sm.peer_connections() == tunnel::PeerConnections::single);
    fx.take();
    sm.on_local_closed(ConnRef{"HTTP1", 7, 1});
    CHECK(fx.take() == Lines{"close 7/2@HTTP1 abort", "send STREAM_RESET 7 service=HTTP1"});
    CHECK_FALSE(sm.live(ConnRef{"HTTP1", 7, 2}));
    CHECK(sm.connection_count() == 1);  // SSH1's
  }
  SUBCASE("CONNECTION_START without connectionId is a protocol error") {
    deliver(sm, stream_rec(Message::STREAM_START, 7, "HTTP1", 1));
    deliver(sm, stream_rec(Message::CONNECTION_START, 7, "HTTP1", 0));
    CHECK(starts_with(fx.take().back(), "error CONNECTION_START (stream 7) without connectionId"));
  }
}

TEST_CASE("v3 machine survives arbitrary record sequences") {
  // A cheap deterministic fuzz: every record type, ids and services in a
  // small range, both modes; the machine must neither crash nor keep more
  // connections than its limit.
  for (Mode mode : {Mode::source, Mode::destination}) {
    RecordingEffects fx;
    SessionMachine sm(mode, fx, services({"A", "B"}, 4));
    sm.on_link_up(3);
    std::uint32_t x = 12345;
    auto rnd = [&x](std::uint32_t n) {
      x = x * 1103515245u + 12345u;
      return (x >> 16) % n;
    };
    for (int i = 0; i < 20000; ++i) {
      const auto type = static_cast<Message::Type>(rnd(9));
      const char* svc[] = {"", "A", "B", "C"};
      Message m = stream_rec(type, static_cast<std::int32_t>(rnd(4)), svc[rnd(4)], rnd(6), "p");
      if (rnd(50) == 0) m = service_ids({"A", "B"});
      deliver(sm, m);
      if (rnd(5) == 0 && mode == Mode::source) (void)sm.on_local_accepted(rnd(2) ? "A" : "B");
      if (rnd(7) == 0)
        sm.on_local_closed(ConnRef{rnd(2) ? "A" : "B", static_cast<int>(rnd(4)), rnd(6)});
      if (rnd(500) == 0) {
        sm.on_link_down();
        sm.on_link_up(static_cast<int>(1 + rnd(3)));
      }
      CHECK(sm.connection_count() <= 8);
      fx.log.clear();
    }
  }
}

// docs/interop.md, finding 1: the reference destination processes records that
// share a WebSocket read with STREAM_START only when a later message arrives.
// A source therefore follows the first DATA of each connection with three
// empty DATA records, 20, 200 and 2000 ms later.
TEST_CASE("session: a source nudges after the first DATA of a stream") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(accept(sm) == 1);
  CHECK(fx.nudges.empty());
  fx.take();

  sm.on_local_data(R(1), "GET /");
  CHECK(fx.take() == Lines{"data 1 5"});
  CHECK(fx.nudges == Lines{"1 after 20 ms"});
  sm.on_local_data(R(1), "more");
  CHECK(fx.take() == Lines{"data 1 4"});
  CHECK(fx.nudges.size() == 1);  // armed once per connection

  sm.on_nudge_due(R(1));
  CHECK(fx.take() == Lines{"data 1 0"});
  CHECK(fx.nudges.back() == "1 after 180 ms");
  sm.on_nudge_due(R(1));
  CHECK(fx.take() == Lines{"data 1 0"});
  CHECK(fx.nudges.back() == "1 after 1800 ms");
  sm.on_nudge_due(R(1));
  CHECK(fx.take() == Lines{"data 1 0"});
  CHECK(fx.nudges.size() == 3);
  // The schedule is over: a late call sends nothing, more data arms nothing.
  sm.on_nudge_due(R(1));
  sm.on_local_data(R(1), "x");
  CHECK(fx.take() == Lines{"data 1 1"});
  CHECK(fx.nudges.size() == 3);
  CHECK(sm.counters().records_out == 7);  // START, 3 DATA, 3 nudges
}

TEST_CASE("session: nudges end with their stream and re-arm for the next") {
  RecordingEffects fx;
  SessionMachine sm(Mode::source, fx);
  sm.on_link_up();
  REQUIRE(accept(sm) == 1);
  sm.on_local_data(R(1), "a");
  sm.on_local_closed(R(1));
  fx.take();
  sm.on_nudge_due(R(1));  // the stream is gone: its id is stale for the peer
  CHECK(fx.take().empty());

  REQUIRE(accept(sm) == 2);
  fx.take();
  sm.on_local_data(R(2), "b");
  CHECK(fx.nudges == Lines{"1 after 20 ms", "2 after 20 ms"});
  fx.take();
  sm.on_nudge_due(R(1));  // stale timer
  CHECK(fx.take().empty());
  sm.on_nudge_due(R(2));
  CHECK(fx.take() == Lines{"data 2 0"});
  // A link loss ends the stream and its nudges.
  sm.on_link_down();
  fx.take();
  sm.on_nudge_due(R(2));
  CHECK(fx.take().empty());
}

TEST_CASE("session: a destination never nudges") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 4));
  sm.on_local_connected(R(4));
  sm.on_local_data(R(4), "answer");
  CHECK(fx.nudges.empty());
  sm.on_nudge_due(R(4));
  CHECK(fx.take() == Lines{"open 4", "data 4 6"});
}

TEST_CASE("session: an empty DATA writes nothing locally") {
  RecordingEffects fx;
  SessionMachine sm(Mode::destination, fx);
  sm.on_link_up();
  deliver(sm, record(Message::STREAM_START, 4));
  deliver(sm, record(Message::DATA, 4, ""));
  deliver(sm, record(Message::DATA, 4, "x"));
  CHECK(fx.take() == Lines{"open 4", "write 4 x"});
}

// V3: each connection arms the schedule with its own first DATA, and only
// then. Data of connections that already sent some must not restart it (it
// did after the V2/V3 rewrite: DATA alternating between two connections
// re-armed the schedule at every switch).
TEST_CASE("v3 source: each connection arms the nudges once, on its first DATA") {
  RecordingEffects fx;
  auto o = services({"WEB"});
  o.assume_v3_peer = true;
  SessionMachine sm(Mode::source, fx, o);
  sm.on_link_up(3);
  deliver(sm, service_ids({"WEB"}));
  const auto c1 = sm.on_local_accepted("WEB");
  const auto c2 = sm.on_local_accepted("WEB");
  REQUIRE(c1);
  REQUIRE(c2);
  fx.take();

  sm.on_local_data(*c1, "GET /a");
  CHECK(fx.nudges == Lines{"1@WEB after 20 ms"});
  sm.on_local_data(*c2, "GET /b");
  CHECK(fx.nudges == Lines{"1@WEB after 20 ms", "1/2@WEB after 20 ms"});
  // Further data of either connection: no new schedule.
  sm.on_local_data(*c1, "x");
  sm.on_local_data(*c2, "y");
  sm.on_local_data(*c1, "z");
  CHECK(fx.nudges.size() == 2);
  CHECK(fx.take() == Lines{"data 1/1 6 service=WEB", "data 1/2 6 service=WEB",
                           "data 1/1 1 service=WEB", "data 1/2 1 service=WEB",
                           "data 1/1 1 service=WEB"});
  // The newest schedule runs to its end; it is a later message for
  // whatever the peer holds of either connection.
  sm.on_nudge_due(*c2);
  sm.on_nudge_due(*c2);
  sm.on_nudge_due(*c2);
  CHECK(fx.take() ==
        Lines{"data 1/2 0 service=WEB", "data 1/2 0 service=WEB", "data 1/2 0 service=WEB"});
  CHECK(fx.nudges == Lines{"1@WEB after 20 ms", "1/2@WEB after 20 ms", "1/2@WEB after 180 ms",
                           "1/2@WEB after 1800 ms"});
  // A third connection's first DATA arms it again.
  const auto c3 = sm.on_local_accepted("WEB");
  REQUIRE(c3);
  sm.on_local_data(*c3, "GET /c");
  CHECK(fx.nudges.back() == "1/3@WEB after 20 ms");
  // A connection that ended takes its schedule with it.
  sm.on_local_closed(*c3);
  fx.take();
  sm.on_nudge_due(*c3);
  CHECK(fx.take().empty());
}
