#include "service_link.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "logging.h"
#include "record_codec.h"
#include "socket_io.h"

namespace tunnel {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kCloseTimeoutMs = 2000;
// Reads per poll event before the link yields the loop to other sessions
// (it comes back from an idle callback).
constexpr int kReadRoundsPerEvent = 8;
// TCP_NOTSENT_LOWAT of the service socket (see connect).
constexpr std::size_t kNotSentLowat = std::size_t{128} * 1024;

std::uint64_t ms(int v) { return v > 0 ? static_cast<std::uint64_t>(v) : 1; }

void wipe(std::string& secret) {
  if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
  secret.clear();
}

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

}  // namespace

// ---------------------------------------------------------------- handles

struct ServiceLink::Handles {
  ServiceLink* owner = nullptr;
  uv_timer_t connect_timer{};  // connect deadline, then close deadline
  uv_timer_t ping_timer{};
  uv_timer_t end_timer{};  // delivers on_link_closed from the loop
  uv_check_t flush_check{};
  uv_idle_t more_idle{};   // more to read or deliver: come back next iteration
  uv_idle_t flush_idle{};  // keeps the loop from blocking before flush_check runs
  int open = 0;

  static Handles* of(const void* handle) {
    return static_cast<Handles*>(reinterpret_cast<const uv_handle_t*>(handle)->data);
  }
  static void closed(uv_handle_t* h) {
    auto* self = static_cast<Handles*>(h->data);
    if (--self->open == 0) delete self;
  }
};

struct ServiceLink::Resolve {
  uv_getaddrinfo_t req{};
  ServiceLink* link = nullptr;  // null: abandoned, just free
};

std::uint8_t* ServiceLink::TxBuffer::extend(std::size_t n) {
  if (size_ + n > cap_) {
    const std::size_t cap = std::max({size_ + n, cap_ * 2, std::size_t{16384}});
    std::unique_ptr<std::uint8_t[]> p(new std::uint8_t[cap]);
    if (size_) std::memcpy(p.get(), p_.get(), size_);
    p_ = std::move(p);
    cap_ = cap;
  }
  std::uint8_t* at = p_.get() + size_;
  size_ += n;
  return at;
}

void ServiceLink::TxBuffer::consume_front(std::size_t n) {
  if (n >= size_) {
    size_ = 0;
    return;
  }
  std::memmove(p_.get(), p_.get() + n, size_ - n);
  size_ -= n;
}

void ServiceLink::TxBuffer::clear(bool release_memory) {
  if (release_memory) {
    release();
  } else {
    size_ = 0;
  }
}

void ServiceLink::TxBuffer::shrink_by(std::size_t n) { size_ -= std::min(n, size_); }

void ServiceLink::TxBuffer::release() {
  p_.reset();
  size_ = 0;
  cap_ = 0;
}

ServiceLink::ServiceLink(WsContext& ctx, ServiceLinkEvents& events)
    : ctx_(ctx), events_(events), h_(new Handles) {
  h_->owner = this;
  uv_loop_t* loop = ctx_.loop();
  for (uv_timer_t* t : {&h_->connect_timer, &h_->ping_timer, &h_->end_timer}) {
    uv_timer_init(loop, t);
    t->data = h_;
    ++h_->open;
  }
  uv_check_init(loop, &h_->flush_check);
  h_->flush_check.data = h_;
  ++h_->open;
  for (uv_idle_t* i : {&h_->more_idle, &h_->flush_idle}) {
    uv_idle_init(loop, i);
    i->data = h_;
    ++h_->open;
  }
}

ServiceLink::~ServiceLink() { shutdown(); }

void ServiceLink::shutdown() {
  wipe(proxy_request_);
  close_socket();
  abandon_resolve();
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
  }
  if (!h_) return;
  h_->owner = nullptr;
  for (uv_handle_t* hd : {reinterpret_cast<uv_handle_t*>(&h_->connect_timer),
                          reinterpret_cast<uv_handle_t*>(&h_->ping_timer),
                          reinterpret_cast<uv_handle_t*>(&h_->end_timer),
                          reinterpret_cast<uv_handle_t*>(&h_->flush_check),
                          reinterpret_cast<uv_handle_t*>(&h_->more_idle),
                          reinterpret_cast<uv_handle_t*>(&h_->flush_idle)}) {
    uv_close(hd, &Handles::closed);
  }
  h_ = nullptr;
  state_ = State::idle;
}

