// socket-probe: can tunneld's socket design run on Windows sockets?
//
// The engine drives its own non-blocking sockets with uv_poll and runs
// OpenSSL directly on them (SSL_set_fd). libuv documents uv_poll on Windows
// as supported for sockets only, through a different mechanism (AFD polling)
// than on Linux. This program checks, on one loop in one process:
//
//   events   uv_poll on a SOCKET reports: a listener readable on an incoming
//            connection, a connecting socket writable once connected, data
//            readable, an orderly close readable (recv() then returns 0), and
//            writable again after the send buffer was filled and drained;
//   poll     a TLS 1.3 transfer of N MiB each way at once (default 64) between
//            two sockets, OpenSSL on the sockets, non-blocking SSL_read /
//            SSL_write driven by uv_poll, SHA-256 of both streams compared;
//   bio      the same transfer on libuv's own TCP handles, OpenSSL on memory
//            BIOs (the alternative design).
//
// It prints one PASS/FAIL line per check with its figures, and exits 0 only
// if all passed. It builds on Linux and Windows alike, so the two designs are
// measured on both.
//
//   socket-probe [--mib N] [--mode all|events|poll|bio]
// Winsock first: <windows.h> brings wincrypt.h, whose X509_NAME macro
// OpenSSL's headers undefine only when they come after it.
#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#else
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#endif

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <uv.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

int g_failures = 0;

void report(bool ok, std::string_view check, const std::string& detail) {
  std::printf("%s socket-probe %.*s: %s\n", ok ? "PASS" : "FAIL", static_cast<int>(check.size()),
              check.data(), detail.c_str());
  std::fflush(stdout);
  if (!ok) ++g_failures;
}

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return "no OpenSSL error queued";
  char text[256];
  ERR_error_string_n(e, text, sizeof text);
  return text;
}

// ---- Portable socket calls --------------------------------------------------

#ifdef _WIN32
using Socket = SOCKET;
constexpr Socket kNoSocket = INVALID_SOCKET;
int last_socket_error() { return WSAGetLastError(); }
bool would_block(int e) { return e == WSAEWOULDBLOCK; }
bool connect_in_progress(int e) { return e == WSAEWOULDBLOCK || e == WSAEINPROGRESS; }
void close_socket(Socket s) { ::closesocket(s); }
bool set_nonblocking(Socket s) {
  u_long on = 1;
  return ::ioctlsocket(s, FIONBIO, &on) == 0;
}
#else
using Socket = int;
constexpr Socket kNoSocket = -1;
int last_socket_error() { return errno; }
bool would_block(int e) { return e == EAGAIN || e == EWOULDBLOCK; }
bool connect_in_progress(int e) { return e == EINPROGRESS; }
void close_socket(Socket s) { ::close(s); }
bool set_nonblocking(Socket s) {
  const int flags = ::fcntl(s, F_GETFL);
  return flags >= 0 && ::fcntl(s, F_SETFL, flags | O_NONBLOCK) == 0;
}
#endif

std::string socket_error_text(int e) {
#ifdef _WIN32
  return "winsock error " + std::to_string(e);
#else
  return std::strerror(e);
#endif
}

Socket tcp_socket() {
  const Socket s = ::socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
  if (s == kNoSocket) return s;
  if (!set_nonblocking(s)) {
    close_socket(s);
    return kNoSocket;
  }
  int one = 1;
  ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one), sizeof one);
  return s;
}

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// A non-blocking listener on 127.0.0.1 and an ephemeral port.
Socket listen_loopback(std::uint16_t* port) {
  const Socket s = tcp_socket();
  if (s == kNoSocket) return s;
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(s, 8) != 0 ||
      ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close_socket(s);
    return kNoSocket;
  }
  *port = ntohs(a.sin_port);
  return s;
}

// ---- A throwaway certificate --------------------------------------------------

struct Tls {
  SSL_CTX* server = nullptr;
  SSL_CTX* client = nullptr;
  ~Tls() {
    SSL_CTX_free(server);
    SSL_CTX_free(client);
  }
};

