// daemon-bench: what one tunneld costs and delivers, measured with the real
// binaries of a build dir on loopback (tunneld, tunnelctl, tunnel-relay over
// TLS with a throwaway CA, one localproxy for comparison):
//   1. idle VmRSS of tunneld with 0, 1, 100 and 1000 destination sessions
//      connected to the relay, against one idle localproxy;
//   2. time from spawning `tunnelctl open` to the session being `connected`;
//   3. aggregate throughput of 4 concurrent tunnels (4 destination sessions in
//      one tunneld, 4 source sessions in a second one) against direct
//      loopback TCP with 4 streams, and the daemons' CPU seconds per GiB.
// A program that prints figures (docs/benchmarks.md, scripts/daemon-bench.sh),
// not a test and not installed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "bench_setup.h"
#include "child_process.h"
#include "load_client.h"
#include "load_service.h"
#include "process_usage.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using nlohmann::json;

namespace bench {
namespace {

struct Options {
  std::string build_dir;
  std::string openssl = "openssl";
  std::vector<int> session_counts = {1, 100, 1000};
  int open_samples = 30;
  std::string bytes_text = "256MiB";
  std::uint64_t bytes = 0;
  int streams = 4;
  int idle_sessions = 100;    // sessions of 3 services ...
  int idle_connections = 10;  // ... with this many idle connections per service
  std::string json_path;
  bool keep_temp = false;
};

void progress(const std::string& what) { std::fprintf(stderr, "[dbench] %s\n", what.c_str()); }

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct CtlResult {
  std::string status;  // "exit 0", ...
  std::string out;
  std::string err;
  bool ok() const { return status == "exit 0"; }
};

class Daemon {
 public:
  Daemon(const std::string& label, const Options& o, const std::string& tmp)
      : label_(label), tmp_(tmp), ctl_(o.build_dir + "/ctl/tunnelctl") {
    socket_ = tmp + "/" + label + ".sock";
    const std::string state = tmp + "/" + label + "-state";
    fs::create_directories(state);
    proc_ = std::make_unique<ChildProcess>(
        label,
        std::vector<std::string>{o.build_dir + "/daemon/tunneld", "--socket", socket_,
                                 "--state-dir", state, "--log", "stderr", "--log-level", "warn"},
        std::vector<std::string>{}, tmp);
    const auto deadline = Clock::now() + 20s;
    for (;;) {
      if (!proc_->running()) throw BenchError(label + " exited:\n" + proc_->stderr_tail(10));
      if (fs::exists(socket_) && ctl({"list", "--json"}, {}, 5s).ok()) break;
      if (Clock::now() > deadline) throw BenchError(label + " not ready within 20 s");
      std::this_thread::sleep_for(20ms);
    }
  }

  pid_t pid() const { return proc_->pid(); }
  ChildProcess& process() { return *proc_; }

  // Runs tunnelctl against this daemon to completion (bounded).
  CtlResult ctl(std::vector<std::string> args, const std::vector<std::string>& env,
                std::chrono::milliseconds timeout) {
    std::vector<std::string> argv = {ctl_, "--socket", socket_};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess c("tunnelctl", argv, env, tmp_);
    const auto deadline = Clock::now() + timeout;
    while (c.running() && Clock::now() < deadline) std::this_thread::sleep_for(500us);
    CtlResult r;
    r.status = c.stop(500ms);
    r.out = read_file(c.stdout_path());
    r.err = read_file(c.stderr_path());
    std::error_code ec;
    fs::remove(c.stdout_path(), ec);
    fs::remove(c.stderr_path(), ec);
    return r;
  }

  json open(const std::vector<std::string>& args, const std::string& token) {
    std::vector<std::string> a = {"open", "--json"};
    a.insert(a.end(), args.begin(), args.end());
    const CtlResult r = ctl(a, {"AWSIOT_TUNNEL_ACCESS_TOKEN=" + token}, 15s);
    if (!r.ok()) throw BenchError(label_ + ": tunnelctl open: " + r.status + ": " + r.err);
    return json::parse(r.out);
  }

