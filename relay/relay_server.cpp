#include "relay_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "handshake.h"
#include "socket_io.h"
#include "text.h"

namespace relay {
namespace {

// A reference, not a copy: no shared_ptr temporary per log call (clang's
// use-after-scope check reported those temporaries inside switch statements).
const std::shared_ptr<spdlog::logger>& log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::get("relay");
    return l ? l : spdlog::default_logger();
  }();
  return logger;
}

// Plaintext gathered per read pass (OpenSSL reads ahead 64 KiB per read(2)
// and hands out one TLS record per SSL_read); one buffer for all connections.
constexpr std::size_t kReadBufferSize = std::size_t{256} * 1024;
// Read passes per poll event before a connection yields the loop to others.
constexpr int kReadRoundsPerEvent = 4;
// Connections accepted per poll event of the listening socket.
constexpr int kAcceptsPerEvent = 64;
// Chunks kept for reuse across all queues (8 MiB at most).
constexpr std::size_t kPoolChunks = 64;
constexpr std::uint64_t kShutdownGraceMs = 3000;
// TLS handshake and HTTP upgrade request, from accept (libwebsockets'
// timeout_secs before).
constexpr std::uint64_t kHandshakeTimeoutMs = 10000;
// Waiting for the client's answer to our close frame.
constexpr std::uint64_t kCloseTimeoutMs = 2000;
// After an HTTP rejection: how long the rest of the request is drained.
constexpr std::uint64_t kLingerMs = 2000;
// A request head larger than this is answered 431 before it ends (those
// between config.max_request_bytes and this get 431 from evaluate_handshake,
// after the path check).
constexpr std::size_t kMaxHeadBytes = 8192;
// As the proxies do (service_link.cpp): little unsent data in the kernel, so
// one end's bulk records cannot delay the other records for long.
constexpr int kNotSentLowat = 128 * 1024;

void random_bytes(unsigned char* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1) throw std::runtime_error("RAND_bytes failed");
}

// 32 random bytes, base64url without padding (43 characters).
std::string random_token() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char raw[33];
  random_bytes(raw, 32);
  raw[32] = 0;
  std::string out;
  for (int i = 0; i < 33; i += 3) {
    const unsigned v = (unsigned{raw[i]} << 16) | (unsigned{raw[i + 1]} << 8) | raw[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  out.resize(43);
  return out;
}

std::string random_hex(std::size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw(bytes, '\0');
  random_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes);
  std::string out;
  out.reserve(bytes * 2);
  for (const char c : raw) {
    out += kHex[(static_cast<unsigned char>(c) >> 4) & 15];
    out += kHex[static_cast<unsigned char>(c) & 15];
  }
  return out;
}

std::string peer_text(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "?";
  unsigned port = 0;
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "?";
}

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  // HTTP/1.1 only (the upgrade does not exist in h2 as clients use it).
  static const unsigned char kProtos[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, kProtos, sizeof kProtos, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

// The server TLS context: TLS 1.2 at least, the --tls-cert chain and
// --tls-key, ALPN http/1.1. Null with `error` naming the problem.
SSL_CTX* make_server_tls(const std::string& cert, const std::string& key, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  const char* what = nullptr;
  if (!ctx)
    what = "cannot create a TLS context";
  else if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    what = "cannot require TLS 1.2";
  else if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1)
    what = "cannot load the certificate chain from --tls-cert";
  else if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
    what = "cannot load the private key from --tls-key";
  else if (SSL_CTX_check_private_key(ctx) != 1)
    what = "--tls-key does not match the certificate in --tls-cert";
  if (what != nullptr) {
    char detail[256] = "";
    ERR_error_string_n(ERR_get_error(), detail, sizeof(detail));
    ERR_clear_error();
    error = std::string(what) + " (" + detail + ")";
    SSL_CTX_free(ctx);
    return nullptr;
  }
  // Partial writes: SSL_write returns after whole records, so a large frame
  // leaves as the socket takes it; the retry may come from a moved buffer
  // (the rest of an in-flight frame copied out when its end goes away).
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, std::size_t{64} * 1024);
  SSL_CTX_set_alpn_select_cb(ctx, &alpn_select, nullptr);
  return ctx;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 410:
      return "Gone";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

}  // namespace

// ---------------------------------------------------------------- connection

struct RelayServer::Connection {
  enum class State {
    tls,        // TLS handshake
    http,       // reading the upgrade request
    rejecting,  // writing an HTTP error response
    lingering,  // response written, draining the rest of the request
    open,       // WebSocket
    closing,    // our close frame queued or sent, waiting for the client's
    dead,       // socket closed; freed from the handles' close callbacks
  };

  RelayServer* server = nullptr;
  std::uint64_t id = 0;
  int fd = -1;
  SSL* ssl = nullptr;
  uv_poll_t poll{};
  uv_timer_t timer{};  // handshake deadline, then close or linger deadline
  int open_handles = 0;
  State state = State::tls;
  std::string peer;
  int poll_events = 0;
  bool read_wants_write = false;  // TLS: a read waits for writability
  bool write_wants_read = false;  // TLS: a write (or the handshake) waits for readability
  bool write_blocked = false;     // the socket took less than offered
  bool in_flush_list = false;
  bool in_read_list = false;

