// How tunneld.toml's keys appear in messages (their full dotted names, the
// type a value has, a hint for an unknown key) and which keys a settings
// table may hold.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <toml++/toml.h>

namespace tunneld {

// "\"text\"".
std::string in_quotes(std::string_view s);

int line_of(const toml::source_region& r);

// "a table", "a string", "an integer", ...
std::string_view type_name(const toml::node& n);

// "session.name" from "session" and "name".
std::string join_key(std::string_view prefix, std::string_view name);

// "did you mean ..." for a close match, else the list of known keys.
std::string unknown_key_hint(std::string_view key, const std::vector<std::string>& known);

// The keys of the fine-grained settings relative to "tunneling.proxy", taken
// from the engine's own export so that the two never disagree.
struct SettingKeys {
  std::vector<std::string> leaves;  // "websocket.ping_period_ms", "default_bind_address"
  std::set<std::string> groups;     // "websocket", "tcp", "message"
};
const SettingKeys& setting_keys();

}  // namespace tunneld
