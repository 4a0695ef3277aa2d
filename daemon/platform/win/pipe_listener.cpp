#include "pipe_listener.h"

#include <fcntl.h>
#include <io.h>

#include <stdexcept>
#include <utility>

#include "win_pipe.h"
#include "win_text.h"

namespace tunneld::platform::win {

ConnectedPipe::~ConnectedPipe() {
  if (handle_ != INVALID_HANDLE_VALUE) ::CloseHandle(handle_);
}

ConnectedPipe::ConnectedPipe(ConnectedPipe&& other) noexcept
    : handle_(std::exchange(other.handle_, INVALID_HANDLE_VALUE)) {}

ConnectedPipe& ConnectedPipe::operator=(ConnectedPipe&& other) noexcept {
  if (this != &other) {
    if (handle_ != INVALID_HANDLE_VALUE) ::CloseHandle(handle_);
    handle_ = std::exchange(other.handle_, INVALID_HANDLE_VALUE);
  }
  return *this;
}

int ConnectedPipe::open(uv_pipe_t* pipe) {
  if (handle_ == INVALID_HANDLE_VALUE) return UV_EBADF;
  // uv_pipe_open() takes a C runtime descriptor on Windows.
  const int fd = ::_open_osfhandle(reinterpret_cast<intptr_t>(handle_), _O_BINARY);
  if (fd == -1) return UV_EMFILE;  // handle_ is still ours: the destructor closes it
  handle_ = INVALID_HANDLE_VALUE;  // the descriptor owns it now
  const int rc = uv_pipe_open(pipe, fd);
  if (rc != 0) {
    ::_close(fd);
    return rc;
  }
  // For descriptors 0-2 (free in a service, which has no console) libuv
  // works on a duplicate of the handle and leaves the descriptor alone.
  if (fd <= 2) ::_close(fd);
  return 0;
}

// The waiting instance and what waits on it. The thread-pool callback only
// touches `async`, which lives until every wait is unregistered.
struct ControlPipeListener::Waiter {
  HANDLE instance = INVALID_HANDLE_VALUE;
  OVERLAPPED overlapped{};
  HANDLE event = nullptr;  // manual reset, signalled when ConnectNamedPipe completes
  HANDLE wait = nullptr;   // RegisterWaitForSingleObject
  uv_async_t* async = nullptr;
  bool connected_at_once = false;  // ERROR_PIPE_CONNECTED: the client came first
};

namespace {

void CALLBACK on_event(void* context, BOOLEAN /*timed_out*/) {
  uv_async_send(static_cast<uv_async_t*>(context));
}

}  // namespace

ControlPipeListener::ControlPipeListener(uv_loop_t* loop, std::wstring path, OnClient on_client,
                                         OnError on_error)
    : loop_(loop),
      path_(std::move(path)),
      on_client_(std::move(on_client)),
      on_error_(std::move(on_error)) {}

ControlPipeListener::~ControlPipeListener() { close(); }

bool ControlPipeListener::create_instance(bool first, std::string* problem) {
  windows::PipeSecurity security;
  DWORD error = 0;
  HANDLE h = windows::create_control_pipe(path_.c_str(), security, first, &error);
  if (h == INVALID_HANDLE_VALUE) {
    if (first && (error == ERROR_ACCESS_DENIED || error == ERROR_PIPE_BUSY)) {
      *problem = to_utf8(path_) +
                 " is already in use: another tunneld (or another program) owns it; stop it "
                 "first (sc.exe stop tunneld)";
    } else {
      *problem = "cannot create " + to_utf8(path_) + ": " + error_text(error);
    }
    return false;
  }
  waiter_->instance = h;
  return true;
}

void ControlPipeListener::listen() {
  if (listening_) return;
  waiter_ = std::make_unique<Waiter>();
  waiter_->event = ::CreateEventW(nullptr, TRUE, FALSE, nullptr);
  if (waiter_->event == nullptr) {
    const DWORD error = ::GetLastError();
    waiter_.reset();
    throw std::runtime_error("cannot create an event: " + error_text(error));
  }
  std::string problem;
  if (!create_instance(true, &problem)) {
    ::CloseHandle(waiter_->event);
    waiter_.reset();
    throw std::runtime_error(problem);
  }
  waiter_->async = new uv_async_t;
  waiter_->async->data = this;
  uv_async_init(loop_, waiter_->async,
                [](uv_async_t* a) { static_cast<ControlPipeListener*>(a->data)->on_signalled(); });
  listening_ = true;
  arm();
}

void ControlPipeListener::arm() {
  Waiter& w = *waiter_;
  for (;;) {
    ::ResetEvent(w.event);
    w.overlapped = OVERLAPPED{};
    w.overlapped.hEvent = w.event;
    if (::ConnectNamedPipe(w.instance, &w.overlapped)) {
      // Overlapped calls normally report completion through the event; a
      // synchronous success still signalled it.
      break;
    }
    const DWORD error = ::GetLastError();
    if (error == ERROR_IO_PENDING) break;
    if (error == ERROR_PIPE_CONNECTED) {
      w.connected_at_once = true;
      uv_async_send(w.async);
      return;
    }
    if (error == ERROR_NO_DATA) {
      // A client connected and left before we looked: recycle the instance.
      ::DisconnectNamedPipe(w.instance);
      continue;
    }
    if (on_error_) on_error_("waiting for control clients failed: " + error_text(error));
    return;
  }
  if (!::RegisterWaitForSingleObject(&w.wait, w.event, on_event, w.async, INFINITE,
                                     WT_EXECUTEONLYONCE)) {
    w.wait = nullptr;
    if (on_error_) {
      on_error_("cannot wait for control clients: " + error_text(::GetLastError()));
    }
  }
}

void ControlPipeListener::on_signalled() {
  if (!listening_) return;
  Waiter& w = *waiter_;
  if (w.wait != nullptr) {
    // The callback has run (WT_EXECUTEONLYONCE); this only frees the wait.
    ::UnregisterWaitEx(w.wait, nullptr);
    w.wait = nullptr;
  }
  bool connected = std::exchange(w.connected_at_once, false);
  if (!connected) {
    DWORD bytes = 0;
    if (::GetOverlappedResult(w.instance, &w.overlapped, &bytes, FALSE)) {
      connected = true;
    } else {
      const DWORD error = ::GetLastError();
      if (error == ERROR_IO_INCOMPLETE) {
        // Woken without a completion (a stale signal): wait again.
        if (!::RegisterWaitForSingleObject(&w.wait, w.event, on_event, w.async, INFINITE,
                                           WT_EXECUTEONLYONCE)) {
          w.wait = nullptr;
        }
        return;
      }
      if (error == ERROR_PIPE_CONNECTED) {
        connected = true;
      } else if (error == ERROR_NO_DATA) {
        ::DisconnectNamedPipe(w.instance);
      } else if (on_error_) {
        on_error_("a control client's connection failed: " + error_text(error));
      }
    }
  }
  if (!connected) {
    arm();
    return;
  }
  // The next instance first, so that a client never finds none waiting.
  HANDLE client = std::exchange(w.instance, INVALID_HANDLE_VALUE);
  std::string problem;
  const bool next = create_instance(false, &problem);
  on_client_(ConnectedPipe(client));
  if (!listening_) return;  // on_client_ may have closed the listener
  if (next) {
    arm();
  } else if (on_error_) {
    on_error_(problem + "; no further control clients are accepted");
  }
}

void ControlPipeListener::close() {
  if (!listening_) return;
  listening_ = false;
  Waiter& w = *waiter_;
  if (w.wait != nullptr) {
    // INVALID_HANDLE_VALUE: returns once a running callback has finished, so
    // nothing touches the async handle after it is closed below.
    ::UnregisterWaitEx(w.wait, INVALID_HANDLE_VALUE);
    w.wait = nullptr;
  }
  if (w.instance != INVALID_HANDLE_VALUE) {
    // The OVERLAPPED must outlive the pending ConnectNamedPipe: cancel it and
    // wait for the cancellation before anything is freed.
    if (::CancelIoEx(w.instance, &w.overlapped)) {
      DWORD bytes = 0;
      ::GetOverlappedResult(w.instance, &w.overlapped, &bytes, TRUE);
    }
    ::CloseHandle(w.instance);
    w.instance = INVALID_HANDLE_VALUE;
  }
  ::CloseHandle(w.event);
  w.event = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(w.async),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
  w.async = nullptr;
  waiter_.reset();
}

}  // namespace tunneld::platform::win
