#include "ws_connection.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace tunnel {

using Cause = WsConnectionEnd::Cause;

// ---------------------------------------------------------------- output buffer

std::uint8_t* WsConnection::OutBuffer::extend(std::size_t n) {
  if (size_ + n > cap_) {
    if (off_ > 0) {  // reuse the written front first
      std::memmove(p_.get(), p_.get() + off_, size_ - off_);
      size_ -= off_;
      off_ = 0;
    }
    if (size_ + n > cap_) {
      const std::size_t cap = std::max({size_ + n, cap_ * 2, std::size_t{16384}});
      std::unique_ptr<std::uint8_t[]> p(new std::uint8_t[cap]);
      if (size_) std::memcpy(p.get(), p_.get(), size_);
      p_ = std::move(p);
      cap_ = cap;
    }
  }
  std::uint8_t* at = p_.get() + size_;
  size_ += n;
  return at;
}

void WsConnection::OutBuffer::written(std::size_t n) {
  off_ += n;
  if (off_ < size_) return;
  size_ = off_ = 0;
  // Keep the allocation while bulk traffic flows; give back a small one (a
  // connection that only answers pings holds nothing) and a huge one.
  if (cap_ <= std::size_t{16384} || cap_ > std::size_t{1024} * 1024) release();
}

void WsConnection::OutBuffer::release() {
  p_.reset();
  size_ = off_ = cap_ = 0;
}

// ---------------------------------------------------------------- handles

struct WsConnection::Handles {
  WsConnection* owner = nullptr;
  uv_timer_t deadline{};  // close answer, or lingering
  Cause deadline_cause = Cause::close_timeout;

  static WsConnection* owner_of(const void* handle) {
    return static_cast<Handles*>(reinterpret_cast<const uv_handle_t*>(handle)->data)->owner;
  }
};

WsConnection::WsConnection(LoopContext& ctx, WsConnectionEvents& events,
                           WsConnectionOptions options)
    : ctx_(ctx),
      events_(events),
      options_(options),
      h_(new Handles),
      decoder_(options.side, options.max_message_size) {
  h_->owner = this;
  uv_timer_init(ctx_.loop(), &h_->deadline);
  h_->deadline.data = h_;
}

WsConnection::~WsConnection() {
  ctx_.forget(*this);
  release_socket();
  h_->owner = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&h_->deadline),
           [](uv_handle_t* t) { delete static_cast<Handles*>(t->data); });
}

void WsConnection::adopt(net::Socket s, Phase phase) {
  fd_ = s;
  net::set_nodelay(fd_);
  net::set_notsent_lowat(fd_, options_.notsent_lowat);
  poll_ = new uv_poll_t;
  uv_poll_init_socket(ctx_.loop(), poll_, fd_);
  poll_->data = h_;
  phase_ = phase;
  update_poll();
}

void WsConnection::connect(net::Socket s) {
  if (phase_ != Phase::idle || fd_ != net::kNoSocket) return;
  adopt(s, Phase::connecting);
}

void WsConnection::accept(net::Socket s) {
  if (phase_ != Phase::idle || fd_ != net::kNoSocket) return;
  adopt(s, Phase::http);
}

void WsConnection::release_socket() {
  if (poll_ != nullptr) {
    // Closed before the socket: libuv forgets the descriptor while it is
    // still ours, so a new socket that reuses the number is not touched.
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* p) { delete reinterpret_cast<uv_poll_t*>(p); });
    poll_ = nullptr;
  }
  poll_events_ = 0;
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  net::close_socket(fd_);
  fd_ = net::kNoSocket;
}

// ---------------------------------------------------------------- phases

void WsConnection::start_tls(SSL* ssl) {
  if (stopped() || ssl_ != nullptr) {
    SSL_free(ssl);
    return;
  }
  ssl_ = ssl;
  phase_ = Phase::tls;
  // The first step runs from the poll (a client may write at once, a
  // server waits for the hello), so every event comes from the loop.
  write_wants_read_ = SSL_is_server(ssl_) != 0;
  update_poll();
}

void WsConnection::read_http(bool exact) {
  if (stopped()) return;
  exact_http_ = exact && ssl_ == nullptr;
  phase_ = Phase::http;
  update_poll();
}

void WsConnection::open_websocket() {
  if (phase_ != Phase::http) return;
  phase_ = Phase::open;
  exact_http_ = false;
  ctx_.defer_write(*this);
}

