#include "cli.h"

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "secret_input.h"
#include "text.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif

namespace tunnel::localproxy {
namespace {

// ---------------------------------------------------------------------------
// The options, once: names, where they may come from, whether they are secret.

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

constexpr std::array<Spec, kSpecCount> kSpecs = {{
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

std::string display(const Spec& s) {
  std::string out;
  if (!s.short_name.empty()) {
    out.append(s.short_name).append("/");
  }
  out.append("--").append(s.long_name);
  return out;
}

std::string display(Id id) { return display(kSpecs[id]); }

// ---------------------------------------------------------------------------
// Small text helpers.

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

std::optional<bool> parse_bool_word(std::string_view text) {
  const auto w = text::lower(text);
  if (w == "true" || w == "1" || w == "yes" || w == "on") return true;
  if (w == "false" || w == "0" || w == "no" || w == "off") return false;
  return std::nullopt;
}

// Unknown names are repeated in messages only when short: a pasted token is
// long, and must never be echoed.
bool looks_like_a_name(std::string_view s) {
  return !s.empty() && s.size() <= 40 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
  });
}

// ---------------------------------------------------------------------------
// Where values come from.

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

std::string level_name(Level level, const Sources& sources) {
  switch (level) {
    case Level::command_line:
      return "on the command line";
    case Level::config_file:
      return "in " + sources.config_path;
    case Level::environment:
      return "in the environment";
  }
  return {};
}

// How an option was given, for messages: "-r/--region on the command line",
// "-r/--region in lp.ini:3" or "AWSIOT_TUNNEL_REGION".
std::string described(Id id, const Found& f) {
  switch (f.level) {
    case Level::command_line:
      return display(id) + " on the command line";
    case Level::config_file:
      return display(id) + " in " + f.origin;
    case Level::environment:
      break;
  }
  return f.origin;
}

struct Choice {
  Id id;
  Found found;
};

// Resolves a pair of alternatives (see cli.h): the highest level that sets
// either decides; both at that level is an error; lower levels are ignored
// with a warning.
std::optional<Choice> resolve_pair(const Sources& sources, Id a, Id b,
                                   std::vector<std::string>& warnings) {
  std::optional<Choice> winner;
  for (const auto level : Sources::kLevels) {
    auto fa = sources.at(a, level);
    auto fb = sources.at(b, level);
    if (!winner) {
      if (fa && fb) {
        if (level == Level::environment) {
          throw UsageError(std::string(kSpecs[a].env) + " and " + std::string(kSpecs[b].env) +
                           " are both set; unset one, or choose with " + display(a) + " or " +
                           display(b));
        }
        throw UsageError(display(a) + " and " + display(b) +
                         " are mutually exclusive (both given " + level_name(level, sources) +
                         "); use one");
      }
      if (fa) {
        winner = Choice{a, std::move(*fa)};
      } else if (fb) {
        winner = Choice{b, std::move(*fb)};
      }
      continue;
    }
    for (auto* ignored : {&fa, &fb}) {
      if (*ignored) {
        const Id ignored_id = ignored == &fa ? a : b;
        warnings.push_back(described(ignored_id, **ignored) + " ignored: " +
                           described(winner->id, winner->found) + " takes precedence");
      }
    }
  }
  return winner;
}

// ---------------------------------------------------------------------------
// The --config file: "long-option-name = value" lines.

void read_config_file(Sources& sources, std::vector<std::string>& secrets,
                      std::vector<std::string>& warnings) {
  const std::string& path = sources.config_path;
  std::ifstream in(path);
  if (!in) {
    throw UsageError("cannot read config file " + path + ": " + std::strerror(errno));
  }
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string where = path + ":" + std::to_string(line_no) + ": ";
    std::string_view line = text::trim(raw);
    if (line.empty() || line.front() == '#' || line.front() == ';') {
      continue;
    }
    if (line.front() == '[') {
      throw UsageError(where + "sections ([...]) are not supported; write 'name = value' lines");
    }
    const auto eq = line.find('=');
    if (eq == std::string_view::npos) {
      throw UsageError(where +
                       "expected 'name = value', where name is a long option such as "
                       "region or source-listen-port");
    }
    const std::string key(text::trim(line.substr(0, eq)));
    std::string_view value = text::trim(line.substr(eq + 1));
    // Inline comments need whitespace before the marker, so that values such
    // as paths may still contain '#' or ';'.
    for (std::size_t i = 1; i < value.size(); ++i) {
      if ((value[i] == '#' || value[i] == ';') &&
          std::isspace(static_cast<unsigned char>(value[i - 1])) != 0) {
        value = text::trim(value.substr(0, i));
        break;
      }
    }
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
        value.back() == value.front()) {
      value = value.substr(1, value.size() - 2);
    }
    const auto spec = std::find_if(kSpecs.begin(), kSpecs.end(),
                                   [&](const Spec& s) { return s.long_name == key; });
    if (spec == kSpecs.end()) {
      throw UsageError(where + "unknown option" +
                       (looks_like_a_name(key) ? " " + in_quotes(key) : std::string()) +
                       " (names are the long options without '--', e.g. region)");
    }
    const auto id = static_cast<Id>(spec - kSpecs.begin());
    if (!spec->in_config_file) {
      throw UsageError(where + in_quotes(key) + " cannot be set in a config file");
    }
    if (const auto it = sources.config_file.find(id); it != sources.config_file.end()) {
      throw UsageError(where + in_quotes(key) + " is already set on line " +
                       std::to_string(it->second.line));
    }
    if (value.empty()) {
      throw UsageError(where + in_quotes(key) + " has an empty value");
    }
    if (spec->secret) {
      secrets.emplace_back(value);
    }
    if (spec->kind == Kind::flag) {
      const auto on = parse_bool_word(value);
      if (!on) {
        throw UsageError(where + in_quotes(key) + " expects true or false");
      }
      if (!*on) {
        continue;
      }
      value = "true";
    }
    sources.config_file[id] = FileEntry{std::string(value), line_no};
  }
  if (in.bad()) {
    throw UsageError("cannot read config file " + path + ": " + std::strerror(errno));
  }
  struct stat st {};
  if (sources.config_file.count(kAccessToken) != 0 && ::stat(path.c_str(), &st) == 0 &&
      (st.st_mode & S_IROTH) != 0) {
    warnings.push_back("config file " + path +
                       " holds the access token and is readable by every user; chmod 600 it");
  }
  if (const auto it = sources.config_file.find(kHttpsProxy); it != sources.config_file.end()) {
    std::string ignored;
    const auto p = parse_proxy_url(it->second.value, ignored);
    if (p && p->has_credentials() && ::stat(path.c_str(), &st) == 0 &&
        (st.st_mode & S_IROTH) != 0) {
      warnings.push_back("config file " + path +
                         " holds proxy credentials (https-proxy) and is readable by every user; "
                         "chmod 600 it");
    }
  }
}

