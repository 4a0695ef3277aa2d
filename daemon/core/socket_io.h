// Plain or TLS I/O on a non-blocking socket, shared by the proxies' service
// link (client side) and tunnel-relay's WebSocket server: OpenSSL runs on the
// file descriptor itself (no memory BIOs), so ciphertext is never copied in
// user space. The caller owns the fd, the SSL object and the poll handle; these
// helpers only turn OpenSSL's and the kernel's answers into one convention:
// > 0 bytes moved, 0 would block, < 0 the connection ended (IoEnd says how).
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "net_socket.h"

namespace tunnel {

struct IoEnd {
  enum class Kind { none, closed, failed, tls };
  Kind kind = Kind::none;
  std::string detail;  // strerror text ("closed" when the OS gave none) or the TLS reason

  // One line naming `peer` (e.g. "the service", "the client"):
  // "<peer> closed the connection", "connection to <peer> failed: ...", "TLS error: ...".
  std::string describe(std::string_view peer) const;
};

// The reason of OpenSSL's last error, and the error queue cleared.
std::string tls_error_text();

// Reads at most n bytes. `wants_write` is set when TLS needs the socket to be
// writable before this read can go on (a renegotiation or key update).
long socket_read(net::Socket fd, SSL* ssl, std::uint8_t* buf, std::size_t n, bool& wants_write,
                 IoEnd& end);
// Writes at most n bytes (TLS: whole records, SSL_MODE_ENABLE_PARTIAL_WRITE).
// `wants_read` is set when TLS needs the socket to be readable first.
long socket_write(net::Socket fd, SSL* ssl, const std::uint8_t* buf, std::size_t n,
                  bool& wants_read, IoEnd& end);

}  // namespace tunnel
