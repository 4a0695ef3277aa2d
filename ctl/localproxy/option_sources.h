// localproxy's options, once (names, where each may come from, whether it is
// secret), and where their values come from: the command line, a --config
// file, the environment (cli.h tells the precedence).
#pragma once

#include <array>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli.h"

namespace tunnel::localproxy {

enum class Kind { value, flag };

struct Spec {
  std::string_view short_name;  // "-t", or empty
  std::string_view long_name;   // "access-token": also the --config key
  Kind kind;
  bool in_config_file;   // may be set in a --config file
  std::string_view env;  // environment variable, or empty
  bool secret;
};

enum Id : std::size_t {
  kHelp,
  kVersion,
  kAccessToken,
  kClientToken,
  kEndpoint,
  kRegion,
  kSource,
  kDestination,
  kMode,
  kBindAddress,
  kCapath,
  kCafile,
  kNoVerify,
  kClientType,
  kVerbose,
  kSettingsJson,
  kConfig,
  kExport,
  kHttpsProxy,
  kConfigDir,
  kSpecCount,
};

inline constexpr std::array<Spec, kSpecCount> kSpecs = {{
    {"-h", "help", Kind::flag, false, "", false},
    {"-V", "version", Kind::flag, false, "", false},
    {"-t", "access-token", Kind::value, true, "AWSIOT_TUNNEL_ACCESS_TOKEN", true},
    {"-i", "client-token", Kind::value, true, "AWSIOT_TUNNEL_CLIENT_TOKEN", true},
    {"-e", "proxy-endpoint", Kind::value, true, "AWSIOT_TUNNEL_ENDPOINT", false},
    {"-r", "region", Kind::value, true, "AWSIOT_TUNNEL_REGION", false},
    {"-s", "source-listen-port", Kind::value, true, "", false},
    {"-d", "destination-app", Kind::value, true, "", false},
    {"-m", "mode", Kind::value, true, "", false},
    {"-b", "local-bind-address", Kind::value, true, "", false},
    {"-c", "capath", Kind::value, true, "", false},
    {"", "cafile", Kind::value, true, "", false},
    {"-k", "no-ssl-host-verify", Kind::flag, true, "", false},
    {"-y", "destination-client-type", Kind::value, true, "", false},
    {"-v", "verbose", Kind::value, true, "", false},
    {"", "settings-json", Kind::value, true, "", false},
    {"", "config", Kind::value, false, "", false},
    {"", "export-default-settings", Kind::value, false, "", false},
    // Secret: the URL may carry credentials. Its environment variables
    // (HTTPS_PROXY, https_proxy, NO_PROXY) are read by resolve_https_proxy.
    {"", "https-proxy", Kind::value, true, "", true},
    {"", "config-dir", Kind::value, true, "", false},
}};

// "-r/--region", "--cafile".
std::string display(const Spec& s);
std::string display(Id id);

// "'text'".
std::string in_quotes(std::string_view s);

// Unknown names are repeated in messages only when short: a pasted token is
// long, and must never be echoed.
bool looks_like_a_name(std::string_view s);

enum class Level { command_line, config_file, environment };

struct Found {
  std::string value;
  Level level;
  std::string origin;  // "the command line", "lp.ini:3", "AWSIOT_TUNNEL_REGION"
};

struct FileEntry {
  std::string value;
  int line;
};

class Sources {
 public:
  explicit Sources(const Env& env) : env_(env) {}

  std::map<Id, std::string> command_line;
  std::map<Id, FileEntry> config_file;
  std::string config_path;

  std::optional<Found> at(Id id, Level level) const {
    switch (level) {
      case Level::command_line:
        if (const auto it = command_line.find(id); it != command_line.end()) {
          return Found{it->second, level, "the command line"};
        }
        break;
      case Level::config_file:
        if (const auto it = config_file.find(id); it != config_file.end()) {
          return Found{it->second.value, level,
                       config_path + ":" + std::to_string(it->second.line)};
        }
        break;
      case Level::environment:
        if (!kSpecs[id].env.empty()) {
          if (auto v = env_(kSpecs[id].env); v && !v->empty()) {
            return Found{std::move(*v), level, std::string(kSpecs[id].env)};
          }
        }
        break;
    }
    return std::nullopt;
  }

  std::optional<Found> pick(Id id) const {
    for (const auto level : kLevels) {
      if (auto f = at(id, level)) {
        return f;
      }
    }
    return std::nullopt;
  }

  static constexpr std::array<Level, 3> kLevels = {Level::command_line, Level::config_file,
                                                   Level::environment};

 private:
  const Env& env_;
};

// How an option was given, for messages: "-r/--region on the command line",
// "-r/--region in lp.ini:3" or "AWSIOT_TUNNEL_REGION".
std::string described(Id id, const Found& f);

struct Choice {
  Id id;
  Found found;
};

// Resolves a pair of alternatives (see cli.h): the highest level that sets
// either decides; both at that level is an error; lower levels are ignored
// with a warning.
std::optional<Choice> resolve_pair(const Sources& sources, Id a, Id b,
                                   std::vector<std::string>& warnings);

// Reads the --config file sources.config_path ("long-option-name = value"
// lines) into sources.config_file; its secret values join `secrets`.
void read_config_file(Sources& sources, std::vector<std::string>& secrets,
                      std::vector<std::string>& warnings);

// What argv says, into sources.command_line; or only that --help or
// --version was asked for (they win over errors elsewhere on the line).
struct ArgvRequest {
  bool help = false;
  bool version = false;
};
ArgvRequest read_command_line(int argc, const char* const* argv, Sources& sources);

}  // namespace tunnel::localproxy
