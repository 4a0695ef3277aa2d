// tunnel-bench: measures a full tunnel (source localproxy, tunnel-relay over
// TLS, destination localproxy, a service) against a direct-TCP baseline
// measured in the same run and, with --reference, against the reference
// localproxy at both ends of a second tunnel on the same relay. A program
// that prints figures, not a timed test; see docs/benchmarks.md.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

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

#include "bench_setup.h"
#include "child_process.h"
#include "load_client.h"
#include "load_service.h"
#include "multiplex.h"
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
  int connections = 16;
  std::string https_proxy;  // http://HOST:PORT of a CONNECT proxy, for the via-proxy figures
  std::string multiplex_bytes_text = "256MiB";
  std::string reference;  // the reference localproxy binary, for its figures
};

// The service the reference's tunnels are opened with: the reference waits
// for SERVICE_IDS before it listens or connects, and the relay sends it only
// for a tunnel that has services.
constexpr const char* kReferenceService = "bench";

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

  // Spawns both localproxies for a tunnel the relay opened; with `service`,
  // as that one service of a V3 tunnel (-s NAME=PORT, -d NAME=HOST:PORT).
  Tunnel spawn_tunnel(const std::string& label, const nlohmann::json& tokens,
                      const std::string& service = "", const std::vector<std::string>& extra = {});
  // The reference localproxy at both ends of the tunnel the relay opened
  // for `tokens` (opened with kReferenceService).
  Tunnel spawn_reference(const std::string& label, const nlohmann::json& tokens);
  // (Re)starts reference_ on a fresh tunnel and waits until it echoes.
  void start_reference();
  // Runs one measurement through reference_. If it fails, records why in
  // `ref`, restarts the reference on a fresh tunnel and returns nullopt: the
  // reference's failures are figures too, never a reason to stop the run.
  template <typename F>
  auto try_reference(ReferenceResults& ref, const std::string& what, F&& fn)
      -> std::optional<decltype(fn())>;
  CpuCost cpu_now(const Tunnel& t) const;
  // The three directions through tunnel t into `rows`; with `ref`, each run
  // also goes through reference_ right after t, into ref->throughput.
  void measure_throughput(std::vector<ThroughputRow>& rows, Tunnel& t,
                          ReferenceResults* ref = nullptr);
  // --https-proxy: the same through a second tunnel whose proxies reach the
  // relay through the HTTP CONNECT proxy.
  void measure_via_proxy(Results& r);
  void measure_latency(Results& r, Tunnel& t);
  void measure_fresh_connections(Results& r, Tunnel& t);
  void measure_startup(Results& r);
  void measure_multiplex(Results& r);
  std::string child_logs(const Tunnel* t) const;
  void progress(const std::string& what) const {
    std::fprintf(stderr, "[bench] %s\n", what.c_str());
  }

  Options o_;
  RunInfo info_;
  std::string tmp_;
  Pki pki_;
  std::unique_ptr<LoadService> service_;
  Relay relay_;
  Tunnel reference_;
  // The reference could not be restarted after a failure: the rest of the
  // run measures ours only.
  bool reference_down_ = false;
};

Bench::Tunnel Bench::spawn_tunnel(const std::string& label, const nlohmann::json& t,
                                  const std::string& service,
                                  const std::vector<std::string>& extra) {
  Tunnel tunnel;
  tunnel.port = free_port();
  const std::string common_ca = pki_.ca_cert;
  const std::string prefix = service.empty() ? "" : service + "=";
  const std::string verbosity = std::to_string(o_.child_verbosity);
  std::vector<std::string> dst = {o_.localproxy,
                                  "-e",
                                  relay_.listen,
                                  "--cafile",
                                  common_ca,
                                  "-d",
                                  prefix + "127.0.0.1:" + std::to_string(service_->port()),
                                  "-v",
                                  verbosity};
  std::vector<std::string> src = {o_.localproxy,
                                  "-e",
                                  relay_.listen,
                                  "--cafile",
                                  common_ca,
                                  "-s",
                                  prefix + std::to_string(tunnel.port),
                                  "-b",
                                  "127.0.0.1",
                                  "-v",
                                  verbosity};
  dst.insert(dst.end(), extra.begin(), extra.end());
  src.insert(src.end(), extra.begin(), extra.end());
  tunnel.destination = std::make_unique<ChildProcess>(
      label + "-destination", dst,
      std::vector<std::string>{"AWSIOT_TUNNEL_ACCESS_TOKEN=" +
                               t.at("destinationAccessToken").get<std::string>()},
      tmp_);
  tunnel.source = std::make_unique<ChildProcess>(
      label + "-source", src,
      std::vector<std::string>{"AWSIOT_TUNNEL_ACCESS_TOKEN=" +
                               t.at("sourceAccessToken").get<std::string>()},
      tmp_);
  return tunnel;
}

