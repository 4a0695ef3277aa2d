// tunnel-bench: measures a full V1 tunnel (source localproxy, tunnel-relay
// over TLS, destination localproxy, a service) against a direct-TCP baseline
// measured in the same run, and prints the figures next to issue 2's targets.
// A program that prints figures, not a timed test; see docs/benchmarks.md.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "child_process.h"
#include "load_client.h"
#include "load_service.h"
#include "process_usage.h"
#include "results.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace bench {
namespace {

struct Options {
  std::string build_dir;
  std::string relay;
  std::string localproxy;
  std::string openssl = "openssl";
  std::string bytes_text = "1GiB";
  std::uint64_t bytes = 0;
  int runs = 1;
  int round_trips = 2000;
  int warmup = 50;
  int latency_budget_s = 60;
  int fresh_samples = 20;
  int startup_samples = 5;
  std::string json_path;
  bool keep_temp = false;
  int child_verbosity = 3;
};

std::uint64_t parse_size(const std::string& text) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw BenchError("not a size: " + text);
  }
  std::string unit = text.substr(used);
  unit.erase(0, unit.find_first_not_of(' '));
  static const std::pair<const char*, double> units[] = {
      {"", 1},          {"B", 1},    {"K", 1024},    {"KiB", 1024},    {"KB", 1e3}, {"M", 1 << 20},
      {"MiB", 1 << 20}, {"MB", 1e6}, {"G", 1 << 30}, {"GiB", 1 << 30}, {"GB", 1e9}};
  for (const auto& [name, factor] : units) {
    if (unit == name && v > 0) return static_cast<std::uint64_t>(v * factor);
  }
  throw BenchError("not a size: " + text + " (use e.g. 1GiB, 256MiB, 100MB)");
}

std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = dirs.substr(start, end - start) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    start = end + 1;
  }
  throw BenchError(name + " not found in PATH");
}

// A port nobody listens on right now, for `localproxy -s PORT`.
std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw BenchError("cannot find a free loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::uint16_t port_of(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) throw BenchError("no port in " + host_port);
  return static_cast<std::uint16_t>(std::stoi(host_port.substr(colon + 1)));
}

// A throwaway CA and a server certificate for 127.0.0.1 / localhost.
struct Pki {
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
};

Pki make_pki(const std::string& openssl, const std::string& dir) {
  const std::string pki = dir + "/pki";
  fs::create_directories(pki);
  Pki p{pki + "/ca.pem", pki + "/server.pem", pki + "/server.key"};
  const std::string ca_key = pki + "/ca.key";
  const std::string csr = pki + "/server.csr";
  const std::string ext = pki + "/server.ext";
  std::ofstream(ext) << "basicConstraints=CA:FALSE\n"
                        "keyUsage=critical,digitalSignature,keyEncipherment\n"
                        "extendedKeyUsage=serverAuth\n"
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  const auto timeout = 20s;
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                       "-nodes"};
  std::vector<std::string> ca = {openssl, "req", "-x509"};
  ca.insert(ca.end(), ec.begin(), ec.end());
  ca.insert(ca.end(),
            {"-keyout", ca_key, "-out", p.ca_cert, "-days", "1", "-subj",
             "/CN=tunnel-bench throwaway CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  run_command(ca, dir, timeout);
  std::vector<std::string> req = {openssl, "req"};
  req.insert(req.end(), ec.begin(), ec.end());
  req.insert(req.end(), {"-keyout", p.server_key, "-out", csr, "-subj", "/CN=localhost"});
  run_command(req, dir, timeout);
  run_command({openssl, "x509", "-req", "-in", csr, "-CA", p.ca_cert, "-CAkey", ca_key,
               "-CAcreateserial", "-out", p.server_cert, "-days", "1", "-extfile", ext},
              dir, timeout);
  return p;
}

// One call to the relay's admin API (plain HTTP/1.1 on loopback).
nlohmann::json admin_request(std::uint16_t port, const std::string& method, const std::string& path,
                             const std::string& body) {
  Connection c = Connection::open(port, 5000ms);
  const std::string req = method + " " + path +
                          " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          "Content-Length: " +
                          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  c.send_all(req.data(), req.size());
  std::string resp;
  char buf[4096];
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    const std::size_t n = c.recv_some(buf, sizeof buf);
    if (n == 0) break;
    resp.append(buf, n);
    const auto head_end = resp.find("\r\n\r\n");
    if (head_end == std::string::npos) continue;
    std::string head = resp.substr(0, head_end);
    std::transform(head.begin(), head.end(), head.begin(), ::tolower);
    const auto cl = head.find("content-length:");
    if (cl != std::string::npos && resp.size() >= head_end + 4 + std::stoul(head.substr(cl + 15))) {
      break;
    }
  }
  const auto head_end = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.1 2", 0) != 0 || head_end == std::string::npos) {
    throw BenchError("admin " + method + " " + path + ": " + resp.substr(0, 200));
  }
  return nlohmann::json::parse(resp.substr(head_end + 4));
}