  std::unique_ptr<tunnel::ws::HttpRequestHead> head;  // during State::http

  // WebSocket
  std::string channel_id;
  std::string tunnel_id;
  Role role = Role::source;
  int version = 1;
  Link* link = nullptr;  // null once detached (replaced, tunnel closed, closing)
  RecordSplitter splitter;
  tunnel::ws::FrameDecoder decoder{tunnel::ws::Role::server, kMaxMessage};
  bool rx_paused = false;
  std::string rx_rest;  // read but not decoded (paused meanwhile), at most one read

  // The frame being written straight from the front chunk of this end's
  // queue: header in the chunk's headroom, then the payload.
  const std::uint8_t* frame = nullptr;
  std::size_t frame_len = 0;  // header + payload
  std::size_t frame_payload = 0;
  std::size_t frame_off = 0;
  // Small writes (HTTP response, control frames, the rest of a frame whose
  // queue went away), written between frames.
  std::string out;
  std::size_t out_off = 0;

  bool close_sent = false;
  bool peer_closed = false;
  // Failed (RFC 6455 section 7.1.7): once our close frame is out, half-close
  // and drain instead of waiting for the client's answer.
  bool failed = false;

  bool writes_pending() const { return frame != nullptr || out_off < out.size(); }
};

RelayServer::RelayServer(uv_loop_t* loop, RelayConfig config)
    : loop_(loop),
      config_(std::move(config)),
      registry_(&random_token, config_.registry_limits),
      pool_(tunnel::ws::kMaxHeaderSize, kMaxMessage, kPoolChunks) {}

RelayServer::~RelayServer() {
  for (auto& [id, link] : links_) {
    if (link->expiry != nullptr)
      uv_close(reinterpret_cast<uv_handle_t*>(link->expiry),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (tls_ != nullptr) SSL_CTX_free(tls_);
}

struct RelayServer::Handles {
  RelayServer* owner = nullptr;
  uv_poll_t listen{};
  bool listening = false;
  uv_check_t flush_check{};
  uv_idle_t flush_idle{};  // keeps the poll phase from blocking before flush_check runs
  uv_idle_t read_idle{};   // connections that yielded with data left
  int open = 0;

  static Handles* of(const void* handle) {
    return static_cast<Handles*>(reinterpret_cast<const uv_handle_t*>(handle)->data);
  }
  static void closed(uv_handle_t* h) {
    auto* self = static_cast<Handles*>(h->data);
    if (--self->open == 0) delete self;
  }
};

bool RelayServer::start(std::string& error) {
  for (const TunnelSpec& spec : config_.tunnels) {
    const Tunnel* t =
        registry_.add(spec.source_token, spec.destination_token, spec.services, error);
    if (t == nullptr) {
      error.insert(0, "--tunnel: ");
      return false;
    }
    create_link(t->id, std::chrono::seconds(0));
    log()->info("tunnel {} configured (services: {})", t->id,
                t->services.empty() ? std::string("none, V1")
                                    : fmt::format("{}", fmt::join(t->services, ",")));
  }
  if (config_.tls()) {
    tls_ = make_server_tls(config_.tls_cert, config_.tls_key, error);
    if (tls_ == nullptr) return false;
  }

  sockaddr_storage ss{};
  socklen_t ss_len = 0;
  const std::string& host = config_.listen.host;
  if (host.find(':') != std::string::npos) {
    if (uv_ip6_addr(host.c_str(), config_.listen.port, reinterpret_cast<sockaddr_in6*>(&ss)) != 0) {
      error = "bad listen address " + config_.listen.to_string();
      return false;
    }
    ss_len = sizeof(sockaddr_in6);
  } else {
    if (uv_ip4_addr(host == "localhost" ? "127.0.0.1" : host.c_str(), config_.listen.port,
                    reinterpret_cast<sockaddr_in*>(&ss)) != 0) {
      error = "bad listen address " + config_.listen.to_string();
      return false;
    }
    ss_len = sizeof(sockaddr_in);
  }
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("cannot create a socket: ") + std::strerror(errno);
    return false;
  }
  listen_fd_ = fd;
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), ss_len) != 0 ||
      ::listen(fd, SOMAXCONN) != 0) {
    error = "cannot listen on " + config_.listen.to_string() + ": " + std::strerror(errno);
    return false;
  }
  sockaddr_storage got{};
  socklen_t got_len = sizeof got;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&got), &got_len);
  bound_ = config_.listen;
  bound_.port = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                                : reinterpret_cast<sockaddr_in*>(&got)->sin_port);

  read_buf_.reset(new std::uint8_t[kReadBufferSize]);
  h_ = new Handles;
  h_->owner = this;
  uv_poll_init_socket(loop_, &h_->listen, fd);
  h_->listen.data = h_;
  h_->listening = true;
  uv_check_init(loop_, &h_->flush_check);
  h_->flush_check.data = h_;
  uv_idle_init(loop_, &h_->flush_idle);
  h_->flush_idle.data = h_;
  uv_idle_init(loop_, &h_->read_idle);
  h_->read_idle.data = h_;
  h_->open = 4;
  uv_poll_start(&h_->listen, UV_READABLE, [](uv_poll_t* p, int status, int) {
    if (auto* self = Handles::of(p)->owner; self != nullptr && status == 0) self->on_accept();
  });
  log()->info("listening on {} ({}), subprotocols {}", bound_.to_string(),
              config_.tls() ? "wss" : "plain ws", fmt::join(config_.subprotocols, ","));
  return true;
}