Bench::Tunnel Bench::spawn_reference(const std::string& label, const nlohmann::json& t) {
  Tunnel tunnel;
  tunnel.port = free_port();
  const std::string service = std::string(kReferenceService) + "=";
  const std::string verbosity = std::to_string(o_.child_verbosity);
  // Its CLI: -c takes a hashed CA directory (it has no --cafile); the token
  // comes from the environment, as for ours.
  const std::vector<std::string> dst = {o_.reference,
                                        "-e",
                                        relay_.listen,
                                        "-c",
                                        pki_.ca_dir,
                                        "-d",
                                        service + "127.0.0.1:" + std::to_string(service_->port()),
                                        "-v",
                                        verbosity};
  const std::vector<std::string> src = {o_.reference,
                                        "-e",
                                        relay_.listen,
                                        "-c",
                                        pki_.ca_dir,
                                        "-s",
                                        service + std::to_string(tunnel.port),
                                        "-b",
                                        "127.0.0.1",
                                        "-v",
                                        verbosity};
  tunnel.destination = std::make_unique<ChildProcess>(
      label + "-destination", dst,
      std::vector<std::string>{"AWSIOT_TUNNEL_ACCESS_TOKEN=" +
                               t.at("destinationAccessToken").get<std::string>()},
      tmp_);
  tunnel.source = std::make_unique<ChildProcess>(
      label + "-source", src,
      std::vector<std::string>{"AWSIOT_TUNNEL_ACCESS_TOKEN=" +
                               t.at("sourceAccessToken").get<std::string>()},
      tmp_);
  return tunnel;
}

void Bench::start_reference() {
  if (reference_.source) reference_.source->stop(2000ms);
  if (reference_.destination) reference_.destination->stop(2000ms);
  progress("starting the reference localproxies");
  reference_ = spawn_reference("reference", open_tunnel(relay_.admin_port, {kReferenceService}));
  try {
    wait_until_echo(reference_.port, Clock::now() + 15s);
  } catch (const BenchError& e) {
    throw BenchError(std::string(e.what()) + child_logs(&reference_));
  }
}

template <typename F>
auto Bench::try_reference(ReferenceResults& ref, const std::string& what, F&& fn)
    -> std::optional<decltype(fn())> {
  if (reference_down_) return std::nullopt;
  try {
    return fn();
  } catch (const BenchError& e) {
    // The reference logs to stdout; its last line says why it stopped, if
    // it did.
    std::string last;
    for (ChildProcess* c : {reference_.source.get(), reference_.destination.get()}) {
      std::string tail = c->stdout_tail(1);
      while (!tail.empty() && (tail.back() == '\n' || tail.front() == '\n')) {
        tail.erase(tail.back() == '\n' ? tail.size() - 1 : 0, 1);
      }
      const bool exited = !c->running();
      if (exited || !tail.empty()) {
        last += fmt::format("; {}{}{}", c->name(), exited ? " exited" : "",
                            tail.empty() ? "" : ", last line: " + tail);
      }
    }
    std::string why = e.what();
    why = why.substr(0, why.find('\n'));
    ref.failures.push_back(what + ": " + why + last);
    progress("the reference failed (" + what + "); restarting it on a fresh tunnel");
    try {
      start_reference();
    } catch (const BenchError& again) {
      std::string text = again.what();
      ref.failures.push_back("restarting it: " + text.substr(0, text.find('\n')) +
                             "; the rest of the run measures ours only");
      reference_down_ = true;
    }
    return std::nullopt;
  }
}

std::string Bench::child_logs(const Tunnel* t) const {
  std::string out;
  const auto add = [&](const ChildProcess* c) {
    if (c != nullptr) out += "\n--- " + c->name() + " stderr (tail):\n" + c->stderr_tail(12);
  };
  add(relay_.process.get());
  if (t != nullptr) {
    add(t->source.get());
    add(t->destination.get());
  }
  return out;
}

CpuCost Bench::cpu_now(const Tunnel& t) const {
  CpuCost c;
  c.bench = read_own_cpu_seconds();
  c.relay = read_cpu_seconds(relay_.process->pid());
  c.source = read_cpu_seconds(t.source->pid());
  c.destination = read_cpu_seconds(t.destination->pid());
  return c;
}

