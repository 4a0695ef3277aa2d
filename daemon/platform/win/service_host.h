// tunneld as a Windows service: the service control manager (SCM) side, the
// counterpart of sd_notify and of SIGTERM / SIGHUP.
//
//   int rc = run_service(L"tunneld", {
//       .run = [&](ServiceReporter& scm) { return daemon.run(scm); },
//       .on_control = events.poster(),   // LoopEvents: stop and reload reach the loop
//   });
//
// - START_PENDING is reported with a wait hint as soon as the service starts;
//   the daemon calls ready() once the control pipe accepts clients and the
//   persisted sessions are restored (where it sends READY=1 on Linux), and
//   progress() while a long start-up or stop goes on (the watchdog tick).
// - STOP and SHUTDOWN report STOP_PENDING and deliver ServiceEvent::stop;
//   PARAMCHANGE (`sc control tunneld paramchange`) delivers
//   ServiceEvent::reload: re-read the configuration, as SIGHUP does.
// - When run() returns, STOPPED is reported with its exit code; non-zero is a
//   service-specific error, which triggers the failure actions (restart).
// Windows only, except ServiceStatusTracker, which is pure.
#pragma once

// Winsock before <windows.h>, as libuv's header (service_events.h) needs.
#include <winsock2.h>

#include <windows.h>

#include <functional>
#include <limits>
#include <mutex>

#include "service_events.h"

namespace tunneld::platform::win {

// Returned by run_service() when the process was not started by the SCM
// (started from a console): run in the foreground instead.
inline constexpr int kNotStartedByServiceManager = std::numeric_limits<int>::min();
// Returned when connecting to the SCM failed for any other reason.
inline constexpr int kServiceDispatcherFailed = std::numeric_limits<int>::min() + 1;

inline constexpr DWORD kStartWaitHintMs = 30'000;
// A graceful stop takes up to 5 s (every session resets its streams and
// closes its WebSocket); the hint leaves room for a loaded machine.
inline constexpr DWORD kStopWaitHintMs = 15'000;

// Pure: the SERVICE_STATUS to report for each step of the service's life,
// with the checkpoint rules the SCM expects (incremented while pending, 0 in
// a final state) and the controls accepted in each state.
class ServiceStatusTracker {
 public:
  const SERVICE_STATUS& starting(DWORD wait_hint_ms = kStartWaitHintMs);
  const SERVICE_STATUS& running();
  const SERVICE_STATUS& stopping(DWORD wait_hint_ms = kStopWaitHintMs);
  // Another checkpoint in the current pending state; false (nothing to
  // report) outside START_PENDING and STOP_PENDING.
  bool progress();
  // A non-zero exit code is reported as ERROR_SERVICE_SPECIFIC_ERROR.
  const SERVICE_STATUS& stopped(int exit_code);

  const SERVICE_STATUS& status() const { return status_; }
  DWORD state() const { return status_.dwCurrentState; }

 private:
  const SERVICE_STATUS& set(DWORD state, DWORD wait_hint_ms);
  SERVICE_STATUS status_{SERVICE_WIN32_OWN_PROCESS, SERVICE_STOPPED, 0, NO_ERROR, 0, 0, 0};
};

// What the daemon tells the SCM, named as SystemdNotifier's calls are.
// Thread-safe.
class ServiceReporter {
 public:
  virtual ~ServiceReporter() = default;
  virtual void ready() = 0;     // RUNNING
  virtual void stopping() = 0;  // STOP_PENDING (if not already)
  virtual void progress() = 0;  // next checkpoint while pending
};

struct ServiceCallbacks {
  // The daemon's whole life; returns its exit code. Runs on the service thread.
  std::function<int(ServiceReporter&)> run;
  // Called on the SCM's thread: must be thread-safe and return at once
  // (LoopEvents::poster()). May be called before run() started its loop and
  // after it returned.
  std::function<void(ServiceEvent)> on_control;
};

// Runs the process as service `name` (SERVICE_WIN32_OWN_PROCESS) and returns
// when it has stopped, with run()'s exit code (1 if run() threw).
int run_service(const wchar_t* name, ServiceCallbacks callbacks);

}  // namespace tunneld::platform::win
