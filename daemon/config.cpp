#include "config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <toml++/toml.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "config_keys.h"
#include "endpoint.h"
#include "notify/notify_message.h"
#include "secret_file.h"

static_assert(TOML_EXCEPTIONS, "config.cpp expects toml::parse to throw toml::parse_error");

namespace tunneld {
namespace {

// Token files are small; anything bigger is the wrong file.
constexpr std::size_t kMaxTokenFileSize = std::size_t{64} * 1024;
constexpr std::size_t kMaxNameLength = 64;
// The prefix of the keys of a [[session]] table in messages.
constexpr std::string_view kSession = "session";

bool parse_octal_mode(std::string_view text, unsigned& mode) {
  if (text.size() < 3 || text.size() > 4) return false;
  unsigned value = 0;
  for (char c : text) {
    if (c < '0' || c > '7') return false;
    value = value * 8 + static_cast<unsigned>(c - '0');
  }
  if (value > 0777) return false;
  mode = value;
  return true;
}

class Parser {
 public:
  explicit Parser(const std::string& path) : path_(path) {
    const auto dir = std::filesystem::path(path).parent_path();
    base_dir_ = dir.empty() ? std::filesystem::path(".") : dir;
  }

  Config parse(std::string_view text) {
    toml::table root;
    try {
      root = toml::parse(text, path_);
    } catch (const toml::parse_error& e) {
      throw ConfigError(path_, line_of(e.source()), "",
                        "TOML syntax error: " + std::string(e.description()));
    }
    Config cfg;
    cfg.path = path_;
    check_keys(root, "", {"control", "state_dir", "log", "settings", "session", "notify"});

    if (const auto* t = get_table(root, "", "control")) read_control(*t, cfg.control);
    if (auto v = get_string(root, "", "state_dir")) {
      require_absolute(root["state_dir"].node(), "state_dir", *v);
      cfg.state_dir = *v;
    }
    if (const auto* t = get_table(root, "", "log")) read_log(*t, cfg.log);
    if (const auto* t = get_table(root, "", "settings")) {
      cfg.settings = read_settings(*t, "settings", tunnel::Settings{}, line_of(t->source()));
    }
    if (const toml::node* n = root.get("session")) {
      const auto* sessions = n->as_array();
      if (sessions == nullptr || !sessions->is_array_of_tables()) {
        fail(*n, "session", "expected [[session]] tables, got " + std::string(type_name(*n)));
      }
      std::map<std::string, int> seen;  // name -> line
      for (const auto& element : *sessions) {
        SessionConfig s = read_session(*element.as_table(), cfg.settings);
        const auto [it, inserted] = seen.emplace(s.proxy.name, s.line);
        if (!inserted) {
          throw ConfigError(path_, name_line_, "session.name",
                            in_quotes(s.proxy.name) + " is already used by the session at line " +
                                std::to_string(it->second) + "; names must be unique");
        }
        cfg.sessions.push_back(std::move(s));
      }
    }
    if (const auto* t = get_table(root, "", "notify")) read_notify(*t, cfg.notify);
    return cfg;
  }

 private:
  std::string path_;
  std::filesystem::path base_dir_;
  int name_line_ = 0;  // line of the last session's name key

  [[noreturn]] void fail(const toml::node& n, std::string_view key, const std::string& message) {
    throw ConfigError(path_, line_of(n.source()), std::string(key), message);
  }
  [[noreturn]] void fail_at(int line, std::string_view key, const std::string& message) {
    throw ConfigError(path_, line, std::string(key), message);
  }

  // Unknown keys are errors; the first one in file order is reported.
  void check_keys(const toml::table& t, std::string_view prefix,
                  const std::vector<std::string>& known) {
    const toml::key* first = nullptr;
    for (const auto& [k, v] : t) {
      if (std::find(known.begin(), known.end(), k.str()) != known.end()) continue;
      if (first == nullptr || line_of(k.source()) < line_of(first->source())) first = &k;
    }
    if (first != nullptr) {
      fail_at(line_of(first->source()), join_key(prefix, first->str()),
              unknown_key_hint(first->str(), known));
    }
  }