  // Sessions by state, from `tunnelctl list --json`.
  std::map<std::string, int> states() {
    const CtlResult r = ctl({"list", "--json"}, {}, 30s);
    if (!r.ok()) throw BenchError(label_ + ": tunnelctl list: " + r.status + ": " + r.err);
    std::map<std::string, int> count;
    last_list_ = r.out;
    const json list = json::parse(r.out);  // named: a temporary would dangle in the loop
    for (const auto& s : list.at("sessions")) ++count[s.value("state", "?")];
    return count;
  }

  void wait_connected(int n, std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    for (;;) {
      const auto s = states();
      if (s.count("connected") && s.at("connected") >= n) return;
      if (!proc_->running()) throw BenchError(label_ + " exited:\n" + proc_->stderr_tail(10));
      if (Clock::now() > deadline) {
        std::string what;
        for (const auto& [k, v] : s) what += " " + k + "=" + std::to_string(v);
        throw BenchError(label_ + ": not all " + std::to_string(n) + " sessions connected within " +
                         std::to_string(limit.count()) + " s:" + what + "\n" +
                         last_list_.substr(0, 800) + "\n" + proc_->stderr_tail(10));
      }
      std::this_thread::sleep_for(200ms);
    }
  }

 private:
  std::string label_;
  std::string tmp_;
  std::string ctl_;
  std::string socket_;
  std::unique_ptr<ChildProcess> proc_;
  std::string last_list_;
};

long rss_kib(pid_t pid) {
  const auto m = read_memory(pid);
  if (!m) throw BenchError("cannot read /proc/" + std::to_string(pid) + "/status");
  return m->rss_kib;
}

// RLIMIT_NOFILE for this process, inherited by every child: soft to hard,
// and hard up to 65536 first when we may (root).
std::string raise_fd_limit() {
  rlimit before{};
  ::getrlimit(RLIMIT_NOFILE, &before);
  rlimit want = before;
  std::string note;
  if (::geteuid() == 0 && want.rlim_max != RLIM_INFINITY && want.rlim_max < 65536) {
    want.rlim_max = 65536;
  }
  want.rlim_cur = want.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &want) != 0) {
    note = " (raising the hard limit to " + std::to_string(want.rlim_max) +
           " was refused: " + std::strerror(errno) + ")";
    want.rlim_max = before.rlim_max;
    want.rlim_cur = before.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &want) != 0) want = before;
  }
  return "RLIMIT_NOFILE soft " + std::to_string(before.rlim_cur) + " -> " +
         std::to_string(want.rlim_cur) + ", hard " + std::to_string(before.rlim_max) + " -> " +
         std::to_string(want.rlim_max) + (::geteuid() == 0 ? " as root" : " as non-root") + note +
         "; set before spawning, so tunneld and tunnel-relay inherit it";
}

struct Percentiles {
  double p50 = 0, p90 = 0, max = 0;
};

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  const auto rank = [&](double q) {
    std::size_t i = static_cast<std::size_t>(std::ceil(q * v.size()));
    return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
  };
  p.p50 = rank(0.5);
  p.p90 = rank(0.9);
  p.max = v.back();
  return p;
}

struct MemoryPoint {
  int sessions = 0;
  long rss_kib = 0;
  double open_seconds = 0;  // wall time to open and connect the added sessions
};

struct Throughput {
  double direct_mbps = 0;  // MB/s, 1e6 bytes
  double tunnel_mbps = 0;
  std::uint64_t tunnel_bytes = 0;
  double dest_daemon_cpu = 0;
  double source_daemon_cpu = 0;
  double relay_cpu = 0;
};

