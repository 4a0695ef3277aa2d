// What one benchmark run measured, and the targets it is judged by.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "load_client.h"

namespace bench {

struct Summary {
  std::size_t count = 0;
  double p50 = 0;
  double p99 = 0;
  double max = 0;
};

// MB/s (10^6 bytes per second) of a transfer.
double mb_per_s(const TransferResult& t);

// Nearest-rank percentiles of `samples`.
Summary summarize(std::vector<double> samples);

// CPU seconds (user + system) used while data moved.
struct CpuCost {
  double bench = 0;  // this program: the client and the service
  double relay = 0;
  double source = 0;
  double destination = 0;
  std::uint64_t bytes = 0;  // payload bytes moved meanwhile
};

struct ThroughputRow {
  std::string name;
  std::string key;  // for the JSON output
  TransferResult direct;
  TransferResult tunnel;
  CpuCost direct_cpu;  // summed over the runs
  CpuCost tunnel_cpu;
};

struct LatencyRow {
  std::size_t size = 0;
  Summary direct;  // microseconds
  Summary tunnel;
  CpuCost tunnel_cpu;                  // while the tunnel's round trips ran
  std::size_t tunnel_round_trips = 0;  // recorded and warm-up ones
};

struct MemoryRow {
  std::string name;
  std::string key;
  long idle_rss_kib = 0;   // VmRSS once connected, before any load
  long idle_anon_kib = 0;  // RssAnon then: VmRSS minus shared-library and file pages
  long peak_rss_kib = 0;   // largest VmRSS sampled during the throughput runs
  long hwm_kib = 0;        // VmHWM right after the throughput runs
  long after_rss_kib = 0;  // VmRSS once idle again after the runs
};

struct RunInfo {
  std::string build_dir;
  std::string build_type;
  std::string optimization;
  std::string sanitize;
  std::string cpu_model;
  int cpus = 0;
  std::string load_average;  // /proc/loadavg at start: others may share the machine
  std::uint64_t bytes = 0;
  int runs = 1;
  int memory_period_ms = 20;
  std::uint64_t memory_samples = 0;
};

struct FanOutRow {
  std::string name;
  std::string key;                   // for the JSON output
  TransferResult single;             // one connection alone, all the bytes
  TransferResult aggregate;          // N at once: bytes summed, wall time of the batch
  std::vector<TransferResult> each;  // each connection's own bytes and time
  TransferResult direct_single;      // the same two against the service directly,
  TransferResult direct_aggregate;   // for what N client threads cost on this machine
  double single_cpu = 0;             // CPU seconds of relay and both proxies, one connection
  double aggregate_cpu = 0;          // ... and N connections
};

struct MultiplexResults {
  int connections = 0;
  std::uint64_t bytes = 0;  // per direction, split evenly across the connections
  std::vector<FanOutRow> rows;
  Summary ping_direct;           // 1 B round trips against the service, nothing else running (us)
  Summary ping_idle;             // the same through the tunnel
  Summary ping_under_bulk;       // through the tunnel while another connection downloads
  std::uint64_t bulk_bytes = 0;  // moved by that other connection meanwhile
  double bulk_seconds = 0;
};

// With --reference: the same workloads through a second tunnel on the same
// relay whose two ends are the reference localproxy, measured right after
// ours in every run (throughput rows share ours' direct baseline).
struct ReferenceResults {
  std::string binary;
  std::vector<ThroughputRow> throughput;  // `tunnel` is the reference's
  std::vector<LatencyRow> latency;
  Summary first_rt;  // microseconds
  std::vector<double> startup_ms;
  std::vector<MemoryRow> memory;  // its source and destination
  // Measurements the reference did not complete, one line each (with the
  // last line it logged); it was restarted on a fresh tunnel after each.
  std::vector<std::string> failures;
};

struct Results {
  RunInfo info;
  std::vector<ThroughputRow> throughput;
  std::vector<LatencyRow> latency;
  Summary first_rt_direct;  // microseconds
  Summary first_rt_tunnel;
  std::vector<double> startup_ms;
  std::vector<double> startup_cpu_ms;  // CPU both localproxies used until then
  std::vector<MemoryRow> memory;
  std::optional<MultiplexResults> multiplex;        // with --connections N
  std::vector<ThroughputRow> throughput_via_proxy;  // with --https-proxy
  std::string https_proxy;
  std::optional<ReferenceResults> reference;  // with --reference
};

// A target next to what we measured and, with --reference, what the
// reference localproxy measured in the same run ("-" without).
struct Verdict {
  std::string what;
  std::string target;
  std::string ours;
  std::string reference;
  bool pass = false;
};

std::vector<Verdict> judge(const Results& r);

// The human tables, as printed and as copied into docs/benchmarks.md.
std::string format_report(const Results& r, const std::vector<Verdict>& verdicts);
std::string format_json(const Results& r, const std::vector<Verdict>& verdicts);

}  // namespace bench