void RelayServer::on_accept() {
  for (int i = 0; i < kAcceptsPerEvent && !shutting_down_; ++i) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int fd =
        ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        log()->warn("accept failed: {}", std::strerror(errno));
      return;
    }
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef TCP_NOTSENT_LOWAT
    ::setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &kNotSentLowat, sizeof kNotSentLowat);
#endif
    auto* c = new Connection;
    c->server = this;
    c->id = next_id_++;
    c->fd = fd;
    c->peer = peer_text(ss);
    uv_poll_init_socket(loop_, &c->poll, fd);
    c->poll.data = c;
    uv_timer_init(loop_, &c->timer);
    c->timer.data = c;
    c->open_handles = 2;
    connections_[c->id] = c;
    uv_timer_start(
        &c->timer,
        [](uv_timer_t* t) {
          auto* conn = static_cast<Connection*>(t->data);
          log()->debug("connection from {}: no WebSocket upgrade within {} s, closing", conn->peer,
                       kHandshakeTimeoutMs / 1000);
          conn->server->destroy(*conn);
        },
        kHandshakeTimeoutMs, 0);
    if (tls_ != nullptr) {
      c->ssl = SSL_new(tls_);
      if (c->ssl == nullptr || SSL_set_fd(c->ssl, fd) != 1) {
        log()->warn("cannot start TLS: {}", tunnel::tls_error_text());
        destroy(*c);
        continue;
      }
      SSL_set_accept_state(c->ssl);
      c->state = Connection::State::tls;
      step_tls(*c);
    } else {
      c->state = Connection::State::http;
      c->head = std::make_unique<tunnel::ws::HttpRequestHead>(kMaxHeadBytes);
      update_poll(*c);
    }
  }
}

void RelayServer::step_tls(Connection& c) {
  ERR_clear_error();
  const int rc = SSL_do_handshake(c.ssl);
  if (rc == 1) {
    c.state = Connection::State::http;
    c.write_wants_read = false;
    c.head = std::make_unique<tunnel::ws::HttpRequestHead>(kMaxHeadBytes);
    do_read(c);  // the request may have come with the last handshake flight
    update_poll(c);
    return;
  }
  const int err = SSL_get_error(c.ssl, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    c.write_wants_read = err == SSL_ERROR_WANT_READ;  // the poll direction while in tls
    update_poll(c);
    return;
  }
  const std::string detail = tunnel::tls_error_text();
  log()->debug("TLS handshake from {} failed: {}", c.peer,
               detail.empty() ? std::string("the connection was closed") : detail);
  destroy(c);
}

void RelayServer::update_poll(Connection& c) {
  if (c.state == Connection::State::dead) return;
  int ev = 0;
  switch (c.state) {
    case Connection::State::tls:
      ev = c.write_wants_read ? UV_READABLE : UV_WRITABLE;
      break;
    case Connection::State::lingering:
      ev = UV_READABLE;
      break;
    case Connection::State::rejecting:
      if (c.write_wants_read) ev |= UV_READABLE;
      if (c.write_blocked) ev |= UV_WRITABLE;
      break;
    default:
      if (!c.rx_paused || c.write_wants_read) ev |= UV_READABLE;
      if (c.write_blocked || c.read_wants_write) ev |= UV_WRITABLE;
      break;
  }
  if (ev == c.poll_events) return;
  c.poll_events = ev;
  if (ev == 0) {
    uv_poll_stop(&c.poll);
    return;
  }
  uv_poll_start(&c.poll, ev, [](uv_poll_t* p, int status, int events) {
    auto* conn = static_cast<Connection*>(p->data);
    conn->server->on_poll(*conn, status, events);
  });
}

void RelayServer::on_poll(Connection& c, int status, int events) {
  if (c.state == Connection::State::dead) return;
  if (status < 0) {
    log()->debug("connection from {}: {}", c.peer, uv_strerror(status));
    destroy(c);
    return;
  }
  switch (c.state) {
    case Connection::State::tls:
      step_tls(c);
      return;
    case Connection::State::lingering: {
      // Discard what the client still sends; its end (or the timer) closes.
      for (;;) {
        const ssize_t n = ::recv(c.fd, read_buf_.get(), kReadBufferSize, 0);
        if (n > 0) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
        destroy(c);
        return;
      }
    }
    default:
      break;
  }
  if ((events & UV_WRITABLE) || ((events & UV_READABLE) && c.write_wants_read)) {
    c.write_blocked = false;
    do_write(c);
    if (c.state == Connection::State::dead) return;
  }
  if ((events & UV_READABLE) || ((events & UV_WRITABLE) && c.read_wants_write)) do_read(c);
  update_poll(c);
}

// ---------------------------------------------------------------- reading