// ---------------------------------------------------------------------------
// The command line proper, through CLI11.

// CLI11 takes "-t -s" as "-t with the value '-s'"; a value that is one of our
// option names means the user forgot the value.
std::optional<std::string_view> option_name_in(std::string_view value) {
  if (value.size() < 2 || value.front() != '-') {
    return std::nullopt;
  }
  for (const auto& s : kSpecs) {
    if (value == s.short_name) {
      return s.short_name;
    }
    if (value.starts_with("--") && value.substr(2).starts_with(s.long_name) &&
        (value.size() == 2 + s.long_name.size() || value[2 + s.long_name.size()] == '=')) {
      return value.substr(0, 2 + s.long_name.size());
    }
  }
  return std::nullopt;
}

std::string cli11_message(const CLI::ParseError& e) {
  std::string text = e.what();
  // ArgumentMismatch reads "--access-token: 1 required TEXT missing".
  if (const auto colon = text.find(':'); colon != std::string::npos && text.starts_with("--")) {
    const std::string_view name = std::string_view(text).substr(2, colon - 2);
    for (const auto& s : kSpecs) {
      if (s.long_name == name) {
        return "option " + display(s) + " needs a value; see localproxy --help";
      }
    }
  }
  return "invalid command line (" + text + "); see localproxy --help";
}

