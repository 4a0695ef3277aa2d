// Option values as tunnelctl takes them from CLI11: every value is a string,
// checked here, so that messages are ours (and never repeat a secret).
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel::tunnelctl {

inline constexpr std::string_view kSeeHelp = "see tunnelctl --help";

struct ValueOption {
  std::string display;  // "-s/--listen"
  std::string value;
  CLI::Option* option = nullptr;
};

// Defines `v` on `app` under `names` ("-s,--listen"), shown in messages as `display`.
void add_value(CLI::App& app, ValueOption& v, const std::string& names, std::string display);

// The value of `v`; nullopt when not given. Throws UsageError for a repeated
// or empty value, or for an option name in its place ("-s -d 22").
std::optional<std::string> value_of(const ValueOption& v);

// True for "--socket" or "--socket=x": a name of one of tunnelctl's options.
bool is_option_name(std::string_view s);

// " 'word'" when `s` looks like a word or an id, else nothing: a pasted token
// is long or full of punctuation, and must not be echoed.
std::string quoted_if_echoable(std::string_view s);

}  // namespace tunnel::tunnelctl
