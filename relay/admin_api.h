// The relay's admin API: plain HTTP/1.1 on a loopback port, JSON bodies.
//   POST   /tunnels        {"services":[..],"lifetimeSeconds":N,"thingName":".."}
//                           (all optional; thingName publishes the destination's
//                           token to the notify broker, docs/notify.md)
//   GET    /tunnels        every tunnel, closed ones included
//   GET    /tunnels/<id>
//   DELETE /tunnels/<id>   closes the tunnel
// AdminApi is the routing (pure: request in, response out); check_access is
// who may ask (pure: Host, Origin, the bearer token, the body's type);
// AdminServer is a deliberately small HTTP server on the uv loop (one request
// per connection, Content-Length bodies only, bounded sizes and connection
// count, timeouts; optionally TLS).
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "relay_config.h"

namespace relay {

struct TunnelView {
  std::string id;
  std::string status;  // "OPEN" | "CLOSED"
  std::vector<std::string> services;
  bool source_connected = false;
  bool destination_connected = false;
};

struct OpenedTunnel {
  std::string id;
  std::string source_token;
  std::string destination_token;
};

// What the admin API needs from the relay.
class TunnelControl {
 public:
  // Nothing, with `error` (for a 503), when the relay holds as many open
  // tunnels as it may.
  virtual std::optional<OpenedTunnel> open_tunnel(std::vector<std::string> services,
                                                  std::chrono::seconds lifetime,
                                                  std::string& error) = 0;
  // False for an unknown id. Closing a closed tunnel succeeds.
  virtual bool close_tunnel(std::string_view id, std::string_view why) = 0;
  virtual std::vector<TunnelView> tunnels() const = 0;

 protected:
  ~TunnelControl() = default;
};

// Tells a thing that a tunnel was opened for it (NotifyPublisher).
class TunnelNotifier {
 public:
  // False with `error` (never holding the token) when it could not be sent.
  virtual bool notify(const std::string& thing, const std::string& destination_token,
                      const std::vector<std::string>& services, std::string& error) = 0;

 protected:
  ~TunnelNotifier() = default;
};

struct HttpRequest {
  std::string method;  // a token (RFC 9110 tchar): printable, no spaces
  std::string target;  // printable ASCII without spaces
  std::string version;
  std::size_t content_length = 0;
  bool expect_continue = false;
  // The headers check_access looks at; each may appear at most once.
  std::optional<std::string> host;
  std::optional<std::string> origin;
  std::optional<std::string> sec_fetch_site;
  std::optional<std::string> content_type;
  std::optional<std::string> authorization;  // a secret: never logged
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;            // JSON
  bool ask_for_token = false;  // 401: adds WWW-Authenticate: Bearer
};

// Parses a request head (up to and including the blank line). Returns 0 when
// more bytes are needed, the head length when complete, or -status (400, 413,
// 431, 501, 505) when the request cannot be served. A control character
// anywhere in the head (a bare CR or LF included), a method that is not a
// token, a target with a space or a byte outside printable ASCII, or a
// repeated Host, Origin, Content-Type or Authorization is a 400: what is
// parsed can be logged as it is.
long parse_request_head(std::string_view data, HttpRequest& out, std::size_t max_head,
                        std::size_t max_body);
std::string format_response(const HttpResponse& r);

// Who may use the admin API (docs/relay.md, "Admin API: who may call it").
struct AdminAccess {
  // The address the API is bound to (an IP literal). Host must name it, or
  // `localhost` when it is a loopback address, or one of `names`; an
  // unspecified address (0.0.0.0, ::) accepts any IP literal.
  std::string bound_host;
  std::vector<std::string> names;  // --admin-host, lower case
  bool tls = false;                // the scheme an Origin must carry: https, else http
  std::string token;               // non-empty: `Authorization: Bearer <token>` is required
};

// Nothing when `request` may be served; otherwise the refusal: 400 (an
// HTTP/1.1 request without Host), 403 (a Host that is not this API, an
// Origin other than the API's own, a cross-site Sec-Fetch-Site), 401 (no or
// a wrong bearer token), 415 (a body that is not application/json). The
// token is compared in constant time.
std::optional<HttpResponse> check_access(const AdminAccess& access, const HttpRequest& request);

class AdminApi {
 public:
  AdminApi(TunnelControl& control, std::chrono::seconds default_lifetime,
           std::chrono::seconds max_lifetime);
  HttpResponse handle(std::string_view method, std::string_view target, std::string_view body);
  // Without a notifier, a request naming a thing is refused (400).
  void set_notifier(TunnelNotifier* notifier) { notifier_ = notifier; }

 private:
  HttpResponse open(std::string_view body);
  HttpResponse list() const;

  TunnelControl& control_;
  std::chrono::seconds default_lifetime_;
  std::chrono::seconds max_lifetime_;
  TunnelNotifier* notifier_ = nullptr;
};

struct AdminServerOptions {
  AdminAccess access;
  std::string tls_cert;  // both set: HTTPS (--admin-tls)
  std::string tls_key;
  // Connections at once; more are answered 503 (plain HTTP) or closed (TLS)
  // at once.
  std::size_t max_connections = 64;
  // To send the whole request (TLS handshake included); then the same again
  // to take the answer.
  std::uint64_t request_timeout_ms = 10'000;
};

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminApi& api, AdminServerOptions options = {});
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds and listens (and loads the TLS certificate); returns false with
  // `error` set on failure. `bound` gets the real address (port 0 resolved).
  bool listen(const HostPort& at, HostPort& bound, std::string& error);
  // Stops accepting and closes every connection (handles are freed from
  // their close callbacks). Safe to call twice.
  void close();
  std::size_t connections() const { return connections_.size(); }

  static constexpr std::size_t kMaxHead = std::size_t{16} * 1024;
  static constexpr std::size_t kMaxBody = std::size_t{64} * 1024;

 private:
  class Connection;
  static void on_connection(uv_stream_t* server, int status);

  uv_loop_t* loop_;
  AdminApi& api_;
  AdminServerOptions options_;
  SSL_CTX* tls_ = nullptr;        // owned; with --admin-tls
  uv_tcp_t* listener_ = nullptr;  // owned; deleted from its close callback
  std::unordered_set<Connection*> connections_;
  bool refusing_ = false;  // at max_connections: the refusal was logged once
};

}  // namespace relay
