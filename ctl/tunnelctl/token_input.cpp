#include "token_input.h"

#include <cstring>

#include "secret_file.h"
#include "secret_input.h"
#include "text.h"

namespace tunnel::tunnelctl {
namespace {

// An access token is a few hundred bytes; anything much larger is the wrong file.
constexpr std::size_t kMaxTokenFileSize = std::size_t{16} * 1024;

std::string read_token_from_stdin(const Stdin& in, std::string_view why) {
  std::optional<std::string> line = in.read_line ? in.read_line() : std::nullopt;
  std::string token(line ? text::trim(*line) : std::string_view());
  if (token.empty()) {
    throw UsageError("no access token on standard input (" + std::string(why) +
                     "): pipe the token as one line, set AWSIOT_TUNNEL_ACCESS_TOKEN, or use "
                     "--access-token-file FILE");
  }
  return token;
}

// Reads the first line of a token file (mode 0600, or a pipe).
std::string read_token_file(const std::string& path) {
  using tunnel::TokenFileProblem;
  const tunnel::TokenFile f = tunnel::read_token_file(
      path, {.max_size = kMaxTokenFileSize, .regular_file_only = false, .first_line_only = true});
  switch (f.problem) {
    case TokenFileProblem::none:
      return f.token;
    case TokenFileProblem::cannot_open:
    case TokenFileProblem::cannot_stat:
    case TokenFileProblem::not_regular_file:
    case TokenFileProblem::cannot_read:
      break;
    case TokenFileProblem::is_directory:
      throw UsageError("--access-token-file " + path + " is a directory; name the token file");
    case TokenFileProblem::too_open:
      throw UsageError("permissions " + tunnel::octal_mode(f.mode) + " of the access token file " +
                       path + " are too open: it must be readable only by you; chmod 600 " + path +
                       " (and get a fresh token if others may have read it)");
    case TokenFileProblem::too_large:
      throw UsageError("the access token file " + path + " is larger than " +
                       std::to_string(kMaxTokenFileSize / 1024) +
                       " KiB; is it the right file? It should hold the token on one line");
    case TokenFileProblem::empty:
      throw UsageError(
          "the access token file " + path +
          " is empty (or starts with an empty line); write the token on its first line");
    case TokenFileProblem::not_header_safe:
      throw cli::access_token_not_header_safe("the access token file " + path);
  }
  throw UsageError("cannot read the access token file " + path + ": " +
                   std::strerror(f.error_number) + "; check --access-token-file");
}

}  // namespace

void refuse_token_on_argv(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
    if (arg == "--") break;
    const bool long_form = arg == "--access-token" || arg.starts_with("--access-token=");
    const bool short_form = arg.starts_with("-t") && !arg.starts_with("--");
    if (long_form || short_form) {
      throw UsageError(
          "the access token is never taken from the command line (-t/--access-token): "
          "process listings and shell history would show it; set AWSIOT_TUNNEL_ACCESS_TOKEN, "
          "use --access-token-file FILE, or pipe it on standard input");
    }
  }
}

std::string read_access_token(const std::optional<std::string>& token_file, const Env& env,
                              const Stdin& in, std::vector<std::string>& warnings) {
  const auto from_env = env(kAccessTokenEnv);
  std::string token;
  std::string origin;
  if (token_file) {
    if (*token_file == "-") {
      token = read_token_from_stdin(in, "--access-token-file -");
      origin = "standard input";
    } else {
      token = read_token_file(*token_file);
      origin = "the access token file " + *token_file;
    }
    if (from_env) {
      warnings.emplace_back(
          "AWSIOT_TUNNEL_ACCESS_TOKEN ignored: --access-token-file takes precedence");
    }
  } else if (from_env) {
    token = *from_env;
    origin = std::string(kAccessTokenEnv);
  } else if (!in.is_terminal) {
    token = read_token_from_stdin(in, "it is not a terminal and no other source was given");
    origin = "standard input";
  } else {
    throw UsageError(
        "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN, use --access-token-file FILE (mode "
        "0600), or pipe the token on standard input");
  }
  cli::require_header_safe_access_token(token, origin);
  return token;
}

std::optional<std::string> read_client_token(std::optional<std::string> from_argv,
                                             std::string_view argv_display, const Env& env,
                                             std::vector<std::string>& warnings) {
  std::optional<std::string> token = std::move(from_argv);
  std::string origin(argv_display);
  if (token) {
    warnings.emplace_back(cli::kClientTokenOnArgvWarning);
  } else {
    token = env(kClientTokenEnv);
    origin = std::string(kClientTokenEnv);
  }
  if (token) cli::require_valid_client_token(*token, origin);
  return token;
}

}  // namespace tunnel::tunnelctl