// The benchmark's world: temp dir, service, relay, the tunnel under test.
class Bench {
 public:
  Bench(Options options, RunInfo info, std::string tmp)
      : o_(std::move(options)), info_(std::move(info)), tmp_(std::move(tmp)) {}

  Results run();

 private:
  struct Tunnel {
    std::unique_ptr<ChildProcess> destination;
    std::unique_ptr<ChildProcess> source;
    std::uint16_t port = 0;
  };

  void start_relay();
  // Opens a tunnel on the relay: its id and access tokens.
  nlohmann::json open_tunnel();
  // Spawns both localproxies for a tunnel open_tunnel() returned.
  Tunnel spawn_tunnel(const std::string& label, const nlohmann::json& tokens);
  CpuCost cpu_now(const Tunnel& t) const;
  void measure_throughput(Results& r, Tunnel& t);
  void measure_latency(Results& r, Tunnel& t);
  void measure_fresh_connections(Results& r, Tunnel& t);
  void measure_startup(Results& r);
  std::string child_logs(const Tunnel* t) const;
  void progress(const std::string& what) const {
    std::fprintf(stderr, "[bench] %s\n", what.c_str());
  }

  Options o_;
  RunInfo info_;
  std::string tmp_;
  Pki pki_;
  std::unique_ptr<LoadService> service_;
  std::unique_ptr<ChildProcess> relay_;
  std::string relay_listen_;
  std::uint16_t admin_port_ = 0;
};

void Bench::start_relay() {
  relay_ = std::make_unique<ChildProcess>(
      "relay",
      std::vector<std::string>{o_.relay, "--listen", "127.0.0.1:0", "--tls-cert", pki_.server_cert,
                               "--tls-key", pki_.server_key, "--admin", "127.0.0.1:0", "-v",
                               "warn"},
      std::vector<std::string>{}, tmp_);
  const std::string line = wait_for_line(
      *relay_, relay_->stdout_path(),
      [](const std::string& l) { return l.find("\"ready\"") != std::string::npos; },
      Clock::now() + 15s);
  const auto ready = nlohmann::json::parse(line);
  relay_listen_ = ready.at("listen").get<std::string>();
  admin_port_ = port_of(ready.at("admin").get<std::string>());
}

nlohmann::json Bench::open_tunnel() { return admin_request(admin_port_, "POST", "/tunnels", "{}"); }

Bench::Tunnel Bench::spawn_tunnel(const std::string& label, const nlohmann::json& t) {
  Tunnel tunnel;
  tunnel.port = free_port();
  const std::string common_ca = pki_.ca_cert;
  tunnel.destination = std::make_unique<ChildProcess>(
      label + "-destination",
      std::vector<std::string>{o_.localproxy, "-e", relay_listen_, "--cafile", common_ca, "-d",
                               "127.0.0.1:" + std::to_string(service_->port()), "-v",
                               std::to_string(o_.child_verbosity)},
      std::vector<std::string>{"AWSIOT_TUNNEL_ACCESS_TOKEN=" +
                               t.at("destinationAccessToken").get<std::string>()},
      tmp_);
  tunnel.source = std::make_unique<ChildProcess>(
      label + "-source",
      std::vector<std::string>{o_.localproxy, "-e", relay_listen_, "--cafile", common_ca, "-s",
                               std::to_string(tunnel.port), "-b", "127.0.0.1", "-v",
                               std::to_string(o_.child_verbosity)},
      std::vector<std::string>{"AWSIOT_TUNNEL_ACCESS_TOKEN=" +
                               t.at("sourceAccessToken").get<std::string>()},
      tmp_);
  return tunnel;
}

std::string Bench::child_logs(const Tunnel* t) const {
  std::string out;
  const auto add = [&](const ChildProcess* c) {
    if (c != nullptr) out += "\n--- " + c->name() + " stderr (tail):\n" + c->stderr_tail(12);
  };
  add(relay_.get());
  if (t != nullptr) {
    add(t->source.get());
    add(t->destination.get());
  }
  return out;
}

