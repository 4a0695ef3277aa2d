#include "session_machine.h"

#include <algorithm>
#include <iterator>
#include <limits>
#include <utility>

#include <fmt/format.h>

namespace tunnel {

namespace {

std::string_view type_name(int type) {
  if (Message::Type_IsValid(type)) {
    return Message::Type_Name(static_cast<Message::Type>(type));
  }
  return "?";
}

bool is_stream_message(int type) {
  return type == Message::DATA || type == Message::STREAM_START || type == Message::STREAM_RESET;
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

SessionMachine::SessionMachine(Mode mode, SessionEffects& effects, std::size_t max_payload)
    : mode_(mode), fx_(effects), max_payload_(std::max<std::size_t>(max_payload, 1)) {}

std::optional<std::int32_t> SessionMachine::active_stream() const {
  if (active_ == 0) {
    return std::nullopt;
  }
  return active_;
}

void SessionMachine::on_link_up() { link_up_ = true; }

void SessionMachine::on_link_down() {
  link_up_ = false;
  // protocol.md section 7: losing the WebSocket kills every stream; the peer
  // will not see our bytes, so the local connection is aborted, not flushed.
  if (active_ != 0) {
    const std::int32_t id = active_;
    forget_active();
    fx_.close_local(id, false);
  }
}

void SessionMachine::on_record(Message& m) {
  ++counters_.records_in;
  const int type = static_cast<int>(m.type());

  if (type == Message::UNKNOWN) {
    fx_.protocol_error("record with type UNKNOWN (0); every record must carry a type");
    return;
  }
  if (!Message::Type_IsValid(type)) {
    if (m.ignorable()) {
      fx_.note(fmt::format("ignorable record of unknown type {} skipped", type));
      return;
    }
    fx_.protocol_error(fmt::format("record of unknown type {} not marked ignorable", type));
    return;
  }
  if (is_stream_message(type) && m.streamid() == 0) {
    fx_.protocol_error(fmt::format("{} record with stream id 0", type_name(type)));
    return;
  }

  switch (type) {
    case Message::DATA:
      on_data(m);
      return;
    case Message::STREAM_START:
      on_stream_start(m.streamid());
      return;
    case Message::STREAM_RESET:
      on_stream_reset(m.streamid());
      return;
    case Message::SESSION_RESET:
      if (active_ != 0) {
        const std::int32_t id = active_;
        forget_active();
        fx_.close_local(id, true);
      }
      return;
    case Message::SERVICE_IDS:
      on_service_ids(m);
      return;
    case Message::CONNECTION_START:
    case Message::CONNECTION_RESET:
      fx_.protocol_error(fmt::format(
          "{} received, but this session speaks V1 (one connection per stream)", type_name(type)));
      return;
    default:
      // Type_IsValid() admitted it, so a newer schema added it without
      // teaching this machine: treat like any other unknown type.
      fx_.protocol_error(fmt::format("record of unhandled type {}", type));
      return;
  }
}

void SessionMachine::on_data(Message& m) {
  const std::int32_t id = m.streamid();
  if (id != active_) {
    ignore_stale("DATA", id);
    return;
  }
  // An empty DATA carries nothing (our source sends them as nudges).
  if (m.payload().empty()) {
    return;
  }
  // Destination: also while the local connect runs; the connection queues it.
  fx_.write_local(id, std::move(*m.mutable_payload()));
}

void SessionMachine::on_stream_start(std::int32_t id) {
  if (mode_ == Mode::source) {
    fx_.protocol_error(fmt::format(
        "STREAM_START (stream {}) received by a source; only a source starts streams", id));
    return;
  }
  // V1 carries one stream: a new start replaces the active one. The service
  // already knows the old stream is over, so no STREAM_RESET is sent for it.
  if (active_ != 0) {
    const std::int32_t old = active_;
    forget_active();
    fx_.close_local(old, false);
  }
  active_ = id;
  connecting_ = true;
  ++counters_.streams_started;
  fx_.open_local(id);
}

void SessionMachine::on_stream_reset(std::int32_t id) {
  if (id != active_) {
    ignore_stale("STREAM_RESET", id);
    return;
  }
  forget_active();
  // The peer closed its side: deliver what is queued, then close.
  fx_.close_local(id, true);
}

void SessionMachine::on_service_ids(const Message& m) {
  const int count = m.availableserviceids_size();
  if (count == 0) {
    // Some services send an empty list to every client, V1 ones included.
    fx_.note("empty SERVICE_IDS ignored");
    return;
  }
  if (count > 1) {
    fx_.protocol_error(fmt::format(
        "tunnel has {} services; V1 carries one (use a V2 proxy for several services)", count));
    return;
  }
  const std::string& id = m.availableserviceids(0);
  if (id.size() > kMaxServiceIdSize) {
    // It is echoed in every record we send; the service limits names to 128.
    fx_.protocol_error(fmt::format("SERVICE_IDS names a service id of {} bytes (limit {})",
                                   id.size(), kMaxServiceIdSize));
    return;
  }
  service_id_ = id;
}

std::int32_t SessionMachine::on_local_accepted() {
  // The proxy loop must not accept local clients while the link is down (or
  // keep them pending until it is up): there is no service to carry the
  // stream, so the machine refuses with 0 and changes nothing.
  if (mode_ != Mode::source || !link_up_) {
    return 0;
  }
  // Stream ids are never reused during the tunnel's life (protocol.md
  // section 4); after 2^31-1 streams there is no fresh id left.
  if (last_stream_id_ == std::numeric_limits<std::int32_t>::max()) {
    fx_.note("stream ids exhausted; local connection refused");
    return 0;
  }
  if (active_ != 0) {
    const std::int32_t old = active_;
    forget_active();
    send_control(Message::STREAM_RESET, old);
    fx_.close_local(old, false);
  }
  const std::int32_t id = ++last_stream_id_;
  active_ = id;
  ++counters_.streams_started;
  send_control(Message::STREAM_START, id);
  return id;
}

void SessionMachine::on_local_connected(std::int32_t stream_id) {
  if (stream_id == 0 || stream_id != active_ || !connecting_) {
    // The stream was replaced or reset while connecting; close_local() for it
    // was already issued.
    fx_.note(fmt::format("local connect for inactive stream {} completed; ignored", stream_id));
    return;
  }
  connecting_ = false;
}

void SessionMachine::on_local_connect_failed(std::int32_t stream_id) {
  if (stream_id == 0 || stream_id != active_) {
    fx_.note(fmt::format("local connect for inactive stream {} failed; ignored", stream_id));
    return;
  }
  forget_active();
  send_control(Message::STREAM_RESET, stream_id);
}

void SessionMachine::on_local_data(std::int32_t stream_id, std::string_view bytes) {
  if (stream_id == 0 || stream_id != active_) {
    return;
  }
  while (!bytes.empty()) {
    const std::size_t n = std::min(bytes.size(), max_payload_);
    ++counters_.records_out;
    fx_.send_data(stream_id, bytes.substr(0, n));
    bytes.remove_prefix(n);
  }
  // The first DATA after STREAM_START arms the nudges (kNudgeDelaysMs).
  // Stream ids are never reused, so a new id always arms.
  if (mode_ == Mode::source && nudge_stream_ != stream_id) {
    nudge_stream_ = stream_id;
    nudges_sent_ = 0;
    fx_.schedule_nudge(stream_id, kNudgeDelaysMs[0]);
  }
}

void SessionMachine::on_nudge_due(std::int32_t stream_id) {
  // Only for the active stream that armed it. Once a stream has ended, its
  // stale id would be dropped by a V1 peer; what the reference still holds
  // of it is processed when the next message (at the latest the next
  // STREAM_START) arrives.
  if (mode_ != Mode::source || stream_id == 0 || stream_id != nudge_stream_ ||
      stream_id != active_ || !link_up_ || nudges_sent_ >= std::size(kNudgeDelaysMs)) {
    return;
  }
  ++counters_.records_out;
  fx_.send_data(stream_id, {});
  ++nudges_sent_;
  if (nudges_sent_ < std::size(kNudgeDelaysMs)) {
    fx_.schedule_nudge(stream_id, kNudgeDelaysMs[nudges_sent_] - kNudgeDelaysMs[nudges_sent_ - 1]);
  }
}

void SessionMachine::on_local_closed(std::int32_t stream_id) {
  if (stream_id == 0 || stream_id != active_) {
    return;
  }
  forget_active();
  send_control(Message::STREAM_RESET, stream_id);
}

void SessionMachine::forget_active() {
  active_ = 0;
  connecting_ = false;
}

void SessionMachine::ignore_stale(std::string_view what, std::int32_t id) {
  ++counters_.stale_records_ignored;
  if (active_ == 0) {
    fx_.note(fmt::format("{} for stream {} ignored: no active stream", what, id));
  } else {
    fx_.note(fmt::format("{} for stream {} ignored: active stream is {}", what, id, active_));
  }
}

void SessionMachine::send_control(Message::Type type, std::int32_t stream_id) {
  Message m;
  m.set_type(type);
  m.set_streamid(stream_id);
  if (!service_id_.empty()) {
    m.set_serviceid(service_id_);
  }
  ++counters_.records_out;
  fx_.send_record(m);
}

}  // namespace tunnel
