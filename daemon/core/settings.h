// Fine-grained settings: the reference localproxy's keys and defaults
// (docs/protocol.md section 8) plus tunneld's own additions, documented in
// docs/settings.md. JSON in the reference's shape: nested objects under
// "tunneling.proxy", values as strings (numbers also accepted on input).
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

#include "wire_limits.h"

namespace tunnel {

struct Settings {
  std::string default_bind_address = "localhost";
  // tunneld addition, tunneling.proxy.https_proxy: the HTTP CONNECT proxy to
  // reach the service through ("http://[user:password@]host[:port]"),
  // "direct" for none, or empty to follow HTTPS_PROXY/NO_PROXY (http_proxy.h).
  // May hold credentials: secret; settings_to_json exports it without them.
  std::string https_proxy;
  // tunneling.proxy.message.* (the reference says: do not edit)
  int message_data_length_size = 2;
  int message_max_payload_size = 64512;
  int message_max_size = 65536;
  // tunneling.proxy.tcp.*
  int tcp_connection_retry_count = 5;  // -1 = forever
  int tcp_connection_retry_delay_ms = 1000;
  // The reference's buffer defaults are its largest WebSocket message.
  int tcp_read_buffer_size = static_cast<int>(kMaxFrameSize);
  // tunneling.proxy.websocket.*
  int ws_ping_period_ms = 5000;
  int ws_retry_delay_ms = 2500;
  int ws_connect_retry_count = -1;  // -1 = forever
  bool ws_reconnect_on_data_error = true;
  std::string ws_subprotocol = "aws.iot.securetunneling-1.0";
  int ws_max_frame_size = static_cast<int>(kMaxFrameSize);
  int ws_write_buffer_size = static_cast<int>(kMaxFrameSize);
  int ws_read_buffer_size = static_cast<int>(kMaxFrameSize);
  // tunneld additions
  int ws_pong_timeout_ms = 10000;       // websocket.pong_timeout_ms: no pong by then = dead link
  int ws_retry_max_delay_ms = 30000;    // websocket.retry_max_delay_ms: backoff cap
  int ws_connect_timeout_ms = 10000;    // websocket.connect_timeout_ms: TCP+TLS+upgrade
  int tcp_write_buffer_limit = 262144;  // tcp.write_buffer_limit: pause the tunnel past this
  // tcp.max_simultaneous_connections: per service (V3); the next is refused.
  int tcp_max_connections = 128;

  bool operator==(const Settings&) const = default;
};

// Thrown by settings_from_json with the offending key path in what().
class SettingsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The reference's export format (every value a string), pretty printed.
std::string settings_to_json(const Settings& s);

// Overlays the keys present in `json_text` on `base`. Unknown keys are ignored;
// values may be strings or numbers (booleans: true/false, "true"/"false", 0/1).
// A present key with a bad value (not a number, out of range) throws
// SettingsError naming the key, e.g.
//   "tunneling.proxy.websocket.ping_period_ms: expected a positive integer, got \"abc\"".
Settings settings_from_json(std::string_view json_text, const Settings& base = {});

// Checks cross-field constraints (positive periods, payload <= 64512, ...).
// Throws SettingsError.
void validate(const Settings& s);

}  // namespace tunnel