void WsConnection::step_connect(int status) {
  // The socket's own error first: libuv reports POLLERR as UV_EBADF, which
  // would turn "Connection refused" into "Bad file descriptor".
  int err = net::pending_error(fd_);
  if (err == 0 && status < 0) err = -status;
  if (err != 0) {
    end_.detail = net::error_text(err);
    end(Cause::connect_failed);
    return;
  }
  phase_ = Phase::http;
  update_poll();
  events_.on_connected();
}

void WsConnection::step_tls() {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    phase_ = Phase::http;
    write_wants_read_ = false;
    events_.on_secured();
    if (stopped()) return;
    do_read();  // the peer's first bytes may have come with the last flight
    return;
  }
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    write_wants_read_ = err == SSL_ERROR_WANT_READ;  // the poll direction while in tls
    return;
  }
  end_.verify_result = SSL_get_verify_result(ssl_);
  end_.detail = tls_error_text();
  end(Cause::tls_handshake);
}

// ---------------------------------------------------------------- poll

void WsConnection::update_poll() {
  if (poll_ == nullptr) return;
  int ev = 0;
  switch (phase_) {
    case Phase::connecting:
      ev = UV_WRITABLE;
      break;
    case Phase::tls:
      ev = write_wants_read_ ? UV_READABLE : UV_WRITABLE;
      break;
    case Phase::lingering:
      ev = UV_READABLE;
      break;
    case Phase::http:
    case Phase::open:
    case Phase::closing:
      if ((!paused_ && !paused_for_output_ && !finishing_) || write_wants_read_) ev |= UV_READABLE;
      if (write_blocked_ || read_wants_write_) ev |= UV_WRITABLE;
      break;
    default:
      break;
  }
  if (ev == poll_events_) return;
  poll_events_ = ev;
  if (ev == 0) {
    uv_poll_stop(poll_);
    return;
  }
  uv_poll_start(poll_, ev, [](uv_poll_t* p, int status, int events) {
    if (WsConnection* self = Handles::owner_of(p)) self->on_poll(status, events);
  });
}

void WsConnection::on_poll(int status, int events) {
  if (phase_ == Phase::connecting) {
    step_connect(status);
  } else if (status < 0) {
    // POLLERR comes as UV_EBADF: the socket's own error says what happened
    // (a reset, a broken pipe).
    const int err = net::pending_error(fd_);
    end_.detail = err != 0 ? net::error_text(err) : std::string(uv_strerror(status));
    end(Cause::poll_error);
  } else if (phase_ == Phase::tls) {
    step_tls();
  } else if (phase_ == Phase::lingering) {
    drain_lingering();
  } else {
    if ((events & UV_WRITABLE) || ((events & UV_READABLE) && write_wants_read_)) {
      write_blocked_ = false;
      do_write();
    }
    if (!stopped() && ((events & UV_READABLE) || ((events & UV_WRITABLE) && read_wants_write_)))
      do_read();
  }
  if (!stopped()) update_poll();
}

void WsConnection::on_write_due() {
  if (phase_ != Phase::http && phase_ != Phase::open && phase_ != Phase::closing) return;
  do_write();
  if (!stopped()) update_poll();
}

void WsConnection::on_next_due() {
  if (phase_ == Phase::ended) {
    phase_ = Phase::idle;
    const WsConnectionEnd e = end_;
    events_.on_closed(e);  // may destroy *this
    return;
  }
  if (phase_ != Phase::http && phase_ != Phase::open && phase_ != Phase::closing) return;
  do_read();
  if (!stopped()) update_poll();
}

// ---------------------------------------------------------------- reading

void WsConnection::pause_reading(bool paused) {
  if (paused_ == paused) return;
  paused_ = paused;
  if (stopped()) return;
  // Deliver what was held back and whatever OpenSSL buffered, from the loop.
  if (!paused) ctx_.defer_next(*this);
  update_poll();
}

void WsConnection::do_read() {
  if (paused_ || paused_for_output_ || finishing_) return;
  if (exact_http_ && phase_ == Phase::http) {
    read_exact_http();
    return;
  }
  if (!rest_.empty()) {
    std::string rest = std::move(rest_);
    rest_.clear();
    if (!dispatch({reinterpret_cast<std::uint8_t*>(rest.data()), rest.size()})) return;
  }
  const std::span<std::uint8_t> buf = shared_read_buffer();
  for (int round = 0; round < options_.read_rounds_per_event; ++round) {
    if (!read_pass(buf)) return;
  }
  ctx_.defer_next(*this);  // yielded with data possibly left (in the socket or in OpenSSL)
}