void read_command_line(int argc, const char* const* argv, Sources& sources, bool& help,
                       bool& version) {
  CLI::App app{"", "localproxy"};
  app.set_help_flag();
  app.allow_extras();
  std::array<std::string, kSpecCount> values;
  std::array<bool, kSpecCount> flags{};
  std::array<CLI::Option*, kSpecCount> opts{};
  for (std::size_t i = 0; i < kSpecCount; ++i) {
    const Spec& s = kSpecs[i];
    std::string names;
    if (!s.short_name.empty()) {
      names.append(s.short_name).append(",");
    }
    names.append("--").append(s.long_name);
    if (s.kind == Kind::flag) {
      opts[i] = app.add_flag(names, flags[i]);
    } else {
      opts[i] =
          app.add_option(names, values[i])->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version still work on an otherwise broken line.
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
      help = help || arg == "-h" || arg == "--help";
      version = version || arg == "-V" || arg == "--version";
    }
    if (help || version) {
      return;
    }
    throw UsageError(cli11_message(e));
  }
  help = flags[kHelp];
  version = flags[kVersion];
  if (help || version) {
    return;
  }
  for (std::size_t i = 0; i < kSpecCount; ++i) {
    const auto id = static_cast<Id>(i);
    if (kSpecs[i].kind == Kind::flag) {
      if (flags[i]) {
        sources.command_line[id] = "true";
      }
      continue;
    }
    if (opts[i]->count() == 0) {
      continue;
    }
    if (opts[i]->count() > 1) {
      throw UsageError("option " + display(id) + " is given more than once");
    }
    if (values[i].empty()) {
      throw UsageError("option " + display(id) + " needs a non-empty value");
    }
    if (const auto other = option_name_in(values[i])) {
      throw UsageError("option " + display(id) + " needs a value (found the option " +
                       std::string(*other) + " in its place)");
    }
    sources.command_line[id] = values[i];
  }
  const auto rest = app.remaining();
  if (!rest.empty()) {
    const std::string& first = rest.front();
    if (first.size() > 1 && first.front() == '-' && first != "--") {
      const auto name = first.substr(0, first.find('='));
      if (name.size() > 1 && looks_like_a_name(name)) {
        throw UsageError("unknown option " + name + "; see localproxy --help");
      }
      throw UsageError("unknown option; see localproxy --help");
    }
    throw UsageError(
        "unexpected argument: localproxy takes only options (e.g. -s 5000); see localproxy --help");
  }
}

// ---------------------------------------------------------------------------
// From sources to Options.

int resolve_verbosity(const Sources& sources) {
  const auto f = sources.pick(kVerbose);
  if (!f) {
    return 4;
  }
  unsigned level = 0;
  const char* end = f->value.data() + f->value.size();
  auto [ptr, ec] = std::from_chars(f->value.data(), end, level);
  if (ec != std::errc{} || ptr != end || level > 255) {
    throw UsageError("invalid value " + in_quotes(f->value) + " for " + described(kVerbose, *f) +
                     ": expected a number 0..255 (0 off ... 4 info, 5 debug, 6 trace)");
  }
  return static_cast<int>(std::min(level, 6u));
}

Settings resolve_settings(const Sources& sources) {
  const auto f = sources.pick(kSettingsJson);
  if (!f) {
    return Settings{};
  }
  return cli::read_settings_file(f->value).settings;
}

void resolve_tokens(const Sources& sources, ProxyConfig& config,
                    std::vector<std::string>& warnings) {
  const auto token = sources.pick(kAccessToken);
  if (!token) {
    throw UsageError(
        "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN, or write access-token = ... in a "
        "--config file (-t also works but shows the token in process listings)");
  }
  cli::require_header_safe_access_token(token->value, token->origin);
  if (token->level == Level::command_line) {
    warnings.push_back(
        "the access token given with -t is visible to other users in process listings and in "
        "shell history; set AWSIOT_TUNNEL_ACCESS_TOKEN instead");
  }
  config.access_token = token->value;

  if (const auto client = sources.pick(kClientToken)) {
    cli::require_valid_client_token(client->value, client->origin);
    if (client->level == Level::command_line) {
      warnings.emplace_back(cli::kClientTokenOnArgvWarning);
    }
    config.client_token = client->value;
  }
}

