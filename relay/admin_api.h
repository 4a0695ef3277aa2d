// The relay's admin API: plain HTTP/1.1 on a loopback port, JSON bodies.
//   POST   /tunnels        {"services":[..],"lifetimeSeconds":N,"thingName":".."}
//                           (all optional; thingName publishes the destination's
//                           token to the notify broker, docs/notify.md)
//   GET    /tunnels        every tunnel, closed ones included
//   GET    /tunnels/<id>
//   DELETE /tunnels/<id>   closes the tunnel
// AdminApi is the routing (pure: request in, response out); AdminServer is a
// deliberately small HTTP server on the uv loop (one request per connection,
// Content-Length bodies only, bounded sizes, a request timeout).
#pragma once

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
  std::string method;
  std::string target;
  std::size_t content_length = 0;
  bool expect_continue = false;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string body;  // JSON
};

// Parses a request head (up to and including the blank line). Returns 0 when
// more bytes are needed, the head length when complete, or -status (400, 413,
// 431, 501, 505) when the request cannot be served.
long parse_request_head(std::string_view data, HttpRequest& out, std::size_t max_head,
                        std::size_t max_body);
std::string format_response(const HttpResponse& r);

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

class AdminServer {
 public:
  AdminServer(uv_loop_t* loop, AdminApi& api);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Binds and listens; returns false with `error` set on failure. `bound`
  // gets the real address (port 0 resolved).
  bool listen(const HostPort& at, HostPort& bound, std::string& error);
  // Stops accepting and closes every connection (handles are freed from
  // their close callbacks). Safe to call twice.
  void close();

  static constexpr std::size_t kMaxHead = std::size_t{16} * 1024;
  static constexpr std::size_t kMaxBody = std::size_t{64} * 1024;
  static constexpr std::uint64_t kRequestTimeoutMs = 10'000;

 private:
  class Connection;
  static void on_connection(uv_stream_t* server, int status);

  uv_loop_t* loop_;
  AdminApi& api_;
  uv_tcp_t* listener_ = nullptr;  // owned; deleted from its close callback
  std::unordered_set<Connection*> connections_;
};

}  // namespace relay
