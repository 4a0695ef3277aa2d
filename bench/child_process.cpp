#include "child_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

extern char** environ;

namespace bench {
namespace {

// The pids the signal thread must kill if the benchmark is interrupted.
struct LiveChildren {
  std::mutex mu;
  std::set<pid_t> pids;
};

LiveChildren& live_children() {
  static LiveChildren live;
  return live;
}

bool inherited_variable_allowed(const char* entry) {
  static const char* const dropped[] = {
      "AWSIOT_",      "http_proxy=", "https_proxy=", "HTTP_PROXY=",
      "HTTPS_PROXY=", "all_proxy=",  "ALL_PROXY="};
  for (const char* prefix : dropped) {
    if (std::strncmp(entry, prefix, std::strlen(prefix)) == 0) return false;
  }
  return true;
}

std::string sanitize(const std::string& name) {
  std::string out;
  for (char c : name) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-') ? c : '_';
  return out;
}

int open_log(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw BenchError("cannot create " + path + ": " + std::strerror(errno));
  return fd;
}

}  // namespace

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

ChildProcess::ChildProcess(std::string name, const std::vector<std::string>& argv,
                           const std::vector<std::string>& env_extra, const std::string& log_dir)
    : name_(std::move(name)) {
  if (argv.empty()) throw BenchError(name_ + ": empty command");
  if (::access(argv[0].c_str(), X_OK) != 0) {
    throw BenchError(name_ + ": " + argv[0] + " is not an executable (build it first)");
  }
  static int serial = 0;
  const std::string base = log_dir + "/" + sanitize(name_) + "-" + std::to_string(++serial);
  stdout_path_ = base + ".stdout";
  stderr_path_ = base + ".stderr";

  // Everything the child needs is built before fork: after it, only
  // async-signal-safe calls (the benchmark has threads).
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    if (inherited_variable_allowed(*e)) env_storage.emplace_back(*e);
  }
  for (const std::string& e : env_extra) env_storage.push_back(e);
  std::vector<char*> env;
  env.reserve(env_storage.size() + 1);
  for (const std::string& e : env_storage) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);

  const int out_fd = open_log(stdout_path_);
  const int err_fd = open_log(stderr_path_);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = ::getpid();

  std::lock_guard<std::mutex> lock(live_children().mu);
  started_at_ = Clock::now();
  pid_ = ::fork();
  if (pid_ == 0) {
    // The benchmark blocks its termination signals for its signal thread;
    // the child must get them.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) _exit(127);
    dup2(null_fd, 0);
    dup2(out_fd, 1);
    dup2(err_fd, 2);
    execve(args[0], args.data(), env.data());
    const char msg[] = "exec failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
  const int fork_errno = errno;
  ::close(out_fd);
  ::close(err_fd);
  if (null_fd >= 0) ::close(null_fd);
  if (pid_ < 0) throw BenchError(name_ + ": fork failed: " + std::strerror(fork_errno));
  live_children().pids.insert(pid_);
}

ChildProcess::~ChildProcess() { stop(std::chrono::milliseconds(2000)); }

bool ChildProcess::reap(int options) {
  if (exited_) return true;
  const pid_t r = ::waitpid(pid_, &status_, options);
  if (r == pid_ || (r < 0 && errno == ECHILD)) {
    exited_ = true;
    std::lock_guard<std::mutex> lock(live_children().mu);
    live_children().pids.erase(pid_);
  }
  return exited_;
}

bool ChildProcess::running() { return pid_ > 0 && !reap(WNOHANG); }

std::string ChildProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return "not started";
  if (!reap(WNOHANG)) {
    ::kill(pid_, SIGTERM);
    const auto deadline = Clock::now() + grace;
    while (!reap(WNOHANG) && Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!exited_) {
      ::kill(pid_, SIGKILL);
      reap(0);
    }
  }
  if (WIFEXITED(status_)) return "exit " + std::to_string(WEXITSTATUS(status_));
  if (WIFSIGNALED(status_)) return std::string("killed by ") + strsignal(WTERMSIG(status_));
  return "ended";
}

namespace {

std::string tail_of(const std::string& path, std::size_t lines) {
  const std::string text = read_file(path);
  std::size_t pos = text.size();
  for (std::size_t n = 0; n <= lines && pos > 0;) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
    ++n;
  }
  return text.substr(pos);
}

}  // namespace

std::string ChildProcess::stderr_tail(std::size_t lines) const {
  return tail_of(stderr_path_, lines);
}

std::string ChildProcess::stdout_tail(std::size_t lines) const {
  return tail_of(stdout_path_, lines);
}

void kill_all_children() {
  std::lock_guard<std::mutex> lock(live_children().mu);
  for (pid_t p : live_children().pids) ::kill(p, SIGKILL);
}

std::string wait_for_line(ChildProcess& child, const std::string& path,
                          const std::function<bool(const std::string&)>& match,
                          Clock::time_point deadline) {
  for (;;) {
    // A child may exit right after printing: look at the file once more
    // after seeing it gone.
    const bool alive = child.running();
    std::istringstream lines(read_file(path));
    for (std::string line; std::getline(lines, line);) {
      if (match(line)) return line;
    }
    if (!alive) {
      throw BenchError(child.name() + " exited (" + child.stop({}) +
                       ") before it was ready; its stderr ends with:\n" + child.stderr_tail(15));
    }
    if (Clock::now() > deadline) {
      throw BenchError(child.name() + " did not get ready in time; its stderr ends with:\n" +
                       child.stderr_tail(15));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

void run_command(const std::vector<std::string>& argv, const std::string& log_dir,
                 std::chrono::milliseconds timeout) {
  ChildProcess child(argv[0].substr(argv[0].rfind('/') + 1), argv, {}, log_dir);
  const auto deadline = Clock::now() + timeout;
  while (child.running() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const std::string how = child.stop(std::chrono::milliseconds(500));
  if (how != "exit 0") {
    std::string cmd;
    for (const std::string& a : argv) {
      if (!cmd.empty()) cmd += ' ';
      cmd += a;
    }
    throw BenchError(cmd + ": " + how + "\n" + child.stderr_tail(15));
  }
}

}  // namespace bench