  const toml::table* get_table(const toml::table& t, std::string_view prefix,
                               std::string_view name) {
    const toml::node* n = t.get(name);
    if (n == nullptr) return nullptr;
    if (!n->is_table()) {
      fail(*n, join_key(prefix, name), "expected a table, got " + std::string(type_name(*n)));
    }
    return n->as_table();
  }

  std::optional<std::string> get_string(const toml::table& t, std::string_view prefix,
                                        std::string_view name) {
    const toml::node* n = t.get(name);
    if (n == nullptr) return std::nullopt;
    if (!n->is_string()) {
      fail(*n, join_key(prefix, name), "expected a string, got " + std::string(type_name(*n)));
    }
    return n->as_string()->get();
  }

  std::optional<bool> get_bool(const toml::table& t, std::string_view prefix,
                               std::string_view name) {
    const toml::node* n = t.get(name);
    if (n == nullptr) return std::nullopt;
    if (!n->is_boolean()) {
      fail(*n, join_key(prefix, name), "expected true or false, got " + std::string(type_name(*n)));
    }
    return n->as_boolean()->get();
  }

  void require_absolute(const toml::node* n, std::string_view key, const std::string& value) {
    if (value.empty() || value.front() != '/') {
      fail(*n, key, "expected an absolute path, got " + in_quotes(value));
    }
  }

  void read_control(const toml::table& t, ControlConfig& out) {
    check_keys(t, "control", {"socket", "mode", "group"});
    if (auto v = get_string(t, "control", "socket")) {
      require_absolute(t.get("socket"), "control.socket", *v);
      if (v->size() >= sizeof(sockaddr_un{}.sun_path)) {
        fail(*t.get("socket"), "control.socket",
             "path is " + std::to_string(v->size()) + " bytes long; a Unix socket path must be " +
                 "shorter than " + std::to_string(sizeof(sockaddr_un{}.sun_path)) + " bytes");
      }
      out.socket = *v;
    }
    if (const toml::node* n = t.get("mode")) {
      // A mode is octal; an integer 660 would silently mean 01224, so only a
      // string is accepted.
      unsigned mode = 0;
      if (!n->is_string() || !parse_octal_mode(n->as_string()->get(), mode)) {
        std::string got =
            n->is_string() ? in_quotes(n->as_string()->get()) : std::string(type_name(*n));
        fail(*n, "control.mode",
             "expected an octal mode as a string, such as \"0660\", got " + got);
      }
      out.mode = mode;
    }
    if (auto v = get_string(t, "control", "group")) out.group = *v;
  }

  void read_log(const toml::table& t, LogConfig& out) {
    check_keys(t, "log", {"level", "target"});
    if (auto v = get_string(t, "log", "level")) {
      static const std::vector<std::string> levels = {"trace", "debug",    "info", "warn",
                                                      "error", "critical", "off"};
      if (*v == "warning") *v = "warn";
      if (std::find(levels.begin(), levels.end(), *v) == levels.end()) {
        fail(
            *t.get("level"), "log.level",
            "expected one of trace, debug, info, warn, error, critical, off, got " + in_quotes(*v));
      }
      out.level = *v;
    }
    if (auto v = get_string(t, "log", "target")) {
      if (*v == "auto") {
        out.target = LogTarget::automatic;
      } else if (*v == "stderr") {
        out.target = LogTarget::stderr_stream;
      } else if (*v == "journal") {
        out.target = LogTarget::journal;
      } else {
        fail(*t.get("target"), "log.target",
             "expected \"auto\", \"stderr\" or \"journal\", got " + in_quotes(*v));
      }
    }
  }

