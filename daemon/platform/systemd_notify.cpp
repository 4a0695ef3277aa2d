#include "systemd_notify.h"

#include <unistd.h>

#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <string>

#include "unix_datagram.h"

#ifndef TUNNELD_WITH_SYSTEMD
#define TUNNELD_WITH_SYSTEMD 1
#endif

namespace tunneld::platform {
namespace {

template <typename Integer>
std::optional<Integer> parse_decimal(const char* text) {
  if (text == nullptr || *text == '\0') return std::nullopt;
  std::string_view view(text);
  Integer value{};
  auto [end, ec] = std::from_chars(view.data(), view.data() + view.size(), value);
  if (ec != std::errc() || end != view.data() + view.size()) return std::nullopt;
  return value;
}

// sd_watchdog_enabled(3) semantics: WATCHDOG_USEC > 0, and WATCHDOG_PID, when
// present, equal to our pid.
std::optional<std::chrono::microseconds> watchdog_from_environment() {
  auto usec = parse_decimal<std::uint64_t>(std::getenv("WATCHDOG_USEC"));
  if (!usec || *usec == 0) return std::nullopt;
  if (const char* pid_text = std::getenv("WATCHDOG_PID"); pid_text != nullptr) {
    auto pid = parse_decimal<pid_t>(pid_text);
    if (!pid || *pid != ::getpid()) return std::nullopt;
  }
  return std::chrono::microseconds(*usec);
}

}  // namespace

SystemdNotifier SystemdNotifier::from_environment() {
  if (!TUNNELD_WITH_SYSTEMD) return {};
  const char* socket = std::getenv("NOTIFY_SOCKET");
  if (socket == nullptr || *socket == '\0') return {};
  return SystemdNotifier(socket, watchdog_from_environment());
}

SystemdNotifier::SystemdNotifier(std::string socket_path,
                                 std::optional<std::chrono::microseconds> watchdog)
    : socket_path_(std::move(socket_path)), watchdog_(watchdog) {}

std::error_code SystemdNotifier::ready() { return notify("READY=1"); }

std::error_code SystemdNotifier::reloading() {
  // systemd >= 253 (Type=notify-reload) matches the reload to the request by
  // this timestamp; older versions ignore it.
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  auto usec = static_cast<std::uint64_t>(now.tv_sec) * 1'000'000u +
              static_cast<std::uint64_t>(now.tv_nsec) / 1'000u;
  return notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

std::error_code SystemdNotifier::stopping() { return notify("STOPPING=1"); }

std::error_code SystemdNotifier::status(std::string_view text) {
  std::string message = "STATUS=";
  message.reserve(message.size() + text.size());
  for (char c : text) message.push_back(c == '\n' ? ' ' : c);
  return notify(message);
}

std::error_code SystemdNotifier::watchdog_ping() { return notify("WATCHDOG=1"); }

std::error_code SystemdNotifier::notify(std::string_view assignments) {
  if (!enabled()) return {};
  auto address = make_unix_address(socket_path_);
  if (!address) return std::make_error_code(std::errc::invalid_argument);
  // A fresh socket per notification, like sd_notify(): a handful of calls per
  // minute, and no descriptor for children or reloads to worry about.
  int fd = open_unix_datagram_socket();
  if (fd < 0) return {-fd, std::system_category()};
  iovec part{const_cast<char*>(assignments.data()), assignments.size()};
  std::error_code result = send_unix_datagram(fd, *address, {&part, 1});
  ::close(fd);
  return result;
}

}  // namespace tunneld::platform
