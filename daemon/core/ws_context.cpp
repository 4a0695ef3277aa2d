#include "ws_context.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <csignal>
#include <cstdlib>
#include <stdexcept>

#include "logging.h"
#include "record_codec.h"

namespace tunnel {

WsContext::WsContext(uv_loop_t* loop) : loop_(loop), read_buf_(new std::uint8_t[kReadBufferSize]) {
  logging::route_library_logs();
  // A write to a socket the service has reset must be an error to handle,
  // not a signal that kills the process (OpenSSL writes with write(2)).
  std::signal(SIGPIPE, SIG_IGN);
}

WsContext::~WsContext() {
  for (auto& e : contexts_) SSL_CTX_free(e.ctx);
}

SSL_CTX* WsContext::client_tls(const TlsTrust& trust) {
  for (auto& e : contexts_) {
    if (e.trust == trust) return e.ctx;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) throw std::runtime_error("cannot create a TLS context (OpenSSL)");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  // Retries after a partial write may come from a buffer that has moved
  // (the link compacts it), and a write returns after each TLS record.
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_RELEASE_BUFFERS);
  // Read whole batches of TLS records per read(2), not a 5-byte header and
  // then a body: one syscall per ~64 KiB instead of two per 16 KiB.
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, std::size_t{64} * 1024);
  // The system trust store as a hashed directory (SSL_CERT_DIR or OpenSSL's
  // default, /etc/ssl/certs on Debian), read lazily: parsing the whole
  // bundle file up front costs ~20 ms of start-up and ~1 MiB per process.
  const char* env_dir = std::getenv(X509_get_default_cert_dir_env());
  const char* sys_dir = env_dir && *env_dir ? env_dir : X509_get_default_cert_dir();
  if (SSL_CTX_load_verify_locations(ctx, nullptr, sys_dir) != 1) {
    logging::get("ws")->warn("cannot use the system CA directory {}", sys_dir);
    ERR_clear_error();
  }
  if (!trust.cafile.empty() || !trust.capath.empty()) {
    const char* file = trust.cafile.empty() ? nullptr : trust.cafile.c_str();
    const char* dir = trust.capath.empty() ? nullptr : trust.capath.c_str();
    if (SSL_CTX_load_verify_locations(ctx, file, dir) != 1) {
      ERR_clear_error();
      SSL_CTX_free(ctx);
      std::string what = file ? trust.cafile : "";
      if (file && dir) what += " / ";
      if (dir) what += trust.capath;
      throw std::runtime_error("cannot load CA " + what + ": check the path and permissions");
    }
  }
  contexts_.push_back(Entry{trust, ctx});
  return ctx;
}

}  // namespace tunnel