// A P-256 key and a self-signed certificate for "probe.invalid", trusted by
// the client context, which verifies the peer and its name like the engine.
bool make_tls(Tls& tls) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  bool ok = key != nullptr && cert != nullptr;
  if (ok) {
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -60);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                               reinterpret_cast<const unsigned char*>("probe.invalid"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    ok = X509_sign(cert, key, EVP_sha256()) > 0;
  }
  if (ok) {
    tls.server = SSL_CTX_new(TLS_server_method());
    tls.client = SSL_CTX_new(TLS_client_method());
    ok = tls.server && tls.client && SSL_CTX_use_certificate(tls.server, cert) == 1 &&
         SSL_CTX_use_PrivateKey(tls.server, key) == 1 &&
         X509_STORE_add_cert(SSL_CTX_get_cert_store(tls.client), cert) == 1;
  }
  if (ok) {
    for (SSL_CTX* ctx : {tls.server, tls.client}) {
      SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
      // As the engine does: partial writes, a moving write buffer.
      SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE);
    }
    SSL_CTX_set_verify(tls.client, SSL_VERIFY_PEER, nullptr);
  }
  X509_free(cert);
  EVP_PKEY_free(key);
  return ok;
}

// ---- One end of a transfer -----------------------------------------------------

// Deterministic bytes (xorshift64*) so that nothing needs to be kept: each
// side hashes what it sends and what it receives.
class ByteSource {
 public:
  explicit ByteSource(std::uint64_t seed) : state_(seed | 1) {}
  void fill(unsigned char* out, std::size_t n) {
    for (std::size_t i = 0; i < n; i += 8) {
      state_ ^= state_ >> 12;
      state_ ^= state_ << 25;
      state_ ^= state_ >> 27;
      const std::uint64_t v = state_ * 0x2545F4914F6CDD1DULL;
      std::memcpy(out + i, &v, n - i < 8 ? n - i : 8);
    }
  }

 private:
  std::uint64_t state_;
};

class Digest {
 public:
  Digest() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Digest() { EVP_MD_CTX_free(ctx_); }
  Digest(const Digest&) = delete;
  Digest& operator=(const Digest&) = delete;
  void update(const unsigned char* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
  std::string hex() {
    if (hex_.empty()) {
      unsigned char md[32];
      unsigned len = 0;
      EVP_DigestFinal_ex(ctx_, md, &len);
      static const char digits[] = "0123456789abcdef";
      for (unsigned i = 0; i < len; ++i) {
        hex_ += digits[md[i] >> 4];
        hex_ += digits[md[i] & 15];
      }
    }
    return hex_;
  }

 private:
  EVP_MD_CTX* ctx_;
  std::string hex_;
};

constexpr std::size_t kChunk = 16 * 1024;

// TLS on one end: handshake, then send `to_send` bytes while receiving
// whatever the peer sends, then close_notify. The transport (socket or
// memory BIO) is the caller's; pump() reports what it waits for.
struct TlsEnd {
  std::string name;
  SSL* ssl = nullptr;
  std::uint64_t to_send = 0;
  std::uint64_t sent = 0;
  std::uint64_t received = 0;
  ByteSource source;
  Digest sent_hash;
  Digest received_hash;
  std::array<unsigned char, kChunk> chunk{};
  std::size_t chunk_off = 0;
  std::size_t chunk_len = 0;
  bool handshake_done = false;
  bool shutdown_sent = false;
  bool peer_closed = false;
  bool want_write = false;  // the socket must become writable before we can go on
  bool failed = false;
  std::string error;
  // The bio transport stops producing while its write queue is long.
  std::function<bool()> may_produce = [] { return true; };

  TlsEnd(std::string n, SSL* s, std::uint64_t bytes, std::uint64_t seed)
      : name(std::move(n)), ssl(s), to_send(bytes), source(seed) {}
  ~TlsEnd() { SSL_free(ssl); }

  bool done() const { return failed || (shutdown_sent && peer_closed); }

  void fail(std::string what) {
    if (failed) return;
    failed = true;
    error = name + ": " + what;
  }

