// From a control-protocol OpenRequest to the engine's ProxyConfig, and from a
// running ProxySession to the SessionInfo that tunnelctl shows. Pure.
#pragma once

#include <stdexcept>

#include "control.pb.h"
#include "proxy_config.h"
#include "proxy_session.h"

namespace tunneld {

// A request that cannot become a session. what() names the field and never
// contains a token.
class InvalidRequest : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Validates `r` and builds the session's configuration; r.settings_json is
// overlaid on `defaults`. Throws InvalidRequest.
tunnel::ProxyConfig proxy_config_from(const control::OpenRequest& r,
                                      const tunnel::Settings& defaults);

control::Mode to_control_mode(tunnel::Mode m);

// Fills everything SessionInfo says about a live or ended session except
// id, name and the rates (the daemon tracks those).
void fill_session_info(const tunnel::ProxySession& s, control::SessionInfo& info);

}  // namespace tunneld
