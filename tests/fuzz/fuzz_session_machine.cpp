// libFuzzer target for SessionMachine (V1/V2/V3, source and destination):
// the input picks a configuration, then a sequence of steps, each a record
// from the service (structured, or raw bytes through the RecordDecoder) or a
// local event (accept, connect done/failed, data, close, link up/down, a
// nudge timer). A shadow of the local connections the machine opened and
// closed is kept from its effects, and after every step:
//  - the connections the machine calls live are exactly the shadow's;
//  - no effect names a connection that is not open (no write or close after
//    close, no second open of the same one), and a close effect already sees
//    the connection dead (state before effects);
//  - DATA chunks respect max_payload and carry exactly the local bytes;
//  - every record sent encodes, has a stream id, and matches the link: no
//    serviceId on a V1 link but the one the service announced, no
//    connectionId below V3, serviceId on every
//    stream record of a multi-service V2/V3 session;
//  - a source's stream ids only grow; connections per service stay within
//    the limit, so memory is bounded by the configuration.
// Run: see docs/testing.md (scripts/fuzz.sh session_machine).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "fuzz_check.h"
#include "record_codec.h"
#include "session_machine.h"

namespace {

// Reads the input byte by byte; zeros once it is used up.
struct Input {
  std::span<const std::uint8_t> rest;
  bool empty() const { return rest.empty(); }
  std::uint8_t byte() {
    if (rest.empty()) return 0;
    const std::uint8_t b = rest.front();
    rest = rest.subspan(1);
    return b;
  }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v = (v << 8) | byte();
    return v;
  }
  std::span<const std::uint8_t> take(std::size_t n) {
    n = std::min(n, rest.size());
    const auto out = rest.first(n);
    rest = rest.subspan(n);
    return out;
  }
};

class Driver;

class ShadowEffects : public tunnel::SessionEffects {
 public:
  Driver* d = nullptr;
  void send_record(const tunnel::Message& m) override;
  void send_data(const tunnel::WireAddress& to, std::string_view chunk) override;
  void open_local(const tunnel::ConnRef& c) override;
  void write_local(const tunnel::ConnRef& c, std::string_view bytes) override;
  void close_local(const tunnel::ConnRef& c, bool flush) override;
  void protocol_error(std::string reason) override;
  void session_error(std::string reason) override;
  void accept_ready() override;
  void note(std::string_view what) override;
  void schedule_nudge(const tunnel::ConnRef& c, std::uint32_t delay_ms) override;
};

class Driver {
 public:
  Driver(tunnel::Mode mode, const tunnel::MachineOptions& opt)
      : mode(mode), opt(opt), m(mode, fx, opt) {
    fx.d = this;
  }

  tunnel::Mode mode;
  tunnel::MachineOptions opt;
  ShadowEffects fx;
  tunnel::SessionMachine m;

  std::set<tunnel::ConnRef> open;         // local connections the machine opened/accepted
  std::set<tunnel::ConnRef> connecting;   // destination: open_local not yet answered
  std::optional<tunnel::ConnRef> nudge;   // the timer asked for by schedule_nudge
  std::optional<tunnel::ConnRef> firing;  // the timer now running on_nudge_due
  bool failed = false;                    // session_error: the session is over
  bool dropped = false;                   // protocol_error: the loop drops the link
  bool reenter_on_close = false;
  std::int32_t last_started = 0;  // source: last STREAM_START id sent
  // The DATA the machine is expected to emit for the current on_local_data.
  std::optional<tunnel::ConnRef> expect_data_for;
  std::string data_seen;
  std::size_t records_sent = 0;

  const std::string* service(std::uint8_t sel) const {
    return &m.services()[sel % m.services().size()];
  }

  void check_consistent() const {
    FUZZ_CHECK(m.connection_count() == open.size());
    for (const auto& c : open) FUZZ_CHECK(m.live(c));
    for (const auto& c : connecting) FUZZ_CHECK(open.count(c) == 1);
    for (const auto& name : m.services()) {
      std::size_t n = 0;
      for (const auto& c : open) n += c.service == name;
      // The limit, plus the one STREAM_START connection a V1/V2 peer brings.
      FUZZ_CHECK(n <= std::max<std::size_t>(opt.max_connections, 1));
      const auto active = m.active_stream(name);
      for (const auto& c : open) {
        if (c.service == name) FUZZ_CHECK(active && *active == c.stream_id);
      }
    }
    if (!m.link_up()) FUZZ_CHECK(open.empty());
  }