  // Returns after every operation would block. want_write tells the socket
  // transport to wait for writability.
  void pump() {
    want_write = false;
    if (failed) return;
    if (!handshake_done) {
      const int rc = SSL_do_handshake(ssl);
      if (rc != 1) {
        const int err = SSL_get_error(ssl, rc);
        if (err == SSL_ERROR_WANT_WRITE) want_write = true;
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
          fail("handshake: " + openssl_error());
        }
        return;
      }
      handshake_done = true;
    }
    read_all();
    if (!failed) write_all();
  }

  void read_all() {
    unsigned char buf[64 * 1024];
    while (!peer_closed) {
      std::size_t got = 0;
      const int rc = SSL_read_ex(ssl, buf, sizeof buf, &got);
      if (rc == 1) {
        received += got;
        received_hash.update(buf, got);
        continue;
      }
      switch (SSL_get_error(ssl, rc)) {
        case SSL_ERROR_WANT_READ:
          return;
        case SSL_ERROR_WANT_WRITE:
          want_write = true;
          return;
        case SSL_ERROR_ZERO_RETURN:
          peer_closed = true;
          return;
        default:
          fail("SSL_read: " + openssl_error());
          return;
      }
    }
  }

  void write_all() {
    while (sent < to_send || chunk_off < chunk_len) {
      if (chunk_off == chunk_len) {
        if (!may_produce()) return;
        chunk_len = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, to_send - sent));
        chunk_off = 0;
        source.fill(chunk.data(), chunk_len);
        sent_hash.update(chunk.data(), chunk_len);
        sent += chunk_len;
      }
      std::size_t put = 0;
      const int rc = SSL_write_ex(ssl, chunk.data() + chunk_off, chunk_len - chunk_off, &put);
      if (rc == 1) {
        chunk_off += put;
        continue;
      }
      const int err = SSL_get_error(ssl, rc);
      if (err == SSL_ERROR_WANT_WRITE) want_write = true;
      if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ) {
        fail("SSL_write: " + openssl_error());
      }
      return;
    }
    if (!shutdown_sent) {
      const int rc = SSL_shutdown(ssl);
      if (rc >= 0) {
        shutdown_sent = true;
      } else {
        const int err = SSL_get_error(ssl, rc);
        if (err == SSL_ERROR_WANT_WRITE) want_write = true;
        if (err != SSL_ERROR_WANT_WRITE && err != SSL_ERROR_WANT_READ) {
          fail("SSL_shutdown: " + openssl_error());
        }
      }
    }
  }
};

struct TransferResult {
  bool ok = false;
  std::string detail;
};

std::string mib_per_s(std::uint64_t bytes, double seconds) {
  char text[64];
  std::snprintf(text, sizeof text, "%.1f MiB/s", seconds > 0 ? bytes / 1048576.0 / seconds : 0.0);
  return text;
}

double cpu_seconds() {
  uv_rusage_t u{};
  uv_getrusage(&u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

TransferResult judge(TlsEnd& a, TlsEnd& b, std::uint64_t bytes, Clock::time_point start,
                     double cpu_start, bool timed_out) {
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = cpu_seconds() - cpu_start;
  TransferResult r;
  if (timed_out) {
    r.detail = "timed out after " + std::to_string(secs) + " s (sent " + std::to_string(a.sent) +
               "/" + std::to_string(b.sent) + ", received " + std::to_string(a.received) + "/" +
               std::to_string(b.received) + ")";
    return r;
  }
  if (a.failed || b.failed) {
    r.detail = a.failed ? a.error : b.error;
    return r;
  }
  const bool counts = a.received == bytes && b.received == bytes;
  const bool hashes =
      a.sent_hash.hex() == b.received_hash.hex() && b.sent_hash.hex() == a.received_hash.hex();
  r.ok = counts && hashes;
  char text[256];
  std::snprintf(
      text, sizeof text, "%llu MiB each way in %.2f s: %s both ways together, %.2f CPU-s; %s",
      static_cast<unsigned long long>(bytes >> 20), secs, mib_per_s(2 * bytes, secs).c_str(), cpu,
      !counts  ? "byte counts differ"
      : hashes ? "SHA-256 match"
               : "SHA-256 MISMATCH");
  r.detail = text;
  if (counts && hashes) r.detail += " (" + a.sent_hash.hex().substr(0, 16) + "...)";
  return r;
}

// ---- Design 1: our own sockets, uv_poll, OpenSSL on the socket ---------------

struct PollEnd {
  TlsEnd tls;
  Socket fd;
  uv_poll_t poll{};
  int events = 0;
  bool closed = false;

  PollEnd(std::string name, SSL* ssl, Socket s, std::uint64_t bytes, std::uint64_t seed)
      : tls(std::move(name), ssl, bytes, seed), fd(s) {}

  void update() {
    tls.pump();
    if (tls.done()) {
      stop();
      return;
    }
    // Readable always (data, alerts, close_notify); writable only when a
    // write would block.
    const int want = UV_READABLE | (tls.want_write ? UV_WRITABLE : 0);
    if (want != events) {
      events = want;
      uv_poll_start(&poll, want, [](uv_poll_t* p, int status, int) {
        auto* self = static_cast<PollEnd*>(p->data);
        if (status < 0) {
          self->tls.fail(std::string("poll: ") + uv_strerror(status));
          self->stop();
          return;
        }
        self->update();
      });
    }
  }

  void stop() {
    if (closed) return;
    closed = true;
    uv_poll_stop(&poll);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), nullptr);
  }
};

