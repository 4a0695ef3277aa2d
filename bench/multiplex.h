// Many simultaneous connections on one V3 tunnel (one
// service). Throughput of N connections at once against one connection alone
// moving the same bytes, each connection against its fair share, and 1-byte
// round trips on one connection while another runs bulk transfers.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "load_client.h"
#include "results.h"

namespace bench {

struct MultiplexOptions {
  int connections = 16;
  std::uint64_t bytes = 256ULL << 20;
  int round_trips = 2000;
  int warmup = 50;
  std::chrono::milliseconds budget{60000};
  // CPU seconds the tunnel's processes (relay, both proxies) have used so far.
  std::function<double()> tunnel_cpu = [] { return 0.0; };
};

// `tunnel_port` is the source's listener of a V3 tunnel whose destination
// reaches the load service at `direct_port`.
MultiplexResults measure_multiplex(std::uint16_t tunnel_port, std::uint16_t direct_port,
                                   const MultiplexOptions& o,
                                   const std::function<void(const std::string&)>& progress);

// Ratios the targets are judged on.
// aggregate MB/s over one connection's MB/s
double fan_out_ratio(const FanOutRow& row);
// the slowest connection's MB/s over its fair share (aggregate / N)
double worst_fair_share(const FanOutRow& row);

}  // namespace bench
