// Decides whether an accepted notification may open a session, or why it is
// refused (rate limit, cap). Pure (time is passed in), so the flood
// protection is unit tested without a broker.
//
// Rules (docs/notify.md):
// - Every tunnel gets its own session; a newer notification never replaces
//   or evicts a working one.
// - Rate limit: a token bucket of `burst` notifications, refilled at
//   `per_minute`. Only notifications that would open a session take a token.
// - Cap: at most `max_sessions` notify-opened sessions exist at once,
//   counting those still closing, so a flood cannot pile up sessions faster
//   than they close. At the cap the new notification is refused.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace tunneld::notify {

struct GateLimits {
  std::size_t max_sessions = 4;
  double burst = 5;
  double per_minute = 30;
  bool operator==(const GateLimits&) const = default;
};

struct GateDecision {
  bool accept = false;
  std::string refusal;  // when !accept: one line
};

class NotifyGate {
 public:
  using Clock = std::chrono::steady_clock;
  explicit NotifyGate(GateLimits limits);
  void set_limits(GateLimits limits);
  const GateLimits& limits() const { return limits_; }

  // `sessions`: notify-opened sessions that exist now, closing ones included.
  GateDecision admit(Clock::time_point now, std::size_t sessions);

 private:
  void refill(Clock::time_point now);

  GateLimits limits_;
  double tokens_;
  Clock::time_point last_refill_{};
  bool primed_ = false;
};

}  // namespace tunneld::notify