// Connects a client socket to a listener, both non-blocking, without the
// loop (the events check tests the loop's view of the same steps).
bool connected_pair(Socket* client, Socket* server, std::string* error) {
  std::uint16_t port = 0;
  const Socket listener = listen_loopback(&port);
  if (listener == kNoSocket) {
    *error = "listen: " + socket_error_text(last_socket_error());
    return false;
  }
  *client = tcp_socket();
  sockaddr_in a = loopback(port);
  if (::connect(*client, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 &&
      !connect_in_progress(last_socket_error())) {
    *error = "connect: " + socket_error_text(last_socket_error());
    close_socket(listener);
    return false;
  }
  *server = kNoSocket;
  for (int i = 0; i < 500 && *server == kNoSocket; ++i) {
    *server = ::accept(listener, nullptr, nullptr);
    if (*server == kNoSocket) uv_sleep(10);
  }
  close_socket(listener);
  if (*server == kNoSocket) {
    *error = "accept: " + socket_error_text(last_socket_error());
    return false;
  }
  set_nonblocking(*server);
  int one = 1;
  ::setsockopt(*server, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one), sizeof one);
  return true;
}

TransferResult transfer_poll(Tls& tls, std::uint64_t bytes) {
  Socket cs = kNoSocket;
  Socket ss = kNoSocket;
  std::string error;
  if (!connected_pair(&cs, &ss, &error)) return {false, error};

  SSL* cssl = SSL_new(tls.client);
  SSL* sssl = SSL_new(tls.server);
  // SSL_set_fd takes an int; a Windows SOCKET is a small kernel handle value,
  // as OpenSSL itself assumes for its socket BIO.
  SSL_set_fd(cssl, static_cast<int>(cs));
  SSL_set_fd(sssl, static_cast<int>(ss));
  SSL_set1_host(cssl, "probe.invalid");
  SSL_set_tlsext_host_name(cssl, "probe.invalid");
  SSL_set_connect_state(cssl);
  SSL_set_accept_state(sssl);

  uv_loop_t loop;
  uv_loop_init(&loop);
  auto client = std::make_unique<PollEnd>("client", cssl, cs, bytes, 1);
  auto server = std::make_unique<PollEnd>("server", sssl, ss, bytes, 2);
  bool timed_out = false;
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  timer.data = &timed_out;
  const Clock::time_point start = Clock::now();
  const double cpu_start = cpu_seconds();
  for (PollEnd* e : {client.get(), server.get()}) {
    uv_poll_init_socket(&loop, &e->poll, e->fd);
    e->poll.data = e;
    e->update();
  }
  // Generous: under Wine and on a loaded machine the transfer is slower.
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        *static_cast<bool*>(t->data) = true;
        uv_stop(t->loop);
      },
      static_cast<std::uint64_t>(60'000 + bytes / 1024), 0);
  uv_unref(reinterpret_cast<uv_handle_t*>(&timer));
  uv_run(&loop, UV_RUN_DEFAULT);
  TransferResult r = judge(client->tls, server->tls, bytes, start, cpu_start, timed_out);
  client->stop();
  server->stop();
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  close_socket(cs);
  close_socket(ss);
  return r;
}

