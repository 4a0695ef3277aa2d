#include "results.h"

#include "multiplex.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <nlohmann/json.hpp>

namespace bench {
namespace {

// The targets a tunnel is judged on: throughput, CPU and latency of the data
// path, memory and start-up of the proxies, and many connections sharing one
// V3 tunnel. They are design goals for loopback on a small machine, not
// guarantees; the reference column (with --reference) is the reference
// localproxy measured in the same run.
constexpr double kTargetThroughputRatio = 0.35;
constexpr double kTargetAddedP50Us = 60;
constexpr double kTargetMaxRoundTripMs = 35;
constexpr double kTargetFirstRoundTripMs = 2;
constexpr double kTargetCpuPerGiB = 1.0;
constexpr double kTargetIdleRssMiB = 8;
constexpr double kTargetPeakOverIdleMiB = 4;
constexpr double kTargetStartupMs = 40;
constexpr double kTargetFanOutRatio = 0.9;
constexpr double kTargetFairShare = 0.5;
constexpr double kTargetPingUnderBulkP99Ms = 5;
constexpr double kTargetViaProxyRatio = 0.9;

// Through the HTTPS proxy over the plain tunnel, for the same direction.
double via_proxy_ratio(const ThroughputRow& via, const std::vector<ThroughputRow>& plain) {
  for (const ThroughputRow& p : plain) {
    if (p.key == via.key && mb_per_s(p.tunnel) > 0)
      return mb_per_s(via.tunnel) / mb_per_s(p.tunnel);
  }
  return 0;
}

double ratio(const ThroughputRow& row) {
  const double d = mb_per_s(row.direct);
  return d > 0 ? mb_per_s(row.tunnel) / d : 0;
}

double mib(long kib) { return static_cast<double>(kib) / 1024.0; }

std::string size_name(std::size_t size) {
  constexpr std::size_t kMiB = std::size_t{1} << 20;
  if (size >= kMiB && size % kMiB == 0) return fmt::format("{} MiB", size >> 20);
  if (size >= 1024 && size % 1024 == 0) return fmt::format("{} KiB", size >> 10);
  return fmt::format("{} B", size);
}

// A plain fixed-width table: first column left-aligned, the others right.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  std::string str() const {
    std::vector<std::size_t> width;
    for (const auto& row : rows_) {
      width.resize(std::max(width.size(), row.size()), 0);
      for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    std::string out;
    for (std::size_t r = 0; r < rows_.size(); ++r) {
      std::string line = "  ";
      for (std::size_t i = 0; i < rows_[r].size(); ++i) {
        if (i == 0) {
          line += fmt::format("{:<{}}", rows_[r][i], width[i]);
        } else {
          line += fmt::format("  {:>{}}", rows_[r][i], width[i]);
        }
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// CPU seconds per GiB of `bytes`, as table text ("-" when nothing moved).
std::string per_gib(double seconds, std::uint64_t bytes) {
  return bytes > 0 ? fmt::format("{:.2f}", seconds * static_cast<double>(1ULL << 30) /
                                               static_cast<double>(bytes))
                   : std::string("-");
}

std::string us(double v) { return fmt::format("{:.0f}", v); }
std::string ms(double v) { return fmt::format("{:.2f}", v); }

nlohmann::json summary_json(const Summary& s) {
  return {{"count", s.count}, {"p50", s.p50}, {"p99", s.p99}, {"max", s.max}};
}

nlohmann::json cpu_json(const CpuCost& c) {
  return {{"bench", c.bench},
          {"relay", c.relay},
          {"source", c.source},
          {"destination", c.destination},
          {"bytes", c.bytes}};
}

}  // namespace

double mb_per_s(const TransferResult& t) {
  return t.seconds > 0 ? static_cast<double>(t.bytes) / 1e6 / t.seconds : 0;
}

Summary summarize(std::vector<double> samples) {
  Summary s;
  s.count = samples.size();
  if (samples.empty()) return s;
  std::sort(samples.begin(), samples.end());
  const auto rank = [&](double p) {
    const auto k = static_cast<std::size_t>(std::ceil(p * static_cast<double>(samples.size())));
    return samples[std::clamp<std::size_t>(k, 1, samples.size()) - 1];
  };
  s.p50 = rank(0.50);
  s.p99 = rank(0.99);
  s.max = samples.back();
  return s;
}

namespace {

// The reference's row of the same key, or null.
template <typename Row>
const Row* same_key(const std::vector<Row>& rows, const std::string& key) {
  for (const Row& row : rows) {
    if (row.key == key) return &row;
  }
  return nullptr;
}

const LatencyRow* same_size(const std::vector<LatencyRow>& rows, std::size_t size) {
  for (const LatencyRow& row : rows) {
    if (row.size == size) return &row;
  }
  return nullptr;
}

// CPU seconds per GiB of the relay, the sending and the receiving proxy.
std::array<double, 3> cpu_roles(const ThroughputRow& row) {
  const CpuCost& x = row.tunnel_cpu;
  const double gib = static_cast<double>(x.bytes) / static_cast<double>(1ULL << 30);
  const bool upward = row.key == "source_to_destination";
  return {x.relay / gib, (upward ? x.source : x.destination) / gib,
          (upward ? x.destination : x.source) / gib};
}

// The slowest round trip of all sizes (ms) and its size.
std::pair<double, std::string> slowest_round_trip(const std::vector<LatencyRow>& rows) {
  double worst = 0;
  std::string size;
  for (const LatencyRow& row : rows) {
    if (row.tunnel.count > 0 && row.tunnel.max / 1000 >= worst) {
      worst = row.tunnel.max / 1000;
      size = size_name(row.size);
    }
  }
  return {worst, size};
}

}  // namespace

std::vector<Verdict> judge(const Results& r) {
  std::vector<Verdict> v;
  const ReferenceResults* ref = r.reference ? &*r.reference : nullptr;
  const std::string none = "-";
  for (const ThroughputRow& row : r.throughput) {
    const ThroughputRow* theirs = ref ? same_key(ref->throughput, row.key) : nullptr;
    v.push_back({"throughput " + row.name + " / direct",
                 fmt::format(">= {:.2f}", kTargetThroughputRatio),
                 fmt::format("{:.2f}", ratio(row)),
                 theirs && theirs->tunnel.bytes > 0 ? fmt::format("{:.2f}", ratio(*theirs)) : none,
                 ratio(row) >= kTargetThroughputRatio});
  }
  for (const ThroughputRow& row : r.throughput) {
    if (row.tunnel_cpu.bytes == 0 || row.key == "both_ways") continue;
    const ThroughputRow* theirs = ref ? same_key(ref->throughput, row.key) : nullptr;
    const bool have_theirs = theirs && theirs->tunnel_cpu.bytes > 0;
    const auto ours = cpu_roles(row);
    const auto ref_cpu = have_theirs ? cpu_roles(*theirs) : std::array<double, 3>{};
    const char* who[] = {"relay", "sending proxy", "receiving proxy"};
    for (std::size_t i = 0; i < 3; ++i) {
      v.push_back({fmt::format("CPU-s per GiB, {}, {}", who[i], row.name),
                   fmt::format("<= {:.1f}", kTargetCpuPerGiB), fmt::format("{:.2f}", ours[i]),
                   have_theirs ? fmt::format("{:.2f}", ref_cpu[i]) : none,
                   ours[i] <= kTargetCpuPerGiB});
    }
  }
  for (const LatencyRow& row : r.latency) {
    const double added = row.tunnel.p50 - row.direct.p50;
    const LatencyRow* theirs = ref ? same_size(ref->latency, row.size) : nullptr;
    v.push_back({"added p50 round trip, " + size_name(row.size),
                 fmt::format("< {:.0f} us", kTargetAddedP50Us), fmt::format("{:.0f} us", added),
                 theirs && theirs->tunnel.count > 0
                     ? fmt::format("{:.0f} us", theirs->tunnel.p50 - theirs->direct.p50)
                     : none,
                 row.tunnel.count > 0 && added < kTargetAddedP50Us});
  }
  if (!r.latency.empty()) {
    const auto [worst_ms, worst_size] = slowest_round_trip(r.latency);
    std::string theirs = none;
    if (ref && !ref->latency.empty()) {
      const auto [ms, size] = slowest_round_trip(ref->latency);
      if (!size.empty()) theirs = fmt::format("{:.2f} ms ({})", ms, size);
    }
    v.push_back({"slowest round trip, any size", fmt::format("< {:.0f} ms", kTargetMaxRoundTripMs),
                 fmt::format("{:.2f} ms ({})", worst_ms, worst_size), theirs,
                 worst_ms < kTargetMaxRoundTripMs});
  }
  if (r.first_rt_tunnel.count > 0) {
    v.push_back(
        {"first round trip, fresh connection (worst)",
         fmt::format("< {:.0f} ms", kTargetFirstRoundTripMs),
         fmt::format("{:.2f} ms", r.first_rt_tunnel.max / 1000),
         ref && ref->first_rt.count > 0 ? fmt::format("{:.2f} ms", ref->first_rt.max / 1000) : none,
         r.first_rt_tunnel.max / 1000 < kTargetFirstRoundTripMs});
  }
  for (const MemoryRow& m : r.memory) {
    const MemoryRow* theirs = ref ? same_key(ref->memory, m.key) : nullptr;
    v.push_back({"idle RSS, " + m.name, fmt::format("< {:.0f} MiB", kTargetIdleRssMiB),
                 fmt::format("{:.1f} MiB", mib(m.idle_rss_kib)),
                 theirs && theirs->idle_rss_kib > 0
                     ? fmt::format("{:.1f} MiB", mib(theirs->idle_rss_kib))
                     : none,
                 m.idle_rss_kib > 0 && mib(m.idle_rss_kib) < kTargetIdleRssMiB});
  }
  for (const MemoryRow& m : r.memory) {
    const auto over_idle = [](const MemoryRow& x) {
      return mib(std::max(x.peak_rss_kib, x.hwm_kib) - x.idle_rss_kib);
    };
    const MemoryRow* theirs = ref ? same_key(ref->memory, m.key) : nullptr;
    const double over = over_idle(m);
    v.push_back(
        {"peak RSS during the runs over idle, " + m.name,
         fmt::format("<= {:.0f} MiB", kTargetPeakOverIdleMiB), fmt::format("+{:.1f} MiB", over),
         theirs && theirs->idle_rss_kib > 0 ? fmt::format("+{:.1f} MiB", over_idle(*theirs)) : none,
         std::max(m.peak_rss_kib, m.hwm_kib) > 0 && over <= kTargetPeakOverIdleMiB});
  }
  if (!r.startup_ms.empty()) {
    const double worst = *std::max_element(r.startup_ms.begin(), r.startup_ms.end());
    std::string theirs = none;
    if (ref && !ref->startup_ms.empty()) {
      theirs = fmt::format("{:.1f} ms",
                           *std::max_element(ref->startup_ms.begin(), ref->startup_ms.end()));
    }
    v.push_back({"start to a working tunnel (worst)", fmt::format("< {:.0f} ms", kTargetStartupMs),
                 fmt::format("{:.1f} ms", worst), theirs, worst < kTargetStartupMs});
  }
  for (const ThroughputRow& row : r.throughput_via_proxy) {
    const double x = via_proxy_ratio(row, r.throughput);
    v.push_back({"throughput via HTTPS proxy / tunnel, " + row.name,
                 fmt::format(">= {:.1f}", kTargetViaProxyRatio), fmt::format("{:.2f}", x), "-",
                 x >= kTargetViaProxyRatio});
  }
  if (r.multiplex) {
    const MultiplexResults& m = *r.multiplex;
    for (const FanOutRow& row : m.rows) {
      v.push_back({fmt::format("{} connections / one, {}", m.connections, row.name),
                   fmt::format(">= {:.1f}", kTargetFanOutRatio),
                   fmt::format("{:.2f}", fan_out_ratio(row)), "-",
                   fan_out_ratio(row) >= kTargetFanOutRatio});
      v.push_back({fmt::format("slowest of {} / fair share, {}", m.connections, row.name),
                   fmt::format(">= {:.1f}", kTargetFairShare),
                   fmt::format("{:.2f}", worst_fair_share(row)), "-",
                   worst_fair_share(row) >= kTargetFairShare});
    }
    const double added_p99_ms = (m.ping_under_bulk.p99 - m.ping_direct.p99) / 1000;
    v.push_back({"added p99 round trip, 1 B, beside a bulk transfer",
                 fmt::format("< {:.0f} ms", kTargetPingUnderBulkP99Ms),
                 fmt::format("{:.2f} ms", added_p99_ms), "-",
                 m.ping_under_bulk.count > 0 && added_p99_ms < kTargetPingUnderBulkP99Ms});
  }
  return v;
}

namespace {

// Ours and the reference side by side, with direct TCP where it applies.
std::string format_reference(const Results& r) {
  const ReferenceResults& ref = *r.reference;
  const std::string none = "-";
  std::string out = fmt::format(
      "The reference localproxy at both ends ({}), same relay, same run: a second tunnel\n"
      "(one service, protocol V3), each workload run right after ours\n",
      ref.binary);
  Table t({"measure", "direct", "ours", "reference"});
  for (const ThroughputRow& row : r.throughput) {
    const ThroughputRow* theirs = same_key(ref.throughput, row.key);
    t.add({"throughput " + row.name + ", MB/s", fmt::format("{:.0f}", mb_per_s(row.direct)),
           fmt::format("{:.0f}", mb_per_s(row.tunnel)),
           theirs && theirs->tunnel.bytes > 0 ? fmt::format("{:.0f}", mb_per_s(theirs->tunnel))
                                              : none});
  }
  for (const ThroughputRow& row : r.throughput) {
    const ThroughputRow* theirs = same_key(ref.throughput, row.key);
    const auto proxies = [](const CpuCost& c) { return c.source + c.destination; };
    const auto whole = [](const CpuCost& c) {
      return c.bench + c.relay + c.source + c.destination;
    };
    const bool have = theirs && theirs->tunnel_cpu.bytes > 0;
    t.add({"CPU-s per GiB, both proxies, " + row.name, none,
           per_gib(proxies(row.tunnel_cpu), row.tunnel_cpu.bytes),
           have ? per_gib(proxies(theirs->tunnel_cpu), theirs->tunnel_cpu.bytes) : none});
    t.add({"CPU-s per GiB, whole path, " + row.name,
           per_gib(row.direct_cpu.bench, row.direct_cpu.bytes),
           per_gib(whole(row.tunnel_cpu), row.tunnel_cpu.bytes),
           have ? per_gib(whole(theirs->tunnel_cpu), theirs->tunnel_cpu.bytes) : none});
  }
  for (const LatencyRow& row : r.latency) {
    const LatencyRow* theirs = same_size(ref.latency, row.size);
    const bool have = theirs && theirs->tunnel.count > 0;
    t.add({"round trip p50, " + size_name(row.size) + ", us", us(row.direct.p50),
           us(row.tunnel.p50), have ? us(theirs->tunnel.p50) : none});
    t.add({"round trip p99, " + size_name(row.size) + ", us", us(row.direct.p99),
           us(row.tunnel.p99), have ? us(theirs->tunnel.p99) : none});
  }
  if (r.first_rt_tunnel.count > 0) {
    t.add({"first round trip, fresh connection, p50 ms", ms(r.first_rt_direct.p50 / 1000),
           ms(r.first_rt_tunnel.p50 / 1000),
           ref.first_rt.count > 0 ? ms(ref.first_rt.p50 / 1000) : none});
    t.add({"first round trip, fresh connection, max ms", ms(r.first_rt_direct.max / 1000),
           ms(r.first_rt_tunnel.max / 1000),
           ref.first_rt.count > 0 ? ms(ref.first_rt.max / 1000) : none});
  }
  for (const MemoryRow& m : r.memory) {
    const MemoryRow* theirs = same_key(ref.memory, m.key);
    if (theirs == nullptr) continue;
    t.add({"idle RSS, " + m.name + ", MiB", none, fmt::format("{:.1f}", mib(m.idle_rss_kib)),
           fmt::format("{:.1f}", mib(theirs->idle_rss_kib))});
    t.add({"peak RSS, " + m.name + ", MiB", none,
           fmt::format("{:.1f}", mib(std::max(m.peak_rss_kib, m.hwm_kib))),
           fmt::format("{:.1f}", mib(std::max(theirs->peak_rss_kib, theirs->hwm_kib)))});
  }
  if (!r.startup_ms.empty()) {
    t.add({"start to a working tunnel, p50 ms", none,
           fmt::format("{:.1f}", summarize(r.startup_ms).p50),
           ref.startup_ms.empty() ? none : fmt::format("{:.1f}", summarize(ref.startup_ms).p50)});
  }
  out += t.str();
  out +=
      "(whole path: CPU of every process a byte passes, the benchmark's client and service\n"
      "included; direct: the benchmark alone)\n";
  for (const std::string& f : ref.failures) out += "reference failed: " + f + "\n";
  return out + "\n";
}

}  // namespace

std::string format_report(const Results& r, const std::vector<Verdict>& verdicts) {
  const RunInfo& i = r.info;
  std::string out;
  out +=
      "tunnel-bench: source localproxy -> tunnel-relay (TLS) -> destination localproxy -> "
      "service,\n";
  out += "on loopback; \"direct\" is the same client against the same service over plain TCP,\n";
  out += "measured in the same run just before the tunnel.\n";
  out += fmt::format("binaries: {} (buildtype {}, optimization {}, sanitizers {})\n", i.build_dir,
                     i.build_type, i.optimization, i.sanitize);
  out += fmt::format("machine: {} CPUs, {}; load average at start: {}\n\n", i.cpus, i.cpu_model,
                     i.load_average);

  out +=
      fmt::format("Throughput, {} MiB per run{} (MB/s = 10^6 bytes/s; both ways: sum of the two)\n",
                  i.bytes >> 20, i.runs > 1 ? fmt::format(", median of {} runs", i.runs) : "");
  Table t({"direction", "direct MB/s", "tunnel MB/s", "tunnel/direct"});
  for (const ThroughputRow& row : r.throughput) {
    t.add({row.name, fmt::format("{:.0f}", mb_per_s(row.direct)),
           fmt::format("{:.0f}", mb_per_s(row.tunnel)), fmt::format("{:.2f}", ratio(row))});
  }
  out += t.str() + "\n";

  out +=
      "CPU seconds per GiB moved (run time of every thread; unlike MB/s, hardly skewed by other "
      "load)\n";
  Table c({"direction", "direct: bench", "tunnel: bench", "relay", "source", "destination",
           "tunnel total"});
  for (const ThroughputRow& row : r.throughput) {
    const CpuCost& d = row.direct_cpu;
    const CpuCost& x = row.tunnel_cpu;
    c.add({row.name, per_gib(d.bench, d.bytes), per_gib(x.bench, x.bytes),
           per_gib(x.relay, x.bytes), per_gib(x.source, x.bytes), per_gib(x.destination, x.bytes),
           per_gib(x.bench + x.relay + x.source + x.destination, x.bytes)});
  }
  out += c.str() + "\n";

  if (!r.latency.empty()) {
    out +=
        fmt::format("Round trip (request/response on one connection), microseconds, {} per size\n",
                    r.latency.front().tunnel.count);
    Table l({"size", "direct p50", "p99", "max", "tunnel p50", "p99", "max", "added p50"});
    for (const LatencyRow& row : r.latency) {
      l.add({size_name(row.size), us(row.direct.p50), us(row.direct.p99), us(row.direct.max),
             us(row.tunnel.p50), us(row.tunnel.p99), us(row.tunnel.max),
             us(row.tunnel.p50 - row.direct.p50)});
    }
    out += l.str() + "\n";
  }

  if (!r.latency.empty()) {
    out += "CPU per round trip through the tunnel, microseconds\n";
    Table c({"size", "bench", "relay", "source", "destination"});
    for (const LatencyRow& row : r.latency) {
      const auto per_rt = [&](double seconds) {
        return row.tunnel_round_trips > 0
                   ? fmt::format("{:.0f}",
                                 seconds * 1e6 / static_cast<double>(row.tunnel_round_trips))
                   : std::string("-");
      };
      c.add({size_name(row.size), per_rt(row.tunnel_cpu.bench), per_rt(row.tunnel_cpu.relay),
             per_rt(row.tunnel_cpu.source), per_rt(row.tunnel_cpu.destination)});
    }
    out += c.str() + "\n";
  }

  if (r.first_rt_tunnel.count > 0) {
    out +=
        fmt::format("First round trip on a fresh connection (connect + 1 B echo), ms, {} samples\n",
                    r.first_rt_tunnel.count);
    Table f({"path", "p50", "max"});
    f.add({"direct", ms(r.first_rt_direct.p50 / 1000), ms(r.first_rt_direct.max / 1000)});
    f.add({"tunnel", ms(r.first_rt_tunnel.p50 / 1000), ms(r.first_rt_tunnel.max / 1000)});
    out += f.str() + "\n";
  }

  if (!r.startup_ms.empty()) {
    const Summary s = summarize(r.startup_ms);
    std::string all;
    for (double v : r.startup_ms) {
      if (!all.empty()) all += ' ';
      all += fmt::format("{:.1f}", v);
    }
    out += "Start to a working tunnel (spawn both localproxies, relay running, until the first\n";
    out += fmt::format("1 B echo through the source port), ms: p50 {:.1f}, max {:.1f} ({})\n",
                       s.p50, s.max, all);
    const Summary cpu = summarize(r.startup_cpu_ms);
    out += fmt::format("CPU time both localproxies had used by then: p50 {:.1f} ms\n\n", cpu.p50);
  }

  if (!r.memory.empty()) {
    out += fmt::format(
        "Memory, MiB (VmRSS idle once connected; peak: largest VmRSS sampled every {} ms\n"
        "during the throughput runs, and VmHWM right after them; after: VmRSS idle again;\n"
        "idle anon: RssAnon, the part that is not shared-library or file pages)\n",
        i.memory_period_ms);
    Table m({"process", "idle", "idle anon", "peak sampled", "VmHWM", "after"});
    for (const MemoryRow& row : r.memory) {
      m.add({row.name, fmt::format("{:.1f}", mib(row.idle_rss_kib)),
             fmt::format("{:.1f}", mib(row.idle_anon_kib)),
             fmt::format("{:.1f}", mib(row.peak_rss_kib)), fmt::format("{:.1f}", mib(row.hwm_kib)),
             fmt::format("{:.1f}", mib(row.after_rss_kib))});
    }
    out += m.str() + "\n";
  }

  if (!r.throughput_via_proxy.empty()) {
    out += fmt::format("Throughput through the HTTPS proxy {} (a second tunnel, same run)\n",
                       r.https_proxy);
    Table t({"direction", "tunnel MB/s", "via proxy MB/s", "via/tunnel", "proxied CPU-s/GiB"});
    for (const ThroughputRow& row : r.throughput_via_proxy) {
      double plain = 0;
      for (const ThroughputRow& p : r.throughput) {
        if (p.key == row.key) plain = mb_per_s(p.tunnel);
      }
      const CpuCost& x = row.tunnel_cpu;
      t.add({row.name, fmt::format("{:.0f}", plain), fmt::format("{:.0f}", mb_per_s(row.tunnel)),
             fmt::format("{:.2f}", via_proxy_ratio(row, r.throughput)),
             per_gib(x.relay + x.source + x.destination, x.bytes)});
    }
    out += t.str() + "(CPU: relay and both proxies; the proxy process itself is not counted)\n\n";
  }

  if (r.multiplex) {
    const MultiplexResults& m = *r.multiplex;
    out += fmt::format(
        "{} simultaneous connections on one V3 tunnel (one service), {} MiB per direction\n"
        "split evenly; \"one\" is a single connection moving all of it on the same tunnel\n",
        m.connections, m.bytes >> 20);
    Table f({"direction", "one MB/s", "all MB/s", "all/one", "slowest MB/s", "fair share",
             "slowest/fair", "direct all/one", "CPU-s/GiB one", "all"});
    for (const FanOutRow& row : m.rows) {
      double slowest = row.each.empty() ? 0 : mb_per_s(row.each.front());
      for (const TransferResult& t : row.each) slowest = std::min(slowest, mb_per_s(t));
      f.add(
          {row.name, fmt::format("{:.0f}", mb_per_s(row.single)),
           fmt::format("{:.0f}", mb_per_s(row.aggregate)),
           fmt::format("{:.2f}", fan_out_ratio(row)), fmt::format("{:.1f}", slowest),
           fmt::format("{:.1f}", mb_per_s(row.aggregate) / static_cast<double>(m.connections)),
           fmt::format("{:.2f}", worst_fair_share(row)),
           fmt::format("{:.2f}", mb_per_s(row.direct_single) > 0
                                     ? mb_per_s(row.direct_aggregate) / mb_per_s(row.direct_single)
                                     : 0.0),
           per_gib(row.single_cpu, row.single.bytes),
           per_gib(row.aggregate_cpu, row.aggregate.bytes)});
    }
    out += f.str();
    out +=
        "(direct all/one: the same client threads against the service without the tunnel; CPU:\n"
        "relay and both proxies together per GiB moved)\n\n";
    out += "1 B round trips on one connection of that tunnel, microseconds\n";
    Table p({"case", "count", "p50", "p99", "max"});
    p.add({"direct, idle", fmt::format("{}", m.ping_direct.count), us(m.ping_direct.p50),
           us(m.ping_direct.p99), us(m.ping_direct.max)});
    p.add({"tunnel, idle", fmt::format("{}", m.ping_idle.count), us(m.ping_idle.p50),
           us(m.ping_idle.p99), us(m.ping_idle.max)});
    p.add({"tunnel, beside a bulk download", fmt::format("{}", m.ping_under_bulk.count),
           us(m.ping_under_bulk.p50), us(m.ping_under_bulk.p99), us(m.ping_under_bulk.max)});
    out += p.str();
    out += fmt::format("(the bulk connection moved {:.0f} MB in {:.1f} s meanwhile)\n\n",
                       static_cast<double>(m.bulk_bytes) / 1e6, m.bulk_seconds);
  }

  if (r.reference) out += format_reference(r);

  out += r.reference ? "Targets, ours next to the reference localproxy of this run\n" : "Targets\n";
  Table v({"measure", "target", "ours", "reference", "verdict"});
  int passed = 0;
  for (const Verdict& x : verdicts) {
    v.add({x.what, x.target, x.ours, x.reference, x.pass ? "PASS" : "MISS"});
    passed += x.pass ? 1 : 0;
  }
  out += v.str();
  out += fmt::format("{} of {} targets met\n", passed, verdicts.size());
  return out;
}

std::string format_json(const Results& r, const std::vector<Verdict>& verdicts) {
  const RunInfo& i = r.info;
  nlohmann::json j;
  j["run"] = {{"build_dir", i.build_dir},
              {"buildtype", i.build_type},
              {"optimization", i.optimization},
              {"sanitize", i.sanitize},
              {"cpus", i.cpus},
              {"cpu_model", i.cpu_model},
              {"load_average_at_start", i.load_average},
              {"bytes", i.bytes},
              {"runs", i.runs}};
  for (const ThroughputRow& row : r.throughput) {
    j["throughput"][row.key] = {{"direct_MBps", mb_per_s(row.direct)},
                                {"tunnel_MBps", mb_per_s(row.tunnel)},
                                {"ratio", ratio(row)},
                                {"direct_seconds", row.direct.seconds},
                                {"tunnel_seconds", row.tunnel.seconds},
                                {"bytes", row.tunnel.bytes},
                                {"direct_cpu_seconds", cpu_json(row.direct_cpu)},
                                {"tunnel_cpu_seconds", cpu_json(row.tunnel_cpu)}};
  }
  for (const LatencyRow& row : r.latency) {
    j["round_trip_us"].push_back({{"size", row.size},
                                  {"direct", summary_json(row.direct)},
                                  {"tunnel", summary_json(row.tunnel)},
                                  {"added_p50", row.tunnel.p50 - row.direct.p50},
                                  {"tunnel_cpu_seconds", cpu_json(row.tunnel_cpu)},
                                  {"tunnel_round_trips_with_warmup", row.tunnel_round_trips}});
  }
  j["first_round_trip_us"] = {{"direct", summary_json(r.first_rt_direct)},
                              {"tunnel", summary_json(r.first_rt_tunnel)}};
  const Summary s = summarize(r.startup_ms);
  j["startup_ms"] = {{"samples", r.startup_ms},
                     {"p50", s.p50},
                     {"max", s.max},
                     {"localproxies_cpu_ms", r.startup_cpu_ms}};
  for (const MemoryRow& m : r.memory) {
    j["memory_kib"][m.key] = {{"idle_rss", m.idle_rss_kib},
                              {"idle_rss_anon", m.idle_anon_kib},
                              {"peak_rss_sampled", m.peak_rss_kib},
                              {"hwm", m.hwm_kib},
                              {"after_rss", m.after_rss_kib}};
  }
  for (const ThroughputRow& row : r.throughput_via_proxy) {
    j["throughput_via_https_proxy"][row.key] = {
        {"tunnel_MBps", mb_per_s(row.tunnel)},
        {"over_plain_tunnel", via_proxy_ratio(row, r.throughput)},
        {"tunnel_cpu_seconds", cpu_json(row.tunnel_cpu)}};
  }
  if (r.multiplex) {
    const MultiplexResults& m = *r.multiplex;
    nlohmann::json& jm = j["multiplex"];
    jm["connections"] = m.connections;
    jm["bytes_per_direction"] = m.bytes;
    for (const FanOutRow& row : m.rows) {
      nlohmann::json each = nlohmann::json::array();
      for (const TransferResult& t : row.each) each.push_back(mb_per_s(t));
      jm["throughput"][row.key] = {{"one_MBps", mb_per_s(row.single)},
                                   {"all_MBps", mb_per_s(row.aggregate)},
                                   {"all_over_one", fan_out_ratio(row)},
                                   {"slowest_over_fair_share", worst_fair_share(row)},
                                   {"each_MBps", each},
                                   {"direct_one_MBps", mb_per_s(row.direct_single)},
                                   {"direct_all_MBps", mb_per_s(row.direct_aggregate)},
                                   {"tunnel_cpu_seconds_one", row.single_cpu},
                                   {"tunnel_cpu_seconds_all", row.aggregate_cpu}};
    }
    jm["round_trip_1B_us"] = {{"direct_idle", summary_json(m.ping_direct)},
                              {"tunnel_idle", summary_json(m.ping_idle)},
                              {"tunnel_beside_bulk", summary_json(m.ping_under_bulk)},
                              {"bulk_bytes", m.bulk_bytes},
                              {"bulk_seconds", m.bulk_seconds}};
  }
  if (r.reference) {
    const ReferenceResults& ref = *r.reference;
    nlohmann::json& jr = j["reference"];
    jr["binary"] = ref.binary;
    for (const ThroughputRow& row : ref.throughput) {
      jr["throughput"][row.key] = {{"direct_MBps", mb_per_s(row.direct)},
                                   {"tunnel_MBps", mb_per_s(row.tunnel)},
                                   {"ratio", ratio(row)},
                                   {"bytes", row.tunnel.bytes},
                                   {"tunnel_cpu_seconds", cpu_json(row.tunnel_cpu)}};
    }
    for (const LatencyRow& row : ref.latency) {
      jr["round_trip_us"].push_back({{"size", row.size},
                                     {"direct", summary_json(row.direct)},
                                     {"tunnel", summary_json(row.tunnel)},
                                     {"added_p50", row.tunnel.p50 - row.direct.p50},
                                     {"tunnel_cpu_seconds", cpu_json(row.tunnel_cpu)}});
    }
    jr["first_round_trip_us"] = summary_json(ref.first_rt);
    jr["startup_ms"] = ref.startup_ms;
    for (const MemoryRow& m : ref.memory) {
      jr["memory_kib"][m.key] = {{"idle_rss", m.idle_rss_kib},
                                 {"idle_rss_anon", m.idle_anon_kib},
                                 {"peak_rss_sampled", m.peak_rss_kib},
                                 {"hwm", m.hwm_kib},
                                 {"after_rss", m.after_rss_kib}};
    }
    jr["failures"] = ref.failures;
  }
  for (const Verdict& v : verdicts) {
    j["targets"].push_back({{"measure", v.what},
                            {"target", v.target},
                            {"ours", v.ours},
                            {"reference", v.reference},
                            {"pass", v.pass}});
  }
  return j.dump(2) + "\n";
}

}  // namespace bench
