// Resident memory and CPU time of the benchmarked processes, from /proc.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace bench {

struct MemoryStatus {
  long rss_kib = 0;   // VmRSS: resident now
  long hwm_kib = 0;   // VmHWM: the kernel's own high-water mark of VmRSS
  long anon_kib = 0;  // RssAnon: the part of VmRSS that is not file or shared-library pages
};

std::optional<MemoryStatus> read_memory(pid_t pid);

// CPU seconds the process has run so far, all its threads (0 if it is
// gone). Unlike wall-clock figures, this does not depend on what else the
// machine is running.
double read_cpu_seconds(pid_t pid);
// The same for this program, including threads that have ended.
double read_own_cpu_seconds();

// Samples VmRSS of a few processes every `period` on its own thread and keeps
// the largest value seen per process since the last reset().
class MemorySampler {
 public:
  MemorySampler(std::vector<pid_t> pids, std::chrono::milliseconds period);
  ~MemorySampler();
  MemorySampler(const MemorySampler&) = delete;
  MemorySampler& operator=(const MemorySampler&) = delete;

  void reset();
  // Per process, in the order given: the largest VmRSS seen (KiB).
  std::vector<long> peaks_kib();
  std::uint64_t samples() const { return samples_.load(); }

 private:
  void run();

  std::vector<pid_t> pids_;
  std::chrono::milliseconds period_;
  std::mutex mu_;
  std::vector<long> peaks_;
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> samples_{0};
  std::thread thread_;
};

}  // namespace bench
