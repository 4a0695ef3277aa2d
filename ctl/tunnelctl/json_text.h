// JSON as tunnelctl --json prints it.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace tunnel::tunnelctl {

// Indented, then a newline. Invalid UTF-8 from the daemon must not make the
// dump throw: it is replaced.
inline std::string json_text(const nlohmann::ordered_json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace tunnel::tunnelctl
