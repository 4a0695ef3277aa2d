// The HTTP/1.1 side of the WebSocket opening handshake (RFC 6455 section 4),
// pure: the client's upgrade request out, the service's response in; and for
// the server side (tunnel-relay) the request head in, the 101 response out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tunnel::ws {

// An HTTP response head (status line and headers, up to the blank line),
// parsed incrementally and bounded: a head larger than the limit is
// malformed, never a reason to grow.
class HttpResponseHead {
 public:
  enum class Result { need_more, done, malformed };

  explicit HttpResponseHead(std::size_t max_size = 16384) : max_size_(max_size) {}

  // Feeds bytes; `consumed` is how many belong to the head. Whatever follows
  // the blank line is the next protocol's and is not consumed.
  Result feed(std::string_view bytes, std::size_t& consumed);

  int status() const { return status_; }
  const std::string& reason() const { return reason_; }
  // The first value of a header (name case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
  // How many times a header appears.
  std::size_t header_count(std::string_view name) const;
  // Why the head is malformed (for logs; never echoes header values).
  const std::string& error() const { return error_; }

 private:
  Result parse();

  std::size_t max_size_;
  std::string buf_;
  int status_ = 0;
  std::string reason_;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::string error_;
  bool done_ = false;
};

// An HTTP request head (request line and headers, up to the blank line),
// parsed incrementally and bounded like HttpResponseHead. `too_large` is
// returned as soon as the bytes seen exceed the limit without a blank line, so
// a server can answer 431 without reading further.
class HttpRequestHead {
 public:
  enum class Result { need_more, done, too_large, malformed };

  explicit HttpRequestHead(std::size_t max_size = 8192) : max_size_(max_size) {}

  // Feeds bytes; `consumed` is how many belong to the head. Whatever follows
  // the blank line (e.g. the first WebSocket frames) is not consumed.
  Result feed(std::string_view bytes, std::size_t& consumed);

  const std::string& method() const { return method_; }
  const std::string& target() const { return target_; }  // as sent: path and query
  // Size of the whole head, blank line included.
  std::size_t size() const { return size_; }
  // Every value of a header (name case-insensitive), in order. Repeated
  // header lines count separately; a value is not split at commas.
  std::vector<std::string_view> header_values(std::string_view name) const;
  bool has_header(std::string_view name) const { return !header_values(name).empty(); }
  // The values of a header joined with ", " (RFC 9110 section 5.3), or empty.
  std::string joined(std::string_view name) const;
  const std::string& error() const { return error_; }

 private:
  Result parse();

  std::size_t max_size_;
  std::string buf_;
  std::string method_;
  std::string target_;
  std::size_t size_ = 0;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::string error_;
  bool done_ = false;
};

// %XX-decodes a URL component ('+' stays '+'). False on a bad escape.
bool percent_decode(std::string_view in, std::string& out);

// The server's 101 answer: Upgrade, Connection, Sec-WebSocket-Accept for
// `key`, the chosen subprotocol (omitted when empty) and extra headers.
std::string build_upgrade_response(std::string_view key, std::string_view subprotocol,
                                   const std::vector<std::pair<std::string, std::string>>& extra);

struct UpgradeRequest {
  std::string host;                       // Host header value (with :port when not the default)
  std::string path;                       // e.g. /tunnel?local-proxy-mode=source
  std::string key;                        // Sec-WebSocket-Key (base64 of 16 random bytes)
  std::vector<std::string> subprotocols;  // offered, in order of preference
  // Extra headers (access-token, client-token: secrets; the request is never logged).
  std::vector<std::pair<std::string, std::string>> headers;
};

// 16 bytes from the OS CSPRNG, base64.
std::string make_websocket_key();
// base64(SHA-1(key + RFC 6455 GUID)).
std::string websocket_accept_for(std::string_view key);
std::string build_upgrade_request(const UpgradeRequest& r);

struct UpgradeResult {
  bool ok = false;
  int http_status = 0;      // of a refused upgrade (not 101), else 0
  std::string error;        // one line for the user, no secrets
  std::string subprotocol;  // the one the service chose
  std::string channel_id;   // the service's channel-id header, if any
};

// Checks a complete response head against the request: 101, Upgrade and
// Connection headers, Sec-WebSocket-Accept, and a subprotocol among those offered.
UpgradeResult check_upgrade_response(const HttpResponseHead& head, const UpgradeRequest& request);

// Helpers shared with other HTTP speakers (the CONNECT proxy step).
std::string base64_encode(std::string_view bytes);

}  // namespace tunnel::ws
