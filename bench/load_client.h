// The client side of every measurement. The same functions run against the
// load service directly (the baseline) and through the tunnel's source port,
// so the only difference between the two figures is the tunnel.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "child_process.h"

namespace bench {

// A connected loopback TCP socket (TCP_NODELAY, bounded send/receive waits).
class Connection {
 public:
  // Throws BenchError when the connection cannot be made.
  static Connection open(std::uint16_t port, std::chrono::milliseconds io_timeout);
  // As open(), but says why instead of throwing.
  static std::optional<Connection> try_open(std::uint16_t port,
                                            std::chrono::milliseconds io_timeout, std::string& why);
  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&&) = delete;
  Connection(const Connection&) = delete;
  ~Connection();

  void send_all(const char* p, std::size_t n);
  void recv_exact(char* p, std::size_t n);
  // One recv(): the byte count, 0 at EOF; throws on error or timeout.
  std::size_t recv_some(char* p, std::size_t n);

 private:
  explicit Connection(int fd) : fd_(fd) {}
  int fd_ = -1;
};

struct TransferResult {
  double seconds = 0;
  std::uint64_t bytes = 0;  // payload bytes moved, both directions together
};

// `bytes` from the client to the service (upload), from the service to the
// client (download), or both at once on one connection (duplex). The clock
// starts after connect and stops when the last byte is known to have arrived.
TransferResult upload(std::uint16_t port, std::uint64_t bytes, Clock::time_point deadline);
TransferResult download(std::uint16_t port, std::uint64_t bytes, Clock::time_point deadline);
TransferResult duplex(std::uint16_t port, std::uint64_t bytes, Clock::time_point deadline);

// Request/response round trips of `size` bytes on one echo connection, after
// `warmup` unrecorded ones; stops early when `budget` runs out. Microseconds.
std::vector<double> round_trips(std::uint16_t port, std::size_t size, int count, int warmup,
                                std::chrono::milliseconds budget);

// connect + 1 B echo on a fresh connection. Microseconds.
double first_round_trip(std::uint16_t port);

// Retries connect + 1 B echo until one works; returns when it did. Throws
// with the last failure once `deadline` passes.
Clock::time_point wait_until_echo(std::uint16_t port, Clock::time_point deadline);

}  // namespace bench