void RelayServer::do_read(Connection& c) {
  using State = Connection::State;
  if (c.state != State::http && c.state != State::open && c.state != State::closing) return;
  if (c.rx_paused) return;
  if (!c.rx_rest.empty()) {
    std::string rest = std::move(c.rx_rest);
    c.rx_rest.clear();
    if (!deliver(c, {reinterpret_cast<std::uint8_t*>(rest.data()), rest.size()})) return;
  }
  std::uint8_t* const buf = read_buf_.get();
  for (int round = 0; round < kReadRoundsPerEvent; ++round) {
    std::size_t filled = 0;
    long n = 0;
    tunnel::IoEnd end;
    // TLS hands out one record per call: gather a whole buffer first.
    while (filled < kReadBufferSize) {
      n = tunnel::socket_read(c.fd, c.ssl, buf + filled, kReadBufferSize - filled,
                              c.read_wants_write, end);
      if (n <= 0) break;
      filled += static_cast<std::size_t>(n);
    }
    if (filled > 0) {
      const std::span<std::uint8_t> got(buf, filled);
      if (c.state == State::http) {
        on_head_bytes(c, got);
      } else if (c.state == State::open || c.state == State::closing) {
        if (!deliver(c, got)) return;
      }
      if (c.state != State::http && c.state != State::open && c.state != State::closing) return;
      if (c.rx_paused) return;
    }
    if (n < 0) {
      if (c.link != nullptr || c.state == State::closing)
        log()->debug("channel {}: {}", c.channel_id, end.describe("the client"));
      destroy(c);
      return;
    }
    if (n == 0) return;  // would block
  }
  want_read(c);  // yielded with data possibly left (in the socket or inside OpenSSL)
}

void RelayServer::on_head_bytes(Connection& c, std::span<std::uint8_t> bytes) {
  using R = tunnel::ws::HttpRequestHead::Result;
  std::size_t used = 0;
  const R r = c.head->feed({reinterpret_cast<const char*>(bytes.data()), bytes.size()}, used);
  // if/else, not a switch: clang's use-after-scope check reported the
  // logger temporaries of the case branches (on a path that jumped past them).
  if (r == R::need_more) return;
  if (r == R::done) {
    on_request(c, bytes.subspan(used));
    return;
  }
  const auto& lg = log();
  if (r == R::too_large) {
    lg->info("handshake from {} rejected: 431 request head over {} bytes", c.peer, kMaxHeadBytes);
    reject_http(c, 431,
                "request head larger than " + std::to_string(config_.max_request_bytes) + " bytes");
    return;
  }
  lg->info("handshake from {} rejected: 400 {}", c.peer, c.head->error());
  reject_http(c, 400, "malformed HTTP request: " + c.head->error());
}

void RelayServer::on_request(Connection& c, std::span<std::uint8_t> rest) {
  const tunnel::ws::HttpRequestHead& h = *c.head;
  if (!h.has_header("upgrade")) {
    // A plain HTTP request.
    reject_http(c, 400, "this is a secure tunneling relay: use a WebSocket upgrade on /tunnel");
    return;
  }
  if (shutting_down_) {
    reject_http(c, 503, "relay is shutting down");
    return;
  }
  if (!tunnel::text::iequals(tunnel::text::trim_ows(h.joined("upgrade")), "websocket")) {
    reject_http(c, 400, "only WebSocket upgrades are served");
    return;
  }

  HandshakeRequest req;
  std::string_view target = h.target();
  const std::size_t q = target.find('?');
  const std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
  bool decoded = tunnel::ws::percent_decode(target.substr(0, q), req.path);
  for (std::size_t start = 0; decoded && start < query.size();) {
    std::size_t amp = query.find('&', start);
    if (amp == std::string_view::npos) amp = query.size();
    if (amp > start) {
      std::string arg;
      decoded = tunnel::ws::percent_decode(query.substr(start, amp - start), arg);
      req.query_args.push_back(std::move(arg));
    }
    start = amp + 1;
  }
  if (!decoded) {
    reject_http(c, 400, "bad percent-encoding in the request target");
    return;
  }
  // Repeated header lines are joined with ", ": two access-token lines read
  // as two tokens, two client-token lines as an invalid one.
  if (h.has_header("access-token")) req.access_token_header = h.joined("access-token");
  req.cookie_header = h.joined("cookie");
  if (h.has_header("client-token")) req.client_token = h.joined("client-token");
  req.subprotocol_offer = h.joined("sec-websocket-protocol");
  req.request_bytes = h.size();

  HandshakeDecision d =
      evaluate_handshake(req, registry_, config_.subprotocols, config_.max_request_bytes);
  if (d.admitted() && (h.method() != "GET" || h.header_values("sec-websocket-key").size() != 1 ||
                       tunnel::text::trim_ows(h.joined("sec-websocket-key")).empty() ||
                       tunnel::text::trim_ows(h.joined("sec-websocket-version")) != "13")) {
    d.http_status = 400;
    d.reason =
        "not a WebSocket upgrade: needs GET, one Sec-WebSocket-Key, Sec-WebSocket-Version 13";
  }
  const auto lit = d.admitted() ? links_.find(d.admission.tunnel_id) : links_.end();
  if (d.admitted() && lit == links_.end()) {
    d.http_status = 410;
    d.reason = "the tunnel is closed";
  }
  if (!d.admitted()) {
    log()->info("handshake from {} rejected: {} {}{}", c.peer, d.http_status, d.reason,
                d.admission.tunnel_id.empty() ? "" : " [tunnel " + d.admission.tunnel_id + "]");
    reject_http(c, d.http_status, d.reason);
    return;
  }

  // Admitted: answer 101 and attach the end.
  Link& link = *lit->second;
  const Role role = d.admission.role;
  const std::size_t i = index_of(role);
  c.channel_id = random_hex(16);
  c.out += tunnel::ws::build_upgrade_response(tunnel::text::trim_ows(h.joined("sec-websocket-key")),
                                              d.subprotocol, {{"channel-id", c.channel_id}});
  c.head.reset();
  uv_timer_stop(&c.timer);
  c.state = Connection::State::open;
  c.tunnel_id = link.id;
  c.role = role;
  c.version = d.version;

  bool replaced = false;
  if (Connection* old = link.conns[i]) {
    log()->info("tunnel {} {}: channel {} replaces channel {} (same client-token)", link.id,
                to_string(role), c.channel_id, old->channel_id);
    detach(*old);
    request_close(*old, 1000, "replaced by a new connection");
    replaced = true;
  }
  registry_.attach(link.id, role, d.client_token);
  link.conns[i] = &c;
  c.link = &link;

  const Tunnel* t = registry_.find(link.id);
  if (t != nullptr && !t->services.empty()) {
    if (c.version >= 2)
      link.queues[i].push_front_record(bytes_of(service_ids_record(t->services)));
    else
      log()->warn("tunnel {} has services but channel {} speaks V1: no SERVICE_IDS sent", link.id,
                  c.channel_id);
  }
  log()->info("tunnel {} {} connected: channel {}, {}{}{}", link.id, to_string(role), c.channel_id,
              d.subprotocol, d.client_token.empty() ? "" : ", with client-token",
              replaced ? ", replacing" : "");
  want_flush(c);
  wake_writer(link, role);
  maybe_resume(link, role);
  // Frames the client sent right behind its request.
  if (!rest.empty()) deliver(c, rest);
}