// `streams` parallel uploads of `bytes` each into the service's sink;
// aggregate MB/s over the wall time of the whole batch.
double parallel_upload(const std::vector<std::uint16_t>& ports, std::uint64_t bytes,
                       std::uint64_t& moved) {
  std::vector<std::thread> threads;
  std::vector<TransferResult> results(ports.size());
  std::vector<std::string> errors(ports.size());
  const auto deadline = Clock::now() + std::chrono::seconds(120 + bytes / 1'000'000);
  const auto t0 = Clock::now();
  for (std::size_t i = 0; i < ports.size(); ++i) {
    threads.emplace_back([&, i] {
      try {
        results[i] = upload(ports[i], bytes, deadline);
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  moved = 0;
  for (std::size_t i = 0; i < ports.size(); ++i) {
    if (!errors[i].empty()) throw BenchError("stream " + std::to_string(i) + ": " + errors[i]);
    moved += results[i].bytes;
  }
  return moved / seconds / 1e6;
}

std::string fmt_kib(double kib) {
  char b[64];
  if (kib >= 10240)
    std::snprintf(b, sizeof b, "%.1f MiB", kib / 1024);
  else
    std::snprintf(b, sizeof b, "%.0f KiB", kib);
  return b;
}

// A local service that accepts connections, sends a one-line banner (as an
// SSH server does) and then holds them, never reading: the far end of the
// idle connections of the multiplex figure. The banner matters: a V3 source
// accepts one connection per service until the peer has shown it speaks V3
// (a record with a connectionId, docs/architecture.md), and idle
// connections would otherwise never show it.
class HoldService {
 public:
  HoldService() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_fd_, 1024) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
      throw BenchError(std::string("hold service: ") + std::strerror(errno));
    }
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd < 0) {
          if (errno == EINTR || errno == ECONNABORTED) continue;
          return;  // the listener was shut down
        }
        static constexpr char kBanner[] = "SSH-2.0-daemon-bench-hold\r\n";
        (void)::send(fd, kBanner, sizeof kBanner - 1, MSG_NOSIGNAL);
        const std::lock_guard lock(mu_);
        fds_.push_back(fd);
      }
    });
  }
  ~HoldService() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
    for (const int fd : fds_) ::close(fd);
  }
  HoldService(const HoldService&) = delete;
  HoldService& operator=(const HoldService&) = delete;

  std::uint16_t port() const { return port_; }
  std::size_t held() {
    const std::lock_guard lock(mu_);
    return fds_.size();
  }

 private:
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<int> fds_;
};

struct IdleMultiplex {
  int sessions = 0;
  int connections_per_service = 0;
  long source_rss_before_kib = 0;  // the daemon with no session yet
  long dest_rss_before_kib = 0;
  long source_rss_kib = 0;  // with every session and connection open, idle
  long dest_rss_kib = 0;
};

