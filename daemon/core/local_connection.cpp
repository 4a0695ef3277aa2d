#include "local_connection.h"

#include <netdb.h>

#include <cstring>
#include <utility>
#include <vector>

#include "loop_context.h"
#include "net_socket.h"

namespace tunnel {
namespace {

constexpr std::uint64_t kFlushLingerMs = 10000;

std::string uv_error(int status) { return uv_strerror(status); }

}  // namespace

struct LocalConnection::WriteReq {
  uv_write_t req{};
  std::string data;
  std::size_t size = 0;
  LocalConnection* self = nullptr;
};

namespace {
struct ResolveReq {
  uv_getaddrinfo_t req{};
  LocalConnection* self = nullptr;
};
}  // namespace

LocalConnection::LocalConnection(uv_loop_t* loop, std::int32_t stream_id,
                                 LocalConnectionEvents& events, std::size_t read_buffer_size)
    : loop_(loop), stream_id_(stream_id), events_(&events) {
  read_size_ = read_buffer_size == 0 ? 65536 : read_buffer_size;
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
  ++outstanding_;
}

LocalConnection* LocalConnection::accept(uv_stream_t* server, std::int32_t stream_id,
                                         LocalConnectionEvents& events,
                                         std::size_t read_buffer_size) {
  auto* c = new LocalConnection(server->loop, stream_id, events, read_buffer_size);
  c->tcp_ = new uv_tcp_t;
  uv_tcp_init(c->loop_, c->tcp_);
  c->tcp_->data = c;
  ++c->outstanding_;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(c->tcp_)) != 0) {
    c->close(false);
    return nullptr;
  }
  c->on_connected();
  return c;
}

LocalConnection* LocalConnection::connect(uv_loop_t* loop, const ConnectOptions& options,
                                          std::int32_t stream_id, LocalConnectionEvents& events,
                                          std::size_t read_buffer_size) {
  auto* c = new LocalConnection(loop, stream_id, events, read_buffer_size);
  c->options_ = options;
  c->start_resolve();
  return c;
}

void LocalConnection::start_resolve() {
  auto* r = new ResolveReq;
  r->self = this;
  r->req.data = r;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  ++attempts_;
  ++outstanding_;
  const std::string port = std::to_string(options_.target.port);
  int rc = uv_getaddrinfo(
      loop_, &r->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* r = static_cast<ResolveReq*>(req->data);
        LocalConnection* self = r->self;
        delete r;
        if (self->closing_) {
          if (res) uv_freeaddrinfo(res);
        } else if (status != 0) {
          self->last_error_ =
              "cannot resolve " + self->options_.target.host + ": " + uv_error(status);
          self->attempt_failed(status);
        } else {
          self->addrs_ = res;
          self->next_addr_ = res;
          self->try_next_address();
        }
        self->release();
      },
      options_.target.host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    delete r;
    --outstanding_;
    last_error_ = "cannot resolve " + options_.target.host + ": " + uv_error(rc);
    attempt_failed(rc);
  }
}

void LocalConnection::try_next_address() {
  while (next_addr_) {
    addrinfo* ai = next_addr_;
    next_addr_ = ai->ai_next;
    tcp_ = new uv_tcp_t;
    uv_tcp_init(loop_, tcp_);
    tcp_->data = this;
    ++outstanding_;
    int rc = 0;
    if (!options_.bind_address.empty()) {
      addrinfo hints{};
      hints.ai_family = ai->ai_family;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_PASSIVE;
      addrinfo* b = nullptr;
      rc = getaddrinfo(options_.bind_address.c_str(), nullptr, &hints, &b);
      if (rc != 0 || !b) {
        last_error_ = "bind address " + options_.bind_address + " has no " +
                      (ai->ai_family == AF_INET6 ? "IPv6" : "IPv4") + " address";
        rc = UV_EADDRNOTAVAIL;
      } else {
        rc = uv_tcp_bind(tcp_, b->ai_addr, 0);
        if (rc != 0) last_error_ = "cannot bind to " + options_.bind_address + ": " + uv_error(rc);
      }
      if (b) freeaddrinfo(b);
    }
    if (rc == 0) {
      connect_req_.data = this;
      rc = uv_tcp_connect(&connect_req_, tcp_, ai->ai_addr, [](uv_connect_t* req, int status) {
        auto* self = static_cast<LocalConnection*>(req->data);
        if (!self->closing_) {
          if (status == 0) {
            self->on_connected();
          } else {
            self->last_error_ = "cannot connect to " + self->options_.target.host + ":" +
                                std::to_string(self->options_.target.port) + ": " +
                                uv_error(status);
            self->close_tcp(false);
            self->try_next_address();
          }
        }
        self->release();
      });
      if (rc == 0) {
        ++outstanding_;
        return;
      }
      last_error_ = "cannot connect to " + options_.target.host + ": " + uv_error(rc);
    }
    close_tcp(false);
  }
  // Every address of this attempt failed.
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
  }
  attempt_failed(UV_ECONNREFUSED);
}

