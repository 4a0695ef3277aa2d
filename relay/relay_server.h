// The WebSocket side of tunnel-relay, on the caller's libuv loop: a
// listening socket, and for every accepted client a tunnel::WsConnection in
// the server role (OpenSSL on the socket, RFC 6455 frames; client frames
// must be masked). The relay adds what only a relay does: the upgrade
// request parsed by ws::HttpRequestHead and decided by handshake.h, the
// registry of tunnels, and the pairing of each tunnel's two ends, whose
// records it forwards with bounded memory:
//
//   records for end X live in X's RecordQueue (whether X is connected or not);
//   when that queue reaches its limit, reading from X's peer pauses (the
//   rest of the read it was decoding is kept, at most one read) and resumes
//   once X drained it to half the limit.
//
// X's connection pulls its frames from that queue (FrameSource): each chunk
// goes out as one unmasked frame written straight from the chunk (the
// header goes into its headroom).
//
// When an end's connection goes away (closed, or replaced by a reconnect with
// the same client token), records still queued for it are dropped, the peer
// gets a STREAM_RESET for each active stream, and a partial record the gone
// connection was sending is discarded.
#pragma once

#include <uv.h>

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
#include "handshake.h"
#include "loop_context.h"
#include "record_queue.h"
#include "record_splitter.h"
#include "relay_config.h"
#include "relay_records.h"
#include "tunnel_registry.h"
#include "ws_connection.h"
#include "ws_handshake.h"

namespace relay {

class RelayServer final : public TunnelControl {
 public:
  RelayServer(uv_loop_t* loop, RelayConfig config);
  ~RelayServer();
  RelayServer(const RelayServer&) = delete;
  RelayServer& operator=(const RelayServer&) = delete;

  // Registers the --tunnel tunnels, creates the TLS context (when
  // configured) and starts listening. False with `error` set on failure.
  bool start(std::string& error);
  // The real listen address (port 0 resolved).
  HostPort bound() const { return bound_; }

  // Stops listening, closes every WebSocket with 1001 (going away), waits for
  // them (at most a few seconds), closes what is left and calls `done`. The
  // loop then drains; call finish() after uv_run() returned.
  void shutdown(std::function<void()> done);
  void finish();

  // TunnelControl (admin API)
  std::optional<OpenedTunnel> open_tunnel(std::vector<std::string> services,
                                          std::chrono::seconds lifetime,
                                          std::string& error) override;
  bool close_tunnel(std::string_view id, std::string_view why) override;
  std::vector<TunnelView> tunnels() const override;

  // Largest WebSocket message in either direction (docs/protocol.md section 3).
  static constexpr std::size_t kMaxMessage = tunnel::kMaxFrameSize;

 private:
  struct ClientConnection;

  // The forwarding state of one open tunnel: its two ends.
  struct TunnelPair {
    explicit TunnelPair(ChunkPool& pool) : queues{RecordQueue(pool), RecordQueue(pool)} {}
    RelayServer* owner = nullptr;
    std::string id;
    std::array<ClientConnection*, 2> ends{nullptr, nullptr};  // by index_of(Role)
    std::array<RecordQueue, 2> queues;                        // records waiting for each end
    StreamTracker streams;
    uv_timer_t* expiry = nullptr;  // owned; freed from its close callback
  };

  // Listener: freed from its close callback.
  struct Handles;

  // relay_server.cpp: listening, the upgrade, shutdown
  bool listen(std::string& error);
  void on_accept();
  std::size_t on_head_bytes(ClientConnection& c, std::span<const std::uint8_t> bytes);
  void on_request(ClientConnection& c);
  bool parse_target(ClientConnection& c, HandshakeRequest& req);
  void admit(ClientConnection& c, TunnelPair& pair, const HandshakeDecision& d);
  void reject_http(ClientConnection& c, int status, const std::string& reason);
  void on_client_closed(ClientConnection& c, const tunnel::WsConnectionEnd& end);
  void check_shutdown_done();
  void finish_shutdown();

  // relay_forwarding.cpp: the pairs and their records
  void on_data(ClientConnection& c, std::span<const std::uint8_t> payload);
  void on_frame_error(ClientConnection& c, tunnel::ws::FrameError e);
  // Sends a close frame (after the frame in flight), then waits for the
  // client's close or a timeout.
  void close_client(ClientConnection& c, int code, const std::string& reason);
  // A protocol error: leaves the tunnel, closes with `code`, drains.
  void fail_client(ClientConnection& c, int code, const std::string& reason);
  void attach(ClientConnection& c, TunnelPair& pair, Role role);
  // The end's connection goes away; see the file comment.
  void detach(ClientConnection& c);
  // The connection stops being an end of its tunnel without closing the
  // tunnel's queues' memory under it (tunnel closed, relay shutting down).
  void release_from_pair(ClientConnection& c);
  std::size_t queue_limit(const TunnelPair& p, Role receiver) const;
  void maybe_resume(TunnelPair& p, Role receiver);
  void wake_writer(TunnelPair& p, Role receiver);
  TunnelPair* create_pair(const std::string& id, std::chrono::seconds lifetime);
  void destroy_pair(const std::string& id);
  static void on_expiry(uv_timer_t* t);

  uv_loop_t* loop_;
  RelayConfig config_;
  TunnelRegistry registry_;
  ChunkPool pool_;
  std::unique_ptr<tunnel::LoopContext> ctx_;  // from start(): the loop is initialised by then
  SSL_CTX* tls_ = nullptr;
  tunnel::net::Socket listen_socket_ = tunnel::net::kNoSocket;
  Handles* h_ = nullptr;
  HostPort bound_;
  std::unordered_map<std::string, std::unique_ptr<TunnelPair>> pairs_;
  std::unordered_map<std::uint64_t, std::unique_ptr<ClientConnection>> clients_;
  std::uint64_t next_id_ = 1;
  bool shutting_down_ = false;
  bool shutdown_finished_ = false;
  std::function<void()> shutdown_done_;
  uv_timer_t* shutdown_timer_ = nullptr;  // owned; freed from its close callback
};

}  // namespace relay