// ---- Design 2: libuv TCP handles, OpenSSL on memory BIOs ---------------------

struct BioEnd {
  TlsEnd tls;
  uv_tcp_t tcp{};
  BIO* rbio;  // owned by the SSL
  BIO* wbio;
  bool closed = false;
  bool handle_open = false;
  std::function<void()> on_done;

  // Bytes handed to libuv and not yet written: the bound on what waits.
  static constexpr std::size_t kMaxQueued = 256 * 1024;

  BioEnd(std::string name, SSL* ssl, std::uint64_t bytes, std::uint64_t seed)
      : tls(std::move(name), ssl, bytes, seed),
        rbio(BIO_new(BIO_s_mem())),
        wbio(BIO_new(BIO_s_mem())) {
    BIO_set_mem_eof_return(rbio, -1);  // an empty read BIO means "want read"
    SSL_set_bio(ssl, rbio, wbio);
    tls.may_produce = [this] {
      return uv_stream_get_write_queue_size(reinterpret_cast<uv_stream_t*>(&tcp)) < kMaxQueued;
    };
  }

  void start() {
    handle_open = true;
    tcp.data = this;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&tcp),
        [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
          static char storage[64 * 1024];
          *buf = uv_buf_init(storage, sizeof storage);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* self = static_cast<BioEnd*>(s->data);
          if (n < 0) {
            if (!self->tls.done()) self->tls.fail(std::string("read: ") + uv_strerror(n));
            self->finish();
            return;
          }
          BIO_write(self->rbio, buf->base, static_cast<int>(n));
          self->update();
        });
    update();
  }

  void update() {
    tls.pump();
    flush();
    if (tls.done()) finish();
  }

  // Moves what OpenSSL produced into one uv_write.
  void flush() {
    const int pending = static_cast<int>(BIO_ctrl_pending(wbio));
    if (pending <= 0 || closed) return;
    struct Write {
      uv_write_t req{};
      std::vector<char> data;
      BioEnd* end;
    };
    auto* w = new Write;
    w->end = this;
    w->data.resize(static_cast<std::size_t>(pending));
    BIO_read(wbio, w->data.data(), pending);
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    w->req.data = w;
    const int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp), &buf, 1,
                            [](uv_write_t* req, int status) {
                              auto* write = static_cast<Write*>(req->data);
                              BioEnd* end = write->end;
                              delete write;
                              if (status == UV_ECANCELED) return;
                              if (status < 0) {
                                end->tls.fail(std::string("write: ") + uv_strerror(status));
                                end->finish();
                                return;
                              }
                              // Room in the queue again: produce more.
                              if (!end->tls.done()) end->update();
                            });
    if (rc != 0) {
      delete w;
      tls.fail(std::string("uv_write: ") + uv_strerror(rc));
    }
  }

  void finish() {
    if (closed) return;
    closed = true;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp));
    if (on_done) on_done();
  }
};

