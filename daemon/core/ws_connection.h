// One WebSocket connection over a non-blocking socket, client or server:
// the socket, OpenSSL on it, its uv_poll, the read and write loops, RFC 6455
// framing, control frames (pong answers, the close handshake) and output
// backpressure. What goes before the WebSocket (resolving, a proxy's
// CONNECT, the upgrade request and its answer) and what the messages mean
// belong to the owner: ServiceLink (client) and the relay's server.
//
// Phases: [connecting] -> [tls] -> http -> open -> closing -> ended. The
// owner moves it on: connect() or accept(), start_tls(), open_websocket()
// once the upgrade is agreed; the connection moves itself from tls to http
// when the handshake is done, and to closing and ended.
//
// Output: one buffer of bytes to write (HTTP, control frames, messages the
// owner copies in with send_message) and, when that is empty, frames pulled
// from the owner's FrameSource as the socket takes them. pending_output() is
// all of it that is not written yet; past max_pending_output the connection
// stops reading (a peer that sends pings and never reads cannot grow it).
//
// Input: HTTP bytes to on_http_bytes, message payload to on_message_data as
// spans of the loop's shared read buffer (unmasked in place), pings
// answered, pongs and the peer's close reported. pause_reading(true) stops
// delivery at once; the undelivered rest of one read is kept.
//
// Event-loop rules: events are delivered only from libuv callbacks, never
// inside a call the owner makes; on_closed comes exactly once, after which
// nothing else is delivered. The owner may destroy the connection at any
// time except inside its other events (inside on_closed is fine); its loop
// handles are freed from their close callbacks.
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "loop_context.h"
#include "net_socket.h"
#include "record_codec.h"
#include "socket_io.h"
#include "ws_frame.h"

namespace tunnel {

struct WsConnectionOptions {
  ws::Side side = ws::Side::client;  // a client masks what it sends
  std::size_t max_message_size = kMaxFrameSize;
  // TCP_NOTSENT_LOWAT of the socket: at most this much unsent in the kernel,
  // so bulk data cannot park megabytes there ahead of a later, more urgent
  // frame (in-flight data is not limited). 0 keeps the kernel's default.
  std::size_t notsent_lowat = std::size_t{128} * 1024;
  // Stop reading while more than this is pending output (0: no bound).
  std::size_t max_pending_output = 0;
  // on_output_drained when pending output falls to this after having been
  // above it (0: never).
  std::size_t output_low_watermark = 0;
  // Read passes per poll event before yielding the loop to other connections.
  int read_rounds_per_event = 8;
  std::uint64_t close_timeout_ms = 2000;  // waiting for the answer to our close frame
  std::uint64_t linger_ms = 2000;         // draining after fail() or finish()
};

// Why a connection ended. The owner turns it into its own words.
struct WsConnectionEnd {
  enum class Cause {
    connect_failed,  // connect(): `detail` is the system's reason
    poll_error,      // the socket reported an error: `detail`
    io,              // reading or writing ended: `io`
    tls_handshake,   // `detail` (OpenSSL's reason, may be empty), `verify_result`
    frame_error,     // the peer broke RFC 6455: `frame_error` (after on_frame_error)
    closed,          // both close frames went (the close handshake is complete)
    close_timeout,   // our close frame was not answered in time
    lingered,        // after fail() or finish(): the peer closed, or time ran out
    aborted,         // abort()
  };
  Cause cause = Cause::aborted;
  std::string detail;
  IoEnd io;
  long verify_result = 0;  // X509_V_OK when verification was not the problem
  ws::FrameError frame_error = ws::FrameError::none;
  int peer_close_code = 0;  // the peer's close frame (1005: no code), else 0
};

class WsConnectionEvents {
 public:
  virtual ~WsConnectionEvents() = default;
  // connect(): the TCP connection is up.
  virtual void on_connected() {}
  // start_tls(): the TLS handshake is done; the connection is in its http phase.
  virtual void on_secured() {}
  // Bytes received in the http phase. Returns how many it used: all of them,
  // unless it opened the WebSocket (the rest is decoded as frames) or, with
  // read_http(exact), it left the rest in the socket for TLS.
  virtual std::size_t on_http_bytes(std::span<const std::uint8_t> bytes) = 0;
  // A piece of a binary message's payload (valid during the call only).
  virtual void on_message_data(std::span<const std::uint8_t> payload) = 0;
  virtual void on_pong(std::span<const std::uint8_t> /*payload*/) {}
  // The peer's close frame (code 1005 when it carried none). Unless we sent
  // ours already, the connection answers it with the same code after this
  // returns and what is already framed.
  virtual void on_peer_close(int /*code*/) {}
  // The peer broke RFC 6455. The owner ends the connection here (fail() or
  // abort()); otherwise the connection aborts it after this returns.
  virtual void on_frame_error(ws::FrameError /*error*/) {}
  // Pending output fell to options.output_low_watermark.
  virtual void on_output_drained() {}
  virtual void on_closed(const WsConnectionEnd& end) = 0;
};

// Where an open connection pulls its next frames from when its own buffer
// is written out and the socket takes more.
class FrameSource {
 public:
  virtual ~FrameSource() = default;
  // Either copy messages in with conn.send_message() (they are written
  // next), or return one whole frame (header included) that the connection
  // writes straight from the source's memory, which stays valid until
  // frame_written() (or until the connection copies the rest out: see
  // WsConnection::detach_source). Empty and nothing copied: no more for now.
  virtual std::span<const std::uint8_t> next_frame(class WsConnection& conn) = 0;
  virtual void frame_written() {}
};

class WsConnection {
 public:
  WsConnection(LoopContext& ctx, WsConnectionEvents& events, WsConnectionOptions options);
  ~WsConnection();
  WsConnection(const WsConnection&) = delete;
  WsConnection& operator=(const WsConnection&) = delete;