void LocalConnection::attempt_failed(int status) {
  (void)status;
  if (lingering_) {
    lingering_ = false;
    close(false);
    return;
  }
  const int retries = options_.retry_count;
  if (retries < 0 || attempts_ <= retries) {
    uv_timer_start(
        &timer_,
        [](uv_timer_t* t) {
          auto* self = static_cast<LocalConnection*>(t->data);
          if (!self->closing_) self->start_resolve();
        },
        static_cast<std::uint64_t>(options_.retry_delay_ms), 0);
    return;
  }
  if (events_) events_->on_local_connect_failed(*this, last_error_);
}

void LocalConnection::on_connected() {
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
  }
  connected_ = true;
  uv_tcp_nodelay(tcp_, 1);
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(tcp_, reinterpret_cast<sockaddr*>(&ss), &len) == 0) {
    peer_ = net::address_text(reinterpret_cast<sockaddr*>(&ss));
  }
  flush_queue();
  if (lingering_) {
    lingering_ = false;
    close(true);
    return;
  }
  // The queue may have gone out synchronously: no write callback would then
  // report the drain, and a paused tunnel would never resume.
  if (events_ && pending_bytes_ <= low_watermark_) events_->on_local_drained(*this);
  start_reading();
  // Accepted connections are reported by the creator; only connects notify.
  if (events_ && !options_.target.host.empty()) events_->on_local_connected(*this);
}

void LocalConnection::start_reading() {
  if (reading_ || read_paused_ || closing_ || !connected_ || !tcp_) return;
  reading_ = true;
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(tcp_),
      [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
        auto* self = static_cast<LocalConnection*>(h->data);
        // The loop's shared buffer: an idle connection holds no read buffer.
        buf->base = reinterpret_cast<char*>(shared_read_buffer(self->read_size_).data());
        buf->len = self->read_size_;
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* self = static_cast<LocalConnection*>(s->data);
        if (self->closing_ || !self->events_) return;
        if (nread > 0) {
          self->events_->on_local_read(
              *self, std::string_view(buf->base, static_cast<std::size_t>(nread)));
        } else if (nread < 0) {
          uv_read_stop(s);
          self->reading_ = false;
          self->fail_local(nread == UV_EOF ? "closed by the local peer"
                                           : "read error: " + uv_error(static_cast<int>(nread)));
        }
      });
}

void LocalConnection::fail_local(const std::string& reason) {
  if (events_) events_->on_local_closed(*this, reason);
}

void LocalConnection::defer_failure(std::string reason) {
  // write() runs inside the owner's own calls; report on the next loop turn.
  if (closing_ || uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_))) return;
  deferred_error_ = std::move(reason);
  uv_timer_start(
      &timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<LocalConnection*>(t->data);
        if (!self->closing_) self->fail_local(self->deferred_error_);
      },
      0, 0);
}

void LocalConnection::pause_reading() {
  read_paused_ = true;
  if (reading_ && tcp_) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(tcp_));
    reading_ = false;
  }
}

void LocalConnection::resume_reading() {
  read_paused_ = false;
  start_reading();
}

void LocalConnection::write(std::string&& bytes) {
  if (closing_ || bytes.empty()) return;
  pending_bytes_ += bytes.size();
  if (!connected_) {
    queued_.push_back(std::move(bytes));
    return;
  }
  submit(std::move(bytes), 0);
}

void LocalConnection::write(std::string_view bytes) {
  if (closing_ || bytes.empty()) return;
  if (connected_ && tcp_ != nullptr) {
    // Straight from the caller's buffer when the socket takes it all (the
    // usual case while the local peer keeps up): no copy, no allocation.
    // uv_try_write refuses (EAGAIN) while earlier writes are queued, so
    // order holds. Only what the socket did not take is copied.
    uv_buf_t buf =
        uv_buf_init(const_cast<char*>(bytes.data()), static_cast<unsigned>(bytes.size()));
    const int n = uv_try_write(reinterpret_cast<uv_stream_t*>(tcp_), &buf, 1);
    if (n > 0) {
      if (static_cast<std::size_t>(n) == bytes.size()) return;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    } else if (n != UV_EAGAIN) {
      defer_failure("write error: " + uv_error(n));
      return;
    }
  }
  write(std::string(bytes));
}

