#include "config_keys.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "settings.h"

namespace tunneld {
namespace {

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

void collect_setting_keys(const nlohmann::json& node, const std::string& prefix, SettingKeys& out) {
  for (const auto& [name, value] : node.items()) {
    const std::string key = join_key(prefix, name);
    if (value.is_object()) {
      out.groups.insert(key);
      collect_setting_keys(value, key, out);
    } else {
      out.leaves.push_back(key);
    }
  }
}

}  // namespace

std::string in_quotes(std::string_view s) { return "\"" + std::string(s) + "\""; }

int line_of(const toml::source_region& r) { return static_cast<int>(r.begin.line); }

std::string_view type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string join_key(std::string_view prefix, std::string_view name) {
  if (prefix.empty()) return std::string(name);
  return std::string(prefix) + "." + std::string(name);
}

std::string unknown_key_hint(std::string_view key, const std::vector<std::string>& known) {
  const std::string* best = nullptr;
  std::size_t best_distance = 3;  // typos within two edits
  for (const auto& k : known) {
    const std::size_t d = edit_distance(key, k);
    if (d < best_distance) {
      best_distance = d;
      best = &k;
    }
  }
  if (best != nullptr) return "unknown key; did you mean " + in_quotes(*best) + "?";
  std::string list;
  for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
  return "unknown key; expected one of: " + list;
}

const SettingKeys& setting_keys() {
  static const SettingKeys keys = [] {
    SettingKeys k;
    const auto root = nlohmann::json::parse(tunnel::settings_to_json(tunnel::Settings{}));
    collect_setting_keys(root.at("tunneling").at("proxy"), "", k);
    return k;
  }();
  return keys;
}

}  // namespace tunneld
