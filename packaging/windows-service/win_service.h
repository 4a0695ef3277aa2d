// tunneld as a Windows service: the service-control-manager (SCM) side of
// the daemon. Windows only.
#pragma once

#include <functional>
#include <limits>

namespace tunneld::windows {

// Returned when the process was not started by the SCM (it was run from a
// console): the caller runs the daemon in the foreground instead.
inline constexpr int kNotStartedByServiceManager = std::numeric_limits<int>::min();
// Returned when the SCM connection failed for any other reason.
inline constexpr int kServiceDispatcherFailed = std::numeric_limits<int>::min() + 1;

// Runs the daemon as the service `name` (SERVICE_WIN32_OWN_PROCESS) and
// returns when it has stopped, with run()'s exit code.
//
// - Reports START_PENDING, then RUNNING right before calling run() on the
//   service thread; run() is the daemon's whole life (start-up, event loop,
//   drain) and returns its exit code.
// - STOP and SHUTDOWN report STOP_PENDING (wait hint 15 s: the daemon drains
//   within 5 s) and call request_stop() once, on the SCM's dispatcher thread:
//   it must be thread-safe and return at once (e.g. uv_async_send()). It may
//   run before run() has started its loop.
// - When run() returns (or throws: exit code 1) the service reports STOPPED;
//   a non-zero code is reported as a service-specific error, which triggers
//   the failure actions (restart) when `sc.exe failureflag` is set, as
//   install.ps1 does.
int run_windows_service(const wchar_t* name, std::function<int()> run,
                        std::function<void()> request_stop);

}  // namespace tunneld::windows
