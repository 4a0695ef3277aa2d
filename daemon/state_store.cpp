#include "state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "control/control_codec.h"
#include "secret_file.h"

namespace tunneld {
namespace {

constexpr char kMagic[8] = {'T', 'N', 'L', 'D', 'S', 'E', 'S', '\x01'};
constexpr std::size_t kHeaderSize = 16;
// A stored OpenRequest arrived in one control frame, so it fits in one.
constexpr std::size_t kMaxBody = control::kMaxRequestSize;
constexpr std::string_view kSuffix = ".session";
constexpr std::string_view kTempSuffix = ".session.tmp";

constexpr std::array<std::uint32_t, 256> make_crc_table() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1U) != 0 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  return table;
}

std::uint32_t crc32(std::string_view data) {
  static constexpr auto kTable = make_crc_table();
  std::uint32_t c = 0xFFFFFFFFU;
  for (unsigned char b : data) c = kTable[(c ^ b) & 0xFFU] ^ (c >> 8);
  return c ^ 0xFFFFFFFFU;
}

void put_u32(char* p, std::uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}

std::uint32_t get_u32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (std::uint32_t{u[0]} << 24) | (std::uint32_t{u[1]} << 16) | (std::uint32_t{u[2]} << 8) |
         std::uint32_t{u[3]};
}

// errno as an error_code.
std::error_code errno_code() { return {errno, std::system_category()}; }

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t w = ::write(fd, data.data(), data.size());
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return false;
    data.remove_prefix(static_cast<std::size_t>(w));
  }
  return true;
}

// Reads one session file relative to the directory; returns an empty string
// and sets `problem` when the file cannot be trusted.
std::string read_session_file(int dir_fd, const std::string& name, std::string& problem) {
  const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
  if (fd < 0) {
    problem = std::string("cannot open: ") + std::strerror(errno);
    return {};
  }
  std::string content;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    problem = std::string("cannot stat: ") + std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    problem = "not a regular file";
  } else if (st.st_uid != ::geteuid()) {
    problem = "owned by uid " + std::to_string(st.st_uid) + ", not by this user (uid " +
              std::to_string(::geteuid()) + ")";
  } else if ((st.st_mode & 077) != 0) {
    problem = "mode " + tunnel::octal_mode(st.st_mode) +
              " lets others read its tokens (expected 0600); check who changed it";
  } else if (static_cast<std::size_t>(st.st_size) > kHeaderSize + kMaxBody) {
    problem = "too large (" + std::to_string(st.st_size) + " bytes)";
  } else {
    content.resize(static_cast<std::size_t>(st.st_size));
    std::size_t have = 0;
    while (have < content.size()) {
      const ssize_t r = ::read(fd, content.data() + have, content.size() - have);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        problem = std::string("cannot read: ") + std::strerror(errno);
        break;
      }
      if (r == 0) break;
      have += static_cast<std::size_t>(r);
    }
    content.resize(have);
  }
  ::close(fd);
  return problem.empty() ? content : std::string();
}

// Checks header, length and checksum; on success returns the body.
bool decode_session(const std::string& content, control::OpenRequest& out, std::string& problem) {
  if (content.size() < kHeaderSize) {
    problem = "truncated (" + std::to_string(content.size()) + " bytes)";
    return false;
  }
  if (std::memcmp(content.data(), kMagic, sizeof kMagic - 1) != 0) {
    problem = "not a tunneld session file (bad magic)";
    return false;
  }
  if (content[sizeof kMagic - 1] != kMagic[sizeof kMagic - 1]) {
    problem = "written in format version " +
              std::to_string(static_cast<unsigned char>(content[sizeof kMagic - 1])) +
              ", which this tunneld does not read";
    return false;
  }
  const std::uint32_t length = get_u32(content.data() + 8);
  if (length != content.size() - kHeaderSize) {
    problem = "truncated or padded (header says " + std::to_string(length) + " bytes, found " +
              std::to_string(content.size() - kHeaderSize) + ")";
    return false;
  }
  const std::string_view body(content.data() + kHeaderSize, length);
  if (crc32(body) != get_u32(content.data() + 12)) {
    problem = "checksum mismatch (file corrupt)";
    return false;
  }
  if (!out.ParseFromArray(body.data(), static_cast<int>(body.size()))) {
    problem = "body is not a session request";
    return false;
  }
  return true;
}

}  // namespace