  // Walks a settings table (keys relative to tunneling.proxy, nested or
  // dotted), rejecting unknown keys, and rebuilds the reference's JSON shape.
  void collect_settings(const toml::table& t, const std::string& rel, std::string_view prefix,
                        nlohmann::json& out, std::map<std::string, int>& lines) {
    const SettingKeys& keys = setting_keys();
    for (const auto& [k, v] : t) {
      const std::string key = join_key(rel, k.str());
      const std::string full = join_key(prefix, key);
      const bool is_leaf =
          std::find(keys.leaves.begin(), keys.leaves.end(), key) != keys.leaves.end();
      if (keys.groups.count(key) != 0) {
        if (!v.is_table()) {
          fail(v, full, "expected a table, got " + std::string(type_name(v)));
        }
        collect_settings(*v.as_table(), key, prefix, out[std::string(k.str())], lines);
        continue;
      }
      if (!is_leaf) {
        fail_at(line_of(k.source()), full, unknown_key_hint(key, keys.leaves));
      }
      lines[key] = line_of(v.source());
      nlohmann::json& slot = out[std::string(k.str())];
      if (const auto* s = v.as_string()) {
        slot = s->get();
      } else if (const auto* i = v.as_integer()) {
        slot = i->get();
      } else if (const auto* f = v.as_floating_point()) {
        slot = f->get();
      } else if (const auto* b = v.as_boolean()) {
        slot = b->get();
      } else {
        fail(v, full, "expected a number, a string or a boolean, got " + std::string(type_name(v)));
      }
    }
  }

  // Overlays the table on `base` through the engine's own reader, so ranges
  // and cross-field rules are checked in one place; its errors (which start
  // with "tunneling.proxy.<key>: ") are mapped back to the TOML line.
  tunnel::Settings read_settings(const toml::table& t, std::string_view prefix,
                                 const tunnel::Settings& base, int table_line) {
    nlohmann::json proxy = nlohmann::json::object();
    std::map<std::string, int> lines;
    collect_settings(t, "", prefix, proxy, lines);
    nlohmann::json root;
    root["tunneling"]["proxy"] = std::move(proxy);
    try {
      tunnel::Settings s = tunnel::settings_from_json(root.dump(), base);
      tunnel::validate(s);
      if (const auto it = lines.find("https_proxy"); it != lines.end()) {
        refuse_proxy_credentials(s.https_proxy, it->second, join_key(prefix, "https_proxy"));
      }
      return s;
    } catch (const tunnel::SettingsError& e) {
      constexpr std::string_view kPrefix = "tunneling.proxy.";
      std::string_view what = e.what();
      const auto colon = what.find(": ");
      if (what.substr(0, kPrefix.size()) == kPrefix && colon != std::string_view::npos) {
        const std::string key(what.substr(kPrefix.size(), colon - kPrefix.size()));
        const auto it = lines.find(key);
        fail_at(it != lines.end() ? it->second : table_line, join_key(prefix, key),
                std::string(what.substr(colon + 2)));
      }
      fail_at(table_line, prefix, std::string(what));
    }
  }

  // The file holds no secrets (it may be readable by the tunneld group);
  // proxy credentials come from tunneld's environment or from tunnelctl.
  void refuse_proxy_credentials(const std::string& url, int line, std::string_view key) {
    std::string ignored;
    const auto p = tunnel::parse_proxy_url(url, ignored);
    if (p && p->has_credentials()) {
      fail_at(line, key,
              "proxy credentials do not belong in the configuration file (it may be readable by "
              "the tunneld group); write http://" +
                  p->display() +
                  " here and give the credentials in tunneld's environment instead "
                  "(HTTPS_PROXY in a mode-0600 systemd EnvironmentFile), or open the session "
                  "with tunnelctl open --https-proxy");
    }
  }

  std::string resolve(const std::string& p) const {
    if (!p.empty() && p.front() == '/') return p;
    return (base_dir_ / p).lexically_normal().string();
  }

