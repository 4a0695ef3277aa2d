// transport-probe: the WebSocket client transport measured two ways on one
// libuv loop against the same loopback TLS server, to choose the proxies'
// client transport (docs/architecture.md):
//   lws  - libwebsockets as the TLS transport only (a RAW client connection);
//          our code writes the upgrade, checks the 101 and does RFC 6455.
//   ours - tunnel::ServiceLink (libuv + OpenSSL, our codec), as shipped.
// A program that prints figures (docs/benchmarks.md), not a test.
#include <uv.h>
// uv.h first: libwebsockets' libuv glue needs its types.
#include <libwebsockets.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench_setup.h"
#include "logging.h"
#include "loop_context.h"
#include "record_codec.h"
#include "service_link.h"
#include "ws_frame.h"
#include "ws_handshake.h"

namespace {

namespace ws = tunnel::ws;
using Bytes = std::vector<std::uint8_t>;
constexpr const char* kSubprotocol = "aws.iot.securetunneling-3.0";
constexpr std::size_t kStampPeriod = 4096;
// Bytes per write batch (server, lws client) and per server read.
constexpr std::size_t kBatch = std::size_t{256} * 1024;
constexpr std::size_t kOursRoom = 131076;  // Settings::ws_write_buffer_size default

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
double wall_s() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// The payload stream: a filler that repeats every 4 KiB, with the stream
// offset stamped (8 bytes, little endian) at every 4 KiB boundary, so lost,
// repeated, reordered or wrongly unmasked bytes show up.
class Pattern {
 public:
  explicit Pattern(std::size_t max_chunk) : src_(max_chunk + kStampPeriod) {
    for (std::size_t i = 0; i < src_.size(); ++i) {
      src_[i] = static_cast<std::uint8_t>((i % kStampPeriod) * 131 + 7);
    }
  }
  void fill(std::uint8_t* dst, std::uint64_t off, std::size_t n) const {
    std::memcpy(dst, src_.data() + off % kStampPeriod, n);
    for_stamp_bytes(off, n, [&](std::size_t i, std::uint8_t v) { dst[i] = v; });
  }
  // Stamps only (cheap: 8 bytes in 4096), or every byte.
  bool check(const std::uint8_t* p, std::uint64_t off, std::size_t n, bool full) const {
    bool ok = true;
    for_stamp_bytes(off, n, [&](std::size_t i, std::uint8_t v) { ok = ok && p[i] == v; });
    if (!ok || !full) return ok;
    scratch_.resize(n);
    fill(scratch_.data(), off, n);
    return std::memcmp(p, scratch_.data(), n) == 0;
  }

 private:
  template <typename F>
  static void for_stamp_bytes(std::uint64_t off, std::size_t n, F&& f) {
    const std::uint64_t end = off + n;
    for (std::uint64_t s = off - off % kStampPeriod; s < end; s += kStampPeriod) {
      for (std::uint64_t b = std::max(s, off); b < std::min(s + 8, end); ++b) {
        f(static_cast<std::size_t>(b - off), static_cast<std::uint8_t>(s >> (8 * (b - s))));
      }
    }
  }
  Bytes src_;
  mutable Bytes scratch_;
};

struct Config {
  bool upload = false;
  std::uint64_t bytes = 0;
  std::size_t payload = 0;
  bool verify_full = false;
  bool tls = true;
  // lws upload: frames are added to one lws_write while below this (64 KiB:
  // two full messages). More than the socket takes is copied into lws' own
  // buffer (its "truncated send"), which cost 50% more CPU at 256 KiB.
  std::size_t lws_batch = std::size_t{64} * 1024;
  double deadline_s = 120;
};

// What one side measured between the 101 and the last byte.
struct Figures {
  double wall = 0;
  double cpu = 0;
  std::uint64_t bytes = 0;
  std::uint64_t deliveries = 0;  // spans handed to the client's decoder or events
  std::string error;
  std::string tls;  // server: negotiated protocol and cipher
};

std::string ssl_error() {
  char buf[256] = "";
  const unsigned long e = ERR_get_error();
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf[0] ? buf : "connection closed";
}

// ---------------------------------------------------------------- server

// The server's side of one connection: TLS, or plain TCP (--tls off).
struct ServerConn {
  int fd = -1;
  SSL* ssl = nullptr;
  int last_errno = 0;

