// What tunnelctl is asked to do (docs/tunnelctl.md): the command, its
// options, and what it may read besides argv (the environment, standard input).
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
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

}  // namespace tunnel::tunnelctl