// Many idle connections: one tunneld holds N source sessions of 3 services, another the N
// destination sessions; every service gets `per_service` idle connections
// that really reach the local service. VmRSS of both daemons then.
IdleMultiplex measure_idle_multiplex(const Options& o, const std::string& tmp, std::uint16_t admin,
                                     const std::vector<std::string>& common) {
  IdleMultiplex m;
  m.sessions = o.idle_sessions;
  m.connections_per_service = o.idle_connections;
  HoldService hold;
  const std::string target = "127.0.0.1:" + std::to_string(hold.port());
  Daemon dst("tunneld-idle-dest", o, tmp);
  Daemon src("tunneld-idle-src", o, tmp);
  std::this_thread::sleep_for(500ms);
  m.dest_rss_before_kib = rss_kib(dst.pid());
  m.source_rss_before_kib = rss_kib(src.pid());
  progress("opening " + std::to_string(m.sessions) + " sessions of 3 services in each tunneld");
  const std::vector<std::string> services = {"ssh", "web", "db"};
  for (int i = 0; i < m.sessions; ++i) {
    const json t = open_tunnel(admin, services);
    std::vector<std::string> d = common;
    d.insert(d.end(), {"-d", "ssh=" + target + ",web=" + target + ",db=" + target, "--name",
                       "m" + std::to_string(i)});
    dst.open(d, t.at("destinationAccessToken").get<std::string>());
    std::vector<std::string> s = common;
    s.insert(s.end(), {"-s", "ssh=127.0.0.1:0,web=127.0.0.1:0,db=127.0.0.1:0", "-b", "127.0.0.1",
                       "--name", "m" + std::to_string(i)});
    src.open(s, t.at("sourceAccessToken").get<std::string>());
  }
  src.wait_connected(m.sessions, std::chrono::seconds(60 + m.sessions / 2));
  dst.wait_connected(m.sessions, std::chrono::seconds(60 + m.sessions / 2));

  progress("opening " + std::to_string(o.idle_connections) + " idle connections per service");
  std::vector<Connection> clients;
  for (int i = 0; i < m.sessions; ++i) {
    const CtlResult r = src.ctl({"status", "m" + std::to_string(i), "--json"}, {}, 10s);
    if (!r.ok()) throw BenchError("tunnelctl status m" + std::to_string(i) + ": " + r.err);
    const json info = json::parse(r.out);
    for (const auto& svc : info.at("services")) {
      const std::uint16_t port = port_of(svc.at("address").get<std::string>());
      for (int c = 0; c < o.idle_connections; ++c) clients.push_back(Connection::open(port, 10s));
    }
  }
  const std::size_t want = clients.size();
  const auto deadline = Clock::now() + std::chrono::seconds(60 + want / 50);
  while (hold.held() < want) {
    if (Clock::now() > deadline) {
      throw BenchError("only " + std::to_string(hold.held()) + " of " + std::to_string(want) +
                       " idle connections reached the service");
    }
    std::this_thread::sleep_for(50ms);
  }
  std::this_thread::sleep_for(1s);
  m.source_rss_kib = rss_kib(src.pid());
  m.dest_rss_kib = rss_kib(dst.pid());
  progress("  " + std::to_string(want) + " idle connections: source tunneld " +
           fmt_kib(static_cast<double>(m.source_rss_kib)) + ", destination tunneld " +
           fmt_kib(static_cast<double>(m.dest_rss_kib)));
  clients.clear();
  src.process().stop(5000ms);
  dst.process().stop(5000ms);
  return m;
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "daemon-bench: idle memory per session, open-to-connected time and 4-tunnel throughput\n"
      "of tunneld, with the real binaries of a build dir on loopback."};
  app.add_option("--build-dir", o.build_dir, "meson build dir (default: this program's)");
  app.add_option("--sessions", o.session_counts, "session counts for the idle-RSS figures")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--open-samples", o.open_samples, "tunnelctl opens timed")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  app.add_option("--bytes", o.bytes_text, "bytes per stream in the throughput runs")
      ->capture_default_str();
  app.add_option("--streams", o.streams, "concurrent tunnels in the throughput run")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--idle-sessions", o.idle_sessions,
                 "sessions of 3 services with idle connections, for the multiplex memory "
                 "figure (0: skip)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--idle-connections", o.idle_connections,
                 "idle connections per service in those sessions")
      ->check(CLI::Range(1, 128))
      ->capture_default_str();
  app.add_option("--openssl", o.openssl, "openssl command, for the throwaway CA");
  app.add_option("--json", o.json_path, "also write the results as JSON to this file");
  app.add_flag("--keep-temp", o.keep_temp, "keep the temp dir (child logs, certificates)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.bytes = parse_size(o.bytes_text);
  o.openssl = find_program(o.openssl);
  if (o.build_dir.empty()) {
    o.build_dir = fs::canonical("/proc/self/exe").parent_path().parent_path().string();
  }
  std::sort(o.session_counts.begin(), o.session_counts.end());
  for (const char* bin :
       {"/daemon/tunneld", "/ctl/tunnelctl", "/relay/tunnel-relay", "/ctl/localproxy"}) {
    if (::access((o.build_dir + bin).c_str(), X_OK) != 0) {
      throw BenchError(o.build_dir + bin + " missing: build it first");
    }
  }

  const std::string fd_note = raise_fd_limit();
  progress(fd_note);
  const std::string load_start = load_average();

  const bool keep = o.keep_temp;
  const std::string tmp = make_run_dir("daemon-bench", keep);
  const auto cleanup = [&] { remove_run_dir(tmp, keep); };

  json out;
  std::vector<MemoryPoint> memory;
  std::vector<double> open_ms;
  long localproxy_rss = 0;
  long rss0 = 0;
  Throughput tp;
  IdleMultiplex idle;
  try {
    progress("throwaway CA in " + tmp);
    const Pki certs = make_pki(o.openssl, tmp);
    LoadService service;
    const std::string svc = "127.0.0.1:" + std::to_string(service.port());
    progress("starting tunnel-relay");
    Relay relay_proc = start_relay(o.build_dir + "/relay/tunnel-relay", certs, tmp);
    ChildProcess& relay = *relay_proc.process;
    const std::string endpoint = relay_proc.listen;
    const std::uint16_t admin = relay_proc.admin_port;
    const std::vector<std::string> common = {"-e", endpoint, "--cafile", certs.ca_cert};

    // One-process-per-tunnel reference: an idle, connected localproxy pair.
    {
      progress("reference: one idle localproxy");
      const json t = open_tunnel(admin);
      const std::string lp = o.build_dir + "/ctl/localproxy";
      ChildProcess dst(
          "localproxy-destination",
          {lp, "-e", endpoint, "--cafile", certs.ca_cert, "-d", svc, "-v", "3"},
          {"AWSIOT_TUNNEL_ACCESS_TOKEN=" + t.at("destinationAccessToken").get<std::string>()}, tmp);
      // A source in the same tunnel proves the destination is connected.
      const int port = free_port();
      ChildProcess src(
          "localproxy-source",
          {lp, "-e", endpoint, "--cafile", certs.ca_cert, "-s", std::to_string(port), "-b",
           "127.0.0.1", "-v", "3"},
          {"AWSIOT_TUNNEL_ACCESS_TOKEN=" + t.at("sourceAccessToken").get<std::string>()}, tmp);
      wait_until_echo(static_cast<std::uint16_t>(port), Clock::now() + 20s);
      std::this_thread::sleep_for(500ms);
      localproxy_rss = rss_kib(dst.pid());
      src.stop(2000ms);
      dst.stop(2000ms);
    }

    // 1. Idle RSS with N destination sessions.
    progress("starting tunneld (destinations)");
    Daemon dest("tunneld-dest", o, tmp);
    std::this_thread::sleep_for(500ms);
    rss0 = rss_kib(dest.pid());
    std::vector<json> tunnels;  // the destination sessions' tunnels, in order
    for (const int n : o.session_counts) {
      progress("opening destination sessions up to " + std::to_string(n));
      const auto t0 = Clock::now();
      while (static_cast<int>(tunnels.size()) < n) {
        const json t = open_tunnel(admin);
        std::vector<std::string> args = common;
        args.insert(args.end(), {"-d", svc, "--name", "d" + std::to_string(tunnels.size())});
        dest.open(args, t.at("destinationAccessToken").get<std::string>());
        tunnels.push_back(t);
      }
      dest.wait_connected(n, std::chrono::seconds(60 + n / 5));
      const double opened = std::chrono::duration<double>(Clock::now() - t0).count();
      std::this_thread::sleep_for(1s);
      memory.push_back({n, rss_kib(dest.pid()), opened});
      progress("  " + std::to_string(n) + " sessions: VmRSS " + fmt_kib(memory.back().rss_kib));
    }

    // 2 and 3 use a second daemon: open latency on its own sessions, then
    // the source ends of the throughput tunnels.
    progress("starting tunneld (sources)");
    Daemon src("tunneld-src", o, tmp);
    for (int i = 0; i < o.open_samples; ++i) {
      const json t = open_tunnel(admin);
      const std::string name = "lat" + std::to_string(i);
      std::vector<std::string> args = common;
      args.insert(args.end(), {"-d", svc, "--name", name});
      const auto t0 = Clock::now();
      src.open(args, t.at("destinationAccessToken").get<std::string>());
      for (;;) {
        const CtlResult r = src.ctl({"status", name, "--json"}, {}, 10s);
        if (r.ok() && json::parse(r.out).value("state", "") == "connected") break;
        if (ms_since(t0) > 20000) throw BenchError(name + " not connected within 20 s");
      }
      open_ms.push_back(ms_since(t0));
    }
    for (int i = 0; i < o.open_samples; ++i) {
      src.ctl({"close", "lat" + std::to_string(i)}, {}, 10s);
    }

    if (static_cast<int>(tunnels.size()) < o.streams) {
      for (int i = static_cast<int>(tunnels.size()); i < o.streams; ++i) {
        const json t = open_tunnel(admin);
        std::vector<std::string> args = common;
        args.insert(args.end(), {"-d", svc, "--name", "d" + std::to_string(i)});
        dest.open(args, t.at("destinationAccessToken").get<std::string>());
        tunnels.push_back(t);
      }
    }
    progress("opening " + std::to_string(o.streams) + " source sessions");
    std::vector<std::uint16_t> ports;
    for (int i = 0; i < o.streams; ++i) {
      std::vector<std::string> args = common;
      args.insert(args.end(), {"-s", "127.0.0.1:0", "--name", "s" + std::to_string(i)});
      const json r = src.open(args, tunnels[i].at("sourceAccessToken").get<std::string>());
      ports.push_back(r.at("bound_port").get<std::uint16_t>());
    }
    for (const auto p : ports) wait_until_echo(p, Clock::now() + 30s);

    progress("direct loopback: " + std::to_string(o.streams) + " x " + o.bytes_text);
    std::uint64_t moved = 0;
    tp.direct_mbps =
        parallel_upload(std::vector<std::uint16_t>(o.streams, service.port()), o.bytes, moved);
    progress("through tunneld: " + std::to_string(o.streams) + " x " + o.bytes_text);
    const double d0 = read_cpu_seconds(dest.pid());
    const double s0 = read_cpu_seconds(src.pid());
    const double r0 = read_cpu_seconds(relay.pid());
    tp.tunnel_mbps = parallel_upload(ports, o.bytes, tp.tunnel_bytes);
    tp.dest_daemon_cpu = read_cpu_seconds(dest.pid()) - d0;
    tp.source_daemon_cpu = read_cpu_seconds(src.pid()) - s0;
    tp.relay_cpu = read_cpu_seconds(relay.pid()) - r0;

    src.process().stop(3000ms);
    dest.process().stop(5000ms);
    if (o.idle_sessions > 0) idle = measure_idle_multiplex(o, tmp, admin, common);
    relay.stop(3000ms);
    service.stop();
  } catch (...) {
    kill_all_children();
    cleanup();
    throw;
  }
  cleanup();

  // The report.
  const std::string load_end = load_average();
  const Percentiles lat = percentiles(open_ms);
  const double gib = tp.tunnel_bytes / double(1ull << 30);
  struct Row {
    std::string what, target, ours;
    int pass;  // 1 pass, 0 miss, -1 no target
  };
  std::vector<Row> rows;
  char b[256];
  std::snprintf(b, sizeof b, "%s", fmt_kib(rss0).c_str());
  rows.push_back({"tunneld idle RSS, 0 sessions", "-", b, -1});
  json jmem = json::array();
  for (const auto& m : memory) {
    const double per = m.sessions ? double(m.rss_kib - rss0) / m.sessions : 0;
    std::snprintf(b, sizeof b, "%s total, %.1f KiB/session", fmt_kib(m.rss_kib).c_str(), per);
    rows.push_back({"idle RSS, " + std::to_string(m.sessions) + " sessions", "< 100 KiB/session", b,
                    per < 100 ? 1 : 0});
    if (m.sessions == 1000) {
      rows.push_back({"idle RSS, 1000 sessions total", "< 128 MiB", fmt_kib(m.rss_kib),
                      m.rss_kib < 128L * 1024 ? 1 : 0});
    }
    jmem.push_back({{"sessions", m.sessions},
                    {"rss_kib", m.rss_kib},
                    {"per_session_kib", per},
                    {"open_and_connect_seconds", m.open_seconds}});
  }
  if (memory.size() >= 2) {
    // The cost of one more session once the per-daemon TLS and CA setup is paid.
    const MemoryPoint& lo = memory[memory.size() - 2];
    const MemoryPoint& hi = memory.back();
    const double marginal = double(hi.rss_kib - lo.rss_kib) / (hi.sessions - lo.sessions);
    std::snprintf(b, sizeof b, "%.1f KiB/session", marginal);
    rows.push_back({"marginal, " + std::to_string(lo.sessions) + " -> " +
                        std::to_string(hi.sessions) + " sessions",
                    "< 100 KiB/session", b, marginal < 100 ? 1 : 0});
  }
  std::snprintf(b, sizeof b, "%s (x1000 = %s)", fmt_kib(localproxy_rss).c_str(),
                fmt_kib(localproxy_rss * 1000.0).c_str());
  rows.push_back({"one idle localproxy (per-process ref.)", "~10 MiB", b, -1});
  std::snprintf(b, sizeof b, "p50 %.1f, p90 %.1f, max %.1f ms (n=%zu)", lat.p50, lat.p90, lat.max,
                open_ms.size());
  rows.push_back({"tunnelctl open -> connected", "p50 < 50 ms", b, lat.p50 < 50 ? 1 : 0});
  std::snprintf(b, sizeof b, "%.0f MB/s", tp.direct_mbps);
  rows.push_back({std::to_string(o.streams) + " streams, direct loopback TCP", "-", b, -1});
  std::snprintf(b, sizeof b, "%.0f MB/s (%.0f%% of direct)", tp.tunnel_mbps,
                100 * tp.tunnel_mbps / tp.direct_mbps);
  rows.push_back({std::to_string(o.streams) + " tunnels, one tunneld each side", "-", b, -1});
  std::snprintf(b, sizeof b, "dest %.2f, source %.2f (relay %.2f)", tp.dest_daemon_cpu / gib,
                tp.source_daemon_cpu / gib, tp.relay_cpu / gib);
  rows.push_back({"tunneld CPU-seconds per GiB", "-", b, -1});
  if (idle.sessions > 0) {
    const std::string what = std::to_string(idle.sessions) + " sessions x 3 services x " +
                             std::to_string(idle.connections_per_service) + " idle conns";
    rows.push_back({what + ", source", "< 64 MiB",
                    fmt_kib(static_cast<double>(idle.source_rss_kib)),
                    idle.source_rss_kib < 64L * 1024 ? 1 : 0});
    rows.push_back({what + ", destination", "< 64 MiB",
                    fmt_kib(static_cast<double>(idle.dest_rss_kib)),
                    idle.dest_rss_kib < 64L * 1024 ? 1 : 0});
  }

  std::printf("\ndaemon-bench  build %s  cpu %s x%u\n", o.build_dir.c_str(), cpu_model().c_str(),
              std::thread::hardware_concurrency());
  std::printf("load average: %s at start, %s at end (others may share the machine)\n",
              load_start.c_str(), load_end.c_str());
  std::printf("%s\n\n", fd_note.c_str());
  std::printf("| %-40s | %-18s | %-46s | %-4s |\n", "measure", "target", "measured", "");
  std::printf("|%s|%s|%s|%s|\n", std::string(42, '-').c_str(), std::string(20, '-').c_str(),
              std::string(48, '-').c_str(), std::string(6, '-').c_str());
  json jv = json::array();
  for (const auto& r : rows) {
    const char* verdict = r.pass < 0 ? "" : r.pass ? "PASS" : "MISS";
    std::printf("| %-40s | %-18s | %-46s | %-4s |\n", r.what.c_str(), r.target.c_str(),
                r.ours.c_str(), verdict);
    jv.push_back(
        {{"what", r.what}, {"target", r.target}, {"measured", r.ours}, {"verdict", verdict}});
  }
  std::fflush(stdout);
  if (!o.json_path.empty()) {
    out = {{"build_dir", o.build_dir},
           {"cpus", std::thread::hardware_concurrency()},
           {"cpu_model", cpu_model()},
           {"load_average_start", load_start},
           {"load_average_end", load_end},
           {"fd_limit", fd_note},
           {"idle_rss_kib_0_sessions", rss0},
           {"memory", jmem},
           {"localproxy_idle_rss_kib", localproxy_rss},
           {"open_to_connected_ms",
            {{"samples", open_ms}, {"p50", lat.p50}, {"p90", lat.p90}, {"max", lat.max}}},
           {"throughput",
            {{"streams", o.streams},
             {"bytes_per_stream", o.bytes},
             {"direct_mb_per_s", tp.direct_mbps},
             {"tunnel_mb_per_s", tp.tunnel_mbps},
             {"dest_daemon_cpu_s_per_gib", tp.dest_daemon_cpu / gib},
             {"source_daemon_cpu_s_per_gib", tp.source_daemon_cpu / gib},
             {"relay_cpu_s_per_gib", tp.relay_cpu / gib}}},
           {"idle_multiplex",
            {{"sessions", idle.sessions},
             {"services_per_session", 3},
             {"connections_per_service", idle.connections_per_service},
             {"source_rss_kib_before", idle.source_rss_before_kib},
             {"dest_rss_kib_before", idle.dest_rss_before_kib},
             {"source_rss_kib", idle.source_rss_kib},
             {"dest_rss_kib", idle.dest_rss_kib}}},
           {"verdicts", jv}};
    std::ofstream(o.json_path) << out.dump(2) << "\n";
    progress("wrote " + o.json_path);
  }
  return 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  try {
    return bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "daemon-bench: %s\n", e.what());
    return 1;
  }
}