  // Reads a secret from a file that only its owner may access.
  std::string read_token_file(const toml::node& n, std::string_view key, const std::string& file) {
    using tunnel::TokenFileProblem;
    const tunnel::TokenFile f = tunnel::read_token_file(file, {.max_size = kMaxTokenFileSize});
    const auto system_error = [&f] { return std::string(std::strerror(f.error_number)); };
    switch (f.problem) {
      case TokenFileProblem::none:
        return f.token;
      case TokenFileProblem::cannot_open:
        fail(n, key, "cannot open " + file + ": " + system_error());
      case TokenFileProblem::cannot_stat:
        fail(n, key, "cannot stat " + file + ": " + system_error());
      case TokenFileProblem::is_directory:
      case TokenFileProblem::not_regular_file:
        fail(n, key, file + " is not a regular file");
      case TokenFileProblem::too_open:
        fail(n, key,
             file + " is accessible by group or others (mode " + tunnel::octal_mode(f.mode) +
                 "); a token file must be private: chmod 600 " + file);
      case TokenFileProblem::too_large:
        fail(n, key,
             file + (f.size != 0 ? " is " + std::to_string(f.size) + " bytes" : " is too large") +
                 "; a token file holds one token");
      case TokenFileProblem::cannot_read:
        fail(n, key, "cannot read " + file + ": " + system_error());
      case TokenFileProblem::empty:
        fail(n, key, file + " is empty; it must hold the token");
      case TokenFileProblem::not_header_safe:
        // Tokens travel in an HTTP header: printable ASCII without spaces only.
        fail(n, key, file + " holds spaces or control characters; it must hold the token alone");
    }
    fail(n, key, "cannot read " + file);
  }

  // A private key: a regular file only its owner may access (as token files).
  void require_private_file(const toml::node& n, std::string_view key, const std::string& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) {
      fail(n, key, "cannot use " + file + ": " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) fail(n, key, file + " is not a regular file");
    if ((st.st_mode & 077) != 0) {
      fail(n, key,
           file + " is accessible by group or others (mode " + tunnel::octal_mode(st.st_mode) +
               "); a key file must be private: chmod 600 " + file);
    }
    if (::access(file.c_str(), R_OK) != 0) {
      fail(n, key, "cannot read " + file + ": " + std::strerror(errno));
    }
  }

  std::optional<std::int64_t> get_integer(const toml::table& t, std::string_view prefix,
                                          std::string_view name, std::int64_t lo, std::int64_t hi) {
    const toml::node* n = t.get(name);
    if (n == nullptr) return std::nullopt;
    if (!n->is_integer() || n->as_integer()->get() < lo || n->as_integer()->get() > hi) {
      fail(*n, join_key(prefix, name),
           "expected an integer from " + std::to_string(lo) + " to " + std::to_string(hi) +
               ", got " +
               (n->is_integer() ? std::to_string(n->as_integer()->get())
                                : std::string(type_name(*n))));
    }
    return n->as_integer()->get();
  }

  // [notify] (docs/notify.md). Every key's type and range is checked even
  // with enabled = false; what is needed to connect is required only when
  // enabled.
  void read_notify(const toml::table& t, NotifyConfig& out) {
    out.line = line_of(t.source());
    check_keys(t, "notify",
               {"enabled", "broker", "thing_name", "client_id", "cert_file", "key_file", "ca_file",
                "keepalive_s", "alpn", "tunnel_endpoint", "tunnel_cafile", "tunnel_capath",
                "max_sessions", "rate_burst", "rate_per_minute", "services"});
    out.enabled = get_bool(t, "notify", "enabled").value_or(true);
    read_notify_services(t, out);
    read_notify_limits(t, out);
    read_notify_tunnel(t, out);
    read_notify_link(t, out);
  }

  void read_notify_services(const toml::table& t, NotifyConfig& out) {
    out.services = notify::default_service_map();
    const auto* s = get_table(t, "notify", "services");
    if (s == nullptr) return;
    // The table replaces the defaults, so that a device exposes only what it lists.
    out.services.clear();
    for (const auto& [k, v] : *s) {
      const std::string key = "notify.services." + std::string(k.str());
      if (!notify::is_valid_service_id(k.str())) {
        fail_at(line_of(k.source()), key,
                "a service id is 1 to 127 characters of A-Z, a-z, 0-9, '_' and '-'");
      }
      if (!v.is_string())
        fail(v, key, "expected \"[host:]port\", got " + std::string(type_name(v)));
      std::string error;
      const auto hp = tunnel::parse_host_port(v.as_string()->get(), "localhost", error);
      if (!hp) fail(v, key, error);
      if (hp->port == 0) fail(v, key, "port 0 is not a service port");
      out.services[std::string(k.str())] = v.as_string()->get();
    }
  }

