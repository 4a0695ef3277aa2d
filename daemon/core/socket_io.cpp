#include "socket_io.h"

#include <openssl/err.h>

#include "net_socket.h"

namespace tunnel {
namespace {

// A failed socket call: an error code, or 0 for the peer's orderly close.
IoEnd failure_or_close(int code) {
  return code != 0 ? IoEnd{IoEnd::Kind::failed, net::error_text(code)}
                   : IoEnd{IoEnd::Kind::closed, {}};
}

}  // namespace

std::string IoEnd::describe(std::string_view peer) const {
  switch (kind) {
    case Kind::closed:
      return std::string(peer) + " closed the connection";
    case Kind::failed:
      return "connection to " + std::string(peer) + " failed: " + detail;
    case Kind::tls:
      return "TLS error: " + detail;
    case Kind::none:
      break;
  }
  return {};
}

std::string tls_error_text() {
  const unsigned long e = ERR_peek_last_error();
  std::string text;
  if (e != 0) {
    const char* r = ERR_reason_error_string(e);
    text = r ? r : "unknown TLS error";
  }
  ERR_clear_error();
  return text;
}

namespace {

// What an SSL_read_ex / SSL_write_ex that returned `rc` after moving `moved`
// bytes means, in the convention of socket_read / socket_write. `want_other`
// is the SSL_ERROR_WANT_* of the other direction (the call must wait for it).
long tls_result(SSL* ssl, int rc, std::size_t moved, int want_other, bool& wants_other,
                IoEnd& end) {
  if (rc == 1) {
    wants_other = false;
    return static_cast<long>(moved);
  }
  const int err = SSL_get_error(ssl, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    wants_other = err == want_other;
    return 0;
  }
  if (err == SSL_ERROR_ZERO_RETURN) {
    end = IoEnd{IoEnd::Kind::closed, {}};
  } else if (err == SSL_ERROR_SYSCALL) {
    end = failure_or_close(net::last_error());
    ERR_clear_error();
  } else {
    std::string detail = tls_error_text();
    end = detail.find("unexpected eof") != std::string::npos
              ? IoEnd{IoEnd::Kind::closed, {}}
              : IoEnd{IoEnd::Kind::tls, std::move(detail)};
  }
  return -1;
}

}  // namespace

long socket_read(net::Socket fd, SSL* ssl, std::uint8_t* buf, std::size_t n, bool& wants_write,
                 IoEnd& end) {
  if (ssl == nullptr) {
    const long got = net::recv_some(fd, buf, n);
    if (got < 0) end = failure_or_close(net::last_error());
    return got;
  }
  ERR_clear_error();
  std::size_t got = 0;
  const int rc = SSL_read_ex(ssl, buf, n, &got);
  return tls_result(ssl, rc, got, SSL_ERROR_WANT_WRITE, wants_write, end);
}

long socket_write(net::Socket fd, SSL* ssl, const std::uint8_t* buf, std::size_t n,
                  bool& wants_read, IoEnd& end) {
  if (ssl == nullptr) {
    const long put = net::send_some(fd, buf, n);
    if (put < 0) end = IoEnd{IoEnd::Kind::failed, net::last_error_text()};
    return put;
  }
  ERR_clear_error();
  std::size_t put = 0;
  const int rc = SSL_write_ex(ssl, buf, n, &put);
  return tls_result(ssl, rc, put, SSL_ERROR_WANT_READ, wants_read, end);
}

}  // namespace tunnel