  int read(std::uint8_t* p, std::size_t n) {
    if (ssl) return SSL_read(ssl, p, static_cast<int>(n));
    const ssize_t got = ::recv(fd, p, n, 0);
    last_errno = got < 0 ? errno : 0;
    return static_cast<int>(got);
  }
  bool write_all(const std::uint8_t* p, std::size_t n) {
    if (ssl) return n == 0 || SSL_write(ssl, p, static_cast<int>(n)) == static_cast<int>(n);
    while (n > 0) {
      const ssize_t put = ::send(fd, p, n, MSG_NOSIGNAL);
      if (put <= 0) {
        last_errno = errno;
        return false;
      }
      p += put;
      n -= static_cast<std::size_t>(put);
    }
    return true;
  }
  std::string error() {
    if (ssl) return ssl_error();
    return last_errno ? std::strerror(last_errno) : "connection closed";
  }
};

// A blocking loopback TLS WebSocket server, one connection per run, on its
// own thread. Certificate and key are made in memory and thrown away.
class ProbeServer {
 public:
  ProbeServer() {
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    ctx_ = SSL_CTX_new(TLS_server_method());
    if (!key || !cert || !ctx_) throw std::runtime_error("OpenSSL: " + ssl_error());
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("127.0.0.1"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509_set_pubkey(cert, key);
    const bool ok = X509_sign(cert, key, EVP_sha256()) > 0 &&
                    SSL_CTX_use_certificate(ctx_, cert) == 1 &&
                    SSL_CTX_use_PrivateKey(ctx_, key) == 1;
    X509_free(cert);
    EVP_PKEY_free(key);
    if (!ok) throw std::runtime_error("cannot make the test certificate: " + ssl_error());

    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), len) != 0 ||
        ::listen(listen_fd_, 4) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw std::runtime_error(std::string("cannot listen on 127.0.0.1: ") + std::strerror(errno));
    }
    port_ = ntohs(a.sin_port);
  }
  ~ProbeServer() {
    if (thread_.joinable()) {
      interrupt();
      thread_.join();
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
    SSL_CTX_free(ctx_);
  }
  ProbeServer(const ProbeServer&) = delete;
  ProbeServer& operator=(const ProbeServer&) = delete;

  std::uint16_t port() const { return port_; }

  void start(const Config& cfg) {
    result_ = Figures{};
    stop_ = false;
    thread_ = std::thread([this, cfg] { serve(cfg); });
  }
  Figures join() {
    thread_.join();
    return result_;
  }
  // Unblocks the server thread (deadline).
  void interrupt() {
    stop_ = true;
    const int fd = conn_fd_.load();
    if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
  }

 private:
  void serve(const Config& cfg) {
    const double until = wall_s() + cfg.deadline_s;
    for (;;) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 200) == 1) break;
      if (stop_ || wall_s() > until) {
        result_.error = "server: no connection came";
        return;
      }
    }
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      result_.error = std::string("server: accept: ") + std::strerror(errno);
      return;
    }
    timeval tv{static_cast<time_t>(cfg.deadline_s), 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    conn_fd_ = fd;
    ServerConn c{fd};
    if (cfg.tls) {
      c.ssl = SSL_new(ctx_);
      SSL_set_fd(c.ssl, fd);
      if (SSL_accept(c.ssl) != 1) {
        result_.error = "server: TLS handshake: " + ssl_error();
      } else {
        result_.tls = std::string(SSL_get_version(c.ssl)) + " " + SSL_get_cipher_name(c.ssl);
      }
    } else {
      result_.tls = "none (plain TCP)";
    }
    if (result_.error.empty()) result_.error = session(c, cfg);
    if (c.ssl) {
      SSL_shutdown(c.ssl);
      SSL_free(c.ssl);
    }
    conn_fd_ = -1;
    ::close(fd);
  }
  // Unmasked frames built in place, in a buffer allocated once.
  struct FrameBatch {
    Bytes buf = Bytes(kBatch + tunnel::kMaxFrameSize + ws::kMaxHeaderSize);
    std::size_t len = 0;
    // Appends a frame header for n payload bytes; returns where they go.
    std::uint8_t* add(ws::Opcode op, std::size_t n) {
      len += ws::write_frame_header(buf.data() + len, op, n, nullptr);
      std::uint8_t* payload = buf.data() + len;
      len += n;
      return payload;
    }
  };

  // The upgrade, then the transfer; returns an error or "".
  std::string session(ServerConn& c, const Config& cfg) {
    Bytes buf(kBatch);
    ws::HttpRequestHead head;
    std::size_t used = 0;
    std::size_t got = 0;
    for (;;) {
      const int n = c.read(buf.data(), buf.size());
      if (n <= 0) return "server: reading the upgrade request: " + c.error();
      got = static_cast<std::size_t>(n);
      const auto r = head.feed({reinterpret_cast<char*>(buf.data()), got}, used);
      if (r == ws::HttpRequestHead::Result::done) break;
      if (r != ws::HttpRequestHead::Result::need_more) return "server: bad upgrade request";
    }
    const std::string key = head.joined("Sec-WebSocket-Key");
    if (head.method() != "GET" || key.empty() ||
        head.joined("Sec-WebSocket-Protocol").find(kSubprotocol) == std::string::npos) {
      return "server: not a tunnel WebSocket upgrade request";
    }
    const std::string resp = ws::build_upgrade_response(key, kSubprotocol, {});
    if (!c.write_all(reinterpret_cast<const std::uint8_t*>(resp.data()), resp.size())) {
      return "server: writing the 101: " + c.error();
    }
    const double cpu0 = thread_cpu_s();
    const double t0 = wall_s();
    const Pattern pattern(cfg.payload);
    FrameBatch out;
    ws::FrameDecoder dec(ws::Side::server, tunnel::kMaxFrameSize);
    std::uint64_t count = 0;
    bool peer_closed = false;
    // Decodes what the client sent: payload is counted and checked.
    auto consume = [&](std::span<std::uint8_t> in) -> std::string {
      for (;;) {
        const ws::FrameEvent ev = dec.next(in);
        in = in.subspan(ev.consumed);
        switch (ev.kind) {
          case ws::FrameEvent::Kind::need_more:
            return "";
          case ws::FrameEvent::Kind::data:
            if (!pattern.check(ev.payload.data(), count, ev.payload.size(), cfg.verify_full)) {
              return "server: wrong payload bytes near offset " + std::to_string(count);
            }
            count += ev.payload.size();
            break;
          case ws::FrameEvent::Kind::close:
            peer_closed = true;
            return "";
          case ws::FrameEvent::Kind::error:
            return std::string("server: ") + std::string(ws::to_string(ev.error));
          default:
            break;
        }
      }
    };
    std::string err;
    if (cfg.upload) {
      // Bytes after the request head are already frames.
      if (used < got) err = consume(std::span(buf).subspan(used, got - used));
      while (err.empty() && count < cfg.bytes && !peer_closed) {
        const int n = c.read(buf.data(), buf.size());
        if (n <= 0)
          return "server: reading frames after " + std::to_string(count) + " bytes: " + c.error();
        err = consume(std::span(buf).first(static_cast<std::size_t>(n)));
      }
      if (!err.empty()) return err;
      // The acknowledgement: 8 bytes, the payload byte count.
      std::array<std::uint8_t, 8> ack{};
      for (std::size_t i = 0; i < 8; ++i) ack[i] = static_cast<std::uint8_t>(count >> (8 * i));
      std::memcpy(out.add(ws::Opcode::binary, ack.size()), ack.data(), ack.size());
    } else {
      while (count < cfg.bytes) {
        out.len = 0;
        while (count < cfg.bytes && out.len < kBatch) {
          const auto n =
              static_cast<std::size_t>(std::min<std::uint64_t>(cfg.payload, cfg.bytes - count));
          pattern.fill(out.add(ws::Opcode::binary, n), count, n);
          count += n;
        }
        if (!c.write_all(out.buf.data(), out.len)) return "server: writing frames: " + c.error();
      }
      out.len = 0;
    }
    const std::array<std::uint8_t, 2> code{0x03, 0xE8};  // 1000
    std::memcpy(out.add(ws::Opcode::close, code.size()), code.data(), code.size());
    if (!c.write_all(out.buf.data(), out.len)) return "server: writing close: " + c.error();
    result_.cpu = thread_cpu_s() - cpu0;
    result_.wall = wall_s() - t0;
    result_.bytes = count;
    // Wait for the client's close frame (or its end of the connection).
    while (!peer_closed) {
      const int n = c.read(buf.data(), buf.size());
      if (n <= 0) break;
      err = consume(std::span(buf).first(static_cast<std::size_t>(n)));
      if (!err.empty()) return err;
    }
    ERR_clear_error();
    return "";
  }

  SSL_CTX* ctx_ = nullptr;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> conn_fd_{-1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Figures result_;
};

