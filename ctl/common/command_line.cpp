#include "command_line.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

namespace tunnel::cli {
namespace {

// The contents of `path`, or as soon as they exceed `cap` bytes, the first
// cap + 1 or a little more. nullopt on an error (errno tells which).
std::optional<std::string> read_up_to(const std::string& path, std::size_t cap) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return std::nullopt;
  std::string content;
  char buf[4096];
  bool ok = true;
  while (content.size() <= cap) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ok = false;
      break;
    }
    if (n == 0) break;
    content.append(buf, static_cast<std::size_t>(n));
  }
  const int read_error = errno;
  ::close(fd);
  errno = read_error;
  if (!ok) return std::nullopt;
  return content;
}

}  // namespace

Env process_env() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
}

SettingsFile read_settings_file(const std::string& path) {
  auto json = read_up_to(path, kMaxSettingsFileSize);
  if (!json) {
    throw UsageError("cannot read the settings file " + path +
                     " (--settings-json): " + std::strerror(errno));
  }
  if (json->size() > kMaxSettingsFileSize) {
    throw UsageError("the settings file " + path + " (--settings-json) is larger than " +
                     std::to_string(kMaxSettingsFileSize / 1024) +
                     " KiB; give only the settings to change");
  }
  try {
    Settings settings = settings_from_json(*json, Settings{});
    validate(settings);
    return {std::move(*json), std::move(settings)};
  } catch (const std::exception& e) {
    throw UsageError("settings file " + path + ": " + e.what());
  }
}

void require_ca_directory(const std::string& path, std::string_view option) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) {
    throw UsageError(std::string(option) + ": " + path +
                     " is not a directory (expected a directory of hashed CA certificates, as "
                     "made by openssl rehash)");
  }
}

void require_ca_file(const std::string& path, std::string_view option) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw UsageError(std::string(option) + ": " + path +
                     " is not a file (expected a PEM bundle of CA certificates)");
  }
}

}  // namespace tunnel::cli
