#include "multiplex.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace bench {
namespace {

using TransferFn = TransferResult (*)(std::uint16_t, std::uint64_t, Clock::time_point);

// `n` connections started together, each moving `bytes_each`; the aggregate
// is the bytes of all over the wall time from the start signal to the last.
TransferResult fan_out(TransferFn fn, std::uint16_t port, int n, std::uint64_t bytes_each,
                       Clock::time_point deadline, std::vector<TransferResult>& each) {
  each.assign(static_cast<std::size_t>(n), TransferResult{});
  std::vector<std::string> errors(static_cast<std::size_t>(n));
  std::mutex mu;
  std::condition_variable cv;
  bool go = false;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return go; });
      }
      try {
        each[static_cast<std::size_t>(i)] = fn(port, bytes_each, deadline);
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(i)] = e.what();
      }
    });
  }
  const auto t0 = Clock::now();
  {
    const std::lock_guard lock(mu);
    go = true;
  }
  cv.notify_all();
  for (auto& t : threads) t.join();
  TransferResult all;
  all.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  for (std::size_t i = 0; i < each.size(); ++i) {
    if (!errors[i].empty()) {
      throw BenchError("connection " + std::to_string(i + 1) + " of " + std::to_string(n) + ": " +
                       errors[i]);
    }
    all.bytes += each[i].bytes;
  }
  return all;
}

}  // namespace

double fan_out_ratio(const FanOutRow& row) {
  const double one = mb_per_s(row.single);
  return one > 0 ? mb_per_s(row.aggregate) / one : 0;
}

double worst_fair_share(const FanOutRow& row) {
  if (row.each.empty()) return 0;
  const double fair = mb_per_s(row.aggregate) / static_cast<double>(row.each.size());
  double worst = mb_per_s(row.each.front());
  for (const TransferResult& t : row.each) worst = std::min(worst, mb_per_s(t));
  return fair > 0 ? worst / fair : 0;
}

MultiplexResults measure_multiplex(std::uint16_t tunnel_port, std::uint16_t direct_port,
                                   const MultiplexOptions& o,
                                   const std::function<void(const std::string&)>& progress) {
  MultiplexResults r;
  r.connections = std::max(1, o.connections);
  const auto n = static_cast<std::uint64_t>(r.connections);
  const std::uint64_t each = std::max<std::uint64_t>(1, o.bytes / n);
  r.bytes = each * n;
  const auto budget = std::chrono::seconds(60 + r.bytes / 2'000'000);

  struct Direction {
    const char* name;
    const char* key;
    TransferFn fn;
  };
  const Direction dirs[] = {{"source -> destination", "source_to_destination", upload},
                            {"destination -> source", "destination_to_source", download}};
  for (const Direction& d : dirs) {
    FanOutRow row;
    row.name = d.name;
    row.key = d.key;
    progress(std::string("multiplex ") + d.name + ": direct, one connection and " +
             std::to_string(r.connections));
    row.direct_single = d.fn(direct_port, r.bytes, Clock::now() + budget);
    std::vector<TransferResult> unused;
    row.direct_aggregate =
        fan_out(d.fn, direct_port, r.connections, each, Clock::now() + budget, unused);
    progress(std::string("multiplex ") + d.name + ": one connection");
    double cpu0 = o.tunnel_cpu();
    row.single = d.fn(tunnel_port, r.bytes, Clock::now() + budget);
    row.single_cpu = o.tunnel_cpu() - cpu0;
    progress(std::string("multiplex ") + d.name + ": " + std::to_string(r.connections) +
             " connections at once");
    cpu0 = o.tunnel_cpu();
    row.aggregate =
        fan_out(d.fn, tunnel_port, r.connections, each, Clock::now() + budget, row.each);
    row.aggregate_cpu = o.tunnel_cpu() - cpu0;
    r.rows.push_back(std::move(row));
  }

  progress("multiplex: 1 B round trips, direct and through the idle tunnel");
  r.ping_direct = summarize(round_trips(direct_port, 1, o.round_trips, o.warmup, o.budget));
  r.ping_idle = summarize(round_trips(tunnel_port, 1, o.round_trips, o.warmup, o.budget));

  progress("multiplex: 1 B round trips while another connection downloads");
  std::atomic<bool> stop{false};
  std::string bulk_error;
  const auto bulk_start = Clock::now();
  std::thread bulk([&] {
    try {
      while (!stop.load()) {
        r.bulk_bytes += download(tunnel_port, 32ULL << 20, Clock::now() + budget).bytes;
      }
    } catch (const std::exception& e) {
      bulk_error = e.what();
    }
  });
  // Let the bulk transfer reach full speed first.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::vector<double> under;
  std::string ping_error;
  try {
    under = round_trips(tunnel_port, 1, o.round_trips, o.warmup, o.budget);
  } catch (const std::exception& e) {
    ping_error = e.what();
  }
  stop = true;
  bulk.join();
  r.bulk_seconds = std::chrono::duration<double>(Clock::now() - bulk_start).count();
  if (!ping_error.empty()) throw BenchError("round trips under bulk: " + ping_error);
  if (!bulk_error.empty()) throw BenchError("bulk transfer beside the round trips: " + bulk_error);
  r.ping_under_bulk = summarize(std::move(under));
  return r;
}

}  // namespace bench
