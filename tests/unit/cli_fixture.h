// What the localproxy and tunnelctl command-line tests share: a token that
// must never leak, a fake environment, and argv built from strings.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cli_fixture {

// Distinctive enough that finding it anywhere in a message is a leak.
inline constexpr const char* kToken = "AQGAAXhTOKEN-SECRET-d41d8cd98f00b204e9800998ecf8427e";
inline constexpr const char* kClientToken = "c0ffee00-1234-4abc-8def-0123456789ab";

using EnvMap = std::map<std::string, std::string>;

inline const EnvMap kTokenEnv = {{"AWSIOT_TUNNEL_ACCESS_TOKEN", kToken}};

// A getenv over `vars` (an empty value reads as unset, as the programs treat
// it); converts to either program's Env.
inline auto env_of(EnvMap vars) {
  return [vars = std::move(vars)](std::string_view name) -> std::optional<std::string> {
    const auto it = vars.find(std::string(name));
    if (it == vars.end() || it->second.empty()) return std::nullopt;
    return it->second;
  };
}

// argv for `program args...`, null-terminated, pointing into `args`.
class Argv {
 public:
  Argv(const char* program, std::vector<std::string> args) : args_(std::move(args)) {
    args_.insert(args_.begin(), program);
    ptrs_.reserve(args_.size() + 1);
    for (const auto& a : args_) ptrs_.push_back(a.c_str());
    ptrs_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(args_.size()); }
  const char* const* argv() const { return ptrs_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<const char*> ptrs_;
};

}  // namespace cli_fixture
