// The link of one tunnel session to the tunneling service: TCP, TLS
// (OpenSSL on the socket, driven by a uv_poll), the WebSocket upgrade and
// RFC 6455 framing done by our own code, ping/pong liveness and the close
// handshake. What it carries is opaque to it: a byte stream of records in
// each direction (protocol.md section 3).
//
// Sending: the owner appends records to outbox() and calls flush(); every
// record appended during one loop iteration leaves in one batch of frames
// and TLS writes (a uv_check handle runs the flush after the I/O phase).
// Receiving: binary message payload is handed to on_link_data as spans of a
// read buffer shared by every link of the loop; pause_receive(true) stops
// delivery at once (the undelivered rest of the read is kept, bounded by
// one read) and stops reading the socket.
//
// Events are only ever delivered from libuv callbacks, never from inside a
// call the owner makes; on_link_closed comes exactly once per connect().
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "endpoint.h"
#include "http_proxy.h"
#include "ws_context.h"
#include "ws_frame.h"
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
  std::size_t max_frame_size = 131076;
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
  // The HTTPS proxy's non-2xx answer to CONNECT, else 0. 407 (credentials
  // missing or refused) is final; the rest are retried like network errors.
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

class ServiceLink {
 public:
  ServiceLink(WsContext& ctx, ServiceLinkEvents& events);
  ~ServiceLink();
  ServiceLink(const ServiceLink&) = delete;
  ServiceLink& operator=(const ServiceLink&) = delete;

  // Starts a connection (only when !active()).
  void connect(const LinkOptions& options);
  // A connection exists whose on_link_closed has not been delivered yet.
  bool active() const { return state_ != State::idle; }
  bool is_open() const { return state_ == State::open; }

  // Records to send; call flush() after appending.
  std::string& outbox() { return outbox_; }
  // One record given in pieces (e.g. a DATA record's head, payload and
  // tail), framed as one binary message with each piece masked straight into
  // the write buffer: the payload is copied once on its way to TLS instead of
  // twice. Ordered after everything appended to outbox() before. Call
  // flush() after.
  void send_record(std::string_view head, std::string_view payload, std::string_view tail);
  void flush();
  // Bytes accepted for sending and not yet written to the socket.
  std::size_t queued() const { return outbox_.size() + (wbuf_.size() - woff_); }

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
  enum class State {
    idle,
    resolving,
    connecting,
    proxy_connect,  // CONNECT sent (or being sent) to the HTTPS proxy, reading its answer
    tls,
    upgrading,
    open,
    closing,
    ended
  };
  struct Handles;  // loop handles, freed from their close callbacks
  struct Resolve;  // a getaddrinfo request, freed from its callback

  void on_resolved(int status, addrinfo* res);
  void try_next_address();
  void on_poll(int status, int events);
  void on_connected();
  void start_transport();  // TLS (or the plain upgrade) on the connected socket
  void start_proxy_connect();
  void step_proxy_connect();
  void on_proxy_reply();
  std::string peer_text() const;  // "the service at h:p" or "the HTTPS proxy h:p"
  void step_tls_handshake();
  void start_upgrade();
  void on_upgrade_bytes(std::span<std::uint8_t> bytes);
  void do_read();
  bool deliver(std::span<std::uint8_t> bytes);  // false: stopped (paused or ended)
  void do_write();
  void frame_outbox();
  void queue_control(ws::Opcode op, std::span<const std::uint8_t> payload);
  void update_poll();
  void on_ping_tick();
  void schedule_flush();
  void schedule_read();
  void on_flush_check();
  void deliver_end();
  void abandon_resolve();
  void fail(std::string reason, int http_status = 0, bool protocol_error = false);
  void end_connection();
  void close_socket();
  std::string endpoint_text() const;
  // I/O on the socket, plain or TLS: > 0 bytes, 0 would block, < 0 ended
  // (reason set).
  long io_read(std::uint8_t* buf, std::size_t n, std::string& reason);
  long io_write(const std::uint8_t* buf, std::size_t n, std::string& reason);

  WsContext& ctx_;
  ServiceLinkEvents& events_;
  Handles* h_ = nullptr;
  Resolve* resolve_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  LinkOptions opt_;
  State state_ = State::idle;
  LinkEnd end_;

  addrinfo* addrs_ = nullptr;
  addrinfo* next_addr_ = nullptr;
  std::string connect_error_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  bool read_wants_write_ = false;  // TLS: a read must wait for writability
  bool write_wants_read_ = false;  // TLS: a write must wait for readability
  int poll_events_ = 0;

  std::string proxy_request_;  // CONNECT request (secret with credentials): wiped once sent
  std::size_t proxy_sent_ = 0;
  ConnectReplyParser proxy_reply_;

  ws::UpgradeRequest upgrade_;
  ws::HttpResponseHead response_;
  ws::FrameDecoder decoder_{ws::Role::client, 131076};

  // Framed bytes not yet written: grows without zero-filling (a frame is
  // written over it at once), compacted from the front.
  class TxBuffer {
   public:
    std::uint8_t* extend(std::size_t n);  // n writable bytes at the end
    std::uint8_t* data() { return p_.get(); }
    std::size_t size() const { return size_; }
    void consume_front(std::size_t n);
    void shrink_by(std::size_t n);  // drop n bytes from the end
    void clear(bool release_memory);
    void release();  // back to no allocation
    std::size_t capacity() const { return cap_; }

   private:
    std::unique_ptr<std::uint8_t[]> p_;
    std::size_t size_ = 0;
    std::size_t cap_ = 0;
  };

  std::string outbox_;  // records not yet framed
  TxBuffer wbuf_;
  std::size_t woff_ = 0;
  bool was_above_low_ = false;

  std::string rx_rest_;  // read but not delivered (receive paused)
  bool rx_paused_ = false;

  bool close_sent_ = false;
  bool close_after_flush_ = false;
  int close_code_ = 1000;
  std::string close_reason_;
  bool peer_closed_ = false;

  bool awaiting_pong_ = false;
  std::chrono::steady_clock::time_point ping_sent_;

  ws::MaskKeys mask_keys_;
};

}  // namespace tunnel
