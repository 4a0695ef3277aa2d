// Where tunnelctl open takes its tokens from. The access token never comes
// from argv (process listings and shell history would show it): it comes
// from --access-token-file FILE (mode 0600) or -, else
// AWSIOT_TUNNEL_ACCESS_TOKEN, else one line of standard input when that is
// not a terminal. The client token comes from -i (with a warning) or
// AWSIOT_TUNNEL_CLIENT_TOKEN.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "invocation.h"

namespace tunnel::tunnelctl {

inline constexpr std::string_view kAccessTokenEnv = "AWSIOT_TUNNEL_ACCESS_TOKEN";
inline constexpr std::string_view kClientTokenEnv = "AWSIOT_TUNNEL_CLIENT_TOKEN";

// Throws UsageError if argv gives -t/--access-token, before any parser sees
// argv, so that no path through it can repeat the value.
void refuse_token_on_argv(int argc, const char* const* argv);

// The access token, checked to be header-safe. `token_file` is the value of
// --access-token-file. Throws UsageError.
std::string read_access_token(const std::optional<std::string>& token_file, const Env& env,
                              const Stdin& in, std::vector<std::string>& warnings);

// The client token, checked; nullopt when none is given. `from_argv` is the
// value of -i/--client-token, shown as `argv_display`. Throws UsageError.
std::optional<std::string> read_client_token(std::optional<std::string> from_argv,
                                             std::string_view argv_display, const Env& env,
                                             std::vector<std::string>& warnings);

}  // namespace tunnel::tunnelctl