void LocalConnection::flush_queue() {
  while (!queued_.empty()) {
    std::string b = std::move(queued_.front());
    queued_.pop_front();
    submit(std::move(b), 0);
  }
}

void LocalConnection::submit(std::string&& bytes, std::size_t offset) {
  auto* stream = reinterpret_cast<uv_stream_t*>(tcp_);
  uv_buf_t buf = uv_buf_init(bytes.data() + offset, static_cast<unsigned>(bytes.size() - offset));
  int n = uv_try_write(stream, &buf, 1);
  if (n > 0) offset += static_cast<std::size_t>(n);
  const std::size_t done = offset;
  if (offset == bytes.size()) {
    pending_bytes_ -= bytes.size();
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    pending_bytes_ -= bytes.size();
    defer_failure("write error: " + uv_error(n));
    return;
  }
  auto* w = new WriteReq;
  w->self = this;
  w->size = bytes.size();
  w->data = std::move(bytes);
  w->req.data = w;
  pending_bytes_ -= done;
  w->size -= done;
  buf = uv_buf_init(w->data.data() + done, static_cast<unsigned>(w->size));
  int rc = uv_write(&w->req, stream, &buf, 1, [](uv_write_t* req, int status) {
    auto* w = static_cast<WriteReq*>(req->data);
    LocalConnection* self = w->self;
    const std::size_t size = w->size;
    delete w;
    self->write_done(size, status);
  });
  if (rc != 0) {
    pending_bytes_ -= w->size;
    delete w;
    defer_failure("write error: " + uv_error(rc));
    return;
  }
  ++outstanding_;
}

void LocalConnection::write_done(std::size_t bytes, int status) {
  pending_bytes_ -= bytes;
  if (!closing_) {
    if (status < 0) {
      fail_local("write error: " + uv_error(status));
    } else if (pending_bytes_ <= low_watermark_ && events_) {
      events_->on_local_drained(*this);
    }
  } else if (flush_close_ && pending_bytes_ == 0) {
    flush_close_ = false;
    close_tcp(false);
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&timer_))) {
      uv_close(reinterpret_cast<uv_handle_t*>(&timer_),
               [](uv_handle_t* h) { static_cast<LocalConnection*>(h->data)->release(); });
    }
  }
  release();
}

void LocalConnection::close(bool flush) {
  if (closing_ || lingering_) return;
  if (flush && !connected_ && pending_bytes_ > 0 &&
      !uv_is_active(reinterpret_cast<uv_handle_t*>(&timer_))) {
    // A stream can end before its local connect completes (a client that
    // sends and closes at once): finish this connect attempt, deliver what the
    // tunnel carried, then close. No retries and no events from here on.
    lingering_ = true;
    events_ = nullptr;
    return;
  }
  closing_ = true;
  events_ = nullptr;
  queued_.clear();
  uv_timer_stop(&timer_);
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
    next_addr_ = nullptr;
  }
  if (flush && connected_ && tcp_ && pending_bytes_ > 0) {
    // Let the local peer read what the tunnel delivered, within bounds.
    flush_close_ = true;
    pause_reading();
    uv_timer_start(
        &timer_,
        [](uv_timer_t* t) {
          auto* self = static_cast<LocalConnection*>(t->data);
          self->flush_close_ = false;
          self->close_tcp(true);
          uv_close(reinterpret_cast<uv_handle_t*>(t),
                   [](uv_handle_t* h) { static_cast<LocalConnection*>(h->data)->release(); });
        },
        kFlushLingerMs, 0);
    return;
  }
  close_tcp(!flush && connected_);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_),
           [](uv_handle_t* h) { static_cast<LocalConnection*>(h->data)->release(); });
}

void LocalConnection::close_tcp(bool reset) {
  if (!tcp_) return;
  uv_tcp_t* t = tcp_;
  tcp_ = nullptr;
  reading_ = false;
  auto on_closed = [](uv_handle_t* h) {
    auto* self = static_cast<LocalConnection*>(h->data);
    delete reinterpret_cast<uv_tcp_t*>(h);
    self->release();
  };
  if (reset && uv_tcp_close_reset(t, on_closed) == 0) return;
  uv_close(reinterpret_cast<uv_handle_t*>(t), on_closed);
}

void LocalConnection::release() {
  if (--outstanding_ == 0 && closing_) delete this;
}

}  // namespace tunnel
