// The command line and the output of `tunnelctl` (docs/tunnelctl.md), pure:
// parsing reads argv, the environment and standard input through the
// callbacks it is given, and the files --access-token-file and
// --settings-json name; rendering turns a Response (or a ControlError) into
// text and an exit status. main.cpp only wires these to the socket.
//
// Secrets: the access token comes from AWSIOT_TUNNEL_ACCESS_TOKEN,
// --access-token-file or standard input, never from argv (-t is refused), and
// no message here ever contains it or the client token.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "command_line.h"
#include "control.pb.h"
#include "control_client.h"

namespace tunnel::tunnelctl {

// Exit statuses (docs/tunnelctl.md).
inline constexpr int kExitOk = 0;
inline constexpr int kExitDaemonError = 1;  // INVALID_ARGUMENT, ALREADY_EXISTS, INTERNAL, ...
inline constexpr int kExitUsage = 2;        // UsageError
inline constexpr int kExitUnreachable = 3;  // no daemon, no answer in time, connection lost
inline constexpr int kExitPermission = 4;   // EACCES on connect, UNAUTHORIZED
inline constexpr int kExitNotFound = 5;     // NOT_FOUND
inline constexpr int kExitProtocol = 6;     // BAD_VERSION, BAD_LENGTH, MALFORMED, bad answer

enum class Command {
  help,            // print Invocation::text, exit 0 (no daemon contact)
  client_version,  // --version: print Invocation::text, exit 0 (no daemon contact)
  open,
  list,
  status,
  notify_status,  // status without a session: the MQTT notify link
  close,
  version,  // client, daemon and protocol versions
};

struct Invocation {
  Command command = Command::help;
  std::string socket_path;  // --socket > TUNNELD_SOCKET > kDefaultSocketPath
  std::chrono::milliseconds timeout = kDefaultTimeout;
  bool json = false;
  std::string session;                 // status, close: id or name
  tunneld::control::OpenRequest open;  // open: complete, access token included
  std::string text;                    // help, client_version: what to print
  std::vector<std::string> warnings;   // to show on stderr before acting; no secrets
};

// A mistake in how tunnelctl was invoked. what() is one line that says what
// to do, and never contains a token.
using UsageError = cli::UsageError;

// Looks up an environment variable; nullopt when unset or empty.
using Env = cli::Env;
using cli::process_env;

// Standard input, as far as the access token is concerned.
struct Stdin {
  bool is_terminal = true;
  // One line without its line ending; nullopt at end of input or on error.
  std::function<std::optional<std::string>()> read_line;
};

Stdin process_stdin();

// Parses argv (argv[0] is the program name). Throws UsageError. Standard
// input is read only by `open`, and only when the token comes from there.
Invocation parse_command_line(int argc, const char* const* argv, const Env& env, const Stdin& in);

// The request for `inv` (open, list, status, close, version).
tunneld::control::Request make_request(const Invocation& inv, std::uint64_t request_id);

// What to print and the exit status.
struct Outcome {
  int exit_code = kExitOk;
  std::string out;  // stdout
  std::string err;  // stderr, each line prefixed "tunnelctl: "
};

// The outcome of an answer from the daemon, any status.
Outcome render_response(const Invocation& inv, const tunneld::control::Response& response);
// The outcome when there was no answer.
Outcome render_failure(const Invocation& inv, const ControlError& error);

int exit_code_for(tunneld::control::Response::Status status);
int exit_code_for(ControlErrorKind kind);

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

std::string help_text();
std::string version_text();  // "tunnelctl X.Y.Z (control protocol N)\n"

}  // namespace tunnel::tunnelctl