  void read_notify_limits(const toml::table& t, NotifyConfig& out) {
    constexpr std::string_view P = "notify";
    if (auto v = get_integer(t, P, "keepalive_s", 5, 3600)) {
      out.keepalive_s = static_cast<std::uint32_t>(*v);
    }
    if (auto v = get_integer(t, P, "max_sessions", 1, 64)) {
      out.max_sessions = static_cast<std::size_t>(*v);
    }
    if (auto v = get_integer(t, P, "rate_burst", 1, 1000)) out.rate_burst = static_cast<double>(*v);
    if (auto v = get_integer(t, P, "rate_per_minute", 1, 6000)) {
      out.rate_per_minute = static_cast<double>(*v);
    }
  }

  // Where the notified sessions connect.
  void read_notify_tunnel(const toml::table& t, NotifyConfig& out) {
    constexpr std::string_view P = "notify";
    std::string error;
    if (auto v = get_string(t, P, "tunnel_endpoint")) {
      if (!tunnel::parse_endpoint(*v, error))
        fail(*t.get("tunnel_endpoint"), "notify.tunnel_endpoint", error);
      out.tunnel_endpoint = *v;
    }
    if (auto v = get_string(t, P, "tunnel_cafile")) {
      out.tunnel_cafile = resolve(*v);
      require_path(*t.get("tunnel_cafile"), "notify.tunnel_cafile", out.tunnel_cafile, false);
    }
    if (auto v = get_string(t, P, "tunnel_capath")) {
      out.tunnel_capath = resolve(*v);
      require_path(*t.get("tunnel_capath"), "notify.tunnel_capath", out.tunnel_capath, true);
    }
  }

  // The MQTT link: broker, identity, ALPN and the PEM files.
  void read_notify_link(const toml::table& t, NotifyConfig& out) {
    constexpr std::string_view P = "notify";
    const auto thing = get_string(t, P, "thing_name");
    if (thing && !notify::is_valid_thing_name(*thing)) {
      fail(*t.get("thing_name"), "notify.thing_name",
           "expected 1 to 128 characters of A-Z, a-z, 0-9, ':', '_' and '-', got " +
               in_quotes(*thing));
    }
    const auto client_id = get_string(t, P, "client_id");
    if (client_id && (client_id->empty() || client_id->size() > 128)) {
      fail(*t.get("client_id"), "notify.client_id", "expected 1 to 128 characters");
    }
    // One ALPN protocol id (RFC 7301: 1 to 255 bytes); "" offers none.
    const auto alpn = get_string(t, P, "alpn");
    if (alpn && (alpn->size() > 255 || !std::all_of(alpn->begin(), alpn->end(),
                                                    [](char c) { return c > 0x20 && c < 0x7f; }))) {
      fail(*t.get("alpn"), "notify.alpn",
           "expected up to 255 printable ASCII characters without spaces, such as \"" +
               std::string(kAwsIotMqttAlpn) + "\", or \"\" for none");
    }
    const auto broker = get_string(t, P, "broker");
    if (!out.enabled) return;
    // Enabled: everything needed to connect must be there and usable now.
    if (!broker) fail_at(out.line, "notify.broker", "missing; give broker = \"host:port\"");
    // host:port; the port is required (8883 is only a convention).
    std::string error;
    const auto colon = broker->rfind(':');
    const auto hp = tunnel::parse_host_port(*broker, "", error);
    if (!hp || colon == std::string::npos || hp->host.empty() || hp->port == 0) {
      fail(*t.get("broker"), "notify.broker",
           "expected \"host:port\" such as \"broker.example.com:8883\", got " + in_quotes(*broker));
    }
    out.broker_host = hp->host;
    out.broker_port = hp->port;
    out.alpn = alpn.value_or(hp->port == 443 ? std::string(kAwsIotMqttAlpn) : std::string());
    if (!thing) fail_at(out.line, "notify.thing_name", "missing; the IoT thing this device is");
    out.thing_name = *thing;
    out.client_id = client_id.value_or(*thing);
    read_notify_files(t, out);
  }

