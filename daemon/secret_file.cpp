#include "secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

#include "text.h"

namespace tunnel {
namespace {

// A file descriptor opened for reading, closed when it goes out of scope.
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path)
      : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY)) {}
  ~ReadOnlyFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;

  int fd() const { return fd_; }

  // Appends the contents to `out`, stopping once it holds more than `cap`
  // bytes. False on a read error (errno tells which).
  bool read_up_to(std::size_t cap, std::string& out) const {
    char buf[4096];
    while (out.size() <= cap) {
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return false;
      if (n == 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }

 private:
  int fd_;
};

TokenFile problem(TokenFileProblem p) {
  TokenFile f;
  f.problem = p;
  return f;
}

TokenFile system_problem(TokenFileProblem p) {
  TokenFile f = problem(p);
  f.error_number = errno;
  return f;
}

// What the file's metadata already rules out, before reading it.
TokenFile check_metadata(const struct stat& st, const TokenFileRules& rules) {
  if (S_ISDIR(st.st_mode)) return problem(TokenFileProblem::is_directory);
  if (rules.regular_file_only && !S_ISREG(st.st_mode)) {
    return problem(TokenFileProblem::not_regular_file);
  }
  if (S_ISREG(st.st_mode) && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    TokenFile f = problem(TokenFileProblem::too_open);
    f.mode = st.st_mode;
    return f;
  }
  if (S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) > rules.max_size) {
    TokenFile f = problem(TokenFileProblem::too_large);
    f.size = static_cast<std::uint64_t>(st.st_size);
    return f;
  }
  return {};
}

TokenFile token_in(std::string_view content, const TokenFileRules& rules) {
  if (rules.first_line_only) content = content.substr(0, content.find('\n'));
  const std::string_view token = text::trim(content);
  if (token.empty()) return problem(TokenFileProblem::empty);
  if (!is_header_safe_token(token)) return problem(TokenFileProblem::not_header_safe);
  TokenFile f;
  f.token = std::string(token);
  return f;
}

}  // namespace

bool is_header_safe_token(std::string_view token) {
  return !token.empty() && std::all_of(token.begin(), token.end(), [](char c) {
    return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
  });
}

std::string octal_mode(unsigned mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", mode & 07777);
  return buf;
}

TokenFile read_token_file(const std::string& path, const TokenFileRules& rules) {
  const ReadOnlyFile file(path);
  if (file.fd() < 0) return system_problem(TokenFileProblem::cannot_open);
  struct stat st {};
  if (::fstat(file.fd(), &st) != 0) return system_problem(TokenFileProblem::cannot_stat);
  if (TokenFile refused = check_metadata(st, rules); refused.problem != TokenFileProblem::none) {
    return refused;
  }
  std::string content;
  if (!file.read_up_to(rules.max_size, content)) {
    return system_problem(TokenFileProblem::cannot_read);
  }
  if (content.size() > rules.max_size) return problem(TokenFileProblem::too_large);
  return token_in(content, rules);
}

}  // namespace tunnel