void resolve_endpoint(const Sources& sources, ProxyConfig& config,
                      std::vector<std::string>& warnings) {
  const auto choice = resolve_pair(sources, kEndpoint, kRegion, warnings);
  if (!choice) {
    throw UsageError(
        "no service endpoint: give -r/--region REGION (or set AWSIOT_TUNNEL_REGION), or "
        "-e/--proxy-endpoint HOST[:PORT] (or set AWSIOT_TUNNEL_ENDPOINT)");
  }
  std::string error;
  const auto ep = choice->id == kEndpoint ? parse_endpoint(choice->found.value, error)
                                          : endpoint_for_region(choice->found.value, error);
  if (!ep) {
    throw UsageError(described(choice->id, choice->found) + ": " + error);
  }
  config.endpoint = *ep;
}

// Needs the endpoint (NO_PROXY is matched against its host) and the settings.
void resolve_proxy(const Sources& sources, const Env& env, ProxyConfig& config,
                   std::vector<std::string>& warnings) {
  std::string url = config.settings.https_proxy;
  std::string origin;
  if (const auto f = sources.pick(kSettingsJson)) {
    origin = "tunneling.proxy.https_proxy in the settings file " + f->value;
  }
  if (const auto f = sources.pick(kHttpsProxy)) {
    url = f->value;
    origin = described(kHttpsProxy, *f);
    std::string ignored;
    const auto p = parse_proxy_url(url, ignored);
    if (f->level == Level::command_line && p && p->has_credentials()) {
      warnings.push_back(
          "the proxy credentials given with --https-proxy are visible to other users in process "
          "listings; set HTTPS_PROXY, or put the URL in a --config or --settings-json file "
          "(mode 0600)");
    }
  }
  ProxyResolution via;
  std::string error;
  if (!resolve_https_proxy(url, origin, env, config.endpoint.host, via, error)) {
    throw UsageError(error);
  }
  config.https_proxy = std::move(via.proxy);
  config.https_proxy_origin = std::move(via.origin);
}

std::string mode_name(Mode m) { return m == Mode::source ? "source" : "destination"; }

std::optional<Mode> parse_mode(std::string_view text) {
  const auto w = text::lower(text);
  if (w == "source" || w == "src") return Mode::source;
  if (w == "destination" || w == "dst") return Mode::destination;
  return std::nullopt;
}

HostPort parse_local(std::string_view text, Mode mode, const std::string& default_host,
                     const std::string& what) {
  std::string error;
  auto local = parse_host_port(std::string(text), default_host, error);
  if (!local) throw UsageError(what + ": " + error);
  if (mode == Mode::destination && local->port == 0) {
    throw UsageError(what + ": the destination port must be 1..65535");
  }
  return *local;
}

void add_mapping(std::vector<ServiceMapping>& out, std::string_view name, std::string_view value,
                 Mode mode, const std::string& default_host, const std::string& what,
                 bool replace) {
  name = text::trim(name);
  value = text::trim(value);
  if (!is_valid_service_id(name)) throw UsageError(what + ": " + service_id_error(name));
  const auto it =
      std::find_if(out.begin(), out.end(), [&](const ServiceMapping& m) { return m.id == name; });
  if (it != out.end()) {
    if (replace) throw UsageError(what + ": service " + std::string(name) + " is given twice");
    return;  // the command line wins over --config-dir
  }
  out.push_back(ServiceMapping{
      std::string(name),
      parse_local(value, mode, default_host, what + " (service " + std::string(name) + ")")});
}

// "SSH1=5555,HTTP1=8080" (source) or "SSH1=22,HTTP1=127.0.0.1:80" (destination).
std::vector<ServiceMapping> parse_mappings(std::string_view text, Mode mode,
                                           const std::string& default_host,
                                           const std::string& what) {
  std::vector<ServiceMapping> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string_view item = text.substr(start, comma - start);
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      throw UsageError(what + ": " + in_quotes(item) +
                       " is not a NAME=PORT mapping; give every service as NAME=[ADDRESS:]PORT");
    }
    add_mapping(out, item.substr(0, eq), item.substr(eq + 1), mode, default_host, what, true);
    start = comma + 1;
  }
  return out;
}