void Bench::measure_throughput(std::vector<ThroughputRow>& rows, Tunnel& t, ReferenceResults* ref) {
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
    std::vector<TransferResult> theirs;
    CpuCost direct_cpu;
    CpuCost tunnel_cpu;
    CpuCost ref_cpu;
    // Runs `fn` and adds the CPU time every process of `via` used meanwhile
    // to `cost`.
    const auto timed = [&](CpuCost& cost, const Tunnel& via,
                           const std::function<TransferResult()>& fn) {
      const CpuCost before = cpu_now(via);
      const TransferResult result = fn();
      const CpuCost after = cpu_now(via);
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
          direct_cpu, t, [&] { return d.fn(service_->port(), o_.bytes, Clock::now() + budget); }));
      progress(std::string("throughput ") + d.name + ": tunnel");
      tunnel.push_back(
          timed(tunnel_cpu, t, [&] { return d.fn(t.port, o_.bytes, Clock::now() + budget); }));
      if (ref == nullptr) continue;
      progress(std::string("throughput ") + d.name + ": reference");
      // CPU of a failed run is not counted: it moved an unknown share.
      CpuCost attempt;
      const auto result = try_reference(*ref, std::string("throughput ") + d.name, [&] {
        return timed(attempt, reference_,
                     [&] { return d.fn(reference_.port, o_.bytes, Clock::now() + budget); });
      });
      if (result) {
        theirs.push_back(*result);
        ref_cpu.bench += attempt.bench;
        ref_cpu.relay += attempt.relay;
        ref_cpu.source += attempt.source;
        ref_cpu.destination += attempt.destination;
        ref_cpu.bytes += attempt.bytes;
      }
    }
    const auto median = [](std::vector<TransferResult> v) {
      if (v.empty()) return TransferResult{};
      std::sort(v.begin(), v.end(), [](const TransferResult& a, const TransferResult& b) {
        return a.seconds < b.seconds;
      });
      return v[v.size() / 2];
    };
    rows.push_back({d.name, d.key, median(direct), median(tunnel), direct_cpu, tunnel_cpu});
    if (ref != nullptr) {
      ref->throughput.push_back(
          {d.name, d.key, median(direct), median(theirs), direct_cpu, ref_cpu});
    }
  }
}

void Bench::measure_latency(Results& r, Tunnel& t) {
  const auto budget = std::chrono::seconds(o_.latency_budget_s);
  for (const std::size_t size : {std::size_t{1}, std::size_t{4096}, std::size_t{65536}}) {
    progress("round trips of " + std::to_string(size) + " B");
    LatencyRow row;
    row.size = size;
    row.direct = summarize(round_trips(service_->port(), size, o_.round_trips, o_.warmup, budget));
    // Through `via`: the summary and the CPU its processes used meanwhile.
    const auto through = [&](LatencyRow& out, const Tunnel& via) {
      const CpuCost before = cpu_now(via);
      out.tunnel = summarize(round_trips(via.port, size, o_.round_trips, o_.warmup, budget));
      const CpuCost after = cpu_now(via);
      out.tunnel_cpu = {after.bench - before.bench, after.relay - before.relay,
                        after.source - before.source, after.destination - before.destination, 0};
      out.tunnel_round_trips = out.tunnel.count + static_cast<std::size_t>(o_.warmup);
      return true;
    };
    through(row, t);
    r.latency.push_back(row);
    if (!r.reference) continue;
    progress("round trips of " + std::to_string(size) + " B: reference");
    LatencyRow theirs;
    theirs.size = size;
    theirs.direct = row.direct;
    try_reference(*r.reference, "round trips of " + std::to_string(size) + " B",
                  [&] { return through(theirs, reference_); });
    r.reference->latency.push_back(theirs);
  }
}

void Bench::measure_fresh_connections(Results& r, Tunnel& t) {
  progress("first round trips on fresh connections");
  std::vector<double> direct;
  std::vector<double> tunnel;
  std::vector<double> theirs;
  for (int i = 0; i < o_.fresh_samples; ++i) {
    direct.push_back(first_round_trip(service_->port()));
    std::this_thread::sleep_for(20ms);
    tunnel.push_back(first_round_trip(t.port));
    // Let the tunnel finish the previous stream: we measure a fresh
    // connection on an idle tunnel, not a queue.
    std::this_thread::sleep_for(20ms);
    if (!r.reference) continue;
    if (const auto us = try_reference(*r.reference, "a first round trip",
                                      [&] { return first_round_trip(reference_.port); })) {
      theirs.push_back(*us);
    }
    std::this_thread::sleep_for(20ms);
  }
  r.first_rt_direct = summarize(direct);
  r.first_rt_tunnel = summarize(tunnel);
  if (r.reference) r.reference->first_rt = summarize(theirs);
}