  void on_sent(const tunnel::Message& msg) {
    ++records_sent;
    FUZZ_CHECK(m.link_up());
    FUZZ_CHECK(msg.streamid() != 0);
    FUZZ_CHECK(msg.serviceid().size() <= tunnel::kMaxServiceIdSize);
    // V1: a serviceId only as announced by the service (SERVICE_IDS with one
    // id; tests/unit/test_session_machine.cpp "session: SERVICE_IDS").
    if (m.version() == 1) FUZZ_CHECK(msg.serviceid().empty() || msg.serviceid() == m.service_id());
    if (m.version() < 3) FUZZ_CHECK(msg.connectionid() == 0);
    if (m.version() >= 2 && m.services().size() > 1) FUZZ_CHECK(!msg.serviceid().empty());
    std::string wire;
    FUZZ_CHECK(tunnel::encode_record(msg, wire));
    if (mode == tunnel::Mode::source && msg.type() == tunnel::Message::STREAM_START) {
      FUZZ_CHECK(msg.streamid() > last_started);
      last_started = msg.streamid();
    }
    FUZZ_CHECK(msg.type() != tunnel::Message::CONNECTION_START || mode == tunnel::Mode::source);
  }

  void on_data(const tunnel::WireAddress& to, std::string_view chunk) {
    FUZZ_CHECK(chunk.size() <= opt.max_payload);
    FUZZ_CHECK(to.stream_id != 0);
    if (m.version() == 1) FUZZ_CHECK(to.service_id.empty() || to.service_id == m.service_id());
    if (m.version() < 3) FUZZ_CHECK(to.connection_id == 0);
    if (expect_data_for) {
      FUZZ_CHECK(to.stream_id == expect_data_for->stream_id);
      FUZZ_CHECK(!chunk.empty());
      data_seen.append(chunk);
    } else {
      // A nudge: empty, from the timer, for the live connection that armed it.
      FUZZ_CHECK(chunk.empty());
      FUZZ_CHECK(firing && m.live(*firing) && to.stream_id == firing->stream_id);
    }
    // Same check as encode_data_record's contract.
    std::string wire;
    tunnel::encode_data_record(to.stream_id, chunk, wire, to.service_id, to.connection_id);
    FUZZ_CHECK(wire.size() <= tunnel::kLengthPrefixSize + tunnel::kMaxRecordSize);
  }

  void on_open(const tunnel::ConnRef& c) {
    FUZZ_CHECK(mode == tunnel::Mode::destination);
    FUZZ_CHECK(open.insert(c).second);
    connecting.insert(c);
    FUZZ_CHECK(m.live(c));
  }

  void on_write(const tunnel::ConnRef& c, std::string_view bytes) {
    FUZZ_CHECK(open.count(c) == 1);
    FUZZ_CHECK(!bytes.empty());
    FUZZ_CHECK(expect_write && bytes == *expect_write);
    FUZZ_CHECK(bytes.size() <= opt.max_payload);
    ++writes;
  }

  void on_close(const tunnel::ConnRef& c) {
    FUZZ_CHECK(open.erase(c) == 1);
    connecting.erase(c);
    FUZZ_CHECK(!m.live(c));  // state is updated before effects run
    if (reenter_on_close) {
      // The loop may report the close back at once; it must be a no-op.
      const std::size_t before = records_sent;
      m.on_local_closed(c);
      m.on_local_data(c, "x");
      FUZZ_CHECK(records_sent == before);
    }
  }

