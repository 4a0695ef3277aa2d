#include "session_machine.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <set>
#include <utility>

#include <fmt/format.h>

#include "printable.h"

namespace tunnel {

namespace {

std::string_view type_name(int type) {
  if (Message::Type_IsValid(type)) {
    return Message::Type_Name(static_cast<Message::Type>(type));
  }
  return "?";
}

bool is_stream_message(int type) {
  return type == Message::DATA || type == Message::STREAM_START || type == Message::STREAM_RESET ||
         type == Message::CONNECTION_START || type == Message::CONNECTION_RESET;
}

// A service id fit for one log line or error text: the service's ids are
// any bytes (a hostile one could send a newline and forge log lines), so
// bytes outside printable ASCII are shown as '?' and at most
// kMaxServiceIdSize of them are shown.
std::string shown_id(std::string_view id) {
  if (id.empty()) return "(unnamed)";
  return printable_ascii(id, kMaxServiceIdSize) + (id.size() > kMaxServiceIdSize ? "..." : "");
}

std::string set_text(const std::set<std::string>& ids) {
  std::string out = "{";
  for (const auto& id : ids) out += (out.size() > 1 ? ", " : "") + shown_id(id);
  return out + "}";
}

}  // namespace

std::string_view to_string(Mode m) {
  switch (m) {
    case Mode::source:
      return "source";
    case Mode::destination:
      return "destination";
  }
  return "?";
}

SessionMachine::SessionMachine(Mode mode, SessionEffects& effects, MachineOptions options)
    : mode_(mode), effects_(effects), options_(std::move(options)) {
  options_.max_payload = std::clamp<std::size_t>(options_.max_payload, 1, kMaxPayloadSize);
  options_.max_connections = std::max<std::size_t>(options_.max_connections, 1);
  if (options_.services.empty()) options_.services.emplace_back();
  for (const auto& id : options_.services) {
    Service s;
    s.id = id;
    services_.push_back(std::move(s));
    service_names_.push_back(id);
  }
}

SessionMachine::SessionMachine(Mode mode, SessionEffects& effects, std::size_t max_payload)
    : SessionMachine(mode, effects, MachineOptions{{}, max_payload, 128, false}) {}

SessionMachine::Service* SessionMachine::find(std::string_view configured) {
  for (auto& s : services_) {
    if (s.id == configured) return &s;
  }
  return nullptr;
}

const SessionMachine::Service* SessionMachine::find(std::string_view configured) const {
  for (const auto& s : services_) {
    if (s.id == configured) return &s;
  }
  return nullptr;
}

std::optional<std::int32_t> SessionMachine::active_stream() const {
  if (services_.front().stream == 0) return std::nullopt;
  return services_.front().stream;
}

std::optional<std::int32_t> SessionMachine::active_stream(std::string_view service) const {
  const Service* s = find(service);
  if (!s || s->stream == 0) return std::nullopt;
  return s->stream;
}

bool SessionMachine::live(const ConnRef& c) const {
  const Service* s = find(c.service);
  return s && s->stream != 0 && s->stream == c.stream_id && s->conns.count(c.connection_id) != 0;
}

std::size_t SessionMachine::connection_count() const {
  std::size_t n = 0;
  for (const auto& s : services_) n += s.conns.size();
  return n;
}

const std::string& SessionMachine::service_id() const { return services_.front().wire_id; }

std::string_view SessionMachine::wire_service_id(std::string_view service) const {
  const Service* s = find(service);
  return s ? std::string_view(s->wire_id) : std::string_view();
}

void SessionMachine::on_link_up(int version) {
  link_up_ = true;
  version_ = std::clamp(version, 1, 3);
  if (version_ < 3) {
    peer_ = PeerConnections::single;
  } else if (mode_ == Mode::source && options_.assume_v3_peer) {
    peer_ = PeerConnections::multiple;
  } else {
    peer_ = PeerConnections::unknown;
  }
  for (auto& s : services_) s.wire_id = version_ >= 2 ? s.id : std::string();
  if (version_ == 1 && services_.size() > 1) {
    effects_.session_error(fmt::format(
        "the service chose protocol V1, which carries one service; this session has {} ({}): use "
        "a service that speaks V2 or V3, or one service per tunnel",
        services_.size(), set_text({service_names_.begin(), service_names_.end()})));
  }
}

void SessionMachine::on_link_down() {
  link_up_ = false;
  peer_ = PeerConnections::unknown;
  // docs/protocol.md section 7: losing the WebSocket kills every stream; the peer
  // will not see our bytes, so local connections are aborted, not flushed.
  for (auto& s : services_) end_stream(s, false);
}

void SessionMachine::on_record(Message& m) {
  ++counters_.records_in;
  const int type = static_cast<int>(m.type());

  if (type == Message::UNKNOWN) {
    effects_.protocol_error("record with type UNKNOWN (0); every record must carry a type");
    return;
  }
  if (!Message::Type_IsValid(type)) {
    if (m.ignorable()) {
      effects_.note(fmt::format("ignorable record of unknown type {} skipped", type));
      return;
    }
    effects_.protocol_error(fmt::format("record of unknown type {} not marked ignorable", type));
    return;
  }
  if (is_stream_message(type) && m.streamid() == 0) {
    effects_.protocol_error(fmt::format("{} record with stream id 0", type_name(type)));
    return;
  }
  if (type == Message::SESSION_RESET) {
    // docs/protocol.md section 4: close whatever is active. The service may have
    // reset only this end: tell the peer with a STREAM_RESET per stream, as
    // for a local close, or its clients would wait on a stream that is gone
    // (and a V3 source would keep opening connections on it). A peer that was
    // reset too ignores it as stale.
    for (auto& s : services_) {
      const std::int32_t id = s.stream;
      if (id == 0) continue;
      end_stream(s, true);
      send_control(Message::STREAM_RESET, s, id);
    }
    if (mode_ == Mode::source) effects_.accept_ready();
    return;
  }
  if (type == Message::SERVICE_IDS) {
    on_service_ids(m);
    return;
  }
  if ((type == Message::CONNECTION_START || type == Message::CONNECTION_RESET) && version_ < 3) {
    effects_.protocol_error(
        fmt::format("{} received, but this session speaks V{} (one connection per stream)",
                    type_name(type), version_));
    return;
  }
  if (!is_stream_message(type)) {
    // Type_IsValid() admitted it, so a newer schema added it without
    // teaching this machine: treat like any other unknown type.
    effects_.protocol_error(fmt::format("record of unhandled type {}", type));
    return;
  }
  Service* s = resolve_incoming(m);
  if (!s) return;
  switch (type) {
    case Message::DATA:
      on_data(*s, m);
      return;
    case Message::STREAM_START:
      on_stream_start(*s, m);
      return;
    case Message::STREAM_RESET:
      on_stream_reset(*s, m.streamid());
      return;
    case Message::CONNECTION_START:
      on_connection_start(*s, m);
      return;
    case Message::CONNECTION_RESET:
      on_connection_reset(*s, m);
      return;
    default:
      return;
  }
}

SessionMachine::Service* SessionMachine::resolve_incoming(const Message& m) {
  const std::string& id = m.serviceid();
  if (!id.empty()) {
    for (auto& s : services_) {
      if (s.wire_id == id || s.id == id) return &s;
    }
  }
  // One service: records without serviceId (a V1 peer) or naming one the
  // service never announced to us (a V1 link) are that service's.
  if (services_.size() == 1) return &services_.front();
  if (id.empty()) {
    effects_.protocol_error(fmt::format("{} without serviceId on a tunnel with {} services",
                                        type_name(m.type()), services_.size()));
    return nullptr;
  }
  ++counters_.stale_records_ignored;
  effects_.note(
      fmt::format("{} for unknown service '{}' ignored", type_name(m.type()), shown_id(id)));
  return nullptr;
}

void SessionMachine::learn_peer(bool has_connection_id) {
  if (version_ < 3 || peer_ != PeerConnections::unknown) return;
  peer_ = has_connection_id ? PeerConnections::multiple : PeerConnections::single;
  effects_.note(has_connection_id ? "peer speaks V3: several connections per service"
                                  : "peer speaks V1/V2: one connection per service at a time");
  if (mode_ == Mode::source && has_connection_id) effects_.accept_ready();
}

void SessionMachine::on_data(Service& s, Message& m) {
  const std::int32_t id = m.streamid();
  if (id != s.stream) {
    ignore_stale("DATA", s, id);
    return;
  }
  if (mode_ == Mode::source) learn_peer(m.connectionid() != 0);
  // connectionId 0 on a V3 link means the first connection (a V1/V2 peer).
  const std::uint32_t conn = m.connectionid() == 0 ? 1 : m.connectionid();
  if (s.conns.count(conn) == 0) {
    ++counters_.stale_records_ignored;
    effects_.note(
        fmt::format("DATA for connection {} of stream {} ignored: no such connection", conn, id));
    return;
  }
  // An empty DATA carries nothing (a source's nudge, docs/interop.md).
  if (m.payload().empty()) return;
  // Destination: also while the local connect runs; the connection queues it.
  effects_.write_local(ref(s, conn), m.payload());
}

void SessionMachine::on_stream_start(Service& s, const Message& m) {
  const std::int32_t id = m.streamid();
  if (mode_ == Mode::source) {
    effects_.protocol_error(fmt::format(
        "STREAM_START (stream {}) received by a source; only a source starts streams", id));
    return;
  }
  // A new start replaces the service's active stream. The service already
  // knows the old stream is over, so no STREAM_RESET is sent for it.
  if (s.stream != 0) {
    effects_.note(
        fmt::format("STREAM_START for stream {} replaces active stream {}", id, s.stream));
  }
  end_stream(s, false);
  if (version_ >= 3) {
    // docs/protocol.md section 6: the first STREAM_START tells the peer's version.
    // Every later one tells it again, on purpose: the source may have been
    // replaced by one of another version (same tunnel, new process), and a
    // source never mixes the two forms. Connections other services opened
    // under the old answer are closed whole when they end (on_local_closed).
    peer_ = m.connectionid() != 0 ? PeerConnections::multiple : PeerConnections::single;
  }
  const std::uint32_t conn = m.connectionid() == 0 ? 1 : m.connectionid();
  s.stream = id;
  s.conns[conn] = Service::Conn{.connecting = true};
  ++counters_.streams_started;
  ++counters_.connections_started;
  effects_.open_local(ref(s, conn));
}

void SessionMachine::on_connection_start(Service& s, const Message& m) {
  const std::int32_t id = m.streamid();
  const std::uint32_t conn = m.connectionid();
  if (mode_ == Mode::source) {
    effects_.protocol_error(fmt::format(
        "CONNECTION_START (stream {}) received by a source; only a source starts connections", id));
    return;
  }
  if (conn == 0) {
    effects_.protocol_error(fmt::format("CONNECTION_START (stream {}) without connectionId", id));
    return;
  }
  if (id != s.stream) {
    ignore_stale("CONNECTION_START", s, id);
    return;
  }
  peer_ = PeerConnections::multiple;
  if (s.conns.count(conn) != 0) {
    // docs/protocol.md section 6: a duplicate id is answered with CONNECTION_RESET;
    // both ends then forget that id.
    effects_.note(
        fmt::format("CONNECTION_START for existing connection {} of stream {}", conn, id));
    end_connection(s, conn, false);
    send_control(Message::CONNECTION_RESET, s, id, conn);
    return;
  }
  if (s.conns.size() >= options_.max_connections) {
    ++counters_.connections_refused;
    effects_.note(fmt::format("connection {} of stream {} refused: {} simultaneous connections",
                              conn, id, options_.max_connections));
    send_control(Message::CONNECTION_RESET, s, id, conn);
    return;
  }
  s.conns[conn] = Service::Conn{.connecting = true};
  ++counters_.connections_started;
  effects_.open_local(ref(s, conn));
}

void SessionMachine::on_stream_reset(Service& s, std::int32_t id) {
  if (id != s.stream) {
    ignore_stale("STREAM_RESET", s, id);
    return;
  }
  // The peer closed its side: deliver what is queued, then close.
  end_stream(s, true);
  if (mode_ == Mode::source) effects_.accept_ready();
}

void SessionMachine::on_connection_reset(Service& s, const Message& m) {
  const std::int32_t id = m.streamid();
  const std::uint32_t conn = m.connectionid();
  if (conn == 0) {
    effects_.protocol_error(fmt::format("CONNECTION_RESET (stream {}) without connectionId", id));
    return;
  }
  if (id != s.stream) {
    ignore_stale("CONNECTION_RESET", s, id);
    return;
  }
  if (mode_ == Mode::source) learn_peer(true);
  if (s.conns.count(conn) == 0) {
    ++counters_.stale_records_ignored;
    effects_.note(
        fmt::format("CONNECTION_RESET for unknown connection {} of stream {} ignored", conn, id));
    return;
  }
  end_connection(s, conn, true);
  if (mode_ == Mode::source) effects_.accept_ready();
}

void SessionMachine::on_service_ids(const Message& m) {
  const int count = m.availableserviceids_size();
  if (count == 0) {
    // Some services send an empty list to every client, V1 ones included.
    effects_.note("empty SERVICE_IDS ignored");
    return;
  }
  std::set<std::string> announced;
  for (const auto& id : m.availableserviceids()) {
    if (id.size() > kMaxServiceIdSize) {
      // It is echoed in every record we send; the service limits names to 128.
      effects_.protocol_error(fmt::format("SERVICE_IDS names a service id of {} bytes (limit {})",
                                          id.size(), kMaxServiceIdSize));
      return;
    }
    announced.insert(id);
  }
  if (services_.size() == 1 && services_.front().id.empty()) {
    // One unnamed service (-s PORT): it is whatever single service the
    // tunnel has.
    if (announced.size() > 1) {
      effects_.session_error(
          fmt::format("tunnel has {} services {}; {}name a local port or target for each (e.g. -s "
                      "{}=PORT,...)",
                      announced.size(), set_text(announced),
                      version_ == 1 ? "V1 carries one; " : "", shown_id(*announced.begin())));
      return;
    }
    services_.front().wire_id = *announced.begin();
    return;
  }
  const std::set<std::string> configured(service_names_.begin(), service_names_.end());
  if (announced != configured) {
    effects_.session_error(fmt::format(
        "service mismatch: the tunnel has services {} but this session is configured for {}; "
        "configure exactly the tunnel's services",
        set_text(announced), set_text(configured)));
    return;
  }
  for (auto& s : services_) s.wire_id = s.id;
}

bool SessionMachine::can_accept(std::string_view service) const {
  const Service* s = find(service);
  if (mode_ != Mode::source || !link_up_ || !s) return false;
  if (s->stream == 0) return true;
  // Several connections on one stream only once the peer proved it is V3; a
  // refused one (limit) is accepted and closed at once, not left pending.
  return peer_ == PeerConnections::multiple && version_ >= 3;
}

std::optional<ConnRef> SessionMachine::on_local_accepted(std::string_view service) {
  // The proxy loop must not accept local clients while the link is down (or
  // keep them pending until it is up): there is no service to carry them.
  Service* s = find(service);
  if (mode_ != Mode::source || !link_up_ || !s) return std::nullopt;
  if (s->stream != 0 && version_ >= 3 && peer_ == PeerConnections::multiple) {
    if (s->conns.size() >= options_.max_connections) {
      ++counters_.connections_refused;
      effects_.note(fmt::format("local client refused: {} simultaneous connections on service '{}'",
                                options_.max_connections, s->id));
      return std::nullopt;
    }
    if (s->next_conn == std::numeric_limits<std::uint32_t>::max()) {
      effects_.note("connection ids exhausted; local connection refused");
      return std::nullopt;
    }
    const std::uint32_t conn = s->next_conn++;
    s->conns[conn] = Service::Conn{};
    ++counters_.connections_started;
    send_control(Message::CONNECTION_START, *s, s->stream, conn);
    return ref(*s, conn);
  }
  // Stream ids are never reused during the tunnel's life (docs/protocol.md
  // section 4); after 2^31-1 streams there is no fresh id left.
  if (last_stream_id_ == std::numeric_limits<std::int32_t>::max()) {
    effects_.note("stream ids exhausted; local connection refused");
    return std::nullopt;
  }
  if (s->stream != 0) {
    // One connection per stream: a new client replaces the active one.
    const std::int32_t old = s->stream;
    send_control(Message::STREAM_RESET, *s, old);
    end_stream(*s, false);
  }
  s->stream = ++last_stream_id_;
  s->next_conn = 2;
  s->conns[1] = Service::Conn{};
  ++counters_.streams_started;
  ++counters_.connections_started;
  send_control(Message::STREAM_START, *s, s->stream, send_conn_ids() ? 1 : 0);
  return ref(*s, 1);
}

void SessionMachine::on_local_connected(const ConnRef& c) {
  Service* s = find(c.service);
  if (!live(c) || !s->conns[c.connection_id].connecting) {
    // Replaced or reset while connecting; close_local() was already issued.
    effects_.note(
        fmt::format("local connect for inactive stream {} completed; ignored", c.stream_id));
    return;
  }
  s->conns[c.connection_id].connecting = false;
}

void SessionMachine::on_local_connect_failed(const ConnRef& c) {
  if (!live(c)) {
    effects_.note(fmt::format("local connect for inactive stream {} failed; ignored", c.stream_id));
    return;
  }
  on_local_closed(c);
}

void SessionMachine::on_local_data(const ConnRef& c, std::string_view bytes) {
  if (!live(c) || bytes.empty()) return;
  Service& s = *find(c.service);
  const WireAddress to{s.wire_id, c.stream_id, send_conn_ids() ? c.connection_id : 0};
  while (!bytes.empty()) {
    const std::size_t n = std::min(bytes.size(), options_.max_payload);
    ++counters_.records_out;
    effects_.send_data(to, bytes.substr(0, n));
    bytes.remove_prefix(n);
  }
  // The first DATA of a connection arms the nudges (kNudgeDelaysMs), once:
  // later DATA, of this connection or another, must not restart them.
  Service::Conn& state = s.conns[c.connection_id];
  if (mode_ == Mode::source && !state.sent_data) {
    state.sent_data = true;
    nudge_ = c;
    nudges_sent_ = 0;
    effects_.schedule_nudge(c, kNudgeDelaysMs[0]);
  }
}

void SessionMachine::on_nudge_due(const ConnRef& c) {
  // Only for the live connection that armed it: once it has ended, what the
  // reference still holds is processed when the next message arrives.
  if (mode_ != Mode::source || !nudge_ || !(*nudge_ == c) || !link_up_ || !live(c) ||
      nudges_sent_ >= std::size(kNudgeDelaysMs)) {
    return;
  }
  const Service& s = *find(c.service);
  const WireAddress to{s.wire_id, c.stream_id, send_conn_ids() ? c.connection_id : 0};
  ++counters_.records_out;
  effects_.send_data(to, {});
  ++nudges_sent_;
  if (nudges_sent_ < std::size(kNudgeDelaysMs)) {
    effects_.schedule_nudge(c, kNudgeDelaysMs[nudges_sent_] - kNudgeDelaysMs[nudges_sent_ - 1]);
  }
}

void SessionMachine::on_local_closed(const ConnRef& c) {
  if (!live(c)) return;
  Service& s = *find(c.service);
  if (version_ >= 3 && peer_ == PeerConnections::multiple) {
    // One connection of the stream ends; the stream itself stays for the
    // service's next connections.
    s.conns.erase(c.connection_id);
    send_control(Message::CONNECTION_RESET, s, c.stream_id, c.connection_id);
  } else {
    // A V1/V2 peer (or one not known yet) understands STREAM_RESET only,
    // which ends every connection of the stream: the others (a peer that
    // started several, then a STREAM_START without connectionId on another
    // service made it look single) are closed here, not forgotten open.
    const std::int32_t id = s.stream;
    s.conns.erase(c.connection_id);
    end_stream(s, false);
    send_control(Message::STREAM_RESET, s, id);
  }
  if (mode_ == Mode::source) effects_.accept_ready();
}

void SessionMachine::end_stream(Service& s, bool flush) {
  if (s.stream == 0) return;
  const std::int32_t id = s.stream;
  auto conns = std::move(s.conns);
  s.conns.clear();
  s.stream = 0;
  for (const auto& [conn, state] : conns) effects_.close_local(ConnRef{s.id, id, conn}, flush);
}

void SessionMachine::end_connection(Service& s, std::uint32_t conn, bool flush) {
  if (s.conns.erase(conn) == 0) return;
  effects_.close_local(ConnRef{s.id, s.stream, conn}, flush);
}

void SessionMachine::ignore_stale(std::string_view what, const Service& s, std::int32_t id) {
  ++counters_.stale_records_ignored;
  if (s.stream == 0) {
    effects_.note(fmt::format("{} for stream {} ignored: no active stream", what, id));
  } else {
    effects_.note(fmt::format("{} for stream {} ignored: active stream is {}", what, id, s.stream));
  }
}

void SessionMachine::send_control(Message::Type type, const Service& s, std::int32_t stream_id,
                                  std::uint32_t connection_id) {
  Message m;
  m.set_type(type);
  m.set_streamid(stream_id);
  if (!s.wire_id.empty()) m.set_serviceid(s.wire_id);
  if (connection_id != 0) m.set_connectionid(connection_id);
  ++counters_.records_out;
  effects_.send_record(m);
}

}  // namespace tunnel
