#include "notify_gate.h"

#include <algorithm>
#include <cmath>

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

GateDecision NotifyGate::admit(Clock::time_point now, const std::string& thing,
                               const std::vector<SessionView>& sessions) {
  refill(now);
  GateDecision d;
  std::size_t alive = 0;
  for (const SessionView& s : sessions) {
    if (s.ended) continue;
    ++alive;
    if (s.thing == thing && !s.closing) d.replace.push_back(s.id);
  }
  // Ended sessions of the thing are replaced too (they are only a record).
  for (const SessionView& s : sessions) {
    if (s.ended && s.thing == thing) d.replace.push_back(s.id);
  }
  if (tokens_ < 1.0) {
    d.replace.clear();
    d.refusal = "rate limit: more than " + std::to_string(static_cast<long>(limits_.burst)) +
                " notifications in a burst (refilled at " +
                std::to_string(static_cast<long>(std::lround(limits_.per_minute))) + " per minute)";
    return d;
  }
  // The replaced sessions keep counting while they drain.
  if (alive + 1 > limits_.max_sessions) {
    d.replace.clear();
    d.refusal = "cap: " + std::to_string(alive) +
                " notify-opened session(s) exist or are closing (" +
                "max_sessions = " + std::to_string(limits_.max_sessions) + ")";
    return d;
  }
  tokens_ -= 1.0;
  d.accept = true;
  return d;
}

}  // namespace tunneld::notify