std::string ServiceLink::peer_text() const {
  return opt_.https_proxy ? "the HTTPS proxy " + opt_.https_proxy->display()
                          : "the service at " + endpoint_text();
}

std::string ServiceLink::endpoint_text() const {
  const auto& e = opt_.endpoint;
  return (e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host) + ":" +
         std::to_string(e.port);
}

// ---------------------------------------------------------------- connect

void ServiceLink::connect(const LinkOptions& options) {
  if (!h_ || state_ != State::idle) return;
  opt_ = options;
  state_ = State::resolving;
  end_ = LinkEnd{};
  response_ = ws::HttpResponseHead();
  decoder_ = ws::FrameDecoder(ws::Role::client, kMaxFrameSize);
  outbox_.clear();
  wbuf_.release();
  woff_ = 0;
  was_above_low_ = false;
  rx_rest_.clear();
  rx_paused_ = false;
  close_sent_ = close_after_flush_ = peer_closed_ = false;
  awaiting_pong_ = false;
  read_wants_write_ = write_wants_read_ = false;
  connect_error_.clear();
  wipe(proxy_request_);
  proxy_sent_ = 0;
  proxy_reply_ = ConnectReplyParser();

  uv_timer_start(
      &h_->connect_timer,
      [](uv_timer_t* t) {
        auto* self = Handles::of(t)->owner;
        if (!self) return;
        if (self->state_ == State::closing) {
          self->fail("the service did not acknowledge the close");
        } else if (self->state_ == State::proxy_connect) {
          self->fail("timed out waiting for " + self->peer_text() + " to answer CONNECT");
        } else if (self->opt_.https_proxy &&
                   (self->state_ == State::resolving || self->state_ == State::connecting)) {
          self->fail("timed out connecting to " + self->peer_text());
        } else {
          self->fail("timed out connecting to the service");
        }
      },
      ms(opt_.connect_timeout_ms), 0);

  resolve_ = new Resolve;
  resolve_->link = this;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  // Through a proxy, the TCP connection goes to the proxy; the service's name
  // is only resolved by the proxy.
  const std::string& host = opt_.https_proxy ? opt_.https_proxy->host : opt_.endpoint.host;
  const std::string port =
      std::to_string(opt_.https_proxy ? opt_.https_proxy->port : opt_.endpoint.port);
  const int rc = uv_getaddrinfo(
      ctx_.loop(), &resolve_->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* r = reinterpret_cast<Resolve*>(req);
        ServiceLink* self = r->link;
        delete r;
        if (!self) {
          uv_freeaddrinfo(res);
          return;
        }
        self->resolve_ = nullptr;
        self->on_resolved(status, res);
      },
      host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    delete resolve_;
    resolve_ = nullptr;
    fail("cannot resolve " + (opt_.https_proxy ? "the HTTPS proxy host " : std::string()) + host +
         ": " + uv_strerror(rc));
  }
}

void ServiceLink::abandon_resolve() {
  if (!resolve_) return;
  resolve_->link = nullptr;
  uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));  // the callback frees it
  resolve_ = nullptr;
}

void ServiceLink::on_resolved(int status, addrinfo* res) {
  if (state_ != State::resolving) {
    uv_freeaddrinfo(res);
    return;
  }
  if (status != 0 || !res) {
    if (res) uv_freeaddrinfo(res);
    fail(opt_.https_proxy ? "cannot resolve the HTTPS proxy host " + opt_.https_proxy->host + ": " +
                                uv_strerror(status)
                          : "cannot resolve " + opt_.endpoint.host + ": " + uv_strerror(status));
    return;
  }
  addrs_ = res;
  next_addr_ = res;
  try_next_address();
}

