// Exponential backoff with jitter for WebSocket reconnects.
#pragma once

#include <cstdint>
#include <random>

namespace tunnel {

class Backoff {
 public:
  // First delay around initial_ms, doubling per attempt, capped at max_ms.
  // Each delay is drawn uniformly from [d/2, d] ("equal jitter") so that a fleet
  // restarted together does not reconnect in lockstep.
  Backoff(std::uint32_t initial_ms, std::uint32_t max_ms, std::uint64_t seed);
  std::uint32_t next_delay_ms();
  void reset() { attempt_ = 0; }
  std::uint32_t attempts() const { return attempt_; }

 private:
  std::uint32_t initial_ms_;
  std::uint32_t max_ms_;
  std::uint32_t attempt_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace tunnel
