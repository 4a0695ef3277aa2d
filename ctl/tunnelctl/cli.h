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

#include <cstdint>

#include "control.pb.h"
#include "help_text.h"
#include "invocation.h"
#include "output.h"
#include "status_text.h"

namespace tunnel::tunnelctl {

// Parses argv (argv[0] is the program name). Throws UsageError. Standard
// input is read only by `open`, and only when the token comes from there.
Invocation parse_command_line(int argc, const char* const* argv, const Env& env, const Stdin& in);

// The request for `inv` (open, list, status, close, version).
tunneld::control::Request make_request(const Invocation& inv, std::uint64_t request_id);

}  // namespace tunnel::tunnelctl