void ServiceLink::try_next_address() {
  while (next_addr_) {
    addrinfo* a = next_addr_;
    next_addr_ = a->ai_next;
    const int fd = ::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      connect_error_ = std::strerror(errno);
      continue;
    }
    const int one = 1;
    // Records are small and latency matters; we batch writes ourselves.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef TCP_NOTSENT_LOWAT
    // Keep at most this much unsent in the kernel: a bulk transfer then
    // cannot park megabytes in the send buffer ahead of another
    // connection's record (the round robin happens in our queue, where a
    // small record can still go first). In-flight data is not limited, so
    // a long fat network keeps its throughput. Best effort.
    const int lowat = static_cast<int>(kNotSentLowat);
    ::setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
#endif
    if (::connect(fd, a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      connect_error_ = std::strerror(errno);
      ::close(fd);
      continue;
    }
    fd_ = fd;
    poll_ = new uv_poll_t;
    uv_poll_init_socket(ctx_.loop(), poll_, fd_);
    poll_->data = h_;
    poll_events_ = 0;
    state_ = State::connecting;
    update_poll();
    return;
  }
  fail("cannot connect to " + peer_text() + ": " +
       (connect_error_.empty() ? std::string("no address") : connect_error_));
}

void ServiceLink::close_socket() {
  if (poll_) {
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  poll_events_ = 0;
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  read_wants_write_ = write_wants_read_ = false;
}

void ServiceLink::update_poll() {
  if (!poll_) return;
  int ev = 0;
  switch (state_) {
    case State::connecting:
      ev = UV_WRITABLE;
      break;
    case State::proxy_connect:
      ev = proxy_sent_ < proxy_request_.size() ? UV_WRITABLE : UV_READABLE;
      break;
    case State::tls:
      ev = write_wants_read_ ? UV_READABLE : UV_WRITABLE;
      break;
    case State::upgrading:
    case State::open:
    case State::closing:
      if (!rx_paused_ || write_wants_read_) ev |= UV_READABLE;
      if (woff_ < wbuf_.size() || read_wants_write_) ev |= UV_WRITABLE;
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
    if (auto* self = Handles::of(p)->owner) self->on_poll(status, events);
  });
}

void ServiceLink::on_poll(int status, int events) {
  if (state_ == State::connecting) {
    // The socket's own error first: libuv reports POLLERR as UV_EBADF, which
    // would turn "Connection refused" into "Bad file descriptor".
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0 && status < 0) err = -status;
    if (err != 0) {
      connect_error_ = std::strerror(err);
      close_socket();
      try_next_address();
      return;
    }
    on_connected();
    return;
  }
  if (status < 0) {
    // POLLERR comes as UV_EBADF: the socket's own error says what happened
    // (a reset, a broken pipe).
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = 0;
    fail((state_ == State::proxy_connect ? "connection to " + peer_text() + " failed: "
                                         : std::string("connection to the service failed: ")) +
         (err != 0 ? std::string(std::strerror(err)) : std::string(uv_strerror(status))));
    return;
  }
  if (state_ == State::proxy_connect) {
    step_proxy_connect();
    return;
  }
  if (state_ == State::tls) {
    step_tls_handshake();
    return;
  }
  if ((events & UV_WRITABLE) || ((events & UV_READABLE) && write_wants_read_)) {
    do_write();
    if (state_ == State::idle || state_ == State::ended) return;
  }
  if ((events & UV_READABLE) || ((events & UV_WRITABLE) && read_wants_write_)) do_read();
  if (state_ != State::idle && state_ != State::ended) update_poll();
}

void ServiceLink::on_connected() {
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
    next_addr_ = nullptr;
  }
  if (opt_.https_proxy) {
    start_proxy_connect();
    return;
  }
  start_transport();
}

// ---------------------------------------------------------------- HTTPS proxy

void ServiceLink::start_proxy_connect() {
  state_ = State::proxy_connect;
  proxy_request_ = connect_request(*opt_.https_proxy, opt_.endpoint.host, opt_.endpoint.port);
  proxy_sent_ = 0;
  proxy_reply_ = ConnectReplyParser();
  step_proxy_connect();
}

void ServiceLink::step_proxy_connect() {
  while (proxy_sent_ < proxy_request_.size()) {
    const ssize_t put = ::send(fd_, proxy_request_.data() + proxy_sent_,
                               proxy_request_.size() - proxy_sent_, MSG_NOSIGNAL);
    if (put < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        update_poll();
        return;
      }
      fail("connection to " + peer_text() + " failed: " + std::strerror(errno));
      return;
    }
    proxy_sent_ += static_cast<std::size_t>(put);
  }
  // Sent: the request may carry credentials, keep no copy.
  wipe(proxy_request_);
  proxy_sent_ = 0;
  on_proxy_reply();
}

