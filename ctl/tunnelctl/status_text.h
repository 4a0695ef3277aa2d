// How tunnelctl shows sessions and the notify link: aligned text for people,
// JSON for programs. Text from the daemon is made safe for a terminal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "control.pb.h"

namespace tunnel::tunnelctl {

// Human output, each ending in a newline.
std::string format_list(const tunneld::control::ListResponse& list);
std::string format_status(const tunneld::control::SessionInfo& info);
// JSON output (one object, then a newline); keys are the proto field names,
// enums lower-case words ("source", "connected").
std::string session_json(const tunneld::control::SessionInfo& info);
std::string list_json(const tunneld::control::ListResponse& list);
// The notify link (tunnelctl status without a session).
std::string format_notify_status(const tunneld::control::NotifyStatusResponse& s,
                                 std::int64_t now_unix_ms);
std::string notify_status_json(const tunneld::control::NotifyStatusResponse& s);

// "0 B", "512 B", "1.5 KiB", "3.2 GiB".
std::string format_bytes(std::uint64_t bytes);
// "1.5 KiB/s".
std::string format_rate(std::uint64_t bytes_per_second);
// "0.35 ms", "12.3 ms", "1520 ms".
std::string format_rtt(std::uint64_t microseconds);
// "42s", "3m 05s", "2h 03m 04s", "5d 02h 03m".
std::string format_duration(std::uint64_t seconds);
std::string_view mode_name(tunneld::control::Mode mode);
std::string state_name(tunneld::control::SessionInfo::State state);

// `s` with control characters shown as '?': text from the daemon goes to a terminal.
std::string printable(std::string_view s);

}  // namespace tunnel::tunnelctl