  void read_notify_files(const toml::table& t, NotifyConfig& out) {
    for (const auto& [key, slot] : {std::pair{"cert_file", &out.cert_file},
                                    {"key_file", &out.key_file},
                                    {"ca_file", &out.ca_file}}) {
      const auto v = get_string(t, "notify", key);
      const std::string full = join_key("notify", key);
      if (!v) fail_at(out.line, full, "missing; give the path of a PEM file");
      *slot = resolve(*v);
      if (std::string_view(key) == "key_file") {
        require_private_file(*t.get(key), full, *slot);
      } else {
        require_path(*t.get(key), full, *slot, false);
      }
    }
  }

  void require_path(const toml::node& n, std::string_view key, const std::string& file,
                    bool directory) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) {
      fail(n, key, "cannot use " + file + ": " + std::strerror(errno));
    }
    if (directory && !S_ISDIR(st.st_mode)) fail(n, key, file + " is not a directory");
    if (!directory && S_ISDIR(st.st_mode)) fail(n, key, file + " is a directory, not a file");
  }

  SessionConfig read_session(const toml::table& t, const tunnel::Settings& defaults) {
    SessionConfig s;
    s.line = line_of(t.source());
    check_keys(t, kSession,
               {"name", "mode", "target", "listen", "endpoint", "region", "access_token_file",
                "client_token_file", "capath", "cafile", "verify", "bind_address", "settings",
                "https_proxy", "services", "protocol"});
    tunnel::ProxyConfig& p = s.proxy;
    p.name = read_session_name(t, s.line);
    p.mode = read_session_mode(t, s.line);
    if (const auto* settings = get_table(t, kSession, "settings")) {
      const int line = line_of(settings->source());
      p.settings = read_settings(*settings, "session.settings", defaults, line ? line : s.line);
    } else {
      p.settings = defaults;
    }
    const auto bind_address = get_string(t, kSession, "bind_address");
    read_session_protocol(t, p);
    if (const auto* services = get_table(t, kSession, "services")) {
      read_session_services(t, *services, bind_address, p);
    } else {
      read_session_local_address(t, s.line, bind_address, p);
    }
    p.endpoint = read_session_endpoint(t, s.line);
    read_session_tokens(t, s);
    if (const auto v = get_string(t, kSession, "capath")) {
      p.capath = resolve(*v);
      require_path(*t.get("capath"), "session.capath", p.capath, true);
    }
    if (const auto v = get_string(t, kSession, "cafile")) {
      p.cafile = resolve(*v);
      require_path(*t.get("cafile"), "session.cafile", p.cafile, false);
    }
    if (const auto v = get_bool(t, kSession, "verify")) p.verify_tls = *v;
    read_session_https_proxy(t, p);
    return s;
  }

  std::string read_session_name(const toml::table& t, int session_line) {
    const auto name = get_string(t, kSession, "name");
    if (!name) {
      fail_at(session_line, "session.name", "missing; every [[session]] needs a unique name");
    }
    name_line_ = line_of(t.get("name")->source());
    if (!is_valid_session_name(*name)) {
      fail(*t.get("name"), "session.name",
           "expected " + std::string(kSessionNameRule) + ", got " + in_quotes(*name));
    }
    return *name;
  }

  tunnel::Mode read_session_mode(const toml::table& t, int session_line) {
    const auto mode = get_string(t, kSession, "mode");
    if (!mode) {
      fail_at(session_line, "session.mode", "missing; expected \"source\" or \"destination\"");
    }
    // The short forms are tunnelctl's and localproxy's spellings.
    if (*mode == "source" || *mode == "src") return tunnel::Mode::source;
    if (*mode == "destination" || *mode == "dest" || *mode == "dst") {
      return tunnel::Mode::destination;
    }
    fail(*t.get("mode"), "session.mode",
         "expected \"source\" or \"destination\", got " + in_quotes(*mode));
  }

