#include "service_host.h"

#include <string>
#include <utility>

namespace tunneld::platform::win {

const SERVICE_STATUS& ServiceStatusTracker::set(DWORD state, DWORD wait_hint_ms) {
  const bool pending = state == SERVICE_START_PENDING || state == SERVICE_STOP_PENDING;
  status_.dwServiceType = SERVICE_WIN32_OWN_PROCESS;
  status_.dwCheckPoint =
      pending ? (state == status_.dwCurrentState ? status_.dwCheckPoint : 0) + 1 : 0;
  status_.dwCurrentState = state;
  status_.dwWaitHint = pending ? wait_hint_ms : 0;
  // Controls only while running: during START_PENDING the SCM would queue
  // them, and in STOP_PENDING a stop is already under way.
  status_.dwControlsAccepted =
      state == SERVICE_RUNNING
          ? SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN | SERVICE_ACCEPT_PARAMCHANGE
          : 0;
  if (state != SERVICE_STOPPED) {
    status_.dwWin32ExitCode = NO_ERROR;
    status_.dwServiceSpecificExitCode = 0;
  }
  return status_;
}

const SERVICE_STATUS& ServiceStatusTracker::starting(DWORD wait_hint_ms) {
  return set(SERVICE_START_PENDING, wait_hint_ms);
}

const SERVICE_STATUS& ServiceStatusTracker::running() { return set(SERVICE_RUNNING, 0); }

const SERVICE_STATUS& ServiceStatusTracker::stopping(DWORD wait_hint_ms) {
  return set(SERVICE_STOP_PENDING, wait_hint_ms);
}

bool ServiceStatusTracker::progress() {
  const DWORD s = status_.dwCurrentState;
  if (s != SERVICE_START_PENDING && s != SERVICE_STOP_PENDING) return false;
  ++status_.dwCheckPoint;
  return true;
}

const SERVICE_STATUS& ServiceStatusTracker::stopped(int exit_code) {
  set(SERVICE_STOPPED, 0);
  if (exit_code != 0) {
    status_.dwWin32ExitCode = ERROR_SERVICE_SPECIFIC_ERROR;
    status_.dwServiceSpecificExitCode = static_cast<DWORD>(exit_code);
  } else {
    status_.dwWin32ExitCode = NO_ERROR;
    status_.dwServiceSpecificExitCode = 0;
  }
  return status_;
}

namespace {

class Service final : public ServiceReporter {
 public:
  std::wstring name;
  ServiceCallbacks callbacks;
  SERVICE_STATUS_HANDLE handle = nullptr;
  int exit_code = 0;

  void ready() override {
    std::lock_guard lock(mutex_);
    if (tracker_.state() != SERVICE_START_PENDING) return;
    report(tracker_.running());
  }
  void stopping() override {
    std::lock_guard lock(mutex_);
    if (tracker_.state() == SERVICE_STOP_PENDING || tracker_.state() == SERVICE_STOPPED) return;
    report(tracker_.stopping());
  }
  void progress() override {
    std::lock_guard lock(mutex_);
    if (tracker_.progress()) report(tracker_.status());
  }
  void starting() {
    std::lock_guard lock(mutex_);
    report(tracker_.starting());
  }
  void stopped(int code) {
    std::lock_guard lock(mutex_);
    exit_code = code;
    report(tracker_.stopped(code));
  }
  // The SCM's thread. Returns NO_ERROR for controls it handles.
  DWORD control(DWORD code) {
    switch (code) {
      case SERVICE_CONTROL_STOP:
      case SERVICE_CONTROL_SHUTDOWN:
        stopping();
        if (callbacks.on_control) callbacks.on_control(ServiceEvent::stop);
        return NO_ERROR;
      case SERVICE_CONTROL_PARAMCHANGE:
        if (callbacks.on_control) callbacks.on_control(ServiceEvent::reload);
        return NO_ERROR;
      case SERVICE_CONTROL_INTERROGATE:
        return NO_ERROR;
      default:
        return ERROR_CALL_NOT_IMPLEMENTED;
    }
  }

 private:
  // Caller holds mutex_.
  void report(const SERVICE_STATUS& status) {
    SERVICE_STATUS copy = status;
    if (handle != nullptr) ::SetServiceStatus(handle, &copy);
  }

  std::mutex mutex_;
  ServiceStatusTracker tracker_;
};

// ServiceMain gets no context pointer, so it finds the service here. Never
// destroyed: the SCM may still be returning from the service thread when the
// dispatcher has returned on the main thread.
Service* g_service = nullptr;

DWORD WINAPI handle_control(DWORD code, DWORD, LPVOID, LPVOID context) {
  return static_cast<Service*>(context)->control(code);
}

void WINAPI service_main(DWORD, LPWSTR*) {
  Service& service = *g_service;
  service.handle = ::RegisterServiceCtrlHandlerExW(service.name.c_str(), handle_control, &service);
  if (service.handle == nullptr) {
    // Nothing can be reported without a handle; the SCM times the start out.
    service.exit_code = static_cast<int>(::GetLastError());
    return;
  }
  service.starting();
  int code = 1;
  try {
    code = service.callbacks.run(service);
  } catch (...) {
    code = 1;
  }
  // After STOPPED the SCM may end the process at any moment: the last call.
  service.stopped(code);
}

}  // namespace

int run_service(const wchar_t* name, ServiceCallbacks callbacks) {
  if (g_service == nullptr) g_service = new Service;
  g_service->name = name;
  g_service->callbacks = std::move(callbacks);
  SERVICE_TABLE_ENTRYW table[] = {
      {g_service->name.data(), service_main},
      {nullptr, nullptr},
  };
  if (!::StartServiceCtrlDispatcherW(table)) {
    return ::GetLastError() == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT ? kNotStartedByServiceManager
                                                                       : kServiceDispatcherFailed;
  }
  return g_service->exit_code;
}

}  // namespace tunneld::platform::win