bool RelayServer::deliver(Connection& c, std::span<std::uint8_t> bytes) {
  using Kind = tunnel::ws::FrameEvent::Kind;
  std::size_t pos = 0;
  for (;;) {
    if (c.rx_paused) {
      c.rx_rest.append(reinterpret_cast<const char*>(bytes.data()) + pos, bytes.size() - pos);
      return false;
    }
    const tunnel::ws::FrameEvent ev = c.decoder.next(bytes.subspan(pos));
    pos += ev.consumed;
    switch (ev.kind) {
      case Kind::need_more:
        return true;
      case Kind::data:
        if (!ev.payload.empty()) {
          on_data(c, ev.payload);
          if (c.state != Connection::State::open && c.state != Connection::State::closing)
            return false;
        }
        break;
      case Kind::ping:
        queue_control(c, tunnel::ws::Opcode::pong, ev.payload);
        break;
      case Kind::pong:
        break;
      case Kind::close:
        c.peer_closed = true;
        log()->debug("channel {}: peer sent close {}", c.channel_id, ev.close_code);
        if (!c.close_sent) {
          // Echo the code (RFC 6455 section 5.5.1) and leave the tunnel.
          detach(c);
          request_close(c, ev.close_code, "");
        } else if (!c.writes_pending()) {
          destroy(c);
        }
        return false;
      case Kind::error: {
        const tunnel::ws::FrameError e = ev.error;
        const int code = e == tunnel::ws::FrameError::text_frame          ? 1003
                         : e == tunnel::ws::FrameError::message_too_large ? 1009
                                                                          : 1002;
        const std::string why = e == tunnel::ws::FrameError::text_frame
                                    ? "text frames are not allowed"
                                : e == tunnel::ws::FrameError::message_too_large
                                    ? "message too big"
                                    : std::string(tunnel::ws::to_string(e));
        if (c.state == Connection::State::open)
          log()->warn("tunnel {} {} channel {}: {}, closing ({})", c.tunnel_id, to_string(c.role),
                      c.channel_id, why, code);
        fail_connection(c, code, why);
        return false;
      }
    }
  }
}

void RelayServer::on_data(Connection& c, std::span<const std::uint8_t> payload) {
  if (c.close_sent || c.link == nullptr) return;  // closing: what it sends is dropped
  Link& link = *c.link;
  const Role receiver = peer_of(c.role);
  RecordQueue& out = link.queues[index_of(receiver)];
  std::string why;
  int code = 1008;
  const bool ok = c.splitter.feed(payload, out, [&](std::span<const std::uint8_t> body) {
    return inspect_control_record(c.role, body, link.streams, why, code);
  });
  wake_writer(link, receiver);
  if (!ok) {
    log()->warn("tunnel {} {} channel {}: protocol error, closing ({}): {}", c.tunnel_id,
                to_string(c.role), c.channel_id, code, why);
    fail_connection(c, code, why);
    return;
  }
  if (!c.rx_paused && out.size() >= queue_limit(link, receiver)) {
    c.rx_paused = true;
    update_poll(c);
  }
}

// ---------------------------------------------------------------- writing