  // Client: takes a socket whose non-blocking connect is in progress;
  // on_connected or on_closed(connect_failed) follows.
  void connect(net::Socket s);
  // Server: takes an accepted socket; the connection is in its http phase
  // (call start_tls first for TLS).
  void accept(net::Socket s);
  // Starts TLS on the socket with `ssl` (owned from now on, set up for the
  // client or server side). on_secured, or on_closed(tls_handshake).
  void start_tls(SSL* ssl);
  // Reads the http phase again (after connect: for a proxy's answer). exact:
  // only what on_http_bytes uses is taken off the socket (plain sockets:
  // what follows belongs to a TLS layer not started yet).
  void read_http(bool exact = false);
  // The upgrade is agreed: frames from now on (also the rest of the current
  // http bytes).
  void open_websocket();

  // Bytes to write as they are (HTTP).
  void send_raw(std::string_view bytes);
  // One binary message made of `parts`, copied (and masked, as a client) into
  // the output buffer: one copy on its way to TLS.
  void send_message(std::initializer_list<std::string_view> parts);
  void send_ping(std::span<const std::uint8_t> payload);
  void set_source(FrameSource* source);
  // Stops pulling from the source; the rest of a frame in flight is copied
  // into the output buffer first (the peer is parsing it).
  void detach_source();
  // Writes what is queued and pulls from the source, after this iteration's
  // I/O callbacks.
  void flush();

  // Not yet written: output buffer plus the rest of a frame in flight.
  std::size_t pending_output() const;
  // Asks for on_output_drained once pending output is at the low watermark
  // (send_message asks by itself when it passes it).
  void notify_when_drained() { above_low_ = options_.output_low_watermark != 0; }

  void pause_reading(bool paused);
  bool reading_paused() const { return paused_; }

  // Graceful: our close frame after what is framed, then the peer's answer
  // (or close_timeout_ms).
  void close(int code, std::string_view reason);
  // RFC 6455 7.1.7: our close frame, then half-close and drain for at most
  // linger_ms without waiting for an answer.
  void fail(int code, std::string_view reason);
  // After what is queued is written (an HTTP rejection): half-close and drain.
  void finish();
  // At once; a close frame with `close_code` first when the socket takes it
  // right away (0: none).
  void abort(int close_code = 0);