bool StateStore::is_valid_id(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

StateStore::StateStore(std::string dir) : dir_(std::move(dir)) {
  if (dir_.empty()) throw StateStoreError("state directory: empty path");
  if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    throw StateStoreError("cannot create state directory " + dir_ + ": " + std::strerror(errno));
  }
  dir_fd_ = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) {
    throw StateStoreError("cannot open state directory " + dir_ + ": " + std::strerror(errno));
  }
  struct stat st {};
  std::string problem;
  if (::fstat(dir_fd_, &st) != 0) {
    problem = std::string("cannot stat: ") + std::strerror(errno);
  } else if (st.st_uid != ::geteuid()) {
    problem = "owned by uid " + std::to_string(st.st_uid) +
              ", not by the user tunneld runs as (uid " + std::to_string(::geteuid()) +
              "); chown it or choose another state directory";
  } else if ((st.st_mode & 022) != 0) {
    problem = "writable by group or others (mode " + tunnel::octal_mode(st.st_mode) +
              "); it holds tokens: chmod 700 " + dir_;
  } else if ((st.st_mode & 077) != 0 && ::fchmod(dir_fd_, 0700) != 0) {
    problem = std::string("cannot restrict it to mode 0700: ") + std::strerror(errno);
  }
  if (!problem.empty()) {
    ::close(dir_fd_);
    dir_fd_ = -1;
    throw StateStoreError("state directory " + dir_ + ": " + problem);
  }
}

StateStore::~StateStore() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

StateStore::StateStore(StateStore&& other) noexcept
    : dir_(std::move(other.dir_)), dir_fd_(std::exchange(other.dir_fd_, -1)) {}

StateStore& StateStore::operator=(StateStore&& other) noexcept {
  if (this != &other) {
    if (dir_fd_ >= 0) ::close(dir_fd_);
    dir_ = std::move(other.dir_);
    dir_fd_ = std::exchange(other.dir_fd_, -1);
  }
  return *this;
}

std::string StateStore::path_of(std::string_view id) const {
  return dir_ + "/" + std::string(id) + std::string(kSuffix);
}

std::error_code StateStore::save(std::string_view id, const control::OpenRequest& request) {
  if (!is_valid_id(id)) return std::make_error_code(std::errc::invalid_argument);
  std::string body;
  if (!request.SerializeToString(&body)) return std::make_error_code(std::errc::invalid_argument);
  if (body.size() > kMaxBody) return std::make_error_code(std::errc::message_size);

  std::string content(kHeaderSize, '\0');
  std::memcpy(content.data(), kMagic, sizeof kMagic);
  put_u32(content.data() + 8, static_cast<std::uint32_t>(body.size()));
  put_u32(content.data() + 12, crc32(body));
  content += body;

  const std::string final_name = std::string(id) + std::string(kSuffix);
  const std::string temp_name = "." + std::string(id) + std::string(kTempSuffix);
  // A temporary left by a crash would make O_EXCL fail; we are the only writer.
  ::unlinkat(dir_fd_, temp_name.c_str(), 0);
  const int fd = ::openat(dir_fd_, temp_name.c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return errno_code();
  std::error_code ec;
  // The umask can only remove bits, but say exactly what the file must be.
  if (::fchmod(fd, 0600) != 0 || !write_all(fd, content) || ::fsync(fd) != 0) ec = errno_code();
  if (::close(fd) != 0 && !ec) ec = errno_code();
  if (!ec && ::renameat(dir_fd_, temp_name.c_str(), dir_fd_, final_name.c_str()) != 0) {
    ec = errno_code();
  }
  if (ec) {
    ::unlinkat(dir_fd_, temp_name.c_str(), 0);
    return ec;
  }
  if (::fsync(dir_fd_) != 0) return errno_code();
  return {};
}

StateLoadResult StateStore::load_all() {
  StateLoadResult result;
  const int fd = ::dup(dir_fd_);
  DIR* d = fd >= 0 ? ::fdopendir(fd) : nullptr;
  if (d == nullptr) {
    if (fd >= 0) ::close(fd);
    result.errors.push_back(dir_ + ": cannot list: " + std::strerror(errno));
    return result;
  }
  ::rewinddir(d);  // the dup shares its offset with dir_fd_
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
  ::closedir(d);
  std::sort(names.begin(), names.end());

  for (const auto& name : names) {
    if (name.front() == '.') {
      if (ends_with(name, kTempSuffix)) ::unlinkat(dir_fd_, name.c_str(), 0);
      continue;
    }
    if (!ends_with(name, kSuffix)) continue;  // not ours; leave it alone
    const std::string id = name.substr(0, name.size() - kSuffix.size());
    const std::string path = dir_ + "/" + name;
    if (!is_valid_id(id)) {
      result.errors.push_back(path + ": not a valid session id; skipped");
      continue;
    }
    std::string problem;
    const std::string content = read_session_file(dir_fd_, name, problem);
    StoredSession s;
    s.id = id;
    if (!problem.empty() || !decode_session(content, s.request, problem)) {
      result.errors.push_back(path + ": " + problem + "; skipped");
      continue;
    }
    result.sessions.push_back(std::move(s));
  }
  return result;
}

std::error_code StateStore::remove(std::string_view id) {
  if (!is_valid_id(id)) return std::make_error_code(std::errc::invalid_argument);
  const std::string name = std::string(id) + std::string(kSuffix);
  if (::unlinkat(dir_fd_, name.c_str(), 0) != 0) return errno_code();
  if (::fsync(dir_fd_) != 0) return errno_code();
  return {};
}

}  // namespace tunneld