  // Builds a record the way a service could send it, mostly meaningful.
  tunnel::Message record(Input& in) {
    tunnel::Message msg;
    const std::uint8_t t = in.byte();
    msg.set_type(static_cast<tunnel::Message::Type>(t % 10));  // 8, 9: unknown types
    if (t & 0x80) msg.set_ignorable(true);
    const std::uint8_t s = in.byte();
    switch (s >> 6) {
      case 0:  // the active stream of a service, if any
        msg.set_streamid(m.active_stream(*service(s)).value_or(s & 7));
        break;
      case 1:
        msg.set_streamid(last_started + static_cast<std::int8_t>(s & 0x3f) - 8);
        break;
      case 2:
        msg.set_streamid(s & 0x3f);
        break;
      default:
        msg.set_streamid(static_cast<std::int32_t>(in.u32()));
        break;
    }
    const std::uint8_t f = in.byte();
    switch (f & 3) {
      case 0:
        break;  // no serviceId
      case 1:
        msg.set_serviceid(*service(f >> 2));
        break;
      case 2:
        msg.set_serviceid(std::string(m.wire_service_id(*service(f >> 2))));
        break;
      default:
        msg.set_serviceid(f & 0x80 ? std::string(200, 'S') : "OTHER");
        break;
    }
    switch ((f >> 2) & 3) {
      case 0:
        break;
      case 1:
        msg.set_connectionid(1 + (in.byte() & 7));
        break;
      case 2:
        msg.set_connectionid(in.u32());
        break;
      default:
        msg.set_connectionid(static_cast<std::uint32_t>(m.connection_count() + 1));
        break;
    }
    if (f & 0x10) {
      // The record decoder upstream bounds payloads by max_payload.
      const auto p = in.take(std::min<std::size_t>(in.byte(), opt.max_payload));
      msg.set_payload(std::string(p.begin(), p.end()));
    }
    if (msg.type() == tunnel::Message::SERVICE_IDS || (f & 0x20)) {
      const std::uint8_t n = in.byte();
      for (int i = 0; i < (n & 3); ++i) {
        const std::uint8_t sel = in.byte();
        if (sel & 0x80) {
          msg.add_availableserviceids(sel & 0x40 ? std::string(129, 'L') : "OTHER");
        } else {
          msg.add_availableserviceids(*service(sel));
        }
      }
      if (n & 4) {
        for (const auto& name : m.services()) msg.add_availableserviceids(name);
      }
    }
    return msg;
  }

  // One record from the service; a DATA payload must reach write_local intact.
  void deliver(tunnel::Message& msg) {
    const bool is_data = msg.type() == tunnel::Message::DATA;
    expect_write = is_data ? std::optional<std::string>(msg.payload()) : std::nullopt;
    writes = 0;
    m.on_record(msg);
    FUZZ_CHECK(writes <= 1);
    expect_write.reset();
  }
  std::optional<std::string> expect_write;
  std::size_t writes = 0;

  void local_data(const tunnel::ConnRef& c, Input& in) {
    const std::size_t n = std::size_t{in.byte()} * (in.byte() % 4 + 1);
    std::string bytes(n, 'd');
    for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<char>(i * 7);
    const bool live = m.live(c);
    expect_data_for = c;
    data_seen.clear();
    m.on_local_data(c, bytes);
    expect_data_for.reset();
    FUZZ_CHECK(data_seen == (live ? bytes : std::string()));
  }

  std::optional<tunnel::ConnRef> pick_open(std::uint8_t sel) const {
    if (open.empty()) return std::nullopt;
    auto it = open.begin();
    std::advance(it, sel % open.size());
    return *it;
  }

