// Files that hold secrets (access and client tokens), read the same way by
// tunneld ([[session]] token files) and tunnelctl (--access-token-file), and
// the one rule for a token's text, which localproxy and the control protocol
// apply too.
//
// Like ssh with a private key, a regular file that group or others may access
// is refused: the secret in it would already be exposed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tunnel {

// A token travels in an HTTP header exactly as given: one or more bytes of
// printable ASCII, without spaces.
bool is_header_safe_token(std::string_view token);

// A file mode as chmod takes it: "0640".
std::string octal_mode(unsigned mode);

struct TokenFileRules {
  std::size_t max_size = 0;  // larger files are refused without being read whole
  // Else a pipe will do too (tunnelctl --access-token-file <(pass show token)).
  bool regular_file_only = true;
  // The token is the first line; else the file holds the token and nothing else.
  bool first_line_only = false;
};

enum class TokenFileProblem {
  none,
  cannot_open,  // error_number
  cannot_stat,  // error_number
  is_directory,
  not_regular_file,  // only with TokenFileRules::regular_file_only
  too_open,          // mode: group or others may access it
  too_large,         // size: the file's size when known, else 0
  cannot_read,       // error_number
  empty,             // nothing but white space (in the first line)
  not_header_safe,   // spaces or control characters around the token
};

struct TokenFile {
  std::string token;  // trimmed of white space; set when problem is none
  TokenFileProblem problem = TokenFileProblem::none;
  int error_number = 0;
  unsigned mode = 0;
  std::uint64_t size = 0;
};

// Reads the token in `path`. Each caller words the problem for its users.
TokenFile read_token_file(const std::string& path, const TokenFileRules& rules);

}  // namespace tunnel
