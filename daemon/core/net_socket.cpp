#include "net_socket.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tunnel::net {
namespace {

// A read or write that ended: 0 means the peer closed (no errno).
long io_result(ssize_t n) {
  if (n >= 0) return n;
  return would_block() ? 0 : -1;
}

}  // namespace

int last_error() { return errno; }

std::string error_text(int code) { return std::strerror(code); }

std::string last_error_text() { return error_text(errno); }

bool would_block() { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR; }

Socket open_stream(int family) {
  return ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
}

bool start_connect(Socket s, const sockaddr* addr, std::size_t addr_len) {
  return ::connect(s, addr, static_cast<socklen_t>(addr_len)) == 0 || errno == EINPROGRESS;
}

Socket accept_one(Socket listener, sockaddr_storage& peer, bool& retry) {
  socklen_t len = sizeof peer;
  const Socket s =
      ::accept4(listener, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  retry = s < 0 && (errno == EINTR || errno == ECONNABORTED);
  return s;
}

Socket listen_on(const sockaddr* addr, std::size_t addr_len, int backlog) {
  const Socket s = open_stream(addr->sa_family);
  if (s < 0) return kNoSocket;
  const int one = 1;
  ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr->sa_family == AF_INET6) ::setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(s, addr, static_cast<socklen_t>(addr_len)) != 0 || ::listen(s, backlog) != 0) {
    const int saved = errno;
    ::close(s);
    errno = saved;
    return kNoSocket;
  }
  return s;
}

std::uint16_t local_port(Socket s) {
  sockaddr_storage got{};
  socklen_t len = sizeof got;
  if (::getsockname(s, reinterpret_cast<sockaddr*>(&got), &len) != 0) return 0;
  return ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(&got)->sin6_port
                                         : reinterpret_cast<const sockaddr_in*>(&got)->sin_port);
}

void close_socket(Socket s) {
  if (s >= 0) ::close(s);
}

void shutdown_write(Socket s) { ::shutdown(s, SHUT_WR); }

void set_nodelay(Socket s) {
  const int one = 1;
  ::setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void set_notsent_lowat(Socket s, std::size_t bytes) {
#ifdef TCP_NOTSENT_LOWAT
  if (bytes == 0) return;
  const int lowat = static_cast<int>(bytes);
  ::setsockopt(s, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
#else
  (void)s;
  (void)bytes;
#endif
}

int pending_error(Socket s) {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

long send_some(Socket s, const void* data, std::size_t n) {
  return io_result(::send(s, data, n, MSG_NOSIGNAL));
}

long recv_some(Socket s, void* data, std::size_t n) {
  const ssize_t got = ::recv(s, data, n, 0);
  if (got == 0) {
    errno = 0;
    return -1;
  }
  return io_result(got);
}

long peek_some(Socket s, void* data, std::size_t n) {
  const ssize_t got = ::recv(s, data, n, MSG_PEEK);
  if (got == 0) {
    errno = 0;
    return -1;
  }
  return io_result(got);
}

std::string address_text(const sockaddr* sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "?";
}

}  // namespace tunnel::net