void RelayServer::want_flush(Connection& c) {
  if (!c.in_flush_list) {
    c.in_flush_list = true;
    flush_list_.push_back(c.id);
  }
  if (h_ == nullptr) return;
  // The check phase follows this iteration's I/O phase: whatever the I/O
  // callbacks queue meanwhile leaves in the same batch. The idle handle makes
  // the poll return at once when asked from outside the I/O phase (a timer).
  uv_check_start(&h_->flush_check, [](uv_check_t* ch) {
    if (auto* self = Handles::of(ch)->owner) self->on_flush_check();
  });
  uv_idle_start(&h_->flush_idle, [](uv_idle_t*) {});
}

void RelayServer::on_flush_check() {
  uv_check_stop(&h_->flush_check);
  uv_idle_stop(&h_->flush_idle);
  std::vector<std::uint64_t> ids;
  ids.swap(flush_list_);
  for (const std::uint64_t id : ids) {
    const auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection& c = *it->second;
    c.in_flush_list = false;
    do_write(c);
    update_poll(c);
  }
}

void RelayServer::want_read(Connection& c) {
  if (!c.in_read_list) {
    c.in_read_list = true;
    read_list_.push_back(c.id);
  }
  if (h_ == nullptr) return;
  uv_idle_start(&h_->read_idle, [](uv_idle_t* i) {
    if (auto* self = Handles::of(i)->owner) self->on_read_more();
  });
}

void RelayServer::on_read_more() {
  uv_idle_stop(&h_->read_idle);
  std::vector<std::uint64_t> ids;
  ids.swap(read_list_);
  for (const std::uint64_t id : ids) {
    const auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection& c = *it->second;
    c.in_read_list = false;
    do_read(c);
    update_poll(c);
  }
}

void RelayServer::do_write(Connection& c) {
  using State = Connection::State;
  if (c.state == State::dead || c.state == State::tls || c.state == State::lingering) return;
  for (;;) {
    const std::uint8_t* p = nullptr;
    std::size_t n = 0;
    if (c.frame != nullptr) {
      p = c.frame + c.frame_off;
      n = c.frame_len - c.frame_off;
    } else if (c.out_off < c.out.size()) {
      p = reinterpret_cast<const std::uint8_t*>(c.out.data()) + c.out_off;
      n = c.out.size() - c.out_off;
    } else if (c.state == State::open && c.link != nullptr) {
      RecordQueue& q = c.link->queues[index_of(c.role)];
      const std::span<std::uint8_t> msg = q.front();
      if (msg.empty()) break;
      // One unmasked frame per chunk, its header in the chunk's headroom.
      const std::size_t hs = tunnel::ws::frame_header_size(msg.size(), false);
      std::uint8_t* start = msg.data() - hs;
      tunnel::ws::write_frame_header(start, tunnel::ws::Opcode::binary, msg.size(), nullptr);
      c.frame = start;
      c.frame_len = hs + msg.size();
      c.frame_payload = msg.size();
      c.frame_off = 0;
      continue;
    } else {
      break;
    }
    tunnel::IoEnd end;
    const long w = tunnel::socket_write(c.fd, c.ssl, p, n, c.write_wants_read, end);
    if (w < 0) {
      if (c.link != nullptr)
        log()->debug("channel {}: {}", c.channel_id, end.describe("the client"));
      destroy(c);
      return;
    }
    if (w == 0) {
      c.write_blocked = true;
      return;
    }
    if (c.frame != nullptr) {
      c.frame_off += static_cast<std::size_t>(w);
      if (c.frame_off == c.frame_len) {
        c.frame = nullptr;
        Link& l = *c.link;  // a frame in flight implies a link (take_inflight)
        l.queues[index_of(c.role)].pop_front(c.frame_payload);
        maybe_resume(l, c.role);
      }
    } else {
      c.out_off += static_cast<std::size_t>(w);
      if (c.out_off == c.out.size()) {
        c.out.clear();
        if (c.out.capacity() > 4096) std::string().swap(c.out);
        c.out_off = 0;
      }
    }
  }
  c.write_blocked = false;
  const bool closing = c.state == State::closing && c.close_sent;
  if (closing && c.peer_closed) {
    destroy(c);
  } else if (c.state == State::rejecting || (closing && c.failed)) {
    linger(c);
  }
}

void RelayServer::queue_control(Connection& c, tunnel::ws::Opcode op,
                                std::span<const std::uint8_t> payload) {
  if (c.close_sent) return;  // nothing may follow a close frame
  std::uint8_t hdr[tunnel::ws::kMaxHeaderSize];
  const std::size_t n = tunnel::ws::write_frame_header(hdr, op, payload.size(), nullptr);
  c.out.append(reinterpret_cast<const char*>(hdr), n);
  c.out.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  want_flush(c);
}

void RelayServer::take_inflight(Connection& c) {
  if (c.frame == nullptr) return;
  // The rest of the frame must still go out whole (the client is parsing
  // it); its queue is about to forget it. At most one message, rare.
  c.out.insert(c.out_off, reinterpret_cast<const char*>(c.frame) + c.frame_off,
               c.frame_len - c.frame_off);
  c.frame = nullptr;
}

void RelayServer::reject_http(Connection& c, int status, const std::string& reason) {
  const std::string body = reason + "\n";
  c.out += fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n",
      status, reason_phrase(status), body.size());
  c.out += body;
  c.head.reset();
  c.state = Connection::State::rejecting;
  do_write(c);
  update_poll(c);
}