CpuCost Bench::cpu_now(const Tunnel& t) const {
  CpuCost c;
  c.bench = read_own_cpu_seconds();
  c.relay = read_cpu_seconds(relay_->pid());
  c.source = read_cpu_seconds(t.source->pid());
  c.destination = read_cpu_seconds(t.destination->pid());
  return c;
}

void Bench::measure_throughput(Results& r, Tunnel& t) {
  struct Direction {
    const char* name;
    const char* key;
    TransferResult (*fn)(std::uint16_t, std::uint64_t, Clock::time_point);
  };
  const Direction dirs[] = {{"source -> destination", "source_to_destination", upload},
                            {"destination -> source", "destination_to_source", download},
                            {"both ways at once", "both_ways", duplex}};
  // A generous anti-hang bound: 2 MB/s would be a broken tunnel, not a figure.
  const auto budget = std::chrono::seconds(60 + o_.bytes / 2'000'000);
  for (const Direction& d : dirs) {
    std::vector<TransferResult> direct;
    std::vector<TransferResult> tunnel;
    CpuCost direct_cpu;
    CpuCost tunnel_cpu;
    // Runs `fn` and adds the CPU time every process used meanwhile to `cost`.
    const auto timed = [&](CpuCost& cost, const std::function<TransferResult()>& fn) {
      const CpuCost before = cpu_now(t);
      const TransferResult result = fn();
      const CpuCost after = cpu_now(t);
      cost.bench += after.bench - before.bench;
      cost.relay += after.relay - before.relay;
      cost.source += after.source - before.source;
      cost.destination += after.destination - before.destination;
      cost.bytes += result.bytes;
      return result;
    };
    for (int i = 0; i < o_.runs; ++i) {
      progress(std::string("throughput ") + d.name + ": direct");
      direct.push_back(timed(
          direct_cpu, [&] { return d.fn(service_->port(), o_.bytes, Clock::now() + budget); }));
      progress(std::string("throughput ") + d.name + ": tunnel");
      tunnel.push_back(
          timed(tunnel_cpu, [&] { return d.fn(t.port, o_.bytes, Clock::now() + budget); }));
    }
    const auto median = [](std::vector<TransferResult> v) {
      std::sort(v.begin(), v.end(), [](const TransferResult& a, const TransferResult& b) {
        return a.seconds < b.seconds;
      });
      return v[v.size() / 2];
    };
    r.throughput.push_back({d.name, d.key, median(direct), median(tunnel), direct_cpu, tunnel_cpu});
  }
}

void Bench::measure_latency(Results& r, Tunnel& t) {
  const auto budget = std::chrono::seconds(o_.latency_budget_s);
  for (const std::size_t size : {std::size_t{1}, std::size_t{4096}, std::size_t{65536}}) {
    progress("round trips of " + std::to_string(size) + " B");
    LatencyRow row;
    row.size = size;
    row.direct = summarize(round_trips(service_->port(), size, o_.round_trips, o_.warmup, budget));
    const CpuCost before = cpu_now(t);
    row.tunnel = summarize(round_trips(t.port, size, o_.round_trips, o_.warmup, budget));
    const CpuCost after = cpu_now(t);
    row.tunnel_cpu = {after.bench - before.bench, after.relay - before.relay,
                      after.source - before.source, after.destination - before.destination, 0};
    row.tunnel_round_trips = row.tunnel.count + static_cast<std::size_t>(o_.warmup);
    r.latency.push_back(row);
  }
}

void Bench::measure_fresh_connections(Results& r, Tunnel& t) {
  progress("first round trips on fresh connections");
  std::vector<double> direct;
  std::vector<double> tunnel;
  for (int i = 0; i < o_.fresh_samples; ++i) {
    direct.push_back(first_round_trip(service_->port()));
    std::this_thread::sleep_for(20ms);
    tunnel.push_back(first_round_trip(t.port));
    // Let the tunnel finish the previous stream: we measure a fresh
    // connection on an idle tunnel, not a queue.
    std::this_thread::sleep_for(20ms);
  }
  r.first_rt_direct = summarize(direct);
  r.first_rt_tunnel = summarize(tunnel);
}