  void step(Input& in) {
    const std::uint8_t op = in.byte();
    switch (op % 13) {
      case 0:
      case 1:
      case 2: {                   // a structured record
        if (!m.link_up()) break;  // records only arrive on a live link
        tunnel::Message msg = record(in);
        deliver(msg);
        break;
      }
      case 3: {  // raw bytes through the record decoder, as the link feeds them
        if (!m.link_up()) break;
        tunnel::RecordDecoder dec(tunnel::kMaxRecordSize, opt.max_payload);
        const auto raw = in.take(in.byte());
        dec.feed(raw, [&](tunnel::Message& msg) {
          deliver(msg);
          return !failed && !dropped;
        });
        break;
      }
      case 4: {  // source: a local client arrives
        const std::string name = *service(op >> 4);
        const bool may = m.can_accept(name);
        if (may || (op & 0x80)) {
          const auto c = m.on_local_accepted(name);
          if (c) {
            FUZZ_CHECK(mode == tunnel::Mode::source && m.link_up());
            FUZZ_CHECK(c->service == name && m.live(*c));
            FUZZ_CHECK(open.insert(*c).second);
          } else if (may) {
            // Refused although admissible: only at the connection limit.
            std::size_t n = 0;
            for (const auto& o : open) n += o.service == name;
            FUZZ_CHECK(n >= opt.max_connections);
          }
        }
        break;
      }
      case 5: {  // destination: a local connect finishes
        if (connecting.empty()) break;
        auto it = connecting.begin();
        std::advance(it, in.byte() % connecting.size());
        const tunnel::ConnRef c = *it;
        connecting.erase(it);
        if (op & 0x10) {
          open.erase(c);  // the loop forgets it; the machine must too
          m.on_local_connect_failed(c);
          FUZZ_CHECK(!m.live(c));
        } else {
          m.on_local_connected(c);
        }
        break;
      }
      case 6:
      case 7: {  // local bytes, on an open connection or a stale one
        if (auto c = pick_open(in.byte()); c && !(op & 0x80)) {
          local_data(*c, in);
        } else {
          local_data(tunnel::ConnRef{*service(op >> 4), static_cast<std::int32_t>(op & 7), 1}, in);
        }
        break;
      }
      case 8: {  // the local side closes (EOF, error)
        if (auto c = pick_open(in.byte())) {
          open.erase(*c);
          connecting.erase(*c);
          m.on_local_closed(*c);
          FUZZ_CHECK(!m.live(*c));
        }
        break;
      }
      case 9:  // the link drops
        m.on_link_down();
        FUZZ_CHECK(open.empty() && !m.link_up());
        connecting.clear();
        dropped = false;
        break;
      case 10:  // the link (re)connects
        if (!m.link_up()) {
          const int v = 1 + (op >> 4) % 3;
          m.on_link_up(v);
          FUZZ_CHECK(m.version() == v);
        }
        break;
      case 11:  // the nudge timer fires
        if (nudge) {
          firing = *nudge;
          nudge.reset();
          m.on_nudge_due(*firing);
          firing.reset();
        }
        break;
      default:
        reenter_on_close = !reenter_on_close;
        break;
    }
    if (dropped) {
      // protocol_error: the loop drops the WebSocket.
      m.on_link_down();
      connecting.clear();
      dropped = false;
    }
    check_consistent();
  }
};

void ShadowEffects::send_record(const tunnel::Message& m) { d->on_sent(m); }
void ShadowEffects::send_data(const tunnel::WireAddress& to, std::string_view chunk) {
  d->on_data(to, chunk);
}
void ShadowEffects::open_local(const tunnel::ConnRef& c) { d->on_open(c); }
void ShadowEffects::write_local(const tunnel::ConnRef& c, std::string_view bytes) {
  d->on_write(c, bytes);
}
void ShadowEffects::close_local(const tunnel::ConnRef& c, bool) { d->on_close(c); }
void ShadowEffects::protocol_error(std::string reason) {
  FUZZ_CHECK(!reason.empty() && reason.find('\n') == std::string::npos);
  d->dropped = true;
}
void ShadowEffects::session_error(std::string reason) {
  FUZZ_CHECK(!reason.empty() && reason.find('\n') == std::string::npos);
  d->failed = true;
}
void ShadowEffects::note(std::string_view what) {
  FUZZ_CHECK(!what.empty() && what.find('\n') == std::string_view::npos);
}
void ShadowEffects::accept_ready() { FUZZ_CHECK(d->mode == tunnel::Mode::source); }
void ShadowEffects::schedule_nudge(const tunnel::ConnRef& c, std::uint32_t delay_ms) {
  FUZZ_CHECK(d->mode == tunnel::Mode::source && delay_ms > 0 && delay_ms <= 2000);
  FUZZ_CHECK(d->m.live(c));
  d->nudge = c;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in{std::span(data, size)};
  const std::uint8_t cfg = in.byte();
  const std::uint8_t lim = in.byte();
  tunnel::MachineOptions opt;
  static const char* const kNames[] = {"SSH1", "HTTP1", "VNC"};
  for (int i = 0; i < (cfg >> 2) % 4; ++i) opt.services.emplace_back(kNames[i]);
  opt.max_payload = (lim & 0x80) ? tunnel::kMaxPayloadSize : 1 + (lim & 0x3f);
  opt.max_connections = 1 + ((lim >> 4) & 3);
  opt.assume_v3_peer = (cfg & 0x40) != 0;
  const auto mode = (cfg & 1) ? tunnel::Mode::destination : tunnel::Mode::source;
  Driver d(mode, opt);
  if (cfg & 2) d.m.on_link_up(1 + (cfg >> 4) % 3);
  // Bounded work per input: at most 256 steps.
  for (int steps = 0; steps < 256 && !in.empty() && !d.failed; ++steps) d.step(in);
  d.m.on_link_down();
  FUZZ_CHECK(d.open.empty() && d.m.connection_count() == 0);
  return 0;
}
