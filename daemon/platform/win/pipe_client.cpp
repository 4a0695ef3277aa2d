#include "pipe_client.h"

#include <algorithm>
#include <utility>

#include "win_text.h"

namespace tunneld::platform::win {
namespace {

DWORD ms_until(PipeConnection::Deadline deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return left.count() <= 0 ? 0 : static_cast<DWORD>(std::min<long long>(left.count(), 0x7fffffff));
}

}  // namespace

PipeError pipe_connect_error(DWORD error, std::string_view path) {
  const std::string p(path);
  switch (error) {
    case ERROR_FILE_NOT_FOUND:
    case ERROR_PATH_NOT_FOUND:
      return {PipeErrorKind::unreachable,
              "no tunneld is listening on " + p +
                  ": is the service running? (sc.exe query tunneld; start it with sc.exe start "
                  "tunneld)"};
    case ERROR_ACCESS_DENIED:
      return {PipeErrorKind::permission_denied,
              "access to " + p +
                  " denied: only elevated administrators and SYSTEM may use it; run tunnelctl "
                  "from an elevated prompt (Run as administrator)"};
    case ERROR_PIPE_BUSY:
    case ERROR_SEM_TIMEOUT:
      return {PipeErrorKind::timeout, p + " is busy: no free instance before the deadline"};
    default:
      return {PipeErrorKind::io, "cannot connect to " + p + ": " + error_text(error)};
  }
}

PipeConnection::PipeConnection(HANDLE handle, std::string path)
    : handle_(handle),
      event_(::CreateEventW(nullptr, TRUE, FALSE, nullptr)),
      path_(std::move(path)) {}

PipeConnection::~PipeConnection() {
  if (handle_ != INVALID_HANDLE_VALUE) ::CloseHandle(handle_);
  if (event_ != nullptr) ::CloseHandle(event_);
}

PipeConnection::PipeConnection(PipeConnection&& other) noexcept
    : handle_(std::exchange(other.handle_, INVALID_HANDLE_VALUE)),
      event_(std::exchange(other.event_, nullptr)),
      path_(std::move(other.path_)) {}

PipeConnection& PipeConnection::operator=(PipeConnection&& other) noexcept {
  if (this != &other) {
    if (handle_ != INVALID_HANDLE_VALUE) ::CloseHandle(handle_);
    if (event_ != nullptr) ::CloseHandle(event_);
    handle_ = std::exchange(other.handle_, INVALID_HANDLE_VALUE);
    event_ = std::exchange(other.event_, nullptr);
    path_ = std::move(other.path_);
  }
  return *this;
}

std::optional<PipeConnection> PipeConnection::connect(const std::wstring& path, Deadline deadline,
                                                      PipeError* error) {
  const std::string shown = to_utf8(path);
  for (;;) {
    HANDLE h = ::CreateFileW(path.c_str(), GENERIC_READ | GENERIC_WRITE, 0, nullptr, OPEN_EXISTING,
                             FILE_FLAG_OVERLAPPED | SECURITY_SQOS_PRESENT | SECURITY_IDENTIFICATION,
                             nullptr);
    if (h != INVALID_HANDLE_VALUE) {
      PipeConnection c(h, shown);
      if (c.event_ == nullptr) {
        *error = {PipeErrorKind::io, "cannot create an event: " + error_text(::GetLastError())};
        return std::nullopt;
      }
      return c;
    }
    const DWORD e = ::GetLastError();
    if (e != ERROR_PIPE_BUSY) {
      *error = pipe_connect_error(e, shown);
      return std::nullopt;
    }
    // Every instance is taken: wait for one, within the deadline. The
    // daemon creates the next instance right after a client connects, so a
    // failed wait (the instance was taken by another client first) is
    // retried until the deadline.
    const DWORD wait = ms_until(deadline);
    if (wait == 0) {
      *error = pipe_connect_error(ERROR_PIPE_BUSY, shown);
      return std::nullopt;
    }
    if (!::WaitNamedPipeW(path.c_str(), std::min<DWORD>(wait, 1000))) ::Sleep(10);
  }
}

bool PipeConnection::finish(OVERLAPPED& overlapped, Deadline deadline, DWORD* bytes, DWORD* error) {
  if (::GetOverlappedResult(handle_, &overlapped, bytes, FALSE)) return true;
  DWORD e = ::GetLastError();
  if (e == ERROR_IO_INCOMPLETE) {
    if (::WaitForSingleObject(event_, ms_until(deadline)) == WAIT_OBJECT_0 &&
        ::GetOverlappedResult(handle_, &overlapped, bytes, FALSE)) {
      return true;
    }
    e = ::GetLastError();
    if (e == ERROR_IO_INCOMPLETE) e = WAIT_TIMEOUT;
    // The OVERLAPPED lives on the caller's stack: the operation must be over
    // before returning.
    ::CancelIoEx(handle_, &overlapped);
    DWORD ignored = 0;
    if (::GetOverlappedResult(handle_, &overlapped, &ignored, TRUE)) {
      *bytes = ignored;  // it completed after all
      return true;
    }
  }
  *error = e;
  return false;
}

bool PipeConnection::write_all(std::span<const std::byte> data, Deadline deadline,
                               PipeError* error) {
  while (!data.empty()) {
    OVERLAPPED overlapped{};
    overlapped.hEvent = event_;
    ::ResetEvent(event_);
    const DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(data.size(), 1u << 20));
    DWORD written = 0;
    DWORD e = 0;
    if (!::WriteFile(handle_, data.data(), chunk, nullptr, &overlapped) &&
        ::GetLastError() != ERROR_IO_PENDING) {
      e = ::GetLastError();
    } else if (finish(overlapped, deadline, &written, &e)) {
      data = data.subspan(written);
      continue;
    }
    if (e == WAIT_TIMEOUT) {
      *error = {PipeErrorKind::timeout, "tunneld did not take the request in time on " + path_};
    } else if (e == ERROR_BROKEN_PIPE || e == ERROR_NO_DATA || e == ERROR_PIPE_NOT_CONNECTED) {
      *error = {PipeErrorKind::connection_lost, "tunneld closed the connection on " + path_};
    } else {
      *error = {PipeErrorKind::io, "writing to " + path_ + " failed: " + error_text(e)};
    }
    return false;
  }
  return true;
}

std::optional<std::size_t> PipeConnection::read_some(std::span<std::byte> data, Deadline deadline,
                                                     PipeError* error) {
  OVERLAPPED overlapped{};
  overlapped.hEvent = event_;
  ::ResetEvent(event_);
  const DWORD chunk = static_cast<DWORD>(std::min<std::size_t>(data.size(), 1u << 20));
  DWORD got = 0;
  DWORD e = 0;
  if (!::ReadFile(handle_, data.data(), chunk, nullptr, &overlapped) &&
      ::GetLastError() != ERROR_IO_PENDING) {
    e = ::GetLastError();
  } else if (finish(overlapped, deadline, &got, &e)) {
    return got;
  }
  if (e == ERROR_BROKEN_PIPE || e == ERROR_PIPE_NOT_CONNECTED) return 0;
  if (e == WAIT_TIMEOUT) {
    *error = {PipeErrorKind::timeout, "no answer from tunneld in time on " + path_};
  } else {
    *error = {PipeErrorKind::io, "reading from " + path_ + " failed: " + error_text(e)};
  }
  return std::nullopt;
}

}  // namespace tunneld::platform::win