  void read_session_protocol(const toml::table& t, tunnel::ProxyConfig& p) {
    const auto v = get_string(t, kSession, "protocol");
    if (!v) return;
    const std::string& w = *v;
    if (w == "V1" || w == "V2" || w == "V3" || w == "v1" || w == "v2" || w == "v3") {
      p.protocol_version = w[1] - '0';
    } else if (w != "auto") {
      fail(*t.get("protocol"), "session.protocol",
           "expected \"auto\", \"V1\", \"V2\" or \"V3\", got " + in_quotes(w));
    }
  }

  // services = { SSH1 = "22", HTTP1 = "127.0.0.1:80" } (V2/V3): replaces
  // listen/target; each value is what listen/target would be.
  void read_session_services(const toml::table& t, const toml::table& services,
                             const std::optional<std::string>& bind_address,
                             tunnel::ProxyConfig& p) {
    const bool source = p.mode == tunnel::Mode::source;
    for (const char* k : {"listen", "target"}) {
      if (const toml::node* n = t.get(k)) {
        fail(*n, join_key(kSession, k), "give either services or " + std::string(k) + ", not both");
      }
    }
    const std::string default_host =
        source && bind_address ? *bind_address : p.settings.default_bind_address;
    for (auto&& [key, node] : services) {
      const std::string name(key.str());
      if (!tunnel::is_valid_service_id(name)) {
        fail(node, "session.services",
             "a service name must be " + std::string(tunnel::kServiceIdRule));
      }
      const auto value = node.value<std::string>();
      if (!value) fail(node, "session.services." + name, "expected a \"[host:]port\" string");
      std::string error;
      const auto hp = tunnel::parse_host_port(*value, source ? default_host : "localhost", error);
      if (!hp) fail(node, "session.services." + name, error);
      if (!source && hp->port == 0) {
        fail(node, "session.services." + name, "port 0 is not a service port");
      }
      p.services.push_back(tunnel::ServiceMapping{name, *hp});
    }
    if (p.services.empty() || p.services.size() > 3) {
      fail(*t.get("services"), "session.services", "give 1 to 3 services");
    }
    p.local = p.services.front().local;
    if (!source && bind_address) p.bind_address = *bind_address;
  }

  // listen = "[host:]port" for a source, target = "[host:]port" for a destination.
  void read_session_local_address(const toml::table& t, int session_line,
                                  const std::optional<std::string>& bind_address,
                                  tunnel::ProxyConfig& p) {
    const bool source = p.mode == tunnel::Mode::source;
    const std::string_view wanted = source ? "listen" : "target";
    const std::string_view other = source ? "target" : "listen";
    if (const toml::node* n = t.get(other)) {
      fail(*n, join_key(kSession, other),
           "a " + std::string(source ? "source" : "destination") + " session takes " +
               std::string(wanted) + ", not " + std::string(other));
    }
    const auto local = get_string(t, kSession, wanted);
    if (!local) {
      fail_at(session_line, join_key(kSession, wanted),
              source ? "missing; a source session needs listen = \"[host:]port\""
                     : "missing; a destination session needs target = \"[host:]port\"");
    }
    const toml::node& local_node = *t.get(wanted);
    std::string error;
    const std::string default_host =
        source && bind_address ? *bind_address : p.settings.default_bind_address;
    // A destination's bare port means localhost, as in localproxy's -d.
    const auto hp = tunnel::parse_host_port(*local, source ? default_host : "localhost", error);
    if (!hp) fail(local_node, join_key(kSession, wanted), error);
    if (source && bind_address && hp->host != *bind_address) {
      fail(local_node, "session.listen",
           "listens on " + in_quotes(hp->host) + " but bind_address is " +
               in_quotes(*bind_address) + "; give the address in one place");
    }
    p.local = *hp;
    if (!source && bind_address) p.bind_address = *bind_address;
  }

