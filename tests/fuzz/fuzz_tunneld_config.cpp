// libFuzzer target for tunneld's TOML configuration (daemon/config.h).
//  - parse_config either returns a Config or throws ConfigError (no toml++
//    or JSON exception escapes), and every ConfigError names the file, a
//    line within the text (or 0) and never the content of a token file;
//  - every session it accepts has valid settings and a mode, and the same
//    text parses to the same result again (no hidden state).
// Token files named in the text resolve against a private temp directory
// holding src.token, dst.token and [notify]'s device.pem, device.key and
// ca.pem (0600), so accepted sessions and notify tables are reachable.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "config.h"
#include "fuzz_check.h"

namespace {

constexpr std::string_view kSecret = "fuzzSecretAccessToken0123456789";
std::string g_path;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  char tmpl[] = "/tmp/fuzz-tunneld-config-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  if (!dir) std::abort();
  for (const char* name : {"src.token", "dst.token", "device.key", "device.pem", "ca.pem"}) {
    const std::string p = std::string(dir) + "/" + name;
    std::ofstream(p) << kSecret << name << "\n";
    ::chmod(p.c_str(), 0600);
  }
  g_path = std::string(dir) + "/tunneld.toml";
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const long lines = static_cast<long>(std::count(text.begin(), text.end(), '\n')) + 1;
  std::string first;
  try {
    const tunneld::Config c = tunneld::parse_config(text, g_path);
    FUZZ_CHECK(c.path == g_path);
    for (const auto& s : c.sessions) {
      tunnel::validate(s.proxy.settings);
      FUZZ_CHECK(s.line >= 1 && s.line <= lines);
      FUZZ_CHECK(!s.proxy.access_token.empty());
    }
    first = "ok " + std::to_string(c.sessions.size());
  } catch (const tunneld::ConfigError& e) {
    const std::string_view what = e.what();
    FUZZ_CHECK(e.file() == g_path);
    FUZZ_CHECK(what.rfind(g_path, 0) == 0);
    FUZZ_CHECK(e.line() >= 0 && e.line() <= lines);
    if (text.find(kSecret) == std::string_view::npos) {
      FUZZ_CHECK(what.find(kSecret) == std::string_view::npos);
    }
    first = what;
  }
  // Deterministic: the same text gives the same answer.
  std::string second;
  try {
    const tunneld::Config c = tunneld::parse_config(text, g_path);
    second = "ok " + std::to_string(c.sessions.size());
  } catch (const tunneld::ConfigError& e) {
    second = e.what();
  }
  FUZZ_CHECK(first == second);
  return 0;
}