// ---------------------------------------------------------------- clients

// What both clients share: the clock and CPU between the 101 and the last
// byte, the payload check (download), the acknowledgement (upload) and the
// upload source. Runs on the loop thread only.
class ClientRun {
 public:
  ClientRun(uv_loop_t* loop, const Config& cfg)
      : cfg_(cfg), loop_(loop), pattern_(cfg.payload), chunk_(cfg.payload) {}
  virtual ~ClientRun() = default;
  ClientRun(const ClientRun&) = delete;
  ClientRun& operator=(const ClientRun&) = delete;

  // Ends the connection now (deadline); ended() follows from the loop.
  virtual void abort(const std::string& why) = 0;
  // Frees the connection's loop resources; runs the loop until they are gone.
  virtual void release() = 0;
  virtual const char* span_label() const = 0;
  bool has_ended() const { return ended_; }
  const Figures& figures() const { return fig_; }

 protected:
  void opened() {
    t0_ = wall_s();
    cpu0_ = thread_cpu_s();
    open_ = true;
  }
  bool complete() const { return complete_; }
  void fail(const std::string& why) {
    if (fig_.error.empty()) fig_.error = why;
  }
  bool failed() const { return !fig_.error.empty(); }
  // The run is over for the loop (uv_run returns); once only.
  void ended() {
    if (ended_) return;
    ended_ = true;
    uv_stop(loop_);
  }
  // Binary payload from the server.
  void received(std::span<const std::uint8_t> p) {
    ++fig_.deliveries;
    if (complete_) return;
    if (cfg_.upload) {  // the 8-byte acknowledgement
      for (const std::uint8_t b : p) {
        if (ack_len_ < 8) ack_ |= static_cast<std::uint64_t>(b) << (8 * ack_len_++);
      }
      if (ack_len_ < 8) return;
      if (ack_ != cfg_.bytes) {
        fail("the server acknowledged " + std::to_string(ack_) + " bytes, not " +
             std::to_string(cfg_.bytes));
      }
      finish(ack_);
      return;
    }
    if (p.size() > cfg_.bytes - got_) {
      fail("the server sent more than " + std::to_string(cfg_.bytes) + " bytes");
    } else if (!pattern_.check(p.data(), got_, p.size(), cfg_.verify_full)) {
      fail("wrong payload bytes near offset " + std::to_string(got_));
    }
    got_ += p.size();
    if (got_ == cfg_.bytes) finish(got_);
  }
  // Upload: the next message payload, or empty when everything was given.
  std::span<const std::uint8_t> next_chunk() {
    const auto n =
        static_cast<std::size_t>(std::min<std::uint64_t>(cfg_.payload, cfg_.bytes - sent_));
    pattern_.fill(chunk_.data(), sent_, n);
    sent_ += n;
    return {chunk_.data(), n};
  }
  bool all_given() const { return sent_ == cfg_.bytes; }

