#include "load_client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "load_service.h"

namespace bench {
namespace {

// A stall this long inside a transfer or a round trip is a hang, not a figure.
constexpr std::chrono::milliseconds kIoTimeout{20'000};

double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

void check_deadline(Clock::time_point deadline, const char* what) {
  if (Clock::now() > deadline) throw BenchError(std::string(what) + ": timed out");
}

std::vector<char> header(char op, std::uint64_t n) {
  std::vector<char> h{op};
  for (int shift = 56; shift >= 0; shift -= 8) h.push_back(static_cast<char>((n >> shift) & 0xff));
  return h;
}

void send_pattern(Connection& c, std::uint64_t n, const std::vector<char>& pattern,
                  Clock::time_point deadline) {
  while (n > 0) {
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(n, pattern.size()));
    c.send_all(pattern.data(), len);
    n -= len;
    check_deadline(deadline, "sending");
  }
}

void receive(Connection& c, std::uint64_t n, std::vector<char>& buf, Clock::time_point deadline) {
  while (n > 0) {
    const std::size_t got =
        c.recv_some(buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(n, buf.size())));
    if (got == 0) throw BenchError("connection closed with " + std::to_string(n) + " bytes due");
    n -= got;
    check_deadline(deadline, "receiving");
  }
}

void expect_done(Connection& c) {
  char k = 0;
  c.recv_exact(&k, 1);
  if (k != kDone) throw BenchError("load service: unexpected completion byte");
}

}  // namespace

std::optional<Connection> Connection::try_open(std::uint16_t port,
                                               std::chrono::milliseconds io_timeout,
                                               std::string& why) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    why = std::string("socket: ") + std::strerror(errno);
    return std::nullopt;
  }
  Connection c(fd);
  // SO_SNDTIMEO also bounds connect() on Linux.
  if (configure_socket(fd, static_cast<int>(io_timeout.count())) != 0) {
    why = std::string("setsockopt: ") + std::strerror(errno);
    return std::nullopt;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    why = "connect to 127.0.0.1:" + std::to_string(port) + ": " + std::strerror(errno);
    return std::nullopt;
  }
  return c;
}

Connection Connection::open(std::uint16_t port, std::chrono::milliseconds io_timeout) {
  std::string why;
  std::optional<Connection> c = try_open(port, io_timeout, why);
  if (!c) throw BenchError(why);
  return std::move(*c);
}

Connection::Connection(Connection&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

Connection::~Connection() {
  if (fd_ >= 0) ::close(fd_);
}

void Connection::send_all(const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd_, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) {
      throw BenchError(std::string("send: ") +
                       (errno == EAGAIN ? "timed out" : std::strerror(errno)));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

std::size_t Connection::recv_some(char* p, std::size_t n) {
  for (;;) {
    const ssize_t r = ::recv(fd_, p, n, 0);
    if (r >= 0) return static_cast<std::size_t>(r);
    if (errno == EINTR) continue;
    throw BenchError(std::string("recv: ") +
                     (errno == EAGAIN ? "timed out" : std::strerror(errno)));
  }
}

void Connection::recv_exact(char* p, std::size_t n) {
  while (n > 0) {
    const std::size_t got = recv_some(p, n);
    if (got == 0) throw BenchError("connection closed by the peer");
    p += got;
    n -= got;
  }
}

TransferResult upload(std::uint16_t port, std::uint64_t bytes, Clock::time_point deadline) {
  std::vector<char> pattern(kChunk);
  fill_pattern(pattern);
  Connection c = Connection::open(port, kIoTimeout);
  const auto t0 = Clock::now();
  const std::vector<char> h = header(kOpSink, bytes);
  c.send_all(h.data(), h.size());
  send_pattern(c, bytes, pattern, deadline);
  expect_done(c);
  return {std::chrono::duration<double>(Clock::now() - t0).count(), bytes};
}

TransferResult download(std::uint16_t port, std::uint64_t bytes, Clock::time_point deadline) {
  std::vector<char> buf(kChunk);
  Connection c = Connection::open(port, kIoTimeout);
  const auto t0 = Clock::now();
  const std::vector<char> h = header(kOpBlast, bytes);
  c.send_all(h.data(), h.size());
  receive(c, bytes, buf, deadline);
  return {std::chrono::duration<double>(Clock::now() - t0).count(), bytes};
}

TransferResult duplex(std::uint16_t port, std::uint64_t bytes, Clock::time_point deadline) {
  std::vector<char> pattern(kChunk);
  fill_pattern(pattern);
  std::vector<char> buf(kChunk);
  Connection c = Connection::open(port, kIoTimeout);
  const auto t0 = Clock::now();
  const std::vector<char> h = header(kOpDuplex, bytes);
  c.send_all(h.data(), h.size());
  std::string writer_error;
  std::thread writer([&] {
    try {
      send_pattern(c, bytes, pattern, deadline);
    } catch (const BenchError& e) {
      writer_error = e.what();
    }
  });
  try {
    receive(c, bytes, buf, deadline);
    expect_done(c);
  } catch (...) {
    writer.join();
    throw;
  }
  writer.join();
  if (!writer_error.empty()) throw BenchError(writer_error);
  return {std::chrono::duration<double>(Clock::now() - t0).count(), 2 * bytes};
}

std::vector<double> round_trips(std::uint16_t port, std::size_t size, int count, int warmup,
                                std::chrono::milliseconds budget) {
  std::vector<char> out(size);
  fill_pattern(out);
  for (std::size_t i = out.size() & ~std::size_t{7}; i < out.size(); ++i) out[i] = 'x';
  std::vector<char> in(size);
  Connection c = Connection::open(port, kIoTimeout);
  char op = kOpEcho;
  c.send_all(&op, 1);
  c.recv_exact(&op, 1);
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(count));
  const auto stop_at = Clock::now() + budget;
  for (int i = 0; i < warmup + count && Clock::now() < stop_at; ++i) {
    const auto t0 = Clock::now();
    c.send_all(out.data(), out.size());
    c.recv_exact(in.data(), in.size());
    const auto t1 = Clock::now();
    if (i >= warmup) samples.push_back(micros(t1 - t0));
  }
  if (std::memcmp(in.data(), out.data(), size) != 0) throw BenchError("echo returned other bytes");
  return samples;
}

double first_round_trip(std::uint16_t port) {
  const auto t0 = Clock::now();
  Connection c = Connection::open(port, kIoTimeout);
  char op = kOpEcho;
  c.send_all(&op, 1);
  c.recv_exact(&op, 1);
  const auto t1 = Clock::now();
  if (op != kOpEcho) throw BenchError("echo returned another byte");
  return micros(t1 - t0);
}

Clock::time_point wait_until_echo(std::uint16_t port, Clock::time_point deadline) {
  std::string last = "never tried";
  while (Clock::now() < deadline) {
    std::string why;
    // Short waits per attempt: a stream the tunnel dropped is retried, not
    // waited for.
    std::optional<Connection> c = Connection::try_open(port, std::chrono::milliseconds(1000), why);
    if (c) {
      try {
        char op = kOpEcho;
        c->send_all(&op, 1);
        c->recv_exact(&op, 1);
        if (op == kOpEcho) return Clock::now();
        last = "echo returned another byte";
      } catch (const BenchError& e) {
        last = e.what();
      }
    } else {
      last = why;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  throw BenchError("no 1 B echo through 127.0.0.1:" + std::to_string(port) +
                   " in time (last attempt: " + last + ")");
}

}  // namespace bench
