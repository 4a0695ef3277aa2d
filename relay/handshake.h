// Decides a WebSocket upgrade request (docs/protocol.md section 2, service side).
// Pure: the relay server copies what it needs out of the parsed request head into a
// HandshakeRequest; the decision is an HTTP status, a reason and, when
// admitted, the chosen subprotocol and the end to attach.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tunnel_registry.h"

namespace relay {

struct HandshakeRequest {
  std::string path;                     // without the query
  std::vector<std::string> query_args;  // "name=value", decoded
  std::optional<std::string> access_token_header;
  std::string cookie_header;  // all Cookie headers, joined with ", "
  std::optional<std::string> client_token;
  std::string subprotocol_offer;  // Sec-WebSocket-Protocol, comma separated
  std::size_t request_bytes = 0;  // approximate size of the request head
};

struct HandshakeDecision {
  int http_status = 400;  // 101 when admitted
  std::string reason;     // for the body and the log; never a token
  std::string subprotocol;
  int version = 0;  // 1..3, from the subprotocol
  Admission admission;
  std::string client_token;

  bool admitted() const { return http_status == 101; }
};

inline constexpr std::string_view kTunnelPath = "/tunnel";
inline constexpr std::string_view kTokenCookie = "awsiot-tunnel-token";

// 32..128 characters of [A-Za-z0-9-].
bool valid_client_token(std::string_view token);
// Every value of cookie `name` in a Cookie header (several headers may have
// been joined with spaces or commas).
std::vector<std::string> cookie_values(std::string_view header, std::string_view name);
// The first offered subprotocol that is also accepted (the client's order
// wins), or empty.
std::string choose_subprotocol(std::string_view offer, const std::vector<std::string>& accepted);

HandshakeDecision evaluate_handshake(const HandshakeRequest& req, const TunnelRegistry& registry,
                                     const std::vector<std::string>& accepted_subprotocols,
                                     std::size_t max_request_bytes);

}  // namespace relay