void ServiceLink::on_proxy_reply() {
  // Peek, then take exactly the reply's bytes off the socket: whatever
  // follows the blank line belongs to the TLS stream, which OpenSSL reads
  // from the same socket.
  char buf[ConnectReplyParser::kMaxReplySize + 1];
  for (;;) {
    const ssize_t got = ::recv(fd_, buf, sizeof buf, MSG_PEEK);
    if (got < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        update_poll();
        return;
      }
      fail("connection to " + peer_text() + " failed: " + std::strerror(errno));
      return;
    }
    if (got == 0) {
      fail(peer_text() + " closed the connection without answering CONNECT");
      return;
    }
    std::size_t used = 0;
    const auto r = proxy_reply_.feed(std::string_view(buf, static_cast<std::size_t>(got)), used);
    for (std::size_t dropped = 0; dropped < used;) {
      const ssize_t n = ::recv(fd_, buf, used - dropped, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        fail("connection to " + peer_text() + " failed while reading its answer");
        return;
      }
      dropped += static_cast<std::size_t>(n);
    }
    if (r == ConnectReplyParser::Result::malformed) {
      fail("bad answer from " + peer_text() + " to CONNECT: " + proxy_reply_.error());
      return;
    }
    if (r == ConnectReplyParser::Result::done) break;
  }
  const int status = proxy_reply_.status();
  const std::string answer = "HTTP " + std::to_string(status) +
                             (proxy_reply_.reason().empty() ? "" : " " + proxy_reply_.reason());
  if (proxy_reply_.success()) {
    logging::get("ws")->debug("{}: CONNECT {} answered {}", peer_text(), endpoint_text(), answer);
    start_transport();
    return;
  }
  end_.proxy_status = status;
  if (status == 407) {
    // Final: retrying with the same credentials cannot help.
    fail(opt_.https_proxy->has_credentials()
             ? peer_text() + " refused the credentials (" + answer +
                   "); check the user and password in the proxy URL (HTTPS_PROXY, "
                   "--https-proxy or the https_proxy setting)"
             : peer_text() + " requires credentials (" + answer +
                   "); give them in the proxy URL: http://USER:PASSWORD@" +
                   opt_.https_proxy->display());
    return;
  }
  fail(peer_text() + " answered CONNECT " + endpoint_text() + " with " + answer);
}

// ---------------------------------------------------------------- TLS

void ServiceLink::start_transport() {
  if (!opt_.endpoint.tls) {
    start_upgrade();
    return;
  }
  SSL_CTX* tls = nullptr;
  try {
    tls = ctx_.client_tls(opt_.trust);
  } catch (const std::exception& e) {
    fail(e.what());
    return;
  }
  ssl_ = SSL_new(tls);
  if (!ssl_ || SSL_set_fd(ssl_, fd_) != 1) {
    fail("cannot start TLS: " + tls_error_text());
    return;
  }
  const std::string& host = opt_.endpoint.host;
  if (!opt_.verify_tls) {
    SSL_set_verify(ssl_, SSL_VERIFY_NONE, nullptr);
  } else if (is_ip_literal(host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), host.c_str());
  } else {
    SSL_set1_host(ssl_, host.c_str());
  }
  if (!is_ip_literal(host)) SSL_set_tlsext_host_name(ssl_, host.c_str());
  SSL_set_connect_state(ssl_);
  state_ = State::tls;
  step_tls_handshake();
}

void ServiceLink::step_tls_handshake() {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    write_wants_read_ = false;
    start_upgrade();
    return;
  }
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    write_wants_read_ = err == SSL_ERROR_WANT_READ;  // the poll direction while in tls
    update_poll();
    return;
  }
  const long verify = SSL_get_verify_result(ssl_);
  std::string reason;
  if (opt_.verify_tls && verify != X509_V_OK) {
    reason = std::string("TLS certificate verification failed: ") +
             X509_verify_cert_error_string(verify) +
             " (trust the service's CA with -c DIR or --cafile FILE)";
    ERR_clear_error();
  } else {
    const std::string detail = tls_error_text();
    reason = "TLS handshake with " + endpoint_text() +
             " failed: " + (detail.empty() ? std::string("the connection was closed") : detail);
  }
  fail(reason);
}