  const Config cfg_;
  bool open_ = false;

 private:
  void finish(std::uint64_t bytes) {
    fig_.wall = wall_s() - t0_;
    fig_.cpu = thread_cpu_s() - cpu0_;
    fig_.bytes = bytes;
    complete_ = true;
  }

  uv_loop_t* loop_;
  Pattern pattern_;
  Bytes chunk_;
  Figures fig_;
  double t0_ = 0;
  double cpu0_ = 0;
  std::uint64_t got_ = 0;
  std::uint64_t sent_ = 0;
  std::uint64_t ack_ = 0;
  std::size_t ack_len_ = 0;
  bool complete_ = false;
  bool ended_ = false;
};

// (b) tunnel::ServiceLink, driven the way ProxySession drives it.
class OursClient final : public ClientRun, public tunnel::ServiceLinkEvents {
 public:
  OursClient(uv_loop_t* loop, const Config& cfg, std::uint16_t port)
      : ClientRun(loop, cfg), loop_(loop), ctx_(loop), link_(ctx_, *this) {
    tunnel::LinkOptions o;
    o.endpoint = {"127.0.0.1", port, cfg.tls};
    o.path = tunnel::handshake_path("source");
    o.subprotocols = {kSubprotocol};
    o.access_token = "probe-token";
    o.verify_tls = false;  // as -k
    o.write_low_watermark = kOursRoom / 2;
    // No pings: the download server reads nothing until the end.
    const int ms = static_cast<int>(cfg.deadline_s * 1000);
    o.connect_timeout_ms = ms;
    o.ping_period_ms = 2 * ms;
    o.pong_timeout_ms = 2 * ms;
    link_.connect(o);
  }
  ~OursClient() override { link_.shutdown(); }
  OursClient(const OursClient&) = delete;
  OursClient& operator=(const OursClient&) = delete;

  void abort(const std::string& why) override { link_.abort(why); }
  void release() override {
    link_.shutdown();
    while (uv_loop_alive(loop_)) uv_run(loop_, UV_RUN_ONCE);
  }
  const char* span_label() const override { return "on_link_data"; }