void Bench::measure_startup(Results& r) {
  for (int i = 0; i < o_.startup_samples; ++i) {
    progress("start to a working tunnel, sample " + std::to_string(i + 1));
    const nlohmann::json tokens = open_tunnel();
    const auto t0 = Clock::now();
    Tunnel t = spawn_tunnel("startup", tokens);
    try {
      const auto t1 = wait_until_echo(t.port, t0 + 15s);
      r.startup_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      r.startup_cpu_ms.push_back(
          1000 * (read_cpu_seconds(t.source->pid()) + read_cpu_seconds(t.destination->pid())));
    } catch (const BenchError& e) {
      throw BenchError(std::string(e.what()) + child_logs(&t));
    }
    t.source->stop(2000ms);
    t.destination->stop(2000ms);
  }
}

Results Bench::run() {
  Results r;
  r.info = info_;
  progress("making a throwaway CA in " + tmp_);
  pki_ = make_pki(o_.openssl, tmp_);
  service_ = std::make_unique<LoadService>();
  progress("starting the relay");
  start_relay();

  progress("starting the localproxies");
  Tunnel t = spawn_tunnel("bench", open_tunnel());
  try {
    wait_until_echo(t.port, Clock::now() + 15s);
  } catch (const BenchError& e) {
    throw BenchError(std::string(e.what()) + child_logs(&t));
  }
  std::this_thread::sleep_for(500ms);

  const std::vector<std::pair<std::string, ChildProcess*>> procs = {
      {"relay", relay_.get()},
      {"localproxy source", t.source.get()},
      {"localproxy destination", t.destination.get()}};
  const std::vector<std::string> keys = {"relay", "source", "destination"};
  std::vector<pid_t> pids;
  for (std::size_t i = 0; i < procs.size(); ++i) {
    MemoryRow m;
    m.name = procs[i].first;
    m.key = keys[i];
    if (const auto mem = read_memory(procs[i].second->pid())) {
      m.idle_rss_kib = mem->rss_kib;
      m.idle_anon_kib = mem->anon_kib;
    }
    r.memory.push_back(m);
    pids.push_back(procs[i].second->pid());
  }

  try {
    {
      MemorySampler sampler(pids, std::chrono::milliseconds(r.info.memory_period_ms));
      measure_throughput(r, t);
      const std::vector<long> peaks = sampler.peaks_kib();
      r.info.memory_samples = sampler.samples();
      for (std::size_t i = 0; i < pids.size(); ++i) {
        r.memory[i].peak_rss_kib = peaks[i];
        if (const auto mem = read_memory(pids[i])) r.memory[i].hwm_kib = mem->hwm_kib;
      }
    }
    std::this_thread::sleep_for(500ms);
    for (std::size_t i = 0; i < pids.size(); ++i) {
      if (const auto mem = read_memory(pids[i])) r.memory[i].after_rss_kib = mem->rss_kib;
    }
    measure_latency(r, t);
    measure_fresh_connections(r, t);
  } catch (const BenchError& e) {
    throw BenchError(std::string(e.what()) + child_logs(&t));
  }
  t.source->stop(2000ms);
  t.destination->stop(2000ms);
  measure_startup(r);
  relay_->stop(2000ms);
  service_->stop();
  return r;
}

std::string first_line_with(const std::string& path, const std::string& key) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key, 0) == 0) {
      const auto colon = line.find(':');
      return colon == std::string::npos ? line
                                        : line.substr(line.find_first_not_of(" \t", colon + 1));
    }
  }
  return "unknown";
}

void describe_build(RunInfo& info) {
  info.build_type = info.optimization = info.sanitize = "unknown";
  std::ifstream in(info.build_dir + "/meson-info/intro-buildoptions.json");
  if (!in) return;
  try {
    const auto options = nlohmann::json::parse(in);
    for (const auto& opt : options) {
      const std::string name = opt.value("name", "");
      const auto value = opt.value("value", nlohmann::json());
      const std::string text = value.is_string() ? value.get<std::string>() : value.dump();
      if (name == "buildtype") info.build_type = text;
      if (name == "optimization") info.optimization = "-O" + text;
      if (name == "b_sanitize") info.sanitize = text;
    }
  } catch (const std::exception&) {
  }
}

