// What the command lines of tunnelctl and localproxy share: how a usage
// mistake is reported, where the environment comes from, and the options
// both programs take and check the same way (a settings file, CA paths).
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "settings.h"

namespace tunnel::cli {

// A mistake in how the program was invoked or configured. what() is one line
// that says what to do about it, and never contains a token.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Looks up an environment variable; nullopt when unset or empty.
using Env = std::function<std::optional<std::string>(std::string_view name)>;

// The real environment (getenv).
Env process_env();

// Settings files are a few KiB; reading stops past this, so that naming
// /dev/zero or a huge file is an error, not unbounded memory. It also leaves
// room for everything else in tunnelctl's 64 KiB request.
inline constexpr std::size_t kMaxSettingsFileSize = std::size_t{32} * 1024;

struct SettingsFile {
  std::string json;   // as read
  Settings settings;  // the defaults overlaid with it, validated
};

// Reads and checks the file of --settings-json. Throws UsageError.
SettingsFile read_settings_file(const std::string& path);

// -c/--capath DIR and --cafile FILE must name what they say; `option` tells
// where the path came from in the message. Throw UsageError.
void require_ca_directory(const std::string& path, std::string_view option);
void require_ca_file(const std::string& path, std::string_view option);

// The warning that -k/--no-ssl-host-verify is worth.
inline constexpr std::string_view kNoHostVerifyWarning =
    "TLS host verification is off (-k): anyone on the network path can impersonate the "
    "service; do not use this in production";

}  // namespace tunnel::cli