void ServiceLink::start_upgrade() {
  state_ = State::upgrading;
  write_wants_read_ = false;
  const auto& e = opt_.endpoint;
  const bool default_port = e.port == (e.tls ? 443 : 80);
  upgrade_ = ws::UpgradeRequest{};
  upgrade_.host = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
  if (!default_port) upgrade_.host += ":" + std::to_string(e.port);
  upgrade_.path = opt_.path;
  upgrade_.subprotocols = opt_.subprotocols;
  upgrade_.key = ws::make_websocket_key();
  upgrade_.headers.emplace_back("access-token", opt_.access_token);
  if (!opt_.client_token.empty()) upgrade_.headers.emplace_back("client-token", opt_.client_token);
  upgrade_.headers.emplace_back("User-Agent", "tunneld/" TUNNELD_VERSION);
  const std::string req = ws::build_upgrade_request(upgrade_);
  std::memcpy(wbuf_.extend(req.size()), req.data(), req.size());
  // The request carries the tokens: keep no copy beyond the write buffer.
  upgrade_.headers.clear();
  do_write();
  if (state_ == State::upgrading) update_poll();
}

void ServiceLink::on_upgrade_bytes(std::span<std::uint8_t> bytes) {
  std::size_t used = 0;
  const auto r = response_.feed(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), used);
  if (r == ws::HttpResponseHead::Result::need_more) return;
  if (r == ws::HttpResponseHead::Result::malformed) {
    fail("bad WebSocket upgrade response from the service: " + response_.error(), 0, true);
    return;
  }
  const ws::UpgradeResult up = ws::check_upgrade_response(response_, upgrade_);
  if (!up.ok) {
    fail(up.error, up.http_status, up.http_status == 0);
    return;
  }
  state_ = State::open;
  end_.was_open = true;
  uv_timer_stop(&h_->connect_timer);
  const auto period = ms(opt_.ping_period_ms);
  uv_timer_start(
      &h_->ping_timer,
      [](uv_timer_t* t) {
        if (auto* self = Handles::of(t)->owner) self->on_ping_tick();
      },
      period, period);
  events_.on_link_open(up.subprotocol, up.channel_id);
  if (state_ != State::open) return;
  if (used < bytes.size()) deliver(bytes.subspan(used));
}

// ---------------------------------------------------------------- I/O

long ServiceLink::io_read(std::uint8_t* buf, std::size_t n, std::string& reason) {
  IoEnd end;
  const long got = socket_read(fd_, ssl_, buf, n, read_wants_write_, end);
  if (got < 0) reason = end.describe("the service");
  return got;
}

long ServiceLink::io_write(const std::uint8_t* buf, std::size_t n, std::string& reason) {
  IoEnd end;
  const long put = socket_write(fd_, ssl_, buf, n, write_wants_read_, end);
  if (put < 0) reason = end.describe("the service");
  return put;
}

void ServiceLink::do_read() {
  if (rx_paused_) return;
  if (!rx_rest_.empty()) {
    std::string rest = std::move(rx_rest_);
    rx_rest_.clear();
    auto* p = reinterpret_cast<std::uint8_t*>(rest.data());
    if (!deliver(std::span<std::uint8_t>(p, rest.size()))) return;
  }
  const std::span<std::uint8_t> buf = ctx_.read_buffer();
  for (int round = 0; round < kReadRoundsPerEvent; ++round) {
    std::size_t filled = 0;
    std::string reason;
    long n = 0;
    // TLS hands out one record per call: gather a whole buffer first.
    while (filled < buf.size()) {
      n = io_read(buf.data() + filled, buf.size() - filled, reason);
      if (n <= 0) break;
      filled += static_cast<std::size_t>(n);
    }
    if (filled > 0) {
      if (state_ == State::upgrading) {
        on_upgrade_bytes(buf.first(filled));
      } else if (!deliver(buf.first(filled))) {
        return;
      }
      if (state_ != State::upgrading && state_ != State::open && state_ != State::closing) return;
      if (rx_paused_) return;
    }
    if (n < 0) {
      if (state_ == State::upgrading) {
        fail(reason + " during the WebSocket upgrade");
      } else {
        fail(reason);
      }
      return;
    }
    if (n == 0) return;  // would block
  }
  // Yielded with data possibly left (in the socket or inside OpenSSL).
  schedule_read();
}

