// The command line of `localproxy`, compatible with the reference local proxy
// (its README is the contract; docs/localproxy.md is ours). Pure: reads argv,
// the environment through a callback, and the files named by --config,
// --settings-json; never writes, never logs. main.cpp acts on the result.
//
// Where a value comes from, per option: command line > --config file >
// environment. Two pairs of alternatives are resolved as a unit, so that an
// explicit choice can replace an inherited one:
//   * endpoint: -e/--proxy-endpoint | -r/--region (env AWSIOT_TUNNEL_ENDPOINT |
//     AWSIOT_TUNNEL_REGION);
//   * role: -s/--source-listen-port | -d/--destination-app (no env).
// The highest-precedence source that sets either member of a pair decides;
// that source setting both is a usage error; what lower sources set is ignored
// with a warning (e.g. `-r eu-west-1` while AWSIOT_TUNNEL_ENDPOINT is exported).
// Every command the reference accepts keeps its meaning; the reference rejects
// some cross-source combinations that we resolve this way.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "command_line.h"
#include "proxy_config.h"

namespace tunnel::localproxy {

// Exit statuses of localproxy (docs/localproxy.md).
inline constexpr int kExitOk = 0;       // closed by the service, SIGTERM, SIGINT, --help
inline constexpr int kExitFailure = 1;  // rejected handshake, retries exhausted, bind failure
inline constexpr int kExitUsage = 2;    // UsageError

enum class Action {
  run,              // start a session with Options::config
  help,             // print help_text() to stdout, exit 0
  version,          // print version_text() to stdout, exit 0
  export_settings,  // write settings_to_json(config.settings) to export_path, exit 0
};

struct Options {
  Action action = Action::run;
  // For Action::run: complete and validated (mode, endpoint, access token,
  // local address, settings). config.client_token is empty unless given (then
  // valid); the session generates one. For Action::export_settings only
  // config.settings is meaningful: the defaults, overlaid with --settings-json
  // when that is given too.
  ProxyConfig config;
  // 0 off, 1 fatal, 2 error, 3 warning, 4 info, 5 debug, 6 trace. -v accepts
  // 0..255; values above 6 are stored as 6.
  int verbosity = 4;
  std::string export_path;
  // -y: "V1" or "V2" (canonical upper case), "V3", or empty (not given, or a
  // value the reference would also ignore: then a warning is added).
  std::string destination_client_type;
  // Things the user should see once, before the session starts (on stderr).
  // Never contain a secret.
  std::vector<std::string> warnings;
};

// A mistake in how localproxy was invoked or configured. what() is one line,
// says what to do about it, and never contains an access or client token.
using UsageError = cli::UsageError;

// Looks up an environment variable; nullopt when unset. An empty value counts
// as unset.
using Env = cli::Env;

// The real environment (getenv).
using cli::process_env;

// Parses argv (argv[0] is the program name) plus the files and environment it
// refers to. Throws UsageError. --help and --version win over everything
// else on the line, including errors in other options.
Options parse_command_line(int argc, const char* const* argv, const Env& env);

// The --help text, ending in a newline.
std::string help_text();

// "localproxy (tunneld) X.Y.Z", ending in a newline.
std::string version_text();

}  // namespace tunnel::localproxy
