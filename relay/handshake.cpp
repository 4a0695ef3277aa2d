#include "handshake.h"

#include <algorithm>

#include "relay_config.h"
#include "text.h"

namespace relay {
namespace {

HandshakeDecision reject(int status, std::string reason) {
  HandshakeDecision d;
  d.http_status = status;
  d.reason = std::move(reason);
  return d;
}

}  // namespace

bool valid_client_token(std::string_view token) {
  if (token.size() < 32 || token.size() > 128) return false;
  return std::all_of(token.begin(), token.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

std::vector<std::string> cookie_values(std::string_view header, std::string_view name) {
  // cookie-octet excludes whitespace, ',', ';' and '"', so all of them can
  // only separate cookie-pairs.
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < header.size()) {
    while (i < header.size() &&
           (tunnel::text::is_ows(header[i]) || header[i] == ';' || header[i] == ','))
      ++i;
    std::size_t j = i;
    while (j < header.size() && !tunnel::text::is_ows(header[j]) && header[j] != ';' &&
           header[j] != ',')
      ++j;
    const std::string_view pair = header.substr(i, j - i);
    const std::size_t eq = pair.find('=');
    if (eq != std::string_view::npos && pair.substr(0, eq) == name) {
      std::string_view value = pair.substr(eq + 1);
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
        value = value.substr(1, value.size() - 2);
      out.emplace_back(value);
    }
    i = j;
  }
  return out;
}

std::string choose_subprotocol(std::string_view offer, const std::vector<std::string>& accepted) {
  std::size_t start = 0;
  while (start <= offer.size()) {
    std::size_t comma = offer.find(',', start);
    if (comma == std::string_view::npos) comma = offer.size();
    const std::string_view item = tunnel::text::trim_ows(offer.substr(start, comma - start));
    if (std::find(accepted.begin(), accepted.end(), item) != accepted.end())
      return std::string(item);
    start = comma + 1;
  }
  return {};
}

HandshakeDecision evaluate_handshake(const HandshakeRequest& req, const TunnelRegistry& registry,
                                     const std::vector<std::string>& accepted_subprotocols,
                                     std::size_t max_request_bytes) {
  if (req.path != kTunnelPath) return reject(400, "path must be /tunnel");
  if (req.request_bytes > max_request_bytes)
    return reject(431, "request head larger than " + std::to_string(max_request_bytes) + " bytes");

  std::optional<std::string> mode_text;
  for (const std::string& arg : req.query_args) {
    constexpr std::string_view key = "local-proxy-mode=";
    if (arg.compare(0, key.size(), key) != 0) continue;
    if (mode_text) return reject(400, "local-proxy-mode given more than once");
    mode_text = arg.substr(key.size());
  }
  if (!mode_text) return reject(400, "missing query parameter local-proxy-mode=source|destination");
  const auto mode = parse_role(*mode_text);
  if (!mode) return reject(400, "local-proxy-mode must be source or destination");

  // Exactly one access token in the whole request.
  std::vector<std::string> tokens = cookie_values(req.cookie_header, kTokenCookie);
  if (req.access_token_header) {
    const std::string& h = *req.access_token_header;
    if (h.find(',') != std::string::npos) return reject(400, "more than one access token");
    tokens.emplace_back(tunnel::text::trim_ows(h));
  }
  if (tokens.empty())
    return reject(401, "no access token (header access-token or cookie awsiot-tunnel-token)");
  if (tokens.size() > 1) return reject(400, "more than one access token in the request");
  if (tokens.front().empty()) return reject(401, "empty access token");

  std::string client_token;
  if (req.client_token) {
    client_token = std::string(tunnel::text::trim_ows(*req.client_token));
    if (!valid_client_token(client_token))
      return reject(400, "client-token must be 32..128 characters of A-Z a-z 0-9 -");
  }

  const std::string subprotocol = choose_subprotocol(req.subprotocol_offer, accepted_subprotocols);
  if (subprotocol.empty()) {
    std::string list;
    for (const auto& s : accepted_subprotocols) list += (list.empty() ? "" : ", ") + s;
    return reject(400, "no acceptable Sec-WebSocket-Protocol (this relay accepts " + list + ")");
  }

  HandshakeDecision d;
  d.admission = registry.admit(tokens.front(), *mode, client_token);
  if (!d.admission.admitted()) {
    d.http_status = d.admission.http_status;
    d.reason = d.admission.reason;
    return d;
  }
  d.http_status = 101;
  d.subprotocol = subprotocol;
  d.version = subprotocol_version(subprotocol);
  d.client_token = std::move(client_token);
  return d;
}

}  // namespace relay