// The reference's service-mapping files: every regular file of DIR, lines
// "NAME = [ADDRESS:]PORT", '#' comments. Names already mapped are kept.
void read_config_dir(const std::string& dir, Mode mode, const std::string& default_host,
                     std::vector<ServiceMapping>& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw UsageError("--config-dir " + dir + " is not a directory");
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      ++n;
      std::string_view l = line;
      if (const auto hash = l.find('#'); hash != std::string_view::npos) l = l.substr(0, hash);
      l = text::trim(l);
      if (l.empty()) continue;
      const std::string where = f.string() + ":" + std::to_string(n);
      const std::size_t eq = l.find('=');
      if (eq == std::string_view::npos) {
        throw UsageError(where + ": expected NAME = [ADDRESS:]PORT, got " + in_quotes(l));
      }
      add_mapping(out, l.substr(0, eq), l.substr(eq + 1), mode, default_host, where, false);
    }
  }
}

void resolve_local(const Sources& sources, ProxyConfig& config,
                   std::vector<std::string>& warnings) {
  const auto role = resolve_pair(sources, kSource, kDestination, warnings);
  std::optional<Found> mode_found = sources.pick(kMode);
  std::optional<Mode> mode;
  if (mode_found) {
    mode = parse_mode(mode_found->value);
    if (!mode) {
      throw UsageError("invalid value " + in_quotes(mode_found->value) + " for " +
                       described(kMode, *mode_found) +
                       ": expected source (src) or destination (dst)");
    }
  }
  if (!role && mode && sources.pick(kConfigDir)) {
    // -m plus --config-dir: the mappings come from the directory.
  } else if (!role) {
    if (mode == Mode::source) {
      throw UsageError("source mode needs -s/--source-listen-port [ADDRESS:]PORT to listen on");
    }
    if (mode == Mode::destination) {
      throw UsageError("destination mode needs -d/--destination-app [HOST:]PORT to connect to");
    }
    throw UsageError(
        "no mode: give -s [ADDRESS:]PORT to accept local clients (source), or -d [HOST:]PORT to "
        "forward to a local service (destination)");
  }
  const Mode role_mode = role ? (role->id == kSource ? Mode::source : Mode::destination) : *mode;
  if (role && mode && *mode != role_mode) {
    throw UsageError(described(kMode, *mode_found) + " says " + mode_name(*mode) + " mode but " +
                     described(role->id, role->found) + " selects " + mode_name(role_mode) +
                     " mode; drop one");
  }
  config.mode = role_mode;

  const auto bind = sources.pick(kBindAddress);
  const std::string default_host = role_mode == Mode::source
                                       ? (bind ? bind->value : config.settings.default_bind_address)
                                       : std::string("localhost");
  std::vector<ServiceMapping> mappings;
  if (role) {
    const std::string& text = role->found.value;
    if (text.find('=') != std::string::npos) {
      mappings = parse_mappings(text, role_mode, default_host, described(role->id, role->found));
    } else {
      mappings.push_back(ServiceMapping{
          "", parse_local(text, role_mode, default_host, described(role->id, role->found))});
    }
  }
  if (const auto dir = sources.pick(kConfigDir)) {
    if (!mappings.empty() && mappings.front().id.empty()) {
      throw UsageError(described(role->id, role->found) + " gives one unnamed service but " +
                       described(kConfigDir, *dir) +
                       " names services; use NAME=PORT mappings in one place");
    }
    read_config_dir(dir->value, role_mode, default_host, mappings);
  }
  if (mappings.empty()) {
    throw UsageError(
        mode_name(role_mode) + " mode needs " +
        (role_mode == Mode::source ? "-s/--source-listen-port" : "-d/--destination-app") +
        " or a --config-dir with service mappings");
  }
  if (mappings.size() > 3) {
    throw UsageError(std::to_string(mappings.size()) +
                     " services configured; a tunnel carries at most 3");
  }
  if (bind && role_mode == Mode::source) {
    for (const auto& m : mappings) {
      if (m.local.host != bind->value) {
        throw UsageError("a listen address " + in_quotes(m.local.host) + " is given but " +
                         described(kBindAddress, *bind) + " says " + in_quotes(bind->value) +
                         "; give the address in one place");
      }
    }
  }
  config.local = mappings.front().local;
  if (!mappings.front().id.empty()) config.services = std::move(mappings);
  // Destination: bind outgoing connections only when asked to, else connecting
  // to another host through a loopback default would fail.
  config.bind_address = bind ? bind->value : std::string();
}

