// The WebSocket side of tunnel-relay: one lws context with one vhost on the
// caller's libuv loop. It admits handshakes (handshake.h + the registry),
// pairs the two ends of each tunnel and forwards whole records between them
// with bounded memory:
//
//   records for end X live in X's RecordQueue (whether X is connected or not);
//   when that queue reaches its limit, reading from X's peer pauses
//   (lws_rx_flow_control) and resumes once X drained it to half the limit.
//
// When an end's connection goes away (closed, or replaced by a reconnect with
// the same client token), records still queued for it are dropped, the peer
// gets a STREAM_RESET for each active stream, and a partial record the gone
// connection was sending is discarded.
#pragma once

#include <uv.h>
// uv.h before libwebsockets.h (stack-notes.md)
#include <libwebsockets.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "admin_api.h"
#include "record_queue.h"
#include "record_splitter.h"
#include "relay_config.h"
#include "relay_records.h"
#include "tunnel_registry.h"

namespace relay {

class RelayServer final : public TunnelControl {
 public:
  RelayServer(uv_loop_t* loop, RelayConfig config);
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // Registers the --tunnel tunnels, creates the lws context and starts
  // listening. False with `error` set on failure.
  bool start(std::string& error);
  // The real listen address (port 0 resolved).
  HostPort bound() const { return bound_; }

  // Closes every WebSocket with 1001 (going away), waits for them (at most a
  // few seconds), then destroys the lws context from a uv callback and calls
  // `done`. The loop then drains; call finish() after uv_run() returned.
  void shutdown(std::function<void()> done);
  void finish();

  // TunnelControl (admin API)
  OpenedTunnel open_tunnel(std::vector<std::string> services,
                           std::chrono::seconds lifetime) override;
  bool close_tunnel(std::string_view id, std::string_view why) override;
  std::vector<TunnelView> tunnels() const override;

  // Largest WebSocket message in either direction (protocol.md section 3).
  static constexpr std::size_t kMaxMessage = tunnel::kMaxFrameSize;

 private:
  struct Link;

  // One established WebSocket.
  struct Connection {
    lws* wsi = nullptr;
    std::string channel_id;
    std::string tunnel_id;
    Role role = Role::source;
    int version = 1;
    Link* link = nullptr;  // null once detached (replaced, tunnel closed)
    RecordSplitter splitter;
    std::size_t message_bytes = 0;  // of the WebSocket message being received
    bool rx_paused = false;
    bool writable_requested = false;                           // a WRITEABLE callback is pending
    std::optional<std::pair<int, std::string>> close_request;  // code, reason
  };

  // The forwarding state of one open tunnel.
  struct Link {
    explicit Link(ChunkPool& pool) : queues{RecordQueue(pool), RecordQueue(pool)} {}
    RelayServer* owner = nullptr;
    std::string id;
    std::array<Connection*, 2> conns{nullptr, nullptr};  // by index_of(Role)
    std::array<RecordQueue, 2> queues;                   // records waiting for each end
    StreamTracker streams;
    uv_timer_t* expiry = nullptr;  // owned; freed from its close callback
  };

  // Decided at HTTP_CONFIRM_UPGRADE, consumed at ESTABLISHED (both happen
  // within one lws_read call, so one slot suffices).
  struct PendingUpgrade {
    lws* wsi = nullptr;
    Admission admission;
    std::string subprotocol;
    int version = 1;
    std::string client_token;
    std::string channel_id;
  };

  static int lws_callback(lws* wsi, lws_callback_reasons reason, void* user, void* in,
                          std::size_t len);
  int on_confirm_upgrade(lws* wsi, const char* upgrade);
  int on_add_headers(lws* wsi, lws_process_html_args* args);
  int on_established(lws* wsi);
  int on_receive(Connection& c, const std::uint8_t* data, std::size_t len);
  int on_writeable(Connection& c);
  void on_closed(lws* wsi);

  void reject_http(lws* wsi, int status, const std::string& reason);
  Link* create_link(const std::string& id, std::chrono::seconds lifetime);
  void destroy_link(const std::string& id);
  // The end's connection goes away; see the file comment.
  void detach(Connection& c);
  void request_close(Connection& c, int code, std::string reason);
  std::size_t queue_limit(const Link& l, Role receiver) const;
  void maybe_resume(Link& l, Role receiver);
  void wake_writer(Link& l, Role receiver);
  void request_writable(Connection& c);
  static void on_expiry(uv_timer_t* t);
  void destroy_context();

  uv_loop_t* loop_;
  RelayConfig config_;
  TunnelRegistry registry_;
  ChunkPool pool_;
  std::vector<lws_protocols> protocols_;
  lws_context* context_ = nullptr;
  lws_vhost* vhost_ = nullptr;
  HostPort bound_;
  std::unordered_map<std::string, std::unique_ptr<Link>> links_;
  std::unordered_map<lws*, std::unique_ptr<Connection>> connections_;
  PendingUpgrade pending_;
  bool shutting_down_ = false;
  std::function<void()> shutdown_done_;
  bool destroying_ = false;
  uv_timer_t* shutdown_timer_ = nullptr;  // owned; freed from its close callback
};

}  // namespace relay
