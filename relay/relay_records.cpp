#include "relay_records.h"

namespace relay {

using tunnel::Message;

void StreamTracker::started(const std::string& service_id, std::int32_t stream_id) {
  // A STREAM_START replaces the service's active stream (docs/protocol.md section 4).
  active_[service_id] = stream_id;
}

void StreamTracker::reset(const std::string& service_id, std::int32_t stream_id) {
  const auto it = active_.find(service_id);
  if (it != active_.end() && it->second == stream_id) active_.erase(it);
}

std::vector<std::string> StreamTracker::take_resets() {
  std::vector<std::string> out;
  out.reserve(active_.size());
  for (const auto& [service, stream] : active_) out.push_back(stream_reset_record(service, stream));
  active_.clear();
  return out;
}

RecordVerdict inspect_control_record(Role from, std::span<const std::uint8_t> body,
                                     StreamTracker& streams, std::string& reason, int& close_code) {
  Message m;
  if (!m.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    reason = "malformed record (not a protobuf Message)";
    close_code = 1007;
    return RecordVerdict::reject;
  }
  close_code = 1008;
  const auto type = m.type();
  switch (type) {
    case Message::UNKNOWN:
      if (m.ignorable()) return RecordVerdict::forward;
      reason = "record without a type";
      return RecordVerdict::reject;
    case Message::SESSION_RESET:
    case Message::SERVICE_IDS:
      reason = "a local proxy must not send " + Message::Type_Name(type);
      return RecordVerdict::reject;
    case Message::STREAM_START:
    case Message::STREAM_RESET:
    case Message::CONNECTION_START:
    case Message::CONNECTION_RESET:
    case Message::DATA:
      if (m.streamid() == 0) {
        reason = Message::Type_Name(type) + " with stream id 0";
        return RecordVerdict::reject;
      }
      break;
    default:
      return RecordVerdict::forward;  // a newer type: the receiver decides (ignorable)
  }
  if (type == Message::STREAM_START) {
    if (from == Role::destination) {
      reason = "a destination must not send STREAM_START";
      return RecordVerdict::reject;
    }
    streams.started(m.serviceid(), m.streamid());
  } else if (type == Message::STREAM_RESET) {
    streams.reset(m.serviceid(), m.streamid());
  }
  return RecordVerdict::forward;
}

namespace {

// One record for `m`; empty if it would not fit (the relay's own records
// always do).
std::string record_of(const Message& m) {
  std::string out;
  tunnel::encode_record(m, out);
  return out;
}

}  // namespace

std::string stream_reset_record(const std::string& service_id, std::int32_t stream_id) {
  Message m;
  m.set_type(Message::STREAM_RESET);
  m.set_streamid(stream_id);
  if (!service_id.empty()) m.set_serviceid(service_id);
  return record_of(m);
}

std::string service_ids_record(const std::vector<std::string>& services) {
  Message m;
  m.set_type(Message::SERVICE_IDS);
  for (const std::string& s : services) m.add_availableserviceids(s);
  return record_of(m);
}

}  // namespace relay