  // Gives the output buffer back when nothing waits in it (an idle
  // connection holds no write buffer).
  void release_idle_buffer() {
    if (out_.pending() == 0) out_.release();
  }

  bool open() const { return phase_ == Phase::open; }
  bool ended() const { return phase_ == Phase::ended || phase_ == Phase::idle; }
  bool close_sent() const { return close_sent_; }
  net::Socket socket() const { return fd_; }

 private:
  friend class LoopContext;
  enum class Phase { idle, connecting, tls, http, open, closing, lingering, ended };
  struct Handles;  // poll and deadline timer, freed from their close callbacks

  // Bytes to write, framed: grows without zero-filling (a frame is written
  // over it at once), compacted from the front.
  class OutBuffer {
   public:
    std::uint8_t* extend(std::size_t n);  // n writable bytes at the end
    const std::uint8_t* unwritten() const { return p_.get() + off_; }
    std::size_t pending() const { return size_ - off_; }
    void written(std::size_t n);
    void release();  // back to no allocation

   private:
    std::unique_ptr<std::uint8_t[]> p_;
    std::size_t size_ = 0;
    std::size_t off_ = 0;
    std::size_t cap_ = 0;
  };

  void adopt(net::Socket s, Phase phase);
  void on_poll(int status, int events);
  void on_write_due();
  void on_next_due();
  void step_connect(int status);
  void step_tls();
  void do_read();
  bool read_pass(std::span<std::uint8_t> buf);
  void read_exact_http();
  bool dispatch(std::span<std::uint8_t> bytes);
  bool decode_frames(std::span<std::uint8_t> bytes);
  bool on_frame(const ws::FrameEvent& ev);
  void on_close_frame(int code);
  void drain_lingering();
  void do_write();
  bool write_some(const std::uint8_t* p, std::size_t n, std::size_t& put);
  void after_writes();
  void queue_control(ws::Opcode op, std::span<const std::uint8_t> payload);
  void queue_close(int code, std::string_view reason);
  void start_deadline(std::uint64_t ms, WsConnectionEnd::Cause cause);
  void start_linger();
  void update_poll();
  void end(WsConnectionEnd::Cause cause);
  void release_socket();
  bool stopped() const { return phase_ == Phase::ended || phase_ == Phase::idle; }

  LoopContext& ctx_;
  WsConnectionEvents& events_;
  WsConnectionOptions options_;
  Handles* h_ = nullptr;
  Phase phase_ = Phase::idle;
  WsConnectionEnd end_;
  bool in_write_list_ = false;  // LoopContext's deferred lists
  bool in_next_list_ = false;

  net::Socket fd_ = net::kNoSocket;
  SSL* ssl_ = nullptr;
  uv_poll_t* poll_ = nullptr;  // per socket, closed before it
  int poll_events_ = 0;
  bool read_wants_write_ = false;  // TLS: a read must wait for writability
  bool write_wants_read_ = false;  // TLS: a write (or the handshake) waits for readability
  bool write_blocked_ = false;     // the socket took less than offered
  bool exact_http_ = false;
  bool finishing_ = false;  // finish(): linger once the output is written

  ws::FrameDecoder decoder_;
  ws::MaskKeys mask_keys_;
  std::string rest_;  // read but not delivered (reading paused), at most one read
  bool paused_ = false;
  bool paused_for_output_ = false;

  OutBuffer out_;
  FrameSource* source_ = nullptr;
  std::span<const std::uint8_t> borrowed_;  // a frame of the source in flight
  std::size_t borrowed_off_ = 0;
  bool above_low_ = false;

  bool close_sent_ = false;
  bool peer_closed_ = false;
  bool failing_ = false;  // fail(): linger once our close frame is out
};

}  // namespace tunnel