  void on_link_open(const std::string&, const std::string&) override {
    opened();
    if (cfg_.upload) pump();
  }
  void on_link_data(std::span<const std::uint8_t> bytes) override {
    received(bytes);
    if (failed()) link_.abort(figures().error);
  }
  void on_link_drained() override { pump(); }
  void on_link_rtt(std::int64_t) override {}
  void on_link_closed(const tunnel::LinkEnd& end) override {
    if (!complete()) fail("the link ended early: " + end.reason);
    ended();
  }

 private:
  // As ProxySession::pump_local: records while the queue has room.
  void pump() {
    while (link_.queued() < kOursRoom && !all_given()) {
      const auto c = next_chunk();
      link_.send_record_parts({}, {reinterpret_cast<const char*>(c.data()), c.size()}, {});
    }
    link_.flush();
  }

  uv_loop_t* loop_;
  tunnel::LoopContext ctx_;
  tunnel::ServiceLink link_;
};

// (a) libwebsockets as the TLS transport: a RAW client on the same loop;
// the upgrade and RFC 6455 are ours.
class LwsClient final : public ClientRun {
 public:
  LwsClient(uv_loop_t* loop, const Config& cfg, std::uint16_t port)
      : ClientRun(loop, cfg),
        loop_(loop),
        tx_(LWS_PRE + cfg.lws_batch + 2 * tunnel::kMaxFrameSize) {
    protocols_[0] = {"probe-raw", &LwsClient::callback, 0, kBatch, 0, nullptr, 0};
    foreign_[0] = loop;
    lws_context_creation_info info{};
    info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols_.data();
    info.foreign_loops = foreign_.data();
    info.pt_serv_buf_size = kBatch;
    info.user = this;
    ctx_ = lws_create_context(&info);
    if (!ctx_) {
      throw std::runtime_error(
          "lws_create_context failed (is the libwebsockets-evlib-uv package installed?)");
    }
    upgrade_.host = "127.0.0.1:" + std::to_string(port);
    upgrade_.path = tunnel::handshake_path("source");
    upgrade_.key = ws::make_websocket_key();
    upgrade_.subprotocols = {kSubprotocol};
    upgrade_.headers = {{"access-token", "probe-token"}, {"User-Agent", "transport-probe"}};
    lws_client_connect_info ci{};
    ci.context = ctx_;
    ci.address = "127.0.0.1";
    ci.port = port;
    ci.ssl_connection =
        cfg.tls ? LCCSCF_USE_SSL | LCCSCF_ALLOW_SELFSIGNED | LCCSCF_SKIP_SERVER_CERT_HOSTNAME_CHECK
                : 0;
    ci.path = "/";
    ci.host = ci.address;
    ci.origin = ci.address;
    ci.method = "RAW";
    ci.local_protocol_name = protocols_[0].name;
    ci.pwsi = &wsi_;
    if (!lws_client_connect_via_info(&ci)) {
      wsi_ = nullptr;  // lws may have stored a wsi it then freed
      // lws 4.1 starts TLS on a RAW client before its socket exists
      // (SSL_connect on a socket not yet connected: EBADF, "tls start
      // fail"): upstream issue warmcat/libwebsockets#2916, fixed on lws main
      // in November 2023 (#2917), years after the 4.1.6 of Debian 12.
      fail(cfg.tls ? "libwebsockets " LWS_LIBRARY_VERSION
                     " cannot run TLS on a RAW client connection (it starts TLS before the "
                     "socket is connected: lws issue 2916). Use --tls off to compare "
                     "the transports on plain TCP."
                   : "lws_client_connect_via_info failed");
      ended();
    }
  }
  ~LwsClient() override {
    if (ctx_) lws_context_destroy(ctx_);
  }
  LwsClient(const LwsClient&) = delete;
  LwsClient& operator=(const LwsClient&) = delete;

