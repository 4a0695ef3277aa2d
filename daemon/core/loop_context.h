// What every connection on one libuv loop shares: the loop, one OpenSSL
// client context per trust configuration (so tunneld's many sessions load
// each trust store once), the read buffer, and the deferred work of the
// WebSocket connections (writes batched after the I/O phase, reads and ends
// delivered on the next iteration), which costs two loop handles per loop
// instead of three per connection.
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <cstdint>
#include <list>
#include <span>
#include <string>
#include <vector>

namespace tunnel {

class WsConnection;

struct TlsTrust {
  std::string capath;  // extra hashed CA directory (openssl rehash)
  std::string cafile;  // extra CA bundle
  bool operator==(const TlsTrust&) const = default;
};

// The thread's read buffer (one loop per thread): a reader fills it and hands
// the bytes on before anything else runs, so idle connections hold no read
// buffer of their own. At least `size` bytes.
inline constexpr std::size_t kSharedReadBufferSize = std::size_t{256} * 1024;
std::span<std::uint8_t> shared_read_buffer(std::size_t size = kSharedReadBufferSize);

// Sets what OpenSSL does on the engine's sockets, client and server alike:
// partial writes (SSL_write returns after whole records) from a buffer that
// may have moved, buffers released while idle, and read-ahead of 64 KiB per
// read(2) instead of a 5-byte header and then a body.
void configure_tls_io(SSL_CTX* ctx);

class LoopContext {
 public:
  explicit LoopContext(uv_loop_t* loop);
  ~LoopContext();
  LoopContext(const LoopContext&) = delete;
  LoopContext& operator=(const LoopContext&) = delete;

  uv_loop_t* loop() const { return loop_; }

  // The client TLS context for a trust configuration, created once and
  // cached: TLS 1.2 at least, the system CA directory (read lazily) plus the
  // configured anchors, peer verification on (a connection that runs with
  // -k turns it off on its own). Never null; throws std::runtime_error with
  // a user-facing message (e.g. an unreadable CA file).
  SSL_CTX* client_tls(const TlsTrust& trust);

  // Deferred work of WsConnection (it calls these, never an owner):
  // write in this iteration's check phase, after every I/O callback of the
  // iteration had its say; run again (read on, deliver the end) in the next
  // iteration's idle phase.
  void defer_write(WsConnection& c);
  void defer_next(WsConnection& c);
  // `c` is going away: drop it from the lists.
  void forget(WsConnection& c);

 private:
  struct Handles;  // freed from their close callbacks
  void run_writes();
  void run_next();

  uv_loop_t* loop_;
  struct Entry {
    TlsTrust trust;
    SSL_CTX* ctx = nullptr;
  };
  std::list<Entry> contexts_;
  Handles* h_ = nullptr;
  std::vector<WsConnection*> write_list_;
  std::vector<WsConnection*> next_list_;
  std::vector<WsConnection*> running_writes_;  // the list being run
  std::vector<WsConnection*> running_next_;
};

}  // namespace tunnel
