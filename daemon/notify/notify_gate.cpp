#include "notify_gate.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace tunneld::notify {

NotifyGate::NotifyGate(GateLimits limits) : limits_(limits), tokens_(limits.burst) {}

void NotifyGate::set_limits(GateLimits limits) {
  limits_ = limits;
  // Before the first notification the bucket is full at the configured
  // burst (the daemon configures the gate after constructing it with the
  // defaults); later a lower burst caps what is left and a higher one fills
  // up at the configured rate.
  tokens_ = primed_ ? std::min(tokens_, limits_.burst) : limits_.burst;
}

void NotifyGate::refill(Clock::time_point now) {
  if (!primed_) {
    primed_ = true;
    last_refill_ = now;
    return;
  }
  if (now <= last_refill_) return;
  const double seconds = std::chrono::duration<double>(now - last_refill_).count();
  tokens_ = std::min(limits_.burst, tokens_ + seconds * limits_.per_minute / 60.0);
  last_refill_ = now;
}

GateDecision NotifyGate::admit(Clock::time_point now, std::size_t sessions) {
  refill(now);
  GateDecision d;
  if (tokens_ < 1.0) {
    d.refusal = "rate limit: more than " + std::to_string(static_cast<long>(limits_.burst)) +
                " notifications in a burst (refilled at " +
                std::to_string(static_cast<long>(std::lround(limits_.per_minute))) + " per minute)";
    return d;
  }
  if (sessions >= limits_.max_sessions) {
    d.refusal = "cap: " + std::to_string(sessions) +
                " notify-opened session(s) exist or are closing (max_sessions = " +
                std::to_string(limits_.max_sessions) +
                "); the running sessions are kept, this tunnel is not opened";
    return d;
  }
  tokens_ -= 1.0;
  d.accept = true;
  return d;
}

}  // namespace tunneld::notify
