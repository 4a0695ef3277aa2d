#include "socket_io.h"

#include <openssl/err.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace tunnel {

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

long socket_read(int fd, SSL* ssl, std::uint8_t* buf, std::size_t n, bool& wants_write,
                 IoEnd& end) {
  if (ssl == nullptr) {
    const ssize_t got = ::recv(fd, buf, n, 0);
    if (got > 0) return got;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    end = got == 0 ? IoEnd{IoEnd::Kind::closed, {}}
                   : IoEnd{IoEnd::Kind::failed, std::strerror(errno)};
    return -1;
  }
  ERR_clear_error();
  std::size_t got = 0;
  const int rc = SSL_read_ex(ssl, buf, n, &got);
  if (rc == 1) {
    wants_write = false;
    return static_cast<long>(got);
  }
  switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ:
      wants_write = false;
      return 0;
    case SSL_ERROR_WANT_WRITE:
      wants_write = true;
      return 0;
    case SSL_ERROR_ZERO_RETURN:
      end = IoEnd{IoEnd::Kind::closed, {}};
      return -1;
    case SSL_ERROR_SYSCALL:
      end =
          errno ? IoEnd{IoEnd::Kind::failed, std::strerror(errno)} : IoEnd{IoEnd::Kind::closed, {}};
      ERR_clear_error();
      return -1;
    default: {
      std::string detail = tls_error_text();
      end = detail.find("unexpected eof") != std::string::npos
                ? IoEnd{IoEnd::Kind::closed, {}}
                : IoEnd{IoEnd::Kind::tls, std::move(detail)};
      return -1;
    }
  }
}

long socket_write(int fd, SSL* ssl, const std::uint8_t* buf, std::size_t n, bool& wants_read,
                  IoEnd& end) {
  if (ssl == nullptr) {
    const ssize_t put = ::send(fd, buf, n, MSG_NOSIGNAL);
    if (put >= 0) return put;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    end = IoEnd{IoEnd::Kind::failed, std::strerror(errno)};
    return -1;
  }
  ERR_clear_error();
  std::size_t put = 0;
  const int rc = SSL_write_ex(ssl, buf, n, &put);
  if (rc == 1) {
    wants_read = false;
    return static_cast<long>(put);
  }
  switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_WRITE:
      wants_read = false;
      return 0;
    case SSL_ERROR_WANT_READ:
      wants_read = true;
      return 0;
    case SSL_ERROR_SYSCALL:
      end = IoEnd{IoEnd::Kind::failed, errno ? std::strerror(errno) : "closed"};
      ERR_clear_error();
      return -1;
    default:
      end = IoEnd{IoEnd::Kind::tls, tls_error_text()};
      return -1;
  }
}

}  // namespace tunnel
