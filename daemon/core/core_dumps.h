// Keeping secrets out of core dumps. tunneld, localproxy, tunnelctl and
// tunnel-relay hold access tokens, client tokens and proxy passwords in
// memory for as long as a session lives, and copies of them pass through
// many buffers (requests, TLS records, JSON, protobuf). Rather than mark each
// of those pages MADV_DONTDUMP, each program makes itself non-dumpable first
// thing in main(): the kernel then writes no core for it at all (nor for a
// watchdog's SIGABRT), and only root may ptrace it or read its
// /proc/PID/{mem,environ,fd,maps}. docs/systemd.md, "Core dumps", has what
// that costs and how to get a core for a bug report.
#pragma once

#include <sys/prctl.h>

#include <cstdlib>
#include <string_view>

namespace tunnel {

// Set to 1 to keep core dumps (and same-user debugging) for this process.
inline constexpr const char* kAllowCoreDumpsVariable = "TUNNELD_ALLOW_CORE_DUMPS";

enum class CoreDumps {
  disabled,             // the process is not dumpable
  allowed_by_variable,  // TUNNELD_ALLOW_CORE_DUMPS=1: dumps hold secrets
  could_not_disable,    // prctl failed
};

// Call before any secret is read (environment, files, stdin, sockets).
inline CoreDumps keep_secrets_out_of_core_dumps() {
  const char* allow = std::getenv(kAllowCoreDumpsVariable);
  if (allow != nullptr && std::string_view(allow) == "1") return CoreDumps::allowed_by_variable;
  return ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0 ? CoreDumps::disabled
                                                   : CoreDumps::could_not_disable;
}

}  // namespace tunnel
