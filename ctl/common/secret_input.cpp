#include "secret_input.h"

#include <algorithm>
#include <optional>

#include "proxy_config.h"
#include "secret_file.h"

namespace tunnel::cli {
namespace {

// The value of `option` in argv[i] (and argv[i + 1]), if argv[i] gives it.
std::optional<std::string_view> secret_in(int argc, const char* const* argv, int i,
                                          const SecretOption& option) {
  const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
  const std::string long_form = "--" + std::string(option.long_name);
  const bool short_form = !option.short_name.empty() && arg == option.short_name;
  if ((short_form || arg == long_form) && i + 1 < argc && argv[i + 1] != nullptr) {
    return argv[i + 1];
  }
  if (arg.starts_with(long_form + "=")) return arg.substr(long_form.size() + 1);
  if (!option.short_name.empty() && arg.size() > 2 && arg.starts_with(option.short_name)) {
    std::string_view value = arg.substr(2);
    if (value.front() == '=') value.remove_prefix(1);
    return value;
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> secrets_on_argv(int argc, const char* const* argv,
                                         const std::vector<SecretOption>& options) {
  std::vector<std::string> out;
  for (int i = 1; i < argc; ++i) {
    for (const SecretOption& option : options) {
      if (const auto value = secret_in(argc, argv, i, option)) out.emplace_back(*value);
    }
  }
  return out;
}

std::string redact(std::string message, const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.size() < 4) continue;
    for (auto pos = message.find(secret); pos != std::string::npos;
         pos = message.find(secret, pos)) {
      message.replace(pos, secret.size(), "<redacted>");
    }
  }
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::replace(message.begin(), message.end(), '\r', ' ');
  return message;
}

UsageError access_token_not_header_safe(std::string_view origin) {
  return UsageError("the access token from " + std::string(origin) +
                    " contains spaces or control characters; give it exactly as OpenTunnel "
                    "returned it");
}

void require_header_safe_access_token(std::string_view token, std::string_view origin) {
  if (!is_header_safe_token(token)) throw access_token_not_header_safe(origin);
}

void require_valid_client_token(std::string_view token, std::string_view origin) {
  if (!is_valid_client_token(token)) {
    throw UsageError("the client token from " + std::string(origin) +
                     " must be 32 to 128 characters of letters, digits and '-'");
  }
}

}  // namespace tunnel::cli