void Bench::measure_startup(Results& r) {
  for (int i = 0; i < o_.startup_samples; ++i) {
    progress("start to a working tunnel, sample " + std::to_string(i + 1));
    const nlohmann::json tokens = open_tunnel(relay_.admin_port);
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
    if (!r.reference) continue;
    // The same for the reference: its tunnel has the one service it needs.
    const nlohmann::json ref_tokens = open_tunnel(relay_.admin_port, {kReferenceService});
    const auto r0 = Clock::now();
    Tunnel rt = spawn_reference("reference-startup", ref_tokens);
    try {
      const auto r1 = wait_until_echo(rt.port, r0 + 15s);
      r.reference->startup_ms.push_back(std::chrono::duration<double, std::milli>(r1 - r0).count());
    } catch (const BenchError& e) {
      r.reference->failures.push_back(
          std::string("start-up sample: ") +
          std::string(e.what()).substr(0, std::string(e.what()).find('\n')));
    }
    rt.source->stop(2000ms);
    rt.destination->stop(2000ms);
  }
}

void Bench::measure_via_proxy(Results& r) {
  progress("starting a tunnel whose localproxies go through the HTTPS proxy " + o_.https_proxy);
  Tunnel t = spawn_tunnel("proxied", open_tunnel(relay_.admin_port), "",
                          {"--https-proxy", o_.https_proxy});
  try {
    wait_until_echo(t.port, Clock::now() + 15s);
    measure_throughput(r.throughput_via_proxy, t);
  } catch (const BenchError& e) {
    throw BenchError(std::string(e.what()) + child_logs(&t));
  }
  r.https_proxy = o_.https_proxy;
  t.source->stop(2000ms);
  t.destination->stop(2000ms);
}

void Bench::measure_multiplex(Results& r) {
  progress("starting a V3 tunnel with one service for the multiplex figures");
  Tunnel t = spawn_tunnel("multiplex", open_tunnel(relay_.admin_port, {"bench"}), "bench");
  try {
    wait_until_echo(t.port, Clock::now() + 15s);
    MultiplexOptions mo;
    mo.connections = o_.connections;
    mo.bytes = parse_size(o_.multiplex_bytes_text);
    mo.round_trips = o_.round_trips;
    mo.warmup = o_.warmup;
    mo.budget = std::chrono::seconds(o_.latency_budget_s);
    mo.tunnel_cpu = [this, &t] {
      const CpuCost c = cpu_now(t);
      return c.relay + c.source + c.destination;
    };
    r.multiplex = bench::measure_multiplex(t.port, service_->port(), mo,
                                           [this](const std::string& w) { progress(w); });
  } catch (const BenchError& e) {
    throw BenchError(std::string(e.what()) + child_logs(&t));
  }
  t.source->stop(2000ms);
  t.destination->stop(2000ms);
}