bool ServiceLink::deliver(std::span<std::uint8_t> bytes) {
  std::size_t pos = 0;
  for (;;) {
    if (rx_paused_) {
      rx_rest_.append(reinterpret_cast<const char*>(bytes.data()) + pos, bytes.size() - pos);
      return false;
    }
    const ws::FrameEvent ev = decoder_.next(bytes.subspan(pos));
    pos += ev.consumed;
    switch (ev.kind) {
      case ws::FrameEvent::Kind::need_more:
        return true;
      case ws::FrameEvent::Kind::data:
        if (!ev.payload.empty()) {
          events_.on_link_data(ev.payload);
          if (state_ != State::open && state_ != State::closing) return false;
        }
        break;
      case ws::FrameEvent::Kind::ping:
        queue_control(ws::Opcode::pong, ev.payload);
        break;
      case ws::FrameEvent::Kind::pong:
        if (awaiting_pong_) {
          awaiting_pong_ = false;
          events_.on_link_rtt(
              std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - ping_sent_)
                  .count());
          if (state_ != State::open && state_ != State::closing) return false;
        }
        break;
      case ws::FrameEvent::Kind::close: {
        peer_closed_ = true;
        end_.peer_close_code = ev.close_code;
        if (!close_sent_) {
          // Echo the code (RFC 6455 section 5.5.1); what is still queued is
          // dropped: the service will not read it.
          outbox_.clear();
          close_after_flush_ = false;
          std::uint8_t code[2] = {static_cast<std::uint8_t>(ev.close_code >> 8),
                                  static_cast<std::uint8_t>(ev.close_code)};
          queue_control(ws::Opcode::close, ev.close_code == 1005
                                               ? std::span<const std::uint8_t>()
                                               : std::span<const std::uint8_t>(code, 2));
          close_sent_ = true;
          state_ = State::closing;
          uv_timer_start(
              &h_->connect_timer,
              [](uv_timer_t* t) {
                if (auto* self = Handles::of(t)->owner) self->end_connection();
              },
              kCloseTimeoutMs, 0);
        } else if (woff_ == wbuf_.size()) {
          end_connection();
        }
        return false;
      }
      case ws::FrameEvent::Kind::error:
        fail("WebSocket protocol error from the service: " + std::string(to_string(ev.error)), 0,
             true);
        return false;
    }
  }
}

void ServiceLink::queue_control(ws::Opcode op, std::span<const std::uint8_t> payload) {
  if (close_sent_) return;  // nothing may follow a close frame
  const auto mask = mask_keys_.next();
  const std::size_t hdr = ws::frame_header_size(payload.size(), true);
  std::uint8_t* p = wbuf_.extend(hdr + payload.size());
  ws::write_frame_header(p, op, payload.size(), &mask);
  ws::copy_masked(p + hdr, payload.data(), payload.size(), mask);
  schedule_flush();
}

void ServiceLink::frame_outbox() {
  const std::size_t max_frame = std::clamp<std::size_t>(opt_.max_frame_size, 1024, kMaxFrameSize);
  const auto* src = reinterpret_cast<const std::uint8_t*>(outbox_.data());
  const std::size_t frames = (outbox_.size() + max_frame - 1) / max_frame;
  // One allocation for the whole batch; headers and masked payload are
  // written over it in one pass.
  std::uint8_t* p = wbuf_.extend(outbox_.size() + frames * ws::kMaxHeaderSize);
  std::uint8_t* const start = p;
  std::size_t off = 0;
  while (off < outbox_.size()) {
    const std::size_t n = std::min(max_frame, outbox_.size() - off);
    const auto mask = mask_keys_.next();
    p += ws::write_frame_header(p, ws::Opcode::binary, n, &mask);
    ws::copy_masked(p, src + off, n, mask);
    p += n;
    off += n;
  }
  wbuf_.shrink_by(outbox_.size() + frames * ws::kMaxHeaderSize -
                  static_cast<std::size_t>(p - start));
  outbox_.clear();
  if (outbox_.capacity() > 4 * kMaxFrameSize) std::string().swap(outbox_);
}