void RelayServer::linger(Connection& c) {
  if (c.ssl != nullptr) {
    ERR_clear_error();
    SSL_shutdown(c.ssl);  // close_notify, best effort
    ERR_clear_error();
  }
  ::shutdown(c.fd, SHUT_WR);
  c.state = Connection::State::lingering;
  uv_timer_start(
      &c.timer,
      [](uv_timer_t* t) {
        auto* conn = static_cast<Connection*>(t->data);
        conn->server->destroy(*conn);
      },
      kLingerMs, 0);
  update_poll(c);
}

// ---------------------------------------------------------------- closing

void RelayServer::request_close(Connection& c, int code, std::string reason) {
  if (c.close_sent || (c.state != Connection::State::open && c.state != Connection::State::closing))
    return;
  log()->debug("channel {}: closing with {} ({})", c.channel_id, code, reason);
  take_inflight(c);
  std::string payload;
  if (code != 1005) {
    payload.push_back(static_cast<char>(code >> 8));
    payload.push_back(static_cast<char>(code & 0xFF));
    payload += reason.substr(0, tunnel::ws::kMaxControlPayload - 2);
  }
  queue_control(c, tunnel::ws::Opcode::close,
                {reinterpret_cast<const std::uint8_t*>(payload.data()), payload.size()});
  c.close_sent = true;
  c.state = Connection::State::closing;
  if (c.rx_paused) {
    // Read on: the client's close frame is what we wait for.
    c.rx_paused = false;
    want_read(c);
  }
  uv_timer_start(
      &c.timer,
      [](uv_timer_t* t) {
        auto* conn = static_cast<Connection*>(t->data);
        log()->debug("channel {}: no close frame from the client, closing", conn->channel_id);
        conn->server->destroy(*conn);
      },
      kCloseTimeoutMs, 0);
  update_poll(c);
}

void RelayServer::fail_connection(Connection& c, int code, std::string reason) {
  detach(c);
  c.splitter.reset();
  c.failed = true;
  if (c.state == Connection::State::open) {
    request_close(c, code, std::move(reason));
  } else if (c.state != Connection::State::closing) {
    destroy(c);
  }
}

void RelayServer::destroy(Connection& c) {
  if (c.state == Connection::State::dead) return;
  if (c.link != nullptr) {
    log()->info("tunnel {} {} disconnected: channel {}", c.tunnel_id, to_string(c.role),
                c.channel_id);
    detach(c);
  } else if (!c.channel_id.empty()) {
    log()->debug("channel {} closed", c.channel_id);
  }
  c.frame = nullptr;
  c.state = Connection::State::dead;
  const auto closed = [](uv_handle_t* h) {
    auto* conn = static_cast<Connection*>(h->data);
    if (--conn->open_handles == 0) delete conn;
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&c.poll), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c.timer), closed);
  if (c.ssl != nullptr) {
    SSL_free(c.ssl);
    c.ssl = nullptr;
  }
  ::close(c.fd);
  c.fd = -1;
  c.head.reset();
  c.out.clear();
  c.rx_rest.clear();
  connections_.erase(c.id);
  check_shutdown_done();
}

void RelayServer::detach(Connection& c) {
  Link* l = c.link;
  if (l == nullptr) return;
  const Role role = c.role;
  const Role peer = peer_of(role);
  take_inflight(c);
  c.link = nullptr;
  l->conns[index_of(role)] = nullptr;
  registry_.detach(l->id, role);
  // A record the gone connection was half-way through sending is discarded.
  if (c.splitter.mid_record()) l->queues[index_of(peer)].abort_record();
  c.splitter.reset();
  // Records queued for the gone connection belong to its streams: dropped.
  l->queues[index_of(role)].drop_committed();
  // Its streams are dead: tell the peer (protocol.md section 4, last rule).
  for (const std::string& rec : l->streams.take_resets())
    l->queues[index_of(peer)].push_back_record(bytes_of(rec));
  wake_writer(*l, peer);
  maybe_resume(*l, role);
}

std::size_t RelayServer::queue_limit(const Link& l, Role receiver) const {
  return l.conns[index_of(receiver)] != nullptr ? config_.queue_limit_connected
                                                : config_.queue_limit_absent;
}

void RelayServer::maybe_resume(Link& l, Role receiver) {
  Connection* sender = l.conns[index_of(peer_of(receiver))];
  if (sender != nullptr && sender->rx_paused &&
      l.queues[index_of(receiver)].size() <= queue_limit(l, receiver) / 2) {
    sender->rx_paused = false;
    // From the loop: what was kept and what OpenSSL holds, then the socket.
    want_read(*sender);
    update_poll(*sender);
  }
}

void RelayServer::wake_writer(Link& l, Role receiver) {
  Connection* c = l.conns[index_of(receiver)];
  if (c != nullptr && l.queues[index_of(receiver)].has_committed()) want_flush(*c);
}

RelayServer::Link* RelayServer::create_link(const std::string& id, std::chrono::seconds lifetime) {
  auto link = std::make_unique<Link>(pool_);
  link->id = id;
  link->owner = this;
  if (lifetime.count() > 0) {
    link->expiry = new uv_timer_t;
    uv_timer_init(loop_, link->expiry);
    link->expiry->data = link.get();
    uv_timer_start(link->expiry, &RelayServer::on_expiry,
                   static_cast<std::uint64_t>(lifetime.count()) * 1000, 0);
  }
  Link* raw = link.get();
  links_[id] = std::move(link);
  return raw;
}

