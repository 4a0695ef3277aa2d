// The client end of tunneld's control pipe, for tunnelctl on Windows: the
// counterpart of connecting to the Unix socket and of blocking reads and
// writes with a deadline. Overlapped I/O, each operation waited for until
// the deadline and cancelled after it.
//
// The client allows the daemon to identify it (SECURITY_IDENTIFICATION), not
// to act as it: the daemon reads its token to check it is an elevated
// administrator or SYSTEM. Windows only.
#pragma once

#include <windows.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace tunneld::platform::win {

inline constexpr wchar_t kControlPipeName[] = L"\\\\.\\pipe\\tunneld";

enum class PipeErrorKind {
  unreachable,        // no such pipe: tunneld is not running
  permission_denied,  // the pipe's DACL refused us
  timeout,            // no instance free, or no answer, before the deadline
  connection_lost,    // the daemon closed the connection
  io,                 // anything else
};

struct PipeError {
  PipeErrorKind kind = PipeErrorKind::io;
  std::string message;  // one line: what happened and what to do
};

// Pure: the error for CreateFileW on `path` failing with `error`.
PipeError pipe_connect_error(DWORD error, std::string_view path);

class PipeConnection {
 public:
  using Deadline = std::chrono::steady_clock::time_point;

  PipeConnection() = default;
  ~PipeConnection();
  PipeConnection(PipeConnection&& other) noexcept;
  PipeConnection& operator=(PipeConnection&& other) noexcept;
  PipeConnection(const PipeConnection&) = delete;
  PipeConnection& operator=(const PipeConnection&) = delete;

  // Connects to `path`, waiting for a free instance until `deadline`.
  static std::optional<PipeConnection> connect(const std::wstring& path, Deadline deadline,
                                               PipeError* error);

  // Writes every byte before the deadline.
  bool write_all(std::span<const std::byte> data, Deadline deadline, PipeError* error);
  // Reads at least one byte (at most data.size()) before the deadline;
  // 0 means the daemon closed the connection; nullopt an error.
  std::optional<std::size_t> read_some(std::span<std::byte> data, Deadline deadline,
                                       PipeError* error);

  HANDLE handle() const { return handle_; }

 private:
  explicit PipeConnection(HANDLE handle, std::string path);
  // Waits for the overlapped operation until the deadline; cancels it then.
  bool finish(OVERLAPPED& overlapped, Deadline deadline, DWORD* bytes, DWORD* error);

  HANDLE handle_ = INVALID_HANDLE_VALUE;
  HANDLE event_ = nullptr;
  std::string path_;  // UTF-8, for messages
};

}  // namespace tunneld::platform::win
