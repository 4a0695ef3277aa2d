// Decides what an accepted notification does to the notify-opened sessions:
// which ones it replaces, or why it is refused (rate limit, cap). Pure (time
// is passed in), so the flood protection is unit tested without a broker.
//
// Rules (docs/notify.md):
// - A newer notification for a thing replaces that thing's older session, as
//   the AWS IoT Device Client does.
// - Rate limit: a token bucket of `burst` notifications, refilled at
//   `per_minute`. Only notifications that would open a session take a token.
// - Cap: at most `max_sessions` notify-opened sessions exist at once, counting
//   those still closing (a replaced session drains before it is gone), so a
//   flood cannot pile up sessions faster than they close.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace tunneld::notify {

struct GateLimits {
  std::size_t max_sessions = 4;
  double burst = 5;
  double per_minute = 30;
  bool operator==(const GateLimits&) const = default;
};

// What the gate needs to know of one notify-opened session.
struct SessionView {
  std::string id;
  std::string thing;
  bool ended = false;    // over (closed by the service, failed): holds nothing
  bool closing = false;  // stop requested, still draining
};

struct GateDecision {
  bool accept = false;
  std::string refusal;               // when !accept: one line
  std::vector<std::string> replace;  // ids to stop when accepted
};

class NotifyGate {
 public:
  using Clock = std::chrono::steady_clock;
  explicit NotifyGate(GateLimits limits);
  void set_limits(GateLimits limits);
  const GateLimits& limits() const { return limits_; }

  GateDecision admit(Clock::time_point now, const std::string& thing,
                     const std::vector<SessionView>& sessions);

 private:
  void refill(Clock::time_point now);

  GateLimits limits_;
  double tokens_;
  Clock::time_point last_refill_{};
  bool primed_ = false;
};

}  // namespace tunneld::notify