  void abort(const std::string& why) override {
    fail(why);
    if (wsi_) lws_set_timeout(wsi_, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
  }
  // Foreign loop teardown: destroy from a uv callback, run the loop until
  // lws' handles are closed, destroy again to free the context. lws 4.1.6
  // closes its loop handles only when its last connection closes after the
  // first destroy, so this needs the connection still open; after an error
  // (connection gone) the context is left to the process exit.
  void release() override {
    if (!wsi_) {
      ctx_ = nullptr;
      return;
    }
    struct Destroyer {
      uv_timer_t timer{};
      lws_context* ctx = nullptr;
    } d;
    d.ctx = ctx_;
    uv_timer_init(loop_, &d.timer);
    d.timer.data = &d;
    uv_timer_start(
        &d.timer,
        [](uv_timer_t* h) {
          lws_context_destroy(static_cast<Destroyer*>(h->data)->ctx);
          uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
        },
        0, 0);
    while (uv_loop_alive(loop_)) uv_run(loop_, UV_RUN_ONCE);
    lws_context_destroy(ctx_);
    ctx_ = nullptr;
  }
  const char* span_label() const override { return "RAW_RX"; }

 private:
  static int callback(lws* wsi, lws_callback_reasons reason, void*, void* in, std::size_t len) {
    auto* self = static_cast<LwsClient*>(lws_context_user(lws_get_context(wsi)));
    return self ? self->on_event(wsi, reason, in, len) : 0;
  }

  int on_event(lws* wsi, lws_callback_reasons reason, void* in, std::size_t len) {
    switch (reason) {
      case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        fail(std::string("lws: cannot connect: ") +
             (in ? static_cast<const char*>(in) : "(no reason)"));
        wsi_ = nullptr;
        ended();
        return 0;
      case LWS_CALLBACK_RAW_CONNECTED: {
        const int one = 1;
        ::setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        lws_callback_on_writable(wsi);
        return 0;
      }
      case LWS_CALLBACK_RAW_WRITEABLE:
        return on_writeable(wsi);
      case LWS_CALLBACK_RAW_RX:
        return on_rx(wsi, {static_cast<std::uint8_t*>(in), len});
      case LWS_CALLBACK_RAW_CLOSE:
        if (!complete()) fail("the connection ended early");
        wsi_ = nullptr;
        ended();
        return 0;
      default:
        return 0;
    }
  }

  int on_writeable(lws* wsi) {
    std::uint8_t* const base = tx_.data() + LWS_PRE;
    std::size_t len = 0;
    if (!request_sent_) {
      const std::string req = ws::build_upgrade_request(upgrade_);
      std::copy(req.begin(), req.end(), base);
      len = req.size();
      request_sent_ = true;
    } else if (echo_close_) {
      const std::array<std::uint8_t, 2> code{0x03, 0xE8};  // 1000
      const auto mask = mask_keys_.next();
      len = ws::write_frame_header(base, ws::Opcode::close, code.size(), &mask);
      ws::copy_masked(base + len, code.data(), code.size(), mask);
      len += code.size();
      echo_close_ = false;
      close_sent_ = true;
    } else if (open_ && cfg_.upload && !close_sent_) {
      while (len < cfg_.lws_batch && !all_given()) {
        const auto c = next_chunk();
        const auto mask = mask_keys_.next();
        len += ws::write_frame_header(base + len, ws::Opcode::binary, c.size(), &mask);
        ws::copy_masked(base + len, c.data(), c.size(), mask);
        len += c.size();
      }
      if (!all_given()) lws_callback_on_writable(wsi);
    }
    if (len && lws_write(wsi, base, len, LWS_WRITE_RAW) != static_cast<int>(len)) {
      fail("lws_write failed");
      return -1;
    }
    return 0;
  }

  int on_rx(lws* wsi, std::span<std::uint8_t> in) {
    if (!open_) {
      std::size_t used = 0;
      const auto r = response_.feed({reinterpret_cast<const char*>(in.data()), in.size()}, used);
      if (r == ws::HttpResponseHead::Result::need_more) return 0;
      const ws::UpgradeResult up = r == ws::HttpResponseHead::Result::done
                                       ? ws::check_upgrade_response(response_, upgrade_)
                                       : ws::UpgradeResult{};
      if (!up.ok || up.subprotocol != kSubprotocol) {
        fail("bad upgrade response: " + (up.error.empty() ? response_.error() : up.error));
        return -1;
      }
      opened();
      if (cfg_.upload) lws_callback_on_writable(wsi);
      in = in.subspan(used);
    }
    for (;;) {
      const ws::FrameEvent ev = decoder_.next(in);
      in = in.subspan(ev.consumed);
      switch (ev.kind) {
        case ws::FrameEvent::Kind::need_more:
          return failed() ? -1 : 0;
        case ws::FrameEvent::Kind::data:
          if (!ev.payload.empty()) received(ev.payload);
          if (complete()) {
            ended();  // the connection stays open for release()
            return 0;
          }
          break;
        case ws::FrameEvent::Kind::close:
          echo_close_ = !close_sent_;
          lws_callback_on_writable(wsi);
          break;
        case ws::FrameEvent::Kind::error:
          fail("WebSocket protocol error: " + std::string(ws::to_string(ev.error)));
          return -1;
        default:
          break;  // the server sends no pings
      }
    }
  }

  uv_loop_t* loop_;
  std::array<lws_protocols, 2> protocols_{};
  std::array<void*, 1> foreign_{};
  lws_context* ctx_ = nullptr;
  lws* wsi_ = nullptr;
  ws::UpgradeRequest upgrade_;
  ws::HttpResponseHead response_;
  ws::FrameDecoder decoder_{ws::Side::client, tunnel::kMaxFrameSize};
  Bytes tx_;
  bool request_sent_ = false;
  bool echo_close_ = false;
  bool close_sent_ = false;
  ws::MaskKeys mask_keys_;  // as ServiceLink's
};

}  // namespace

