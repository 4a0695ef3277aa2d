// sd_notify(3) for tunneld: tells the service manager when the daemon is
// ready, reloading or stopping, what it is doing (STATUS=), and that its event
// loop is alive (WATCHDOG=1).
//
// The datagram protocol is spoken directly (it is one of systemd's documented
// stable interfaces), so no libsystemd is needed at run time. Built with
// -Dsystemd=disabled, from_environment() always returns an inert notifier.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace tunneld::platform {

class SystemdNotifier {
 public:
  // Inert: every call succeeds without sending anything.
  SystemdNotifier() = default;

  // Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID as set by systemd for
  // Type=notify services. Inert when NOTIFY_SOCKET is unset. The watchdog is
  // off when WATCHDOG_USEC is unset or 0, or WATCHDOG_PID names another
  // process (the variables were inherited, not meant for us).
  static SystemdNotifier from_environment();

  // Notifies `socket_path` ("/path" or "@abstract") directly; for tests and
  // for supervisors other than systemd.
  explicit SystemdNotifier(std::string socket_path,
                           std::optional<std::chrono::microseconds> watchdog = std::nullopt);

  // False for an inert notifier: nobody is listening for notifications.
  bool enabled() const { return !socket_path_.empty(); }
  const std::string& socket_path() const { return socket_path_; }

  // READY=1: start-up finished. tunneld sends it once the control socket
  // accepts connections and persisted sessions are restored.
  std::error_code ready();
  // RELOADING=1 (with MONOTONIC_USEC=): a configuration reload started; send
  // ready() when it is done.
  std::error_code reloading();
  // STOPPING=1: a graceful stop started.
  std::error_code stopping();
  // STATUS=<text>, shown by `systemctl status`. Newlines, which would end the
  // assignment, become spaces.
  std::error_code status(std::string_view text);
  // WATCHDOG=1: the event loop is alive.
  std::error_code watchdog_ping();
  // Sends newline-separated assignments verbatim, e.g. "READY=1\nSTATUS=...".
  std::error_code notify(std::string_view assignments);

  // WatchdogSec= of the unit, or nullopt when the watchdog is off. Ping at
  // least twice per interval: tunneld pings on its once-a-second tick, or
  // every interval / 2 when that is shorter.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }

 private:
  std::string socket_path_;
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace tunneld::platform