// One buffer's worth: false when reading stops for now (would block, paused,
// ended, or over the output bound).
bool WsConnection::read_pass(std::span<std::uint8_t> buf) {
  if (options_.max_pending_output != 0 && pending_output() > options_.max_pending_output) {
    // The peer does not read what we owe it (control answers count too).
    paused_for_output_ = true;
    return false;
  }
  std::size_t filled = 0;
  long n = 0;
  IoEnd io;
  // TLS hands out one record per call: gather a whole buffer first.
  while (filled < buf.size()) {
    n = socket_read(fd_, ssl_, buf.data() + filled, buf.size() - filled, read_wants_write_, io);
    if (n <= 0) break;
    filled += static_cast<std::size_t>(n);
  }
  if (filled > 0 && !dispatch(buf.first(filled))) return false;
  if (n < 0) {
    end_.io = std::move(io);
    end(Cause::io);
    return false;
  }
  return n != 0;
}

// A proxy's answer before TLS: peek, then take off the socket exactly what
// the owner used; the rest is the TLS layer's.
void WsConnection::read_exact_http() {
  const std::span<std::uint8_t> buf = shared_read_buffer();
  while (phase_ == Phase::http && exact_http_) {
    const long got = net::peek_some(fd_, buf.data(), buf.size());
    if (got == 0) return;
    if (got < 0) {
      const int err = net::last_error();
      end_.io = err != 0 ? IoEnd{IoEnd::Kind::failed, net::error_text(err)}
                         : IoEnd{IoEnd::Kind::closed, {}};
      end(Cause::io);
      return;
    }
    const std::size_t used = events_.on_http_bytes(buf.first(static_cast<std::size_t>(got)));
    for (std::size_t dropped = 0; dropped < used && !stopped();) {
      const long n = net::recv_some(fd_, buf.data(), used - dropped);
      if (n <= 0) {
        end_.io = IoEnd{IoEnd::Kind::failed, "the connection ended while reading"};
        end(Cause::io);
        return;
      }
      dropped += static_cast<std::size_t>(n);
    }
    if (stopped() || used == 0) return;
  }
}

// Hands read bytes on by phase: false when delivery stopped (paused with the
// rest kept, ended, or the phase takes no more bytes).
bool WsConnection::dispatch(std::span<std::uint8_t> bytes) {
  if (phase_ == Phase::http) {
    const std::size_t used = events_.on_http_bytes(bytes);
    if (stopped() || finishing_) return false;
    if (phase_ == Phase::open && used < bytes.size()) return decode_frames(bytes.subspan(used));
    return phase_ == Phase::http || phase_ == Phase::open;
  }
  if (phase_ == Phase::open || phase_ == Phase::closing) return decode_frames(bytes);
  return false;
}

bool WsConnection::decode_frames(std::span<std::uint8_t> bytes) {
  std::size_t pos = 0;
  for (;;) {
    if (end_.frame_error != ws::FrameError::none) return true;  // failed: discard
    if (paused_) {
      rest_.append(reinterpret_cast<const char*>(bytes.data()) + pos, bytes.size() - pos);
      return false;
    }
    const ws::FrameEvent ev = decoder_.next(bytes.subspan(pos));
    pos += ev.consumed;
    if (ev.kind == ws::FrameEvent::Kind::need_more) return true;
    if (!on_frame(ev)) return false;
  }
}

bool WsConnection::on_frame(const ws::FrameEvent& ev) {
  using Kind = ws::FrameEvent::Kind;
  switch (ev.kind) {
    case Kind::data:
      if (!ev.payload.empty()) events_.on_message_data(ev.payload);
      break;
    case Kind::ping:
      queue_control(ws::Opcode::pong, ev.payload);
      break;
    case Kind::pong:
      events_.on_pong(ev.payload);
      break;
    case Kind::close:
      on_close_frame(ev.close_code);
      return false;
    case Kind::error:
      end_.frame_error = ev.error;
      events_.on_frame_error(ev.error);
      if (!stopped() && !failing_) end(Cause::frame_error);
      return false;
    case Kind::need_more:
      break;
  }
  return phase_ == Phase::open || phase_ == Phase::closing;
}

