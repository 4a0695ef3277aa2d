// From the daemon's answer, or its absence, to what tunnelctl prints and
// its exit status.
#pragma once

#include <string>

#include "control.pb.h"
#include "control_client.h"
#include "invocation.h"

namespace tunnel::tunnelctl {

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

}  // namespace tunnel::tunnelctl