void resolve_tls(const Sources& sources, ProxyConfig& config, std::vector<std::string>& warnings) {
  if (const auto f = sources.pick(kCapath)) {
    cli::require_ca_directory(f->value, described(kCapath, *f));
    config.capath = f->value;
  }
  if (const auto f = sources.pick(kCafile)) {
    cli::require_ca_file(f->value, described(kCafile, *f));
    config.cafile = f->value;
  }
  if (sources.pick(kNoVerify)) {
    config.verify_tls = false;
    warnings.emplace_back(cli::kNoHostVerifyWarning);
  }
}

std::string resolve_client_type(const Sources& sources, Mode mode,
                                std::vector<std::string>& warnings) {
  const auto f = sources.pick(kClientType);
  if (!f) {
    return {};
  }
  std::string value = text::lower(f->value);
  if (value == "v1" || value == "v2" || value == "v3") {
    value[0] = 'V';
  } else {
    // The reference treats an unknown value as "V3 destination"; so do we.
    warnings.push_back(described(kClientType, *f) + ": unknown value " + in_quotes(f->value) +
                       ", assuming a V3 destination (expected V1 or V2)");
    return {};
  }
  if (mode == Mode::destination) {
    warnings.push_back(described(kClientType, *f) +
                       " is a source mode option in the reference; here it makes this "
                       "destination speak only " +
                       value);
  }
  return value;
}

Options parse(int argc, const char* const* argv, const Env& env,
              std::vector<std::string>& secrets) {
  Options out;
  Sources sources(env);
  bool help = false;
  bool version = false;
  read_command_line(argc, argv, sources, help, version);
  if (help) {
    out.action = Action::help;
    return out;
  }
  if (version) {
    out.action = Action::version;
    return out;
  }
  if (const auto it = sources.command_line.find(kConfig); it != sources.command_line.end()) {
    sources.config_path = it->second;
    read_config_file(sources, secrets, out.warnings);
  }
  out.verbosity = resolve_verbosity(sources);
  out.config.settings = resolve_settings(sources);
  if (const auto it = sources.command_line.find(kExport); it != sources.command_line.end()) {
    out.action = Action::export_settings;
    out.export_path = it->second;
    return out;
  }
  resolve_tokens(sources, out.config, out.warnings);
  resolve_endpoint(sources, out.config, out.warnings);
  resolve_local(sources, out.config, out.warnings);
  resolve_tls(sources, out.config, out.warnings);
  resolve_proxy(sources, env, out.config, out.warnings);
  out.destination_client_type = resolve_client_type(sources, out.config.mode, out.warnings);
  if (!out.destination_client_type.empty()) {
    // -y V1|V2|V3: offer and speak only that version.
    out.config.protocol_version = out.destination_client_type[1] - '0';
  }
  out.config.name = "localproxy";
  return out;
}

}  // namespace

Options parse_command_line(int argc, const char* const* argv, const Env& env) {
  std::vector<cli::SecretOption> secret_options;
  for (const auto& s : kSpecs) {
    if (s.secret) secret_options.push_back({s.short_name, s.long_name});
  }
  std::vector<std::string> secrets = cli::secrets_on_argv(argc, argv, secret_options);
  for (const auto& s : kSpecs) {
    if (s.secret && !s.env.empty()) {
      if (auto v = env(s.env)) {
        secrets.push_back(std::move(*v));
      }
    }
  }
  for (const std::string_view name : {"HTTPS_PROXY", "https_proxy"}) {
    if (auto v = env(name)) {
      secrets.push_back(std::move(*v));
    }
  }
  try {
    return parse(argc, argv, env, secrets);
  } catch (const UsageError& e) {
    throw UsageError(cli::redact(e.what(), secrets));
  }
}

