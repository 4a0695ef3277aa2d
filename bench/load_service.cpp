#include "load_service.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "child_process.h"

namespace bench {
namespace {

// A server-side connection idles between the phases that use it; it gives
// up only if its client vanished for this long.
constexpr int kServerIoTimeoutMs = 120'000;

bool send_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool recv_exact(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool discard(int fd, std::uint64_t n, std::vector<char>& buf) {
  while (n > 0) {
    const ssize_t r = ::recv(fd, buf.data(), std::min<std::uint64_t>(n, buf.size()), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    n -= static_cast<std::uint64_t>(r);
  }
  return true;
}

bool blast(int fd, std::uint64_t n, const std::vector<char>& pattern) {
  while (n > 0) {
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(n, pattern.size()));
    if (!send_all(fd, pattern.data(), len)) return false;
    n -= len;
  }
  return true;
}

void wait_for_eof(int fd, std::vector<char>& buf) {
  while (true) {
    const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
  }
}

bool read_length(int fd, std::uint64_t& n) {
  unsigned char b[8];
  if (!recv_exact(fd, reinterpret_cast<char*>(b), sizeof b)) return false;
  n = 0;
  for (unsigned char c : b) n = (n << 8) | c;
  return true;
}

}  // namespace

int configure_socket(int fd, int timeout_ms) {
  const int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) return -1;
  timeval tv{};
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = static_cast<suseconds_t>(timeout_ms % 1000) * 1000;
  if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return -1;
  if (::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) return -1;
  return 0;
}

void fill_pattern(std::vector<char>& buf) {
  std::mt19937_64 rng(0x7475'6e6e'656c'64ULL);
  for (std::size_t i = 0; i + 8 <= buf.size(); i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(buf.data() + i, &v, 8);
  }
}

LoadService::LoadService() : pattern_(kChunk) {
  fill_pattern(pattern_);
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw BenchError(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    ::close(listen_fd_);
    throw BenchError("load service: cannot listen on 127.0.0.1: " + why);
  }
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

LoadService::~LoadService() { stop(); }

void LoadService::stop() {
  if (stopping_.exchange(true)) return;
  if (acceptor_.joinable()) acceptor_.join();
  ::close(listen_fd_);
  std::vector<Worker> workers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
    workers.swap(workers_);
  }
  for (Worker& w : workers) w.thread.join();
}

void LoadService::reap_finished_workers() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
}

void LoadService::accept_loop() {
  while (!stopping_.load()) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    configure_socket(fd, kServerIoTimeoutMs);
    connections_.fetch_add(1);
    reap_finished_workers();
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::lock_guard<std::mutex> lock(mu_);
    open_fds_.insert(fd);
    workers_.push_back(Worker{std::thread([this, fd, done] {
                                serve(fd);
                                {
                                  std::lock_guard<std::mutex> l(mu_);
                                  open_fds_.erase(fd);
                                  ::close(fd);
                                }
                                done->store(true);
                              }),
                              done});
  }
}

void LoadService::serve(int fd) {
  std::vector<char> buf(kChunk);
  char op = 0;
  if (!recv_exact(fd, &op, 1)) return;
  std::uint64_t n = 0;
  switch (op) {
    case kOpEcho: {
      if (!send_all(fd, &op, 1)) return;
      while (true) {
        const ssize_t r = ::recv(fd, buf.data(), buf.size(), 0);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0 || !send_all(fd, buf.data(), static_cast<std::size_t>(r))) return;
      }
    }
    case kOpSink:
      if (!read_length(fd, n) || !discard(fd, n, buf) || !send_all(fd, &kDone, 1)) return;
      wait_for_eof(fd, buf);
      return;
    case kOpBlast:
      if (!read_length(fd, n) || !blast(fd, n, pattern_)) return;
      wait_for_eof(fd, buf);
      return;
    case kOpDuplex: {
      if (!read_length(fd, n)) return;
      bool sent = false;
      std::thread writer([&] { sent = blast(fd, n, pattern_); });
      const bool received = discard(fd, n, buf);
      // Unblocks the writer if the client went away.
      if (!received) ::shutdown(fd, SHUT_RDWR);
      writer.join();
      if (!sent || !received || !send_all(fd, &kDone, 1)) return;
      wait_for_eof(fd, buf);
      return;
    }
    default:
      return;
  }
}

}  // namespace bench