Results Bench::run() {
  Results r;
  r.info = info_;
  progress("making a throwaway CA in " + tmp_);
  pki_ = make_pki(o_.openssl, tmp_);
  service_ = std::make_unique<LoadService>();
  progress("starting the relay");
  relay_ = start_relay(o_.relay, pki_, tmp_);

  progress("starting the localproxies");
  Tunnel t = spawn_tunnel("bench", open_tunnel(relay_.admin_port));
  try {
    wait_until_echo(t.port, Clock::now() + 15s);
  } catch (const BenchError& e) {
    throw BenchError(std::string(e.what()) + child_logs(&t));
  }
  if (!o_.reference.empty()) {
    r.reference.emplace();
    r.reference->binary = o_.reference;
    start_reference();
  }
  std::this_thread::sleep_for(500ms);

  // Memory of ours (relay, both proxies) into r.memory and, with the
  // reference, of its two proxies into r.reference->memory. A reference
  // restarted after a failure is not followed: its rows describe the first.
  struct Watched {
    std::vector<MemoryRow>* rows;
    std::string name;
    std::string key;
    pid_t pid;
  };
  std::vector<Watched> watched = {
      {&r.memory, "relay", "relay", relay_.process->pid()},
      {&r.memory, "localproxy source", "source", t.source->pid()},
      {&r.memory, "localproxy destination", "destination", t.destination->pid()}};
  if (r.reference) {
    watched.push_back(
        {&r.reference->memory, "reference source", "source", reference_.source->pid()});
    watched.push_back({&r.reference->memory, "reference destination", "destination",
                       reference_.destination->pid()});
  }
  std::vector<pid_t> pids;
  for (const Watched& w : watched) {
    MemoryRow m;
    m.name = w.name;
    m.key = w.key;
    if (const auto mem = read_memory(w.pid)) {
      m.idle_rss_kib = mem->rss_kib;
      m.idle_anon_kib = mem->anon_kib;
    }
    w.rows->push_back(m);
    pids.push_back(w.pid);
  }
  // The row of watched[i] (the rows were filled in the order of `watched`).
  const auto row_of = [&](std::size_t i) -> MemoryRow& {
    std::size_t nth = 0;
    for (std::size_t j = 0; j < i; ++j) nth += watched[j].rows == watched[i].rows ? 1 : 0;
    return (*watched[i].rows)[nth];
  };

  try {
    {
      MemorySampler sampler(pids, std::chrono::milliseconds(r.info.memory_period_ms));
      measure_throughput(r.throughput, t, r.reference ? &*r.reference : nullptr);
      const std::vector<long> peaks = sampler.peaks_kib();
      r.info.memory_samples = sampler.samples();
      for (std::size_t i = 0; i < pids.size(); ++i) {
        row_of(i).peak_rss_kib = peaks[i];
        if (const auto mem = read_memory(pids[i])) row_of(i).hwm_kib = mem->hwm_kib;
      }
    }
    std::this_thread::sleep_for(500ms);
    for (std::size_t i = 0; i < pids.size(); ++i) {
      if (const auto mem = read_memory(pids[i])) row_of(i).after_rss_kib = mem->rss_kib;
    }
    measure_latency(r, t);
    measure_fresh_connections(r, t);
  } catch (const BenchError& e) {
    throw BenchError(std::string(e.what()) + child_logs(&t));
  }
  t.source->stop(2000ms);
  t.destination->stop(2000ms);
  if (reference_.source) {
    reference_.source->stop(2000ms);
    reference_.destination->stop(2000ms);
  }
  if (!o_.https_proxy.empty()) measure_via_proxy(r);
  if (o_.connections > 0) measure_multiplex(r);
  measure_startup(r);
  relay_.process->stop(2000ms);
  service_->stop();
  return r;
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
  app.add_option("--connections", o.connections,
                 "simultaneous connections on one V3 tunnel for the multiplex figures (0: skip)")
      ->check(CLI::Range(0, 128))
      ->capture_default_str();
  app.add_option("--multiplex-bytes", o.multiplex_bytes_text,
                 "bytes per direction in the multiplex runs, split across the connections")
      ->capture_default_str();
  app.add_option("--https-proxy", o.https_proxy,
                 "also measure throughput through a tunnel whose localproxies reach the relay "
                 "through this HTTP CONNECT proxy (http://HOST:PORT, on loopback)");
  app.add_option("--reference", o.reference,
                 "also run the throughput, round-trip, fresh-connection and start-up workloads "
                 "with this reference localproxy binary at both ends of a second tunnel on the "
                 "same relay, and print its figures next to ours");
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
  if (o.build_dir.empty()) o.build_dir = own_build_dir();
  if (o.relay.empty()) o.relay = o.build_dir + "/relay/tunnel-relay";
  if (o.localproxy.empty()) o.localproxy = o.build_dir + "/ctl/localproxy";
  o.openssl = find_program(o.openssl);
  if (!o.reference.empty()) {
    o.reference = fs::absolute(o.reference).lexically_normal().string();
    if (::access(o.reference.c_str(), X_OK) != 0) {
      std::fprintf(stderr, "tunnel-bench: --reference %s: not an executable file\n",
                   o.reference.c_str());
      return 2;
    }
  }

  Results r;
  r.info.build_dir = fs::absolute(o.relay).parent_path().parent_path().lexically_normal().string();
  describe_build(r.info);
  r.info.cpus = static_cast<int>(std::thread::hardware_concurrency());
  r.info.cpu_model = cpu_model();
  r.info.load_average = load_average();
  r.info.bytes = o.bytes;
  r.info.runs = o.runs;

  const bool keep = o.keep_temp;
  const std::string tmp = make_run_dir("tunnel-bench", keep);
  const auto cleanup = [&] { remove_run_dir(tmp, keep); };
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
