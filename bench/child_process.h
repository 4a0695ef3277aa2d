// Child processes of the benchmark: the relay, the localproxies and the openssl
// CLI. Each child's stdout and stderr go to files in the run's temp dir (a file
// never blocks a child the way a full pipe would), every wait is bounded, and a
// child dies with the benchmark (PR_SET_PDEATHSIG) if we crash.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;

// Anything that stops the benchmark; main prints it and exits non-zero.
struct BenchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ChildProcess {
 public:
  // Starts argv[0] with the benchmark's environment (minus AWSIOT_* and proxy
  // variables) plus `env_extra` ("NAME=value"): secrets go there, never argv.
  ChildProcess(std::string name, const std::vector<std::string>& argv,
               const std::vector<std::string>& env_extra, const std::string& log_dir);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }
  const std::string& stdout_path() const { return stdout_path_; }
  const std::string& stderr_path() const { return stderr_path_; }
  Clock::time_point started_at() const { return started_at_; }

  // True while the process has not exited (reaps it when it has).
  bool running();
  // SIGTERM, then SIGKILL after `grace`; returns how it ended ("exit 0", ...).
  std::string stop(std::chrono::milliseconds grace);
  // The last `lines` lines of stderr (or stdout), for error messages.
  std::string stderr_tail(std::size_t lines) const;
  std::string stdout_tail(std::size_t lines) const;

 private:
  bool reap(int options);

  std::string name_;
  std::string stdout_path_;
  std::string stderr_path_;
  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
  Clock::time_point started_at_;
};

// SIGKILLs every child still running; safe to call from the signal thread.
void kill_all_children();

// Waits until a line of `path` satisfies `match`; returns that line. Throws if
// `child` exits first or the deadline passes.
std::string wait_for_line(ChildProcess& child, const std::string& path,
                          const std::function<bool(const std::string&)>& match,
                          Clock::time_point deadline);

// Runs a command to completion within `timeout`; throws with its output on
// failure.
void run_command(const std::vector<std::string>& argv, const std::string& log_dir,
                 std::chrono::milliseconds timeout);

std::string read_file(const std::string& path);

}  // namespace bench
