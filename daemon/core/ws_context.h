// What every service link of a process shares: the host's libuv loop and one
// OpenSSL client context per trust configuration (CA file, CA directory), so
// that tunneld's many sessions load each trust store once.
#pragma once

#include <openssl/ssl.h>
#include <uv.h>

#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <string>

namespace tunnel {

struct TlsTrust {
  std::string capath;  // extra hashed CA directory (openssl rehash)
  std::string cafile;  // extra CA bundle
  bool operator==(const TlsTrust&) const = default;
};

class WsContext {
 public:
  explicit WsContext(uv_loop_t* loop);
  ~WsContext();
  WsContext(const WsContext&) = delete;
  WsContext& operator=(const WsContext&) = delete;

  uv_loop_t* loop() const { return loop_; }

  // The client TLS context for a trust configuration, created once and
  // cached: TLS 1.2 at least, the system CA directory (read lazily) plus the
  // configured anchors, peer verification on (a link that runs with -k turns
  // it off on its own connection). Never null; throws std::runtime_error with
  // a user-facing message (e.g. an unreadable CA file).
  SSL_CTX* client_tls(const TlsTrust& trust);

  // One read buffer for every link of the loop (single-threaded): a link
  // reads into it and hands the payload on before anything else runs, so
  // idle sessions hold no read buffer of their own.
  std::span<std::uint8_t> read_buffer() { return {read_buf_.get(), kReadBufferSize}; }
  static constexpr std::size_t kReadBufferSize = std::size_t{256} * 1024;

  // Kept for the hosts' shutdown sequence: the context owns no loop handles,
  // so there is nothing to drain.
  void begin_shutdown() {}

 private:
  uv_loop_t* loop_;
  struct Entry {
    TlsTrust trust;
    SSL_CTX* ctx = nullptr;
  };
  std::list<Entry> contexts_;
  std::unique_ptr<std::uint8_t[]> read_buf_;
};

}  // namespace tunnel