void RelayServer::destroy_link(const std::string& id) {
  const auto it = links_.find(id);
  if (it == links_.end()) return;
  if (it->second->expiry != nullptr)
    uv_close(reinterpret_cast<uv_handle_t*>(it->second->expiry),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  links_.erase(it);
}

void RelayServer::on_expiry(uv_timer_t* t) {
  auto* link = static_cast<Link*>(t->data);
  const std::string id = link->id;  // close_tunnel destroys the link
  link->owner->close_tunnel(id, "lifetime expired");
}

std::optional<OpenedTunnel> RelayServer::open_tunnel(std::vector<std::string> services,
                                                     std::chrono::seconds lifetime,
                                                     std::string& error) {
  const Tunnel* opened = registry_.open(std::move(services), error);
  if (opened == nullptr) {
    log()->warn("tunnel not opened: {}", error);
    return std::nullopt;
  }
  const Tunnel& t = *opened;
  create_link(t.id, lifetime);
  log()->info(
      "tunnel {} opened (services: {}), lifetime {}s", t.id,
      t.services.empty() ? std::string("none, V1") : fmt::format("{}", fmt::join(t.services, ",")),
      lifetime.count());
  return OpenedTunnel{t.id, t.end(Role::source).access_token,
                      t.end(Role::destination).access_token};
}

bool RelayServer::close_tunnel(std::string_view id, std::string_view why) {
  const Tunnel* t = registry_.find(id);
  if (t == nullptr) return false;
  if (t->status == TunnelStatus::closed) return true;
  const std::string tunnel_id(id);
  if (const auto it = links_.find(tunnel_id); it != links_.end()) {
    Link& l = *it->second;
    for (Connection* c : l.conns) {
      if (c == nullptr) continue;
      take_inflight(*c);
      c->link = nullptr;
      c->splitter.reset();
      request_close(*c, 1000, "tunnel closed");
    }
    destroy_link(tunnel_id);
  }
  registry_.close(tunnel_id);
  log()->info("tunnel {} closed: {}", tunnel_id, why);
  return true;
}

std::vector<TunnelView> RelayServer::tunnels() const {
  std::vector<TunnelView> out;
  for (const Tunnel* t : registry_.list()) {
    out.push_back(TunnelView{t->id, std::string(to_string(t->status)), t->services,
                             t->end(Role::source).connected, t->end(Role::destination).connected});
  }
  return out;
}

void RelayServer::shutdown(std::function<void()> done) {
  if (shutting_down_) return;
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  if (h_ != nullptr && h_->listening) {
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->listen), &Handles::closed);
    h_->listening = false;
  }
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  std::vector<std::uint64_t> ids;
  for (const auto& [id, c] : connections_) ids.push_back(id);
  for (const std::uint64_t id : ids) {
    const auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    Connection& c = *it->second;
    if (c.state != Connection::State::open) continue;
    take_inflight(c);
    c.link = nullptr;
    c.splitter.reset();
    request_close(c, 1001, "relay shutting down");
  }
  while (!links_.empty()) destroy_link(links_.begin()->first);
  shutdown_timer_ = new uv_timer_t;
  uv_timer_init(loop_, shutdown_timer_);
  shutdown_timer_->data = this;
  // Close frames go out from the flush check; what is left after the grace
  // period is closed without waiting further.
  uv_timer_start(
      shutdown_timer_, [](uv_timer_t* t) { static_cast<RelayServer*>(t->data)->finish_shutdown(); },
      kShutdownGraceMs, 0);
  check_shutdown_done();
}

void RelayServer::check_shutdown_done() {
  if (!shutting_down_ || shutdown_finished_ || shutdown_timer_ == nullptr) return;
  const bool websockets_left =
      std::any_of(connections_.begin(), connections_.end(), [](const auto& kv) {
        return kv.second->state == Connection::State::open ||
               kv.second->state == Connection::State::closing;
      });
  if (!websockets_left)
    uv_timer_start(
        shutdown_timer_,
        [](uv_timer_t* t) { static_cast<RelayServer*>(t->data)->finish_shutdown(); }, 0, 0);
}

void RelayServer::finish_shutdown() {
  if (shutdown_finished_) return;
  shutdown_finished_ = true;
  if (shutdown_timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(shutdown_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    shutdown_timer_ = nullptr;
  }
  std::size_t websockets = 0;
  while (!connections_.empty()) {
    Connection& c = *connections_.begin()->second;
    if (c.state == Connection::State::open || c.state == Connection::State::closing) ++websockets;
    destroy(c);
  }
  if (websockets != 0) log()->info("{} connection(s) did not close in time", websockets);
  if (h_ != nullptr) {
    h_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->flush_check), &Handles::closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->flush_idle), &Handles::closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->read_idle), &Handles::closed);
    h_ = nullptr;
  }
  flush_list_.clear();
  read_list_.clear();
  if (shutdown_done_) std::exchange(shutdown_done_, nullptr)();
}

void RelayServer::finish() {
  // Every handle was closed by finish_shutdown(); the loop has drained.
}

}  // namespace relay