std::string help_text() {
  return R"(Usage: localproxy [options]

Runs one end of a secure tunnel: in source mode it accepts local TCP clients
and carries them through the tunneling service; in destination mode it
connects what arrives through the tunnel to a local service.

  localproxy -r us-east-1 -s 5000          # source: listen on localhost:5000
  localproxy -r us-east-1 -d 22            # destination: forward to localhost:22
  localproxy -r us-east-1 -s SSH1=5555,HTTP1=8080        # several services
  localproxy -r us-east-1 -d SSH1=22,HTTP1=127.0.0.1:80
  (with the access token in AWSIOT_TUNNEL_ACCESS_TOKEN)

Options:
  -h, --help                       show this help and exit
  -V, --version                    show the version and exit
  -t, --access-token TOKEN         access token from OpenTunnel; prefer the
                                   AWSIOT_TUNNEL_ACCESS_TOKEN variable: argv is
                                   visible to other users
  -i, --client-token TOKEN         client token (32..128 of [A-Za-z0-9-]) to
                                   reconnect with; default: a fresh one
  -e, --proxy-endpoint ENDPOINT    service endpoint: HOST[:PORT], wss://HOST[:PORT],
                                   or ws://HOST[:PORT] on loopback only
  -r, --region REGION              region of the tunnel (e.g. us-east-1);
                                   excludes -e
  -s, --source-listen-port [ADDRESS:]PORT | NAME=[ADDRESS:]PORT,...
                                   source mode: listen here (0 = any free
                                   port); one mapping per service (up to 3)
  -d, --destination-app [HOST:]PORT | NAME=[HOST:]PORT,...
                                   destination mode: connect here (HOST
                                   defaults to localhost); one per service
      --config-dir DIR             service mappings from the files of DIR,
                                   lines NAME = [ADDRESS:]PORT (with -s/-d
                                   or -m; the command line wins per name)
  -m, --mode MODE                  source|src|destination|dst; must agree with
                                   -s/-d
  -b, --local-bind-address ADDRESS source: listen address (default: settings'
                                   default_bind_address); destination: local
                                   address for outgoing connections
  -c, --capath DIR                 extra directory of hashed CA certificates
      --cafile FILE                extra PEM bundle of CA certificates
  -k, --no-ssl-host-verify         do not verify the service's certificate
                                   (testing only)
  -y, --destination-client-type V1|V2|V3
                                   source mode: speak only this protocol
                                   version (default: offer V3, V2 and V1 and
                                   detect what the destination speaks)
  -v, --verbose LEVEL              0 off, 1 fatal, 2 error, 3 warning, 4 info
                                   (default), 5 debug, 6 trace (0..255)
      --config FILE                read options from FILE: 'name = value' lines
                                   with long option names; # or ; comments
      --settings-json FILE         fine-grained settings (JSON) over the defaults
      --export-default-settings FILE
                                   write the default settings as JSON and exit
      --https-proxy URL            reach the service through this HTTP CONNECT
                                   proxy: http://[user:password@]host[:port]
                                   (port 80 by default), or 'direct' for none;
                                   default: HTTPS_PROXY, then https_proxy, unless
                                   NO_PROXY/no_proxy matches the service host.
                                   Credentials on argv are visible to other
                                   users: prefer HTTPS_PROXY or a 0600 file

Precedence: command line > --config file > environment (AWSIOT_TUNNEL_ACCESS_TOKEN,
AWSIOT_TUNNEL_CLIENT_TOKEN, AWSIOT_TUNNEL_ENDPOINT, AWSIOT_TUNNEL_REGION); for the
proxy: --https-proxy > settings' tunneling.proxy.https_proxy > HTTPS_PROXY.
Exit status: 0 tunnel closed or stopped by a signal, 1 runtime failure, 2 usage error.
)";
}

std::string version_text() { return std::string("localproxy (tunneld) ") + TUNNELD_VERSION + "\n"; }

}  // namespace tunnel::localproxy
