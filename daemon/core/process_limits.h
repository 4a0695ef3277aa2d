// Process-wide resource limits for programs that host many connections.
#pragma once

#include <cstdint>

namespace tunnel {

// Raises the soft RLIMIT_NOFILE to the hard limit (every tunnel session holds
// a WebSocket and a local socket; systemd's default soft limit is 1024).
// Returns the soft limit in force afterwards.
std::uint64_t raise_fd_limit();

}  // namespace tunnel