fs::path own_build_dir() {
  // This program lives in BUILD/bench/.
  return fs::canonical("/proc/self/exe").parent_path().parent_path();
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "tunnel-bench: a full tunnel (source localproxy, tunnel-relay over TLS, destination\n"
      "localproxy, a service) against direct loopback TCP, measured in the same run."};
  app.add_option("--build-dir", o.build_dir,
                 "meson build dir holding relay/tunnel-relay and ctl/localproxy "
                 "(default: the one this program was built in)");
  app.add_option("--relay", o.relay, "tunnel-relay binary (overrides --build-dir)");
  app.add_option("--localproxy", o.localproxy, "localproxy binary (overrides --build-dir)");
  app.add_option("--openssl", o.openssl, "openssl command, for the throwaway CA");
  app.add_option("--bytes", o.bytes_text, "bytes per throughput run, e.g. 1GiB, 256MiB")
      ->capture_default_str();
  app.add_option("--runs", o.runs, "throughput runs per direction (the median is shown)")
      ->check(CLI::Range(1, 99))
      ->capture_default_str();
  app.add_option("--round-trips", o.round_trips, "recorded round trips per message size")
      ->check(CLI::Range(1, 10'000'000))
      ->capture_default_str();
  app.add_option("--warmup", o.warmup, "unrecorded round trips before those")
      ->check(CLI::Range(0, 1'000'000))
      ->capture_default_str();
  app.add_option("--latency-budget", o.latency_budget_s,
                 "seconds at most per message size and path (fewer round trips if exceeded)")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--fresh-samples", o.fresh_samples, "fresh connections timed")
      ->check(CLI::Range(1, 100'000))
      ->capture_default_str();
  app.add_option("--startup-samples", o.startup_samples, "localproxy pairs started and timed")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--json", o.json_path, "also write the results as JSON to this file");
  app.add_flag("--keep-temp", o.keep_temp, "keep the temp dir (certificates, child logs)");
  app.add_option("--child-verbosity", o.child_verbosity,
                 "localproxy -v level (3 warnings; 5 debug, for --keep-temp logs)")
      ->check(CLI::Range(0, 6))
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  o.bytes = parse_size(o.bytes_text);
  if (o.build_dir.empty()) o.build_dir = own_build_dir().string();
  if (o.relay.empty()) o.relay = o.build_dir + "/relay/tunnel-relay";
  if (o.localproxy.empty()) o.localproxy = o.build_dir + "/ctl/localproxy";
  o.openssl = find_program(o.openssl);

  Results r;
  r.info.build_dir = fs::absolute(o.relay).parent_path().parent_path().lexically_normal().string();
  describe_build(r.info);
  r.info.cpus = static_cast<int>(std::thread::hardware_concurrency());
  r.info.cpu_model = first_line_with("/proc/cpuinfo", "model name");
  {
    std::istringstream loadavg(read_file("/proc/loadavg"));
    std::string one, five, fifteen;
    loadavg >> one >> five >> fifteen;
    r.info.load_average = one + " " + five + " " + fifteen;
  }
  r.info.bytes = o.bytes;
  r.info.runs = o.runs;

  char tmpl[] = "/tmp/tunnel-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw BenchError("mkdtemp failed");
  const std::string tmp = tmpl;
  const bool keep = o.keep_temp;

  // Termination signals go to one thread, which kills the children: no
  // work inside a signal handler, and no child left behind on ^C.
  std::thread([tmp, keep] {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
    int sig = 0;
    sigwait(&set, &sig);
    kill_all_children();
    if (!keep) {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
    std::fprintf(stderr, "tunnel-bench: interrupted by signal %d; children killed\n", sig);
    std::_Exit(128 + sig);
  }).detach();

  const auto cleanup = [&] {
    if (keep) {
      std::fprintf(stderr, "[bench] kept %s\n", tmp.c_str());
    } else {
      std::error_code ec;
      fs::remove_all(tmp, ec);
    }
  };
  const std::string json_path = o.json_path;
  try {
    Bench bench(std::move(o), r.info, tmp);
    const Results measured = bench.run();
    const std::vector<Verdict> verdicts = judge(measured);
    std::fputs("\n", stdout);
    std::fputs(format_report(measured, verdicts).c_str(), stdout);
    std::fflush(stdout);
    if (!json_path.empty()) {
      std::ofstream(json_path) << format_json(measured, verdicts);
      std::fprintf(stderr, "[bench] wrote %s\n", json_path.c_str());
    }
  } catch (...) {
    kill_all_children();
    cleanup();
    throw;
  }
  cleanup();
  return 0;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  // Block the termination signals before any thread starts, so that only the
  // signal thread takes them; children get a clean mask back before exec.
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  try {
    return bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tunnel-bench: %s\n", e.what());
    return 1;
  }
}
