// Secrets on the command lines of tunnelctl and localproxy: access tokens,
// client tokens and proxy URLs that may carry credentials. They are checked
// with the same words in both programs and never repeated in a message,
// whatever went wrong: every usage error passes through redact().
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "command_line.h"

namespace tunnel::cli {

// An option whose value is secret.
struct SecretOption {
  std::string_view short_name;  // "-i", or empty
  std::string_view long_name;   // "client-token", without the dashes
};

// The values given to `options` on argv, in every spelling ("-i X", "-iX",
// "-i=X", "--client-token X", "--client-token=X"); found before the parser
// sees argv, so that no message it makes can repeat one.
std::vector<std::string> secrets_on_argv(int argc, const char* const* argv,
                                         const std::vector<SecretOption>& options);

// `message` with every secret (of 4 characters or more: shorter ones cannot
// be told from ordinary words) replaced by "<redacted>", on one line.
std::string redact(std::string message, const std::vector<std::string>& secrets);

// "the access token from ORIGIN contains spaces or control characters; ...".
UsageError access_token_not_header_safe(std::string_view origin);

// Throw UsageError naming `origin` ("AWSIOT_TUNNEL_ACCESS_TOKEN", "lp.ini:3"),
// never the token.
void require_header_safe_access_token(std::string_view token, std::string_view origin);
void require_valid_client_token(std::string_view token, std::string_view origin);

inline constexpr std::string_view kClientTokenOnArgvWarning =
    "the client token given with -i is visible to other users in process listings; set "
    "AWSIOT_TUNNEL_CLIENT_TOKEN instead";

}  // namespace tunnel::cli