TransferResult transfer_bio(Tls& tls, std::uint64_t bytes) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_tcp_t listener;
  uv_tcp_init(&loop, &listener);
  sockaddr_in a = loopback(0);
  uv_tcp_bind(&listener, reinterpret_cast<const sockaddr*>(&a), 0);
  int len = sizeof a;
  uv_tcp_getsockname(&listener, reinterpret_cast<sockaddr*>(&a), &len);

  SSL* cssl = SSL_new(tls.client);
  SSL* sssl = SSL_new(tls.server);
  SSL_set1_host(cssl, "probe.invalid");
  SSL_set_tlsext_host_name(cssl, "probe.invalid");
  SSL_set_connect_state(cssl);
  SSL_set_accept_state(sssl);
  auto client = std::make_unique<BioEnd>("client", cssl, bytes, 1);
  auto server = std::make_unique<BioEnd>("server", sssl, bytes, 2);
  uv_tcp_init(&loop, &client->tcp);
  uv_tcp_init(&loop, &server->tcp);
  uv_tcp_nodelay(&client->tcp, 1);

  struct Run {
    BioEnd* client = nullptr;
    BioEnd* server = nullptr;
    uv_tcp_t* listener = nullptr;
    int done = 0;
    bool timed_out = false;
    std::string setup_error;
  };
  Run run;
  run.client = client.get();
  run.server = server.get();
  run.listener = &listener;
  auto on_done = [&run, &loop] {
    if (++run.done == 2) uv_stop(&loop);
  };
  client->on_done = on_done;
  server->on_done = on_done;

  listener.data = &run;
  uv_listen(reinterpret_cast<uv_stream_t*>(&listener), 4, [](uv_stream_t* l, int status) {
    auto* r = static_cast<Run*>(l->data);
    if (status != 0 || uv_accept(l, reinterpret_cast<uv_stream_t*>(&r->server->tcp)) != 0) {
      r->setup_error = "accept failed";
      uv_stop(l->loop);
      return;
    }
    uv_tcp_nodelay(&r->server->tcp, 1);
    r->server->start();
  });
  uv_connect_t connect;
  connect.data = &run;
  const Clock::time_point start = Clock::now();
  const double cpu_start = cpu_seconds();
  uv_tcp_connect(&connect, &client->tcp, reinterpret_cast<const sockaddr*>(&a),
                 [](uv_connect_t* req, int status) {
                   auto* r = static_cast<Run*>(req->data);
                   if (status != 0) {
                     r->setup_error = std::string("connect: ") + uv_strerror(status);
                     uv_stop(req->handle->loop);
                     return;
                   }
                   r->client->start();
                 });
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  timer.data = &run;
  uv_timer_start(
      &timer,
      [](uv_timer_t* t) {
        static_cast<Run*>(t->data)->timed_out = true;
        uv_stop(t->loop);
      },
      static_cast<std::uint64_t>(60'000 + bytes / 1024), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  TransferResult r = run.setup_error.empty()
                         ? judge(client->tls, server->tls, bytes, start, cpu_start, run.timed_out)
                         : TransferResult{false, run.setup_error};
  for (uv_handle_t* h :
       {reinterpret_cast<uv_handle_t*>(&timer), reinterpret_cast<uv_handle_t*>(&listener),
        reinterpret_cast<uv_handle_t*>(&client->tcp),
        reinterpret_cast<uv_handle_t*>(&server->tcp)}) {
    if (!uv_is_closing(h)) uv_close(h, nullptr);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return r;
}

// ---- uv_poll events on a SOCKET -----------------------------------------------

// Runs the loop until `events` are reported on `s` (or 5 s pass); returns
// the events seen.
int wait_for(uv_loop_t* loop, Socket s, int events) {
  struct Wait {
    int seen = 0;
  } wait;
  uv_poll_t poll;
  uv_poll_init_socket(loop, &poll, s);
  poll.data = &wait;
  uv_poll_start(&poll, events, [](uv_poll_t* p, int status, int ev) {
    auto* w = static_cast<Wait*>(p->data);
    w->seen = status < 0 ? -1 : ev;
    uv_poll_stop(p);
  });
  uv_timer_t timer;
  uv_timer_init(loop, &timer);
  timer.data = &poll;
  uv_timer_start(
      &timer, [](uv_timer_t* t) { uv_poll_stop(static_cast<uv_poll_t*>(t->data)); }, 5000, 0);
  while (wait.seen == 0 && uv_is_active(reinterpret_cast<uv_handle_t*>(&poll))) {
    uv_run(loop, UV_RUN_ONCE);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&poll), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return wait.seen;
}

void check_events() {
  uv_loop_t loop;
  uv_loop_init(&loop);
  std::uint16_t port = 0;
  const Socket listener = listen_loopback(&port);
  const Socket client = tcp_socket();
  sockaddr_in a = loopback(port);
  const int rc = ::connect(client, reinterpret_cast<sockaddr*>(&a), sizeof a);
  const int connect_error = rc == 0 ? 0 : last_socket_error();
  report(rc == 0 || connect_in_progress(connect_error), "events: non-blocking connect",
         rc == 0 ? "connected at once" : "in progress (" + socket_error_text(connect_error) + ")");

  int ev = wait_for(&loop, listener, UV_READABLE);
  report(ev > 0 && (ev & UV_READABLE), "events: listener readable on a connection",
         "events " + std::to_string(ev));
  Socket server = ::accept(listener, nullptr, nullptr);
  report(server != kNoSocket, "events: accept after readable",
         server != kNoSocket ? "accepted" : socket_error_text(last_socket_error()));
  if (server == kNoSocket) return;
  set_nonblocking(server);

  ev = wait_for(&loop, client, UV_WRITABLE);
  int so_error = 0;
  socklen_t so_len = sizeof so_error;
  ::getsockopt(client, SOL_SOCKET, SO_ERROR, reinterpret_cast<char*>(&so_error), &so_len);
  report(ev > 0 && (ev & UV_WRITABLE) && so_error == 0, "events: connecting socket writable",
         "events " + std::to_string(ev) + ", SO_ERROR " + std::to_string(so_error));

  // Nothing to read yet: readable must not be reported within 200 ms.
  {
    uv_poll_t poll;
    uv_poll_init_socket(&loop, &poll, server);
    int seen = 0;
    poll.data = &seen;
    uv_poll_start(&poll, UV_READABLE,
                  [](uv_poll_t* p, int, int e) { *static_cast<int*>(p->data) = e; });
    const std::uint64_t until = uv_now(&loop) + 200;
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    uv_timer_start(
        &timer, [](uv_timer_t*) {}, 200, 0);
    while (uv_now(&loop) < until && seen == 0) uv_run(&loop, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    report(seen == 0, "events: idle socket not readable",
           seen == 0 ? "no event in 200 ms" : "events " + std::to_string(seen));
  }

  const char byte = 'x';
  ::send(client, &byte, 1, 0);
  ev = wait_for(&loop, server, UV_READABLE);
  char got = 0;
  const auto n = ::recv(server, &got, 1, 0);
  report(ev > 0 && (ev & UV_READABLE) && n == 1 && got == 'x', "events: data readable",
         "events " + std::to_string(ev) + ", recv " + std::to_string(n));

  // Fill the client's send path until it would block, then drain it on the
  // server side: writable must come back.
  std::vector<char> block(64 * 1024, 'y');
  std::uint64_t queued = 0;
  for (;;) {
    const auto w = ::send(client, block.data(), static_cast<int>(block.size()), 0);
    if (w > 0) {
      queued += static_cast<std::uint64_t>(w);
      continue;
    }
    break;
  }
  const int fill_error = last_socket_error();
  std::vector<char> sink(256 * 1024);
  std::uint64_t drained = 0;
  int writable = 0;
  {
    struct State {
      Socket server;
      std::vector<char>* sink;
      std::uint64_t* drained;
      int* writable;
    } state{server, &sink, &drained, &writable};
    uv_poll_t spoll;
    uv_poll_t cpoll;
    uv_poll_init_socket(&loop, &spoll, server);
    uv_poll_init_socket(&loop, &cpoll, client);
    spoll.data = &state;
    cpoll.data = &state;
    uv_poll_start(&spoll, UV_READABLE, [](uv_poll_t* p, int, int) {
      auto* s = static_cast<State*>(p->data);
      for (;;) {
        const auto r = ::recv(s->server, s->sink->data(), static_cast<int>(s->sink->size()), 0);
        if (r <= 0) break;
        *s->drained += static_cast<std::uint64_t>(r);
      }
    });
    uv_poll_start(&cpoll, UV_WRITABLE, [](uv_poll_t* p, int, int e) {
      *static_cast<State*>(p->data)->writable = e;
      uv_poll_stop(p);
    });
    uv_timer_t timer;
    uv_timer_init(&loop, &timer);
    uv_timer_start(
        &timer, [](uv_timer_t*) {}, 5000, 0);
    const std::uint64_t until = uv_now(&loop) + 5000;
    while (writable == 0 && uv_now(&loop) < until) uv_run(&loop, UV_RUN_ONCE);
    for (uv_handle_t* h :
         {reinterpret_cast<uv_handle_t*>(&spoll), reinterpret_cast<uv_handle_t*>(&cpoll),
          reinterpret_cast<uv_handle_t*>(&timer)}) {
      uv_close(h, nullptr);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  report(would_block(fill_error) && (writable & UV_WRITABLE),
         "events: writable again after a full send buffer",
         std::to_string(queued >> 10) + " KiB queued until " + socket_error_text(fill_error) +
             ", " + std::to_string(drained >> 10) + " KiB drained, events " +
             std::to_string(writable));
  // Drain the rest so that the close below is seen right after the data.
  while (drained < queued) {
    const auto r = ::recv(server, sink.data(), static_cast<int>(sink.size()), 0);
    if (r > 0) {
      drained += static_cast<std::uint64_t>(r);
    } else if (wait_for(&loop, server, UV_READABLE) <= 0) {
      break;
    }
  }

#ifdef _WIN32
  ::shutdown(client, SD_SEND);
#else
  ::shutdown(client, SHUT_WR);
#endif
  ev = wait_for(&loop, server, UV_READABLE);
  const auto eof = ::recv(server, &got, 1, 0);
  report(ev > 0 && (ev & UV_READABLE) && eof == 0, "events: orderly close readable, recv 0",
         "events " + std::to_string(ev) + ", recv " + std::to_string(eof));

#ifdef _WIN32
  {
    // libuv polls a socket of a Microsoft base provider with AFD requests on
    // its loop's completion port ("fast"), any other with a select() thread
    // per handle ("slow"). The flag is libuv-internal (UV_HANDLE_POLL_SLOW
    // in src/uv-common.h of libuv 1.44); shown for the record only.
    constexpr unsigned kPollSlowFlag = 0x01000000;
    uv_poll_t poll;
    uv_poll_init_socket(&loop, &poll, server);
    const bool slow = (poll.flags & kPollSlowFlag) != 0;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll), nullptr);
    uv_run(&loop, UV_RUN_NOWAIT);
    report(true, "events: libuv's poll mechanism",
           slow ? "slow (a select() thread per handle)" : "fast (AFD poll on the loop's IOCP)");
  }
#endif

  close_socket(client);
  close_socket(server);
  close_socket(listener);
  uv_run(&loop, UV_RUN_DEFAULT);
  report(uv_loop_close(&loop) == 0, "events: loop closes", "uv_loop_close 0");
}

}  // namespace

int main(int argc, char** argv) {
#ifndef _WIN32
  std::signal(SIGPIPE, SIG_IGN);
#endif
  std::uint64_t mib = 64;
  std::string mode = "all";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--mib" && i + 1 < argc) {
      mib = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--mode" && i + 1 < argc) {
      mode = argv[++i];
    } else {
      std::fprintf(stderr, "usage: socket-probe [--mib N] [--mode all|events|poll|bio]\n");
      return 2;
    }
  }
  if (mode != "all" && mode != "events" && mode != "poll" && mode != "bio") {
    std::fprintf(stderr, "socket-probe: unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  std::printf("socket-probe: libuv %s, %s\n", uv_version_string(),
              OpenSSL_version(OPENSSL_VERSION));

  // libuv starts Winsock when the first loop is created; the events check
  // and design 1 use sockets before that.
  uv_loop_t init;
  uv_loop_init(&init);
  uv_loop_close(&init);

  if (mode == "all" || mode == "events") check_events();

  Tls tls;
  if (!make_tls(tls)) {
    report(false, "tls setup", openssl_error());
    return 1;
  }
  const std::uint64_t bytes = mib << 20;
  if (mode == "all" || mode == "poll") {
    const TransferResult r = transfer_poll(tls, bytes);
    report(r.ok, "poll: TLS on the socket, uv_poll", r.detail);
  }
  if (mode == "all" || mode == "bio") {
    const TransferResult r = transfer_bio(tls, bytes);
    report(r.ok, "bio: TLS on memory BIOs, uv_tcp", r.detail);
  }
  std::printf("socket-probe: %d failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