namespace {

enum class Transport { lws, ours };
const char* name(Transport t) { return t == Transport::lws ? "lws" : "ours"; }

struct RunResult {
  Transport transport;
  Figures client;
  Figures server;
};

constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kGiB = kMiB * 1024.0;

// Bounds a run: at the deadline the client connection is aborted and the
// server unblocked; if even that does not end the run, 5 s later the
// process exits.
struct Deadline {
  uv_timer_t timer{};
  ClientRun* client = nullptr;
  ProbeServer* server = nullptr;
  double seconds = 0;
  bool fired = false;

  void arm(ClientRun* c) {
    client = c;
    fired = false;
    timer.data = this;
    uv_timer_start(&timer, &Deadline::on_timer, static_cast<std::uint64_t>(seconds * 1000), 5000);
  }
  static void on_timer(uv_timer_t* t) {
    auto* self = static_cast<Deadline*>(t->data);
    if (self->fired) {
      std::fprintf(stderr, "transport-probe: the run did not end after its deadline; exiting\n");
      std::_Exit(1);
    }
    self->fired = true;
    char why[80];
    std::snprintf(why, sizeof why, "no result within the deadline of %g s (--deadline)",
                  self->seconds);
    self->client->abort(why);
    self->server->interrupt();
  }
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void print_run(std::size_t i, const RunResult& r, const Config& cfg, const std::string& span) {
  const Figures& c = r.client;
  const Figures& s = r.server;
  const double gib = static_cast<double>(c.bytes) / kGiB;
  std::printf(
      "run %2zu  %-4s  %8.1f MiB/s  client CPU %5.2f s (%5.2f s/GiB)  server CPU %5.2f s "
      "(%5.2f s/GiB)",
      i, name(r.transport), static_cast<double>(c.bytes) / kMiB / c.wall, c.cpu, c.cpu / gib, s.cpu,
      s.cpu / gib);
  // How the received bytes came in (download: the payload of one read or event).
  if (!cfg.upload && c.deliveries) {
    std::printf("  %.0f B per %s", static_cast<double>(c.bytes) / static_cast<double>(c.deliveries),
                span.c_str());
  }
  std::printf("\n");
}

void print_summary(const std::vector<RunResult>& runs, Transport t) {
  std::vector<double> mibs;
  std::vector<double> ccpu;
  std::vector<double> scpu;
  for (const RunResult& r : runs) {
    if (r.transport != t) continue;
    const double gib = static_cast<double>(r.client.bytes) / kGiB;
    mibs.push_back(static_cast<double>(r.client.bytes) / kMiB / r.client.wall);
    ccpu.push_back(r.client.cpu / gib);
    scpu.push_back(r.server.cpu / gib);
  }
  if (mibs.empty()) return;
  const auto [lo, hi] = std::minmax_element(mibs.begin(), mibs.end());
  const auto [clo, chi] = std::minmax_element(ccpu.begin(), ccpu.end());
  std::printf(
      "%-4s  %zu runs  median %8.1f MiB/s (%.1f..%.1f)  client %5.2f CPU-s/GiB (%.2f..%.2f)  "
      "server %5.2f CPU-s/GiB\n",
      name(t), mibs.size(), median(mibs), *lo, *hi, median(ccpu), *clo, *chi, median(scpu));
}

int probe(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress, also into a pipe
  std::string transport = "both";
  std::string direction = "download";
  std::string bytes_text = "1GiB";
  std::string verify = "stamps";
  std::string tls = "on";
  bool lws_info = false;
  int runs = 3;
  Config cfg;
  // What ProxySession puts in one WebSocket message: one DATA record with a
  // full payload (message.max_payload_size, default 64512 bytes).
  cfg.payload = tunnel::DataRecordFraming(1, tunnel::kMaxPayloadSize).record_size();
  CLI::App app{
      "transport-probe: the WebSocket client transport, libwebsockets RAW (lws) against\n"
      "tunnel::ServiceLink (ours), on one libuv loop against a loopback TLS server thread."};
  app.add_option("--transport", transport, "lws, ours or both (alternating)")
      ->check(CLI::IsMember({"lws", "ours", "both"}));
  app.add_option("--direction", direction, "download (server to client) or upload")
      ->check(CLI::IsMember({"download", "upload"}));
  app.add_option("--bytes", bytes_text, "payload bytes per run, e.g. 1GiB, 256MiB");
  app.add_option("--payload", cfg.payload, "payload bytes per WebSocket message")
      ->check(CLI::Range(std::size_t{1}, tunnel::kMaxFrameSize));
  app.add_option("--runs", runs, "runs per transport")->check(CLI::Range(1, 100));
  app.add_option("--verify", verify, "stamps (8 bytes in 4096) or full (every byte)")
      ->check(CLI::IsMember({"stamps", "full"}));
  app.add_option("--tls", tls, "on: TLS 1.3 on the connection; off: plain TCP (ws:// on loopback)")
      ->check(CLI::IsMember({"on", "off"}));
  app.add_option("--lws-batch", cfg.lws_batch, "lws upload: bytes of frames per lws_write")
      ->check(CLI::Range(std::size_t{1}, std::size_t{16} << 20));
  app.add_flag("--lws-info", lws_info, "libwebsockets' own log down to its info level (stderr)");
  app.add_option("--deadline", cfg.deadline_s, "seconds a run may take")
      ->check(CLI::Range(1.0, 3600.0));
  CLI11_PARSE(app, argc, argv);
  try {
    cfg.bytes = bench::parse_size(bytes_text);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transport-probe: --bytes: %s\n", e.what());
    return 1;
  }
  if (cfg.bytes == 0) {
    std::fprintf(stderr, "transport-probe: --bytes must be at least 1\n");
    return 1;
  }
  cfg.upload = direction == "upload";
  cfg.verify_full = verify == "full";
  cfg.tls = tls == "on";
  tunnel::logging::set_level(spdlog::level::warn);
  lws_set_log_level(lws_info ? LLL_ERR | LLL_WARN | LLL_NOTICE | LLL_INFO : LLL_ERR, nullptr);

  std::vector<Transport> order;
  if (transport != "ours") order.push_back(Transport::lws);
  if (transport != "lws") order.push_back(Transport::ours);

  ProbeServer server;
  uv_loop_t loop{};
  uv_loop_init(&loop);
  Deadline deadline;
  deadline.server = &server;
  deadline.seconds = cfg.deadline_s;
  uv_timer_init(&loop, &deadline.timer);

  std::printf("%s, TLS %s, %.0f MiB per run, %zu-byte messages, verify %s; load average %s\n",
              direction.c_str(), tls.c_str(), static_cast<double>(cfg.bytes) / kMiB, cfg.payload,
              verify.c_str(), bench::load_average().c_str());
  std::vector<RunResult> results;
  for (int round = 0; round < runs; ++round) {
    // Alternate which transport goes first, so drift in the machine's load
    // does not favour one.
    if (round % 2) std::reverse(order.begin(), order.end());
    for (const Transport t : order) {
      server.start(cfg);
      RunResult r{t, {}, {}};
      std::string label;
      try {
        std::unique_ptr<ClientRun> c;
        if (t == Transport::lws) {
          c = std::make_unique<LwsClient>(&loop, cfg, server.port());
        } else {
          c = std::make_unique<OursClient>(&loop, cfg, server.port());
        }
        deadline.arm(c.get());
        // Ended at once (connect failed): only consume its uv_stop().
        uv_run(&loop, c->has_ended() ? UV_RUN_NOWAIT : UV_RUN_DEFAULT);
        uv_timer_stop(&deadline.timer);
        if (!c->figures().error.empty()) server.interrupt();
        c->release();
        r.client = c->figures();
        label = c->span_label();
      } catch (const std::exception& e) {
        r.client.error = e.what();
        server.interrupt();
      }
      r.server = server.join();
      if (!r.client.error.empty() || !r.server.error.empty()) {
        // The loop may hold handles of a failed connection: no teardown.
        std::fprintf(stderr, "transport-probe: %s: %s\n", name(t),
                     (r.client.error.empty() ? r.server.error : r.client.error).c_str());
        return 1;
      }
      results.push_back(r);
      print_run(results.size(), r, cfg, label);
      if (results.size() == 1) std::printf("        TLS: %s\n", r.server.tls.c_str());
    }
    if (round % 2) std::reverse(order.begin(), order.end());
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&deadline.timer), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  const int closed = uv_loop_close(&loop);
  for (const Transport t : order) print_summary(results, t);
  std::printf("load average at the end %s\n", bench::load_average().c_str());
  if (closed != 0) {
    std::fprintf(stderr, "transport-probe: handles left on the loop at exit\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return probe(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "transport-probe: %s\n", e.what());
    return 1;
  }
}
