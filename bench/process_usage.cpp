#include "process_usage.h"

#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

namespace bench {

std::optional<MemoryStatus> read_memory(pid_t pid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/status", static_cast<int>(pid));
  std::FILE* f = std::fopen(path, "re");
  if (f == nullptr) return std::nullopt;
  MemoryStatus m;
  bool rss = false;
  bool hwm = false;
  char line[256];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) rss = std::sscanf(line + 6, "%ld", &m.rss_kib) == 1;
    if (std::strncmp(line, "VmHWM:", 6) == 0) hwm = std::sscanf(line + 6, "%ld", &m.hwm_kib) == 1;
    if (std::strncmp(line, "RssAnon:", 8) == 0) std::sscanf(line + 8, "%ld", &m.anon_kib);
  }
  std::fclose(f);
  if (!rss || !hwm) return std::nullopt;  // a zombie has no memory lines
  return m;
}

double read_cpu_seconds(pid_t pid) {
  // The scheduler's own run time of every thread, in nanoseconds: precise,
  // where /proc/PID/stat counts 10 ms ticks.
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  double total = 0;
  for (const auto& task : std::filesystem::directory_iterator(dir, ec)) {
    std::FILE* f = std::fopen((task.path() / "schedstat").c_str(), "re");
    if (f == nullptr) continue;
    unsigned long long ns = 0;
    if (std::fscanf(f, "%llu", &ns) == 1) total += static_cast<double>(ns) / 1e9;
    std::fclose(f);
  }
  return total;
}

double read_own_cpu_seconds() {
  // Threads that have ended count too, unlike /proc/self/task.
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  const auto seconds = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

MemorySampler::MemorySampler(std::vector<pid_t> pids, std::chrono::milliseconds period)
    : pids_(std::move(pids)), period_(period), peaks_(pids_.size(), 0) {
  thread_ = std::thread([this] { run(); });
}

MemorySampler::~MemorySampler() {
  stop_.store(true);
  thread_.join();
}

void MemorySampler::reset() {
  std::lock_guard<std::mutex> lock(mu_);
  std::fill(peaks_.begin(), peaks_.end(), 0);
}

std::vector<long> MemorySampler::peaks_kib() {
  std::lock_guard<std::mutex> lock(mu_);
  return peaks_;
}

void MemorySampler::run() {
  while (!stop_.load()) {
    for (std::size_t i = 0; i < pids_.size(); ++i) {
      if (const auto m = read_memory(pids_[i])) {
        std::lock_guard<std::mutex> lock(mu_);
        peaks_[i] = std::max(peaks_[i], m->rss_kib);
      }
    }
    samples_.fetch_add(1);
    std::this_thread::sleep_for(period_);
  }
}

}  // namespace bench
