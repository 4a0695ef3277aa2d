// tunnelctl open: its options, and from them to the OpenRequest that tunneld
// checks again.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "control.pb.h"
#include "invocation.h"
#include "option_values.h"

namespace tunnel::tunnelctl {

struct OpenOptions {
  ValueOption mode, listen, target, region, endpoint, bind, capath, cafile, settings, client_token,
      name, token_file, https_proxy, protocol;
  std::vector<std::string> services;  // --service NAME=[HOST:]PORT, repeatable
  bool no_verify = false;
};

// Defines the options of `open` on its subcommand.
void add_open_options(CLI::App& open, OpenOptions& o);

// The complete request, access token included. Throws UsageError; cheap
// checks come first, so that a usage mistake does not consume the token on
// standard input.
tunneld::control::OpenRequest open_request_from(const OpenOptions& o, const Env& env,
                                                const Stdin& in,
                                                std::vector<std::string>& warnings);

}  // namespace tunnel::tunnelctl
