// The WebSocket side of tunnel-relay, on the caller's libuv loop, with our
// own code (no libwebsockets): a listening socket and one uv_poll per
// connection, OpenSSL on the file descriptor (socket_io.h), the HTTP/1.1
// upgrade parsed by ws::HttpRequestHead and decided by handshake.h, RFC 6455
// frames decoded by ws::FrameDecoder (server role: client frames must be
// masked). It pairs the two ends of each tunnel and forwards whole records
// between them with bounded memory:
//
//   records for end X live in X's RecordQueue (whether X is connected or not);
//   when that queue reaches its limit, reading from X's peer pauses (its
//   socket is no longer polled for reading; the rest of the read it was
//   decoding is kept, at most one read) and resumes once X drained it to half
//   the limit.
//
// Each queued chunk goes out as one unmasked frame written with one
// SSL_write straight from the chunk (the header goes into its headroom);
// what the I/O callbacks of one loop iteration queued is written in a
// uv_check after the I/O phase.
//
// When an end's connection goes away (closed, or replaced by a reconnect with
// the same client token), records still queued for it are dropped, the peer
// gets a STREAM_RESET for each active stream, and a partial record the gone
// connection was sending is discarded.
#pragma once

#include <openssl/ssl.h>
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
#include "record_queue.h"
#include "record_splitter.h"
#include "relay_config.h"
#include "relay_records.h"
#include "tunnel_registry.h"
#include "ws_frame.h"
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

  // Largest WebSocket message in either direction (protocol.md section 3).
  static constexpr std::size_t kMaxMessage = tunnel::kMaxFrameSize;

 private:
  struct Link;
  struct Connection;

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

  // Listener, flush check and idle guards: freed from their close callbacks.
  struct Handles;

  void on_accept();
  void on_poll(Connection& c, int status, int events);
  void step_tls(Connection& c);
  void do_read(Connection& c);
  void on_head_bytes(Connection& c, std::span<std::uint8_t> bytes);
  void on_request(Connection& c, std::span<std::uint8_t> rest);
  // Decodes frames; false when the connection stopped taking them (paused
  // with the rest kept, or closing).
  bool deliver(Connection& c, std::span<std::uint8_t> bytes);
  void on_data(Connection& c, std::span<const std::uint8_t> payload);
  void do_write(Connection& c);
  void update_poll(Connection& c);
  void want_flush(Connection& c);
  void want_read(Connection& c);
  void on_flush_check();
  void on_read_more();

  void reject_http(Connection& c, int status, const std::string& reason);
  void queue_control(Connection& c, tunnel::ws::Opcode op, std::span<const std::uint8_t> payload);
  // The connection's in-flight frame stops pointing into a queue.
  void take_inflight(Connection& c);
  // Sends a close frame (after the frame in flight), then waits for the
  // peer's close or a timeout. `c` stays valid.
  void request_close(Connection& c, int code, std::string reason);
  // A protocol error: leaves the tunnel, closes with `code`.
  void fail_connection(Connection& c, int code, std::string reason);
  // Closes the socket at once; the object is freed from its handles' close callbacks.
  void destroy(Connection& c);
  // Half-closes after an HTTP rejection and drains what the client still
  // sends, so the response is not lost to a reset.
  void linger(Connection& c);
  void check_shutdown_done();
  void finish_shutdown();

  Link* create_link(const std::string& id, std::chrono::seconds lifetime);
  void destroy_link(const std::string& id);
  // The end's connection goes away; see the file comment.
  void detach(Connection& c);
  std::size_t queue_limit(const Link& l, Role receiver) const;
  void maybe_resume(Link& l, Role receiver);
  void wake_writer(Link& l, Role receiver);
  static void on_expiry(uv_timer_t* t);

  uv_loop_t* loop_;
  RelayConfig config_;
  TunnelRegistry registry_;
  ChunkPool pool_;
  SSL_CTX* tls_ = nullptr;
  int listen_fd_ = -1;
  Handles* h_ = nullptr;
  HostPort bound_;
  std::unordered_map<std::string, std::unique_ptr<Link>> links_;
  // Every accepted connection by id; a Connection is freed from its handles'
  // close callbacks, after it left this map.
  std::unordered_map<std::uint64_t, Connection*> connections_;
  std::uint64_t next_id_ = 1;
  std::vector<std::uint64_t> flush_list_;  // connections with bytes to write
  std::vector<std::uint64_t> read_list_;   // connections to read again next iteration
  std::unique_ptr<std::uint8_t[]> read_buf_;
  bool shutting_down_ = false;
  bool shutdown_finished_ = false;
  std::function<void()> shutdown_done_;
  uv_timer_t* shutdown_timer_ = nullptr;  // owned; freed from its close callback
};

}  // namespace relay