void ServiceLink::send_record(std::string_view head, std::string_view payload,
                              std::string_view tail) {
  const std::size_t n = head.size() + payload.size() + tail.size();
  const std::size_t max_frame = std::clamp<std::size_t>(opt_.max_frame_size, 1024, kMaxFrameSize);
  if (state_ != State::open || close_sent_ || n > max_frame) {
    // Not open yet (the write buffer may hold the handshake), closing, or a
    // frame limit below the record: the byte-stream path frames it later.
    outbox_.reserve(outbox_.size() + n);
    outbox_.append(head);
    outbox_.append(payload);
    outbox_.append(tail);
    return;
  }
  if (!outbox_.empty()) frame_outbox();  // what came first leaves first
  const auto mask = mask_keys_.next();
  const std::size_t hdr = ws::frame_header_size(n, true);
  std::uint8_t* p = wbuf_.extend(hdr + n);
  p += ws::write_frame_header(p, ws::Opcode::binary, n, &mask);
  std::uint64_t phase = 0;
  for (const std::string_view part : {head, payload, tail}) {
    ws::copy_masked(p, reinterpret_cast<const std::uint8_t*>(part.data()), part.size(), mask,
                    phase);
    p += part.size();
    phase += part.size();
  }
}

void ServiceLink::schedule_flush() {
  // The check phase follows the poll phase of this iteration: whatever the
  // I/O callbacks append meanwhile leaves in the same batch. The idle handle
  // makes that poll return at once when the flush was asked for outside the
  // I/O phase (a timer, an idle callback), instead of waiting for the next
  // event.
  uv_check_start(&h_->flush_check, [](uv_check_t* c) {
    if (auto* self = Handles::of(c)->owner) self->on_flush_check();
  });
  uv_idle_start(&h_->flush_idle, [](uv_idle_t*) {});
}

void ServiceLink::flush() {
  if (!h_ || (state_ != State::open)) return;
  if (queued() > opt_.write_low_watermark) was_above_low_ = true;
  schedule_flush();
}

void ServiceLink::on_flush_check() {
  uv_check_stop(&h_->flush_check);
  uv_idle_stop(&h_->flush_idle);
  if (state_ != State::open && state_ != State::closing) return;
  if (!outbox_.empty() && !close_sent_) frame_outbox();
  if (close_after_flush_ && !close_sent_) {
    std::string payload;
    payload.push_back(static_cast<char>(close_code_ >> 8));
    payload.push_back(static_cast<char>(close_code_ & 0xFF));
    payload += close_reason_.substr(0, ws::kMaxControlPayload - 2);
    queue_control(ws::Opcode::close,
                  std::span(reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()));
    uv_check_stop(&h_->flush_check);
    uv_idle_stop(&h_->flush_idle);
    close_sent_ = true;
    state_ = State::closing;
    uv_timer_start(
        &h_->connect_timer,
        [](uv_timer_t* t) {
          if (auto* self = Handles::of(t)->owner) {
            self->fail("the service did not acknowledge the close");
          }
        },
        kCloseTimeoutMs, 0);
  }
  do_write();
  if (state_ == State::open || state_ == State::closing) update_poll();
}

void ServiceLink::do_write() {
  if (fd_ < 0) return;
  while (woff_ < wbuf_.size()) {
    std::string reason;
    const long n = io_write(wbuf_.data() + woff_, wbuf_.size() - woff_, reason);
    if (n == 0) break;
    if (n < 0) {
      fail(reason);
      return;
    }
    woff_ += static_cast<std::size_t>(n);
  }
  if (woff_ == wbuf_.size()) {
    // Keep the allocation while traffic flows; an idle link gives it back
    // at its next ping tick (and a large one at once).
    wbuf_.clear(wbuf_.capacity() > std::size_t{1024} * 1024);
    woff_ = 0;
    if (close_sent_ && peer_closed_ && state_ == State::closing) {
      end_connection();
      return;
    }
  } else if (woff_ >= std::size_t{256} * 1024 && woff_ * 2 >= wbuf_.size()) {
    wbuf_.consume_front(woff_);
    woff_ = 0;
  }
  if (was_above_low_ && queued() <= opt_.write_low_watermark && state_ == State::open) {
    was_above_low_ = false;
    events_.on_link_drained();
  }
}

// ---------------------------------------------------------------- control

