#include "option_values.h"

#include <algorithm>
#include <array>
#include <cctype>

#include "invocation.h"

namespace tunnel::tunnelctl {
namespace {

// Names of every option, to tell "-s -d 22" (a forgotten value) from a value.
constexpr std::array<std::string_view, 34> kOptionNames = {
    "-h", "--help", "-V", "--version", "--socket", "--timeout", "--json",
    // open
    "-m", "--mode", "-s", "--listen", "--source-listen-port", "-d", "--target", "--destination-app",
    "-r", "--region", "-e", "--endpoint", "--proxy-endpoint", "-b", "--bind-address",
    "--local-bind-address", "-c", "--capath", "--cafile", "-k", "--no-ssl-host-verify",
    "--settings-json", "-i", "--client-token", "--name", "--access-token-file", "--https-proxy"};

bool echoable(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
  });
}

}  // namespace

void add_value(CLI::App& app, ValueOption& v, const std::string& names, std::string display) {
  v.display = std::move(display);
  v.option = app.add_option(names, v.value)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

std::optional<std::string> value_of(const ValueOption& v) {
  if (v.option == nullptr || v.option->count() == 0) return std::nullopt;
  if (v.option->count() > 1) {
    throw UsageError("option " + v.display + " is given more than once; give it once");
  }
  const std::string& value = v.value;
  if (value.empty()) throw UsageError("option " + v.display + " needs a non-empty value");
  if (value.size() > 1 && value.front() == '-' && is_option_name(value)) {
    throw UsageError("option " + v.display + " needs a value (found the option " +
                     value.substr(0, value.find('=')) + " in its place)");
  }
  return value;
}

bool is_option_name(std::string_view s) {
  const auto name = s.substr(0, s.find('='));
  return std::find(kOptionNames.begin(), kOptionNames.end(), name) != kOptionNames.end();
}

std::string quoted_if_echoable(std::string_view s) {
  return echoable(s) ? " '" + std::string(s) + "'" : std::string();
}

}  // namespace tunnel::tunnelctl
