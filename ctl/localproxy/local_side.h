// The local side of localproxy: the mode, and the services it listens for
// (source) or connects to (destination), from -s/-d, -m, -b and --config-dir.
#pragma once

#include <string>
#include <vector>

#include "option_sources.h"
#include "proxy_config.h"

namespace tunnel::localproxy {

// Sets config.mode, config.local, config.services and config.bind_address;
// needs config.settings. Throws UsageError.
void resolve_local(const Sources& sources, ProxyConfig& config, std::vector<std::string>& warnings);

}  // namespace tunnel::localproxy
