#include "win_pipe.h"

#include <sddl.h>

#include <utility>

namespace tunneld::windows {
namespace {

// Room for a few control frames; the protocol is request/response.
constexpr DWORD kPipeBufferBytes = 64 * 1024;

}  // namespace

PipeSecurity::PipeSecurity(const wchar_t* sddl) {
  if (!::ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, SDDL_REVISION_1, &descriptor_,
                                                              nullptr)) {
    descriptor_ = nullptr;
    error_ = ::GetLastError();
    return;
  }
  attributes_.nLength = sizeof(attributes_);
  attributes_.lpSecurityDescriptor = descriptor_;
  attributes_.bInheritHandle = FALSE;
}

PipeSecurity::~PipeSecurity() {
  if (descriptor_ != nullptr) ::LocalFree(descriptor_);
}

PipeSecurity::PipeSecurity(PipeSecurity&& other) noexcept
    : descriptor_(std::exchange(other.descriptor_, nullptr)),
      attributes_(other.attributes_),
      error_(other.error_) {
  attributes_.lpSecurityDescriptor = descriptor_;
}

PipeSecurity& PipeSecurity::operator=(PipeSecurity&& other) noexcept {
  if (this != &other) {
    if (descriptor_ != nullptr) ::LocalFree(descriptor_);
    descriptor_ = std::exchange(other.descriptor_, nullptr);
    attributes_ = other.attributes_;
    attributes_.lpSecurityDescriptor = descriptor_;
    error_ = other.error_;
  }
  return *this;
}

HANDLE create_control_pipe(const wchar_t* path, PipeSecurity& security, bool first_instance,
                           DWORD* error) {
  if (!security.valid()) {
    *error = security.error();
    return INVALID_HANDLE_VALUE;
  }
  DWORD open_mode = PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED;
  if (first_instance) open_mode |= FILE_FLAG_FIRST_PIPE_INSTANCE;
  HANDLE pipe = ::CreateNamedPipeW(
      path, open_mode, PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS,
      PIPE_UNLIMITED_INSTANCES, kPipeBufferBytes, kPipeBufferBytes, 0, security.attributes());
  *error = pipe == INVALID_HANDLE_VALUE ? ::GetLastError() : ERROR_SUCCESS;
  return pipe;
}

}  // namespace tunneld::windows
