// Turns fuzz input into a command line for the CLI targets: one argument
// per line ('\n'); a line "=NAME=VALUE" sets an environment variable, a line
// "<TEXT" is a line of standard input. An argument (or the value after '=')
// starting with '@' names a file in the target's private directory of
// sample files (settings.json, a --config file, a --config-dir, token files).
// "$T" and "$C" stand for kAccessSecret and kClientSecret, so that the
// targets can check no message repeats a token. That holds only where a
// token belongs (the value of -t/--access-token/-i/--client-token, a
// variable named ..._TOKEN, standard input); a secret anywhere else (a file
// name, a stray argument) may well be echoed, and sets secrets_misplaced.
//
// The parsers read the files their options name, so an input that names any
// other existing path (the fuzzer's working directory, /dev/zero, a corpus
// directory) is skipped: only the sample files are ever read.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fuzz {

inline constexpr std::string_view kAccessSecret = "AcCeSsToKeN-fuzz-7f3a9c1e5b2d8046";
inline constexpr std::string_view kClientSecret = "cLiEnTtOkEn-fuzz-0a1b2c3d4e5f6a7b8c9d0e1f";

inline std::string with_secrets(std::string s) {
  for (std::size_t p; (p = s.find("$T")) != std::string::npos;) s.replace(p, 2, kAccessSecret);
  for (std::size_t p; (p = s.find("$C")) != std::string::npos;) s.replace(p, 2, kClientSecret);
  return s;
}

// Whether `text` repeats a secret the input did not spell out itself.
// Meaningful only when !CommandLine::secrets_misplaced.
inline bool leaks(std::string_view text, std::string_view input) {
  for (const auto secret : {kAccessSecret, kClientSecret}) {
    if (input.find(secret) == std::string_view::npos && text.find(secret) != std::string_view::npos)
      return true;
  }
  return false;
}

struct CommandLine {
  std::vector<std::string> args;  // args[0] is the program name
  std::map<std::string, std::string> env;
  std::vector<std::string> stdin_lines;
  bool secrets_misplaced = false;

  std::vector<const char*> argv() const {
    std::vector<const char*> out;
    for (const auto& a : args) out.push_back(a.c_str());
    out.push_back(nullptr);
    return out;
  }
  std::optional<std::string> getenv(std::string_view name) const {
    const auto it = env.find(std::string(name));
    if (it == env.end() || it->second.empty()) return std::nullopt;
    return it->second;
  }
};

inline bool is_secret(std::string_view v) { return v == kAccessSecret || v == kClientSecret; }

inline bool is_token_option(std::string_view o) {
  return o == "-t" || o == "--access-token" || o == "-i" || o == "--client-token";
}

// Whether `arg` (after `previous`) is a token where a token option wants it:
// "-t SECRET", "--access-token=SECRET", "-tSECRET".
inline bool token_argument(std::string_view previous, std::string_view arg) {
  if (is_secret(arg)) return is_token_option(previous);
  const std::size_t eq = arg.find('=');
  if (eq != std::string_view::npos) {
    return is_token_option(arg.substr(0, eq)) && is_secret(arg.substr(eq + 1));
  }
  return arg.size() > 2 && is_token_option(arg.substr(0, 2)) && is_secret(arg.substr(2));
}

inline bool path_exists(const std::string& p) {
  struct stat st {};
  return !p.empty() && ::stat(p.c_str(), &st) == 0;
}

// Whether `value` could make the parser read something other than a sample.
inline bool unsafe_value(std::string_view value) {
  if (value.empty() || value.front() == '@') return false;
  if (value.find("://") != std::string_view::npos) return false;  // a URL, never opened
  if (value.find('/') != std::string_view::npos) return true;
  return path_exists(std::string(value));
}

inline std::string expand(const std::string& value, const std::string& dir) {
  if (value.empty() || value.front() != '@') return value;
  std::string name = value.substr(1);
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  if (name == "." || name == "..") name = "_";
  return dir + "/" + name;
}

// nullopt when the input is skipped (see above).
inline std::optional<CommandLine> parse_input(const std::uint8_t* data, std::size_t size,
                                              const char* program, const std::string& dir) {
  CommandLine cl;
  cl.args.emplace_back(program);
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::size_t pos = 0;
  while (pos <= text.size() && cl.args.size() < 64) {
    std::size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    const std::string raw(text.substr(pos, nl - pos));
    std::string line = with_secrets(raw);
    pos = nl + 1;
    const bool has_secret = line != raw;
    if (!line.empty() && line.front() == '=') {
      const std::size_t eq = line.find('=', 1);
      if (eq == std::string::npos) continue;
      const std::string name = line.substr(1, eq - 1);
      if (has_secret && !(name.ends_with("_TOKEN") && is_secret(line.substr(eq + 1)))) {
        cl.secrets_misplaced = true;
      }
      cl.env[name] = expand(line.substr(eq + 1), dir);
      if (unsafe_value(line.substr(eq + 1))) return std::nullopt;
      continue;
    }
    if (!line.empty() && line.front() == '<') {
      cl.stdin_lines.push_back(line.substr(1));
      if (has_secret && !is_secret(line.substr(1))) cl.secrets_misplaced = true;
      continue;
    }
    if (has_secret && !token_argument(cl.args.back(), line)) cl.secrets_misplaced = true;
    if (line.find('\0') != std::string::npos) return std::nullopt;  // argv cannot hold NUL
    // The whole argument, the part after '=' (--opt=VALUE) and after a short
    // option (-cVALUE) may each be a path.
    const std::size_t eq = line.find('=');
    if (unsafe_value(line) || (eq != std::string::npos && unsafe_value(line.substr(eq + 1))) ||
        (line.size() > 2 && line[0] == '-' && line[1] != '-' && unsafe_value(line.substr(2)))) {
      return std::nullopt;
    }
    if (eq != std::string::npos && eq + 1 < line.size() && line[eq + 1] == '@') {
      line = line.substr(0, eq + 1) + expand(line.substr(eq + 1), dir);
    } else {
      line = expand(line, dir);
    }
    cl.args.push_back(std::move(line));
  }
  return cl;
}

}  // namespace fuzz