  tunnel::ServiceEndpoint read_session_endpoint(const toml::table& t, int session_line) {
    std::string error;
    const auto endpoint = get_string(t, kSession, "endpoint");
    const auto region = get_string(t, kSession, "region");
    if (endpoint && region) {
      fail(*t.get("region"), "session.region",
           "give either endpoint or region, not both (endpoint is at line " +
               std::to_string(line_of(t.get("endpoint")->source())) + ")");
    }
    if (endpoint) {
      const auto ep = tunnel::parse_endpoint(*endpoint, error);
      if (!ep) fail(*t.get("endpoint"), "session.endpoint", error);
      return *ep;
    }
    if (region) {
      const auto ep = tunnel::endpoint_for_region(*region, error);
      if (!ep) fail(*t.get("region"), "session.region", error);
      return *ep;
    }
    fail_at(session_line, "session.endpoint",
            "missing; give endpoint = \"host[:port]\" or region = \"us-east-1\"");
  }

  void read_session_tokens(const toml::table& t, SessionConfig& s) {
    tunnel::ProxyConfig& p = s.proxy;
    const auto access = get_string(t, kSession, "access_token_file");
    if (!access) {
      fail_at(s.line, "session.access_token_file",
              "missing; give the path of a file (mode 0600) holding the access token");
    }
    s.access_token_file = resolve(*access);
    p.access_token = read_token_file(*t.get("access_token_file"), "session.access_token_file",
                                     s.access_token_file);
    if (const auto client = get_string(t, kSession, "client_token_file")) {
      s.client_token_file = resolve(*client);
      const toml::node& n = *t.get("client_token_file");
      p.client_token = read_token_file(n, "session.client_token_file", s.client_token_file);
      if (!tunnel::is_valid_client_token(p.client_token)) {
        fail(n, "session.client_token_file",
             s.client_token_file +
                 " does not hold a valid client token (32 to 128 characters of A-Z, a-z, 0-9 "
                 "and '-')");
      }
    }
  }

  // Overrides the settings' https_proxy (and so the daemon's HTTPS_PROXY).
  // The message never repeats the value: it may hold a password.
  void read_session_https_proxy(const toml::table& t, tunnel::ProxyConfig& p) {
    const auto v = get_string(t, kSession, "https_proxy");
    if (!v) return;
    std::string proxy_error;
    if (!tunnel::is_direct(*v) && !tunnel::parse_proxy_url(*v, proxy_error)) {
      fail(*t.get("https_proxy"), "session.https_proxy", proxy_error);
    }
    refuse_proxy_credentials(*v, line_of(t.get("https_proxy")->source()), "session.https_proxy");
    p.settings.https_proxy = *v;
  }
};

std::string format_message(const std::string& file, int line, const std::string& key,
                           const std::string& message) {
  std::string out = file;
  if (line > 0) out += ":" + std::to_string(line);
  out += ": ";
  if (!key.empty()) out += key + ": ";
  return out + message;
}

}  // namespace

bool is_valid_session_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxNameLength) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
  });
}

ConfigError::ConfigError(std::string file, int line, std::string key, const std::string& message)
    : std::runtime_error(format_message(file, line, key, message)),
      file_(std::move(file)),
      line_(line),
      key_(std::move(key)) {}

Config parse_config(std::string_view text, const std::string& path) {
  return Parser(path).parse(text);
}

Config load_config(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    throw ConfigError(path, 0, "",
                      std::string("cannot open the configuration: ") + std::strerror(errno));
  }
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      throw ConfigError(path, 0, "",
                        std::string("cannot read the configuration: ") + std::strerror(err));
    }
    if (r == 0) break;
    text.append(buf, static_cast<std::size_t>(r));
  }
  ::close(fd);
  return parse_config(text, path);
}

std::string_view to_string(LogTarget target) {
  switch (target) {
    case LogTarget::automatic:
      return "auto";
    case LogTarget::stderr_stream:
      return "stderr";
    case LogTarget::journal:
      return "journal";
  }
  return "auto";
}

}  // namespace tunneld
