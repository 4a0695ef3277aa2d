// tunnelctl: the control client of tunneld. Parsing and output live in
// cli.cpp, the socket exchange in control_client.cpp; this only wires them.
#include <cstdio>
#include <random>

#include "cli.h"
#include "control_client.h"
#include "core_dumps.h"

namespace ctl = tunnel::tunnelctl;

int main(int argc, char** argv) {
  tunnel::keep_secrets_out_of_core_dumps();  // an open request carries tokens
  ctl::Invocation inv;
  try {
    inv = ctl::parse_command_line(argc, argv, ctl::process_env(), ctl::process_stdin());
  } catch (const ctl::UsageError& e) {
    std::fprintf(stderr, "tunnelctl: %s\n", e.what());
    return ctl::kExitUsage;
  }
  if (inv.command == ctl::Command::help || inv.command == ctl::Command::client_version) {
    std::fputs(inv.text.c_str(), stdout);
    return ctl::kExitOk;
  }
  for (const auto& w : inv.warnings) std::fprintf(stderr, "tunnelctl: warning: %s\n", w.c_str());

  // Any non-zero id will do: it only pairs this request with its answer.
  std::random_device entropy;
  const std::uint64_t request_id = (std::uint64_t{entropy()} << 32 | entropy()) | 1;

  const ctl::ControlClient client(inv.socket_path, inv.timeout);
  const ctl::ControlResult result = client.call(ctl::make_request(inv, request_id));
  const ctl::Outcome outcome = result.ok() ? ctl::render_response(inv, *result.response)
                                           : ctl::render_failure(inv, result.error);
  std::fputs(outcome.out.c_str(), stdout);
  std::fflush(stdout);
  std::fputs(outcome.err.c_str(), stderr);
  return outcome.exit_code;
}
