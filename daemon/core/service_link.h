// The link of one tunnel session to the tunneling service: resolving, the
// TCP connection (each address in turn), an HTTPS proxy's CONNECT, the TLS
// set-up (SNI, host or IP verification), the WebSocket upgrade request and
// its checks, and the liveness policy (pings, the pong timeout). The
// socket, TLS, framing and backpressure are a WsConnection in the client
// role. What it carries is opaque to it: a byte stream of records in each
// direction (docs/protocol.md section 3).
//
// Sending: the owner appends records to outbox() and calls flush(), or
// gives a DATA record in pieces to send_record_parts(); records appended
// during one loop iteration leave in one batch after the I/O phase.
// Receiving: binary message payload is handed to on_link_data as spans of a
// read buffer shared by the loop; pause_receive(true) stops delivery at once.
//
// Events are only ever delivered from libuv callbacks, never from inside a
// call the owner makes; on_link_closed comes exactly once per connect().
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "endpoint.h"
#include "http_proxy.h"
#include "loop_context.h"
#include "ws_connection.h"
#include "ws_handshake.h"

namespace tunnel {

struct LinkOptions {
  ServiceEndpoint endpoint;
  std::string path;                       // /tunnel?local-proxy-mode=...
  std::vector<std::string> subprotocols;  // offered, in order of preference
  std::string access_token;               // secret
  std::string client_token;               // secret
  TlsTrust trust;
  bool verify_tls = true;  // false: -k
  std::size_t max_frame_size = kMaxFrameSize;
  std::size_t write_low_watermark = 65536;  // on_link_drained below this
  int connect_timeout_ms = 10000;           // TCP + TLS + upgrade
  int ping_period_ms = 5000;
  int pong_timeout_ms = 10000;
  // Reach the service through this HTTP CONNECT proxy (secret: may hold
  // credentials; only display() is ever shown). nullopt: connect directly.
  std::optional<HttpProxy> https_proxy;
};

struct LinkEnd {
  std::string reason;       // one line for the user, no secrets
  int http_status = 0;      // of a refused upgrade, else 0
  int peer_close_code = 0;  // the service's close frame (1005: no code), else 0
  bool was_open = false;
  bool protocol_error = false;  // the service broke RFC 6455 or the upgrade rules
  // The HTTPS proxy's non-2xx answer to CONNECT, else 0. A refusal
  // (proxy_refusal_is_final) is final; the rest are retried like network errors.
  int proxy_status = 0;
};

class ServiceLinkEvents {
 public:
  virtual ~ServiceLinkEvents() = default;
  virtual void on_link_open(const std::string& subprotocol, const std::string& channel_id) = 0;
  virtual void on_link_data(std::span<const std::uint8_t> bytes) = 0;
  // The send queue fell to the low watermark (resume reading local sockets).
  virtual void on_link_drained() = 0;
  virtual void on_link_rtt(std::int64_t rtt_us) = 0;
  virtual void on_link_closed(const LinkEnd& end) = 0;
};

class ServiceLink final : private WsConnectionEvents, private FrameSource {
 public:
  ServiceLink(LoopContext& ctx, ServiceLinkEvents& events);
  ~ServiceLink() override;
  ServiceLink(const ServiceLink&) = delete;
  ServiceLink& operator=(const ServiceLink&) = delete;

  // Starts a connection (only when !active()).
  void connect(const LinkOptions& options);
  // A connection exists whose on_link_closed has not been delivered yet.
  bool active() const { return stage_ != Stage::idle; }
  bool is_open() const { return stage_ == Stage::open && conn_ && conn_->open(); }

  // Records to send; call flush() after appending.
  std::string& outbox() { return outbox_; }
  // One record given in pieces (a DATA record's head, payload and tail),
  // framed as one binary message with each piece masked straight into the
  // write buffer: the payload is copied once on its way to TLS. Ordered
  // after everything appended to outbox() before. Call flush() after.
  void send_record_parts(std::string_view head, std::string_view payload, std::string_view tail);
  void flush();
  // Bytes accepted for sending and not yet written to the socket.
  std::size_t queued() const { return outbox_.size() + (conn_ ? conn_->pending_output() : 0); }

  void pause_receive(bool paused);
  bool receive_paused() const { return rx_paused_; }

  // Graceful: send what is queued, then a close frame; the link ends when the
  // service answers it (or after 2 s).
  void close(int code, std::string_view reason);
  // At once (the socket is closed; on_link_closed follows from the loop).
  void abort(std::string reason);

  // Releases the loop handles; the link is unusable afterwards. Safe at any
  // time; the handles free themselves from their close callbacks.
  void shutdown();

 private:
  // Where the connection stands, for what the link does next and how a
  // failure is worded.
  enum class Stage { idle, resolving, connecting, proxy_connect, tls, upgrading, open, ending };
  struct Handles;  // loop handles, freed from their close callbacks
  struct Resolve;  // a getaddrinfo request, freed from its callback

  // WsConnectionEvents
  void on_connected() override;
  void on_secured() override;
  std::size_t on_http_bytes(std::span<const std::uint8_t> bytes) override;
  void on_message_data(std::span<const std::uint8_t> payload) override;
  void on_pong(std::span<const std::uint8_t> payload) override;
  void on_peer_close(int code) override;
  void on_frame_error(ws::FrameError error) override;
  void on_output_drained() override;
  void on_closed(const WsConnectionEnd& end) override;
  // FrameSource: the outbox, framed when the connection can take it.
  std::span<const std::uint8_t> next_frame(WsConnection& conn) override;

  void on_resolved(int status, addrinfo* res);
  void try_next_address();
  void start_proxy_connect();
  std::size_t on_proxy_reply(std::span<const std::uint8_t> bytes);
  void on_proxy_refused(int status, const std::string& answer);
  void start_transport();  // TLS (or the plain upgrade) on the connected socket
  void start_upgrade();
  std::size_t on_upgrade_reply(std::span<const std::uint8_t> bytes);
  void frame_outbox();
  void on_ping_tick();
  void on_connect_timeout();
  std::string describe_end(const WsConnectionEnd& end) const;
  void deliver_link_end();
  void abandon_resolve();
  void fail(std::string reason, int http_status = 0, bool protocol_error = false);
  void stop_connection();
  // "the service at h:p" or "the HTTPS proxy h:p": whom the TCP connection goes to.
  std::string tcp_peer_text() const;
  std::string endpoint_text() const;

  LoopContext& ctx_;
  ServiceLinkEvents& events_;
  Handles* h_ = nullptr;
  Resolve* resolve_ = nullptr;
  LinkOptions options_;
  Stage stage_ = Stage::idle;
  LinkEnd end_;
  std::unique_ptr<WsConnection> conn_;

  addrinfo* addrs_ = nullptr;
  addrinfo* next_addr_ = nullptr;
  std::string connect_error_;

  ConnectReplyParser proxy_reply_;
  ws::UpgradeRequest upgrade_;
  ws::HttpResponseHead response_;

  std::string outbox_;  // records not yet framed
  bool rx_paused_ = false;
  bool awaiting_pong_ = false;
  std::chrono::steady_clock::time_point ping_sent_;
};

}  // namespace tunnel
