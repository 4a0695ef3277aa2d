#include "backoff.h"

#include <algorithm>

namespace tunnel {

Backoff::Backoff(std::uint32_t initial_ms, std::uint32_t max_ms, std::uint64_t seed)
    : initial_ms_(initial_ms), max_ms_(max_ms), rng_(seed) {}

std::uint32_t Backoff::next_delay_ms() {
  // initial * 2^attempt in 64 bits: a 32-bit value shifted by at most 32
  // cannot overflow, and 2^32 times any non-zero initial delay exceeds any
  // 32-bit cap, so later attempts need no further doubling.
  const unsigned shift = std::min<std::uint32_t>(attempt_, 32);
  const std::uint64_t ceiling =
      std::min<std::uint64_t>(static_cast<std::uint64_t>(initial_ms_) << shift, max_ms_);
  if (attempt_ < UINT32_MAX) {
    ++attempt_;
  }
  const auto hi = static_cast<std::uint32_t>(ceiling);
  const std::uint32_t lo = hi - hi / 2;  // round up so that [lo, hi] never starts at 0 for hi >= 1
  std::uniform_int_distribution<std::uint32_t> pick(lo, hi);
  return pick(rng_);
}

}  // namespace tunnel