void WsConnection::on_close_frame(int code) {
  peer_closed_ = true;
  end_.peer_close_code = code;
  events_.on_peer_close(code);
  if (stopped()) return;
  if (!close_sent_) {
    // Echo the code (RFC 6455 section 5.5.1) after what is framed already.
    detach_source();
    queue_close(code, {});
    phase_ = Phase::closing;
    start_deadline(options_.close_timeout_ms, Cause::closed);
  } else if (pending_output() == 0) {
    end(Cause::closed);
  }
}

void WsConnection::drain_lingering() {
  // Discard what the peer still sends; its end (or the deadline) closes.
  const std::span<std::uint8_t> buf = shared_read_buffer();
  for (;;) {
    const long n = net::recv_some(fd_, buf.data(), buf.size());
    if (n > 0) continue;
    if (n < 0) end(Cause::lingered);
    return;
  }
}

// ---------------------------------------------------------------- writing

std::size_t WsConnection::pending_output() const {
  return out_.pending() + (borrowed_.size() - borrowed_off_);
}

void WsConnection::flush() {
  if (phase_ == Phase::http || phase_ == Phase::open || phase_ == Phase::closing)
    ctx_.defer_write(*this);
}

void WsConnection::send_raw(std::string_view bytes) {
  if (stopped() || bytes.empty()) return;
  std::memcpy(out_.extend(bytes.size()), bytes.data(), bytes.size());
  flush();
}

void WsConnection::send_message(std::initializer_list<std::string_view> parts) {
  if (close_sent_ || stopped()) return;
  std::size_t n = 0;
  for (const std::string_view part : parts) n += part.size();
  const bool masked = options_.side == ws::Side::client;
  const auto mask = masked ? mask_keys_.next() : std::array<std::uint8_t, 4>{};
  std::uint8_t* p = out_.extend(ws::frame_header_size(n, masked) + n);
  p += ws::write_frame_header(p, ws::Opcode::binary, n, masked ? &mask : nullptr);
  std::uint64_t phase = 0;
  for (const std::string_view part : parts) {
    const auto* src = reinterpret_cast<const std::uint8_t*>(part.data());
    if (masked) {
      ws::copy_masked(p, src, part.size(), mask, phase);
    } else if (!part.empty()) {
      std::memcpy(p, src, part.size());
    }
    p += part.size();
    phase += part.size();
  }
  if (options_.output_low_watermark != 0 && pending_output() > options_.output_low_watermark)
    above_low_ = true;
}

void WsConnection::send_ping(std::span<const std::uint8_t> payload) {
  queue_control(ws::Opcode::ping, payload);
}

void WsConnection::queue_control(ws::Opcode op, std::span<const std::uint8_t> payload) {
  if (close_sent_ || stopped()) return;  // nothing may follow a close frame
  const bool masked = options_.side == ws::Side::client;
  const auto mask = masked ? mask_keys_.next() : std::array<std::uint8_t, 4>{};
  const std::size_t hdr = ws::frame_header_size(payload.size(), masked);
  std::uint8_t* p = out_.extend(hdr + payload.size());
  ws::write_frame_header(p, op, payload.size(), masked ? &mask : nullptr);
  if (masked) {
    ws::copy_masked(p + hdr, payload.data(), payload.size(), mask);
  } else if (!payload.empty()) {
    std::memcpy(p + hdr, payload.data(), payload.size());
  }
  flush();
}

void WsConnection::queue_close(int code, std::string_view reason) {
  std::string payload;
  if (code != 1005) {
    payload.push_back(static_cast<char>(code >> 8));
    payload.push_back(static_cast<char>(code & 0xFF));
    payload += reason.substr(0, ws::kMaxControlPayload - 2);
  }
  queue_control(ws::Opcode::close,
                {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()});
  close_sent_ = true;
}

void WsConnection::set_source(FrameSource* source) {
  source_ = source;
  flush();
}

void WsConnection::detach_source() {
  if (!borrowed_.empty()) {
    // The rest of the frame must still go out whole; its owner is about to
    // forget it. At most one message, rare.
    const std::size_t n = borrowed_.size() - borrowed_off_;
    std::uint8_t* p = out_.extend(n);
    std::memmove(p, borrowed_.data() + borrowed_off_, n);
    borrowed_ = {};
    borrowed_off_ = 0;
  }
  source_ = nullptr;
}