// Reads (and delivers what was held back) on the next loop iteration, from
// an idle callback: never inside a call the owner made.
void ServiceLink::schedule_read() {
  uv_idle_start(&h_->more_idle, [](uv_idle_t* i) {
    uv_idle_stop(i);
    if (auto* self = Handles::of(i)->owner) {
      if (self->state_ == State::open || self->state_ == State::closing) {
        self->do_read();
        if (self->poll_) self->update_poll();
      }
    }
  });
}

void ServiceLink::pause_receive(bool paused) {
  if (rx_paused_ == paused) return;
  rx_paused_ = paused;
  if (paused) {
    // We stop reading: a pong cannot arrive, so silence proves nothing.
    awaiting_pong_ = false;
  }
  if (!h_ || (state_ != State::open && state_ != State::closing)) return;
  if (!paused) {
    // Deliver what was held back and whatever OpenSSL buffered, from the loop.
    schedule_read();
  }
  update_poll();
}

void ServiceLink::on_ping_tick() {
  if (state_ != State::open) return;
  if (wbuf_.size() == 0 && woff_ == 0) wbuf_.release();  // idle: hold no write buffer
  if (rx_paused_) {
    awaiting_pong_ = false;
    return;
  }
  if (awaiting_pong_) {
    const auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - ping_sent_).count();
    if (waited >= opt_.pong_timeout_ms) {
      logging::get("ws")->warn("no pong from the service for {} ms: the link is dead", waited);
      fail("no pong within " + std::to_string(opt_.pong_timeout_ms) + " ms");
    }
    return;
  }
  std::uint8_t payload[8] = {};
  const auto now = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  std::memcpy(payload, &now, sizeof payload);
  awaiting_pong_ = true;
  ping_sent_ = Clock::now();
  queue_control(ws::Opcode::ping, payload);
}

void ServiceLink::close(int code, std::string_view reason) {
  if (state_ != State::open) {
    if (active() && state_ != State::ended) abort("stopping");
    return;
  }
  close_after_flush_ = true;
  close_code_ = code;
  close_reason_ = std::string(reason);
  schedule_flush();
}

void ServiceLink::abort(std::string reason) { fail(std::move(reason)); }

void ServiceLink::fail(std::string reason, int http_status, bool protocol_error) {
  if (state_ == State::idle || state_ == State::ended || !h_) return;
  if (protocol_error && state_ == State::open && woff_ == wbuf_.size() && fd_ >= 0) {
    // Best effort: tell the service why (1002), without waiting.
    const auto mask = mask_keys_.next();
    std::uint8_t frame[8];
    const std::uint8_t code[2] = {0x03, 0xEA};
    const std::size_t hdr = ws::write_frame_header(frame, ws::Opcode::close, 2, &mask);
    ws::copy_masked(frame + hdr, code, 2, mask);
    std::string ignored;
    io_write(frame, hdr + 2, ignored);
  }
  end_.reason = std::move(reason);
  end_.http_status = http_status;
  end_.protocol_error = protocol_error;
  end_connection();
}

void ServiceLink::end_connection() {
  if (state_ == State::idle || state_ == State::ended || !h_) return;
  wipe(proxy_request_);
  if (end_.reason.empty()) {
    end_.reason = end_.peer_close_code ? "closed by the service (close code " +
                                             std::to_string(end_.peer_close_code) + ")"
                                       : std::string("closed");
  }
  if (ssl_ && close_sent_ && peer_closed_) {
    ERR_clear_error();
    SSL_shutdown(ssl_);  // close_notify, best effort
    ERR_clear_error();
  }
  close_socket();
  abandon_resolve();
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
    next_addr_ = nullptr;
  }
  uv_timer_stop(&h_->connect_timer);
  uv_timer_stop(&h_->ping_timer);
  uv_check_stop(&h_->flush_check);
  uv_idle_stop(&h_->flush_idle);
  uv_idle_stop(&h_->more_idle);
  outbox_.clear();
  wbuf_.release();
  woff_ = 0;
  rx_rest_.clear();
  state_ = State::ended;
  uv_timer_start(
      &h_->end_timer,
      [](uv_timer_t* t) {
        if (auto* self = Handles::of(t)->owner) self->deliver_end();
      },
      0, 0);
}

void ServiceLink::deliver_end() {
  if (state_ != State::ended) return;
  state_ = State::idle;
  const LinkEnd end = end_;
  events_.on_link_closed(end);  // may connect() again or destroy nothing: we are idle
}

}  // namespace tunnel
