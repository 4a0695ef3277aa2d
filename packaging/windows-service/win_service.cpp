#include "win_service.h"

#include <windows.h>

#include <mutex>
#include <string>
#include <utility>

namespace tunneld::windows {
namespace {

constexpr DWORD kStartWaitHintMs = 10'000;
// TimeoutStopSec= of the systemd unit: a graceful stop takes up to 5 s.
constexpr DWORD kStopWaitHintMs = 15'000;

struct Service {
  std::wstring name;
  std::function<int()> run;
  std::function<void()> request_stop;

  // The SCM calls the control handler on the dispatcher thread while
  // ServiceMain runs on its own thread: both report status.
  std::mutex mutex;
  SERVICE_STATUS_HANDLE handle = nullptr;
  SERVICE_STATUS status{};
  bool stop_requested = false;
  int exit_code = 0;
};

// ServiceMain receives no context pointer, so it finds the service here. The
// object is never destroyed: the SCM may still be returning from the service
// thread when the dispatcher has already returned on the main thread.
Service* g_service = nullptr;

// Caller holds service.mutex.
void report_locked(Service& service, DWORD state, DWORD wait_hint_ms) {
  SERVICE_STATUS& status = service.status;
  status.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
  status.dwCurrentState = state;
  status.dwControlsAccepted =
      state == SERVICE_RUNNING ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN : 0;
  status.dwWaitHint = wait_hint_ms;
  // Pending states count progress; final states reset the counter.
  if (state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING) {
    ++status.dwCheckPoint;
  } else {
    status.dwCheckPoint = 0;
  }
  if (state == SERVICE_STOPPED && service.exit_code != 0) {
    status.dwWin32ExitCode = ERROR_SERVICE_SPECIFIC_ERROR;
    status.dwServiceSpecificExitCode = static_cast<DWORD>(service.exit_code);
  } else {
    status.dwWin32ExitCode = NO_ERROR;
    status.dwServiceSpecificExitCode = 0;
  }
  ::SetServiceStatus(service.handle, &status);
}

void report(Service& service, DWORD state, DWORD wait_hint_ms) {
  std::lock_guard lock(service.mutex);
  report_locked(service, state, wait_hint_ms);
}

DWORD WINAPI handle_control(DWORD control, DWORD /*event_type*/, LPVOID /*event_data*/,
                            LPVOID context) {
  auto& service = *static_cast<Service*>(context);
  switch (control) {
    case SERVICE_CONTROL_STOP:
    case SERVICE_CONTROL_SHUTDOWN: {
      {
        std::lock_guard lock(service.mutex);
        if (service.stop_requested) return NO_ERROR;
        service.stop_requested = true;
        report_locked(service, SERVICE_STOP_PENDING, kStopWaitHintMs);
      }
      service.request_stop();
      return NO_ERROR;
    }
    case SERVICE_CONTROL_INTERROGATE:
      return NO_ERROR;
    default:
      return ERROR_CALL_NOT_IMPLEMENTED;
  }
}

void WINAPI service_main(DWORD /*argc*/, LPWSTR* /*argv*/) {
  Service& service = *g_service;
  service.handle = ::RegisterServiceCtrlHandlerExW(service.name.c_str(), handle_control, &service);
  if (service.handle == nullptr) {
    // Without a handle nothing can be reported; the SCM times the start out.
    DWORD error = ::GetLastError();
    std::lock_guard lock(service.mutex);
    service.exit_code = static_cast<int>(error);
    return;
  }
  report(service, SERVICE_START_PENDING, kStartWaitHintMs);
  report(service, SERVICE_RUNNING, 0);

  int exit_code;
  try {
    exit_code = service.run();
  } catch (...) {
    exit_code = 1;
  }

  std::lock_guard lock(service.mutex);
  service.exit_code = exit_code;
  // The last call: after STOPPED the SCM may end the process at any moment.
  report_locked(service, SERVICE_STOPPED, 0);
}

}  // namespace

int run_windows_service(const wchar_t* name, std::function<int()> run,
                        std::function<void()> request_stop) {
  if (g_service == nullptr) g_service = new Service;
  Service& service = *g_service;
  service.name = name;
  service.run = std::move(run);
  service.request_stop = std::move(request_stop);

  SERVICE_TABLE_ENTRYW table[] = {
      {service.name.data(), service_main},
      {nullptr, nullptr},
  };
  BOOL dispatched = ::StartServiceCtrlDispatcherW(table);
  if (!dispatched) {
    DWORD error = ::GetLastError();
    return error == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT ? kNotStartedByServiceManager
                                                            : kServiceDispatcherFailed;
  }
  std::lock_guard lock(service.mutex);
  return service.exit_code;
}

}  // namespace tunneld::windows
