// The few records the relay reads (control records, to follow the active
// streams and enforce the client rules of docs/protocol.md section 3) and the ones
// it writes itself (STREAM_RESET when an end goes away, SERVICE_IDS on connect).
// Pure: bytes in, bytes out.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "record_codec.h"
#include "record_splitter.h"
#include "tunnel_registry.h"

namespace relay {

// The active stream of each service of one tunnel, as announced by the
// source's STREAM_START (docs/protocol.md sections 4-6; V3 connections live inside
// a stream, so the stream is what a reset names).
class StreamTracker {
 public:
  void started(const std::string& service_id, std::int32_t stream_id);
  void reset(const std::string& service_id, std::int32_t stream_id);
  bool empty() const { return active_.empty(); }
  const std::map<std::string, std::int32_t>& active() const { return active_; }
  // One encoded STREAM_RESET record per active stream; forgets them all.
  std::vector<std::string> take_resets();

 private:
  std::map<std::string, std::int32_t> active_;  // service id ("" for V1) -> stream id
};

// Checks one control record from `from` and updates `streams`. On a
// violation, `reason` says which rule was broken (no payload bytes in it) and
// `close_code` is the WebSocket close code to use (1007 or 1008).
RecordVerdict inspect_control_record(Role from, std::span<const std::uint8_t> body,
                                     StreamTracker& streams, std::string& reason, int& close_code);

std::string stream_reset_record(const std::string& service_id, std::int32_t stream_id);
std::string service_ids_record(const std::vector<std::string>& services);

inline std::span<const std::uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace relay