void WsConnection::do_write() {
  if (fd_ == net::kNoSocket) return;
  for (;;) {
    const std::uint8_t* p = nullptr;
    std::size_t n = 0;
    if (!borrowed_.empty()) {
      p = borrowed_.data() + borrowed_off_;
      n = borrowed_.size() - borrowed_off_;
    } else if (out_.pending() != 0) {
      p = out_.unwritten();
      n = out_.pending();
    } else if (source_ != nullptr && phase_ == Phase::open) {
      const std::span<const std::uint8_t> frame = source_->next_frame(*this);
      if (stopped()) return;
      if (frame.empty() && out_.pending() == 0) break;
      borrowed_ = frame;
      borrowed_off_ = 0;
      continue;
    } else {
      break;
    }
    IoEnd io;
    const long put = socket_write(fd_, ssl_, p, n, write_wants_read_, io);
    if (put < 0) {
      end_.io = std::move(io);
      end(Cause::io);
      return;
    }
    if (put == 0) {
      write_blocked_ = true;
      after_writes();
      return;
    }
    if (!borrowed_.empty()) {
      borrowed_off_ += static_cast<std::size_t>(put);
      if (borrowed_off_ == borrowed_.size()) {
        borrowed_ = {};
        borrowed_off_ = 0;
        if (source_ != nullptr) source_->frame_written();
        if (stopped()) return;
      }
    } else {
      out_.written(static_cast<std::size_t>(put));
    }
  }
  write_blocked_ = false;
  after_writes();
}

// After a write pass: the output bound, the drained event, and the ends
// that wait for the output to be written.
void WsConnection::after_writes() {
  const std::size_t pending = pending_output();
  if (paused_for_output_ && pending <= options_.max_pending_output / 2) {
    paused_for_output_ = false;
    ctx_.defer_next(*this);
  }
  if (above_low_ && pending <= options_.output_low_watermark) {
    above_low_ = false;
    if (phase_ == Phase::open) events_.on_output_drained();
    if (stopped()) return;
  }
  if (pending != 0) return;
  if (close_sent_ && peer_closed_) {
    end(Cause::closed);
  } else if (finishing_ || (failing_ && close_sent_)) {
    start_linger();
  }
}

// ---------------------------------------------------------------- ending

void WsConnection::start_deadline(std::uint64_t ms, Cause cause) {
  h_->deadline_cause = cause;
  uv_timer_start(
      &h_->deadline,
      [](uv_timer_t* t) {
        auto* h = static_cast<Handles*>(t->data);
        if (h->owner != nullptr) h->owner->end(h->deadline_cause);
      },
      ms, 0);
}

void WsConnection::start_linger() {
  if (phase_ == Phase::lingering) return;
  if (ssl_ != nullptr) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // close_notify, best effort
    ERR_clear_error();
  }
  net::shutdown_write(fd_);
  phase_ = Phase::lingering;
  finishing_ = false;
  start_deadline(options_.linger_ms, Cause::lingered);
  update_poll();
}

void WsConnection::close(int code, std::string_view reason) {
  if (phase_ != Phase::open) return;
  detach_source();
  queue_close(code, reason);
  phase_ = Phase::closing;
  start_deadline(options_.close_timeout_ms, Cause::close_timeout);
  update_poll();
}

void WsConnection::fail(int code, std::string_view reason) {
  if (phase_ == Phase::open) {
    failing_ = true;
    close(code, reason);
  } else if (phase_ == Phase::closing) {
    failing_ = true;
    flush();
  } else {
    abort();
  }
}

void WsConnection::finish() {
  if (stopped() || phase_ == Phase::lingering) return;
  finishing_ = true;
  flush();
  update_poll();
}

void WsConnection::abort(int close_code) {
  if (stopped()) return;
  if (close_code != 0 && phase_ == Phase::open && pending_output() == 0 && !close_sent_) {
    // Best effort: tell the peer why, without waiting.
    queue_close(close_code, {});
    IoEnd ignored;
    socket_write(fd_, ssl_, out_.unwritten(), out_.pending(), write_wants_read_, ignored);
  }
  end(Cause::aborted);
}

void WsConnection::end(Cause cause) {
  if (stopped()) return;
  end_.cause = cause;
  if (cause == Cause::closed && ssl_ != nullptr) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // close_notify, best effort
    ERR_clear_error();
  }
  release_socket();
  uv_timer_stop(&h_->deadline);
  out_.release();
  rest_.clear();
  borrowed_ = {};
  borrowed_off_ = 0;
  source_ = nullptr;
  phase_ = Phase::ended;
  ctx_.defer_next(*this);  // on_closed from the loop
}

}  // namespace tunnel
