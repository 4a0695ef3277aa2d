// The service behind the destination localproxy (and, for the baseline, the
// one the same client reaches directly): a threaded, blocking TCP server on
// 127.0.0.1 speaking a one-byte command protocol so that one destination port
// serves every measurement.
//
//   'E'             echo: sends 'E' back, then echoes every byte until EOF
//   'S' u64be N     sink: reads N bytes, then sends 'K'
//   'B' u64be N     blast: sends N bytes
//   'D' u64be N     duplex: sends N bytes while reading N bytes, then sends 'K'
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace bench {

inline constexpr char kOpEcho = 'E';
inline constexpr char kOpSink = 'S';
inline constexpr char kOpBlast = 'B';
inline constexpr char kOpDuplex = 'D';
inline constexpr char kDone = 'K';
inline constexpr std::size_t kChunk = std::size_t{256} * 1024;

// A loopback socket with TCP_NODELAY and send/receive timeouts, so that no
// blocking call waits forever.
int configure_socket(int fd, int timeout_ms);

// Fills `buf` with a fixed pseudo-random pattern (nothing compressible).
void fill_pattern(std::vector<char>& buf);

class LoadService {
 public:
  LoadService();
  ~LoadService();
  LoadService(const LoadService&) = delete;
  LoadService& operator=(const LoadService&) = delete;

  std::uint16_t port() const { return port_; }
  // Connections the service has accepted so far.
  std::uint64_t connections() const { return connections_.load(); }
  // Closes the listener and every connection, joins every thread.
  void stop();

 private:
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  void accept_loop();
  void serve(int fd);
  void reap_finished_workers();

  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> connections_{0};
  std::vector<char> pattern_;
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<Worker> workers_;
  std::set<int> open_fds_;
};

}  // namespace bench
