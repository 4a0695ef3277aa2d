// The control pipe of tunneld on Windows: only SYSTEM and Administrators may
// open it, only from this machine. Windows only.
//
// Permission comes from the transport (as the Unix socket's mode and group do
// on Linux): the pipe's DACL is the access check, so it must be in place when
// the first instance is created. Create every instance with
// create_control_pipe(): libuv's uv_pipe_bind() would create the pipe with
// the default DACL, which lets Everyone read it. Hand connected instances to
// the loop with uv_pipe_open().
#pragma once

#include <windows.h>

namespace tunneld::windows {

inline constexpr const wchar_t* kControlPipePath = L"\\\\.\\pipe\\tunneld";

// Protected DACL (P: no inherited entries), GENERIC_ALL for LocalSystem (SY)
// and the Administrators group (BA), nothing for anyone else. The service
// runs as LocalSystem, so it passes the same check to create more instances.
inline constexpr const wchar_t* kControlPipeSddl = L"D:P(A;;GA;;;SY)(A;;GA;;;BA)";

// A security descriptor built from SDDL, with the SECURITY_ATTRIBUTES that
// CreateNamedPipeW takes. Move-only; frees the descriptor (LocalFree).
class PipeSecurity {
 public:
  // On failure valid() is false and error() holds GetLastError().
  explicit PipeSecurity(const wchar_t* sddl = kControlPipeSddl);
  ~PipeSecurity();
  PipeSecurity(PipeSecurity&& other) noexcept;
  PipeSecurity& operator=(PipeSecurity&& other) noexcept;
  PipeSecurity(const PipeSecurity&) = delete;
  PipeSecurity& operator=(const PipeSecurity&) = delete;

  bool valid() const { return descriptor_ != nullptr; }
  DWORD error() const { return error_; }
  SECURITY_ATTRIBUTES* attributes() { return valid() ? &attributes_ : nullptr; }

 private:
  PSECURITY_DESCRIPTOR descriptor_ = nullptr;
  SECURITY_ATTRIBUTES attributes_{};
  DWORD error_ = ERROR_SUCCESS;
};

// Creates one instance of the control pipe `path` (\\.\pipe\NAME): duplex,
// overlapped (for libuv), byte mode, remote clients rejected. The first
// instance also passes FILE_FLAG_FIRST_PIPE_INSTANCE, so that start-up fails
// if another process already owns the name instead of silently serving
// clients through a pipe somebody else controls. Returns
// INVALID_HANDLE_VALUE and sets *error on failure (ERROR_ACCESS_DENIED when
// the name is taken).
HANDLE create_control_pipe(const wchar_t* path, PipeSecurity& security, bool first_instance,
                           DWORD* error);

}  // namespace tunneld::windows
