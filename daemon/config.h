// tunneld's configuration file (TOML, default /etc/tunneld/tunneld.toml),
// documented in docs/tunneld-config.md. Parsing is pure apart from reading
// the token files that [[session]] tables name.
//
// Every problem is a ConfigError whose message names the file, the line and
// the key, e.g.
//   /etc/tunneld/tunneld.toml:12: session.mode: expected "source" or "destination", got "sauce"
// Unknown keys are errors too: a typo must not silently fall back to a default.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "proxy_config.h"
#include "settings.h"

namespace tunneld {

inline constexpr std::string_view kDefaultConfigPath = "/etc/tunneld/tunneld.toml";

class ConfigError : public std::runtime_error {
 public:
  // line 0 = the problem is not on one line (file unreadable); key may be empty.
  ConfigError(std::string file, int line, std::string key, const std::string& message);
  const std::string& file() const { return file_; }
  int line() const { return line_; }
  const std::string& key() const { return key_; }

 private:
  std::string file_;
  int line_;
  std::string key_;
};

enum class LogTarget {
  automatic,  // journald when stderr is the journal (JOURNAL_STREAM), else stderr
  stderr_stream,
  journal,
};

struct ControlConfig {
  std::string socket = "/run/tunneld/control.sock";
  unsigned mode = 0660;
  std::string group = "tunneld";  // empty = leave the socket's group as created
  bool operator==(const ControlConfig&) const = default;
};

struct LogConfig {
  // One of spdlog's names: trace, debug, info, warn, error, critical, off
  // ("warning" is accepted and stored as "warn").
  std::string level = "info";
  LogTarget target = LogTarget::automatic;
  bool operator==(const LogConfig&) const = default;
};

// One [[session]] table, started at boot.
struct SessionConfig {
  // Complete: tokens read from their files, settings = [settings] overlaid
  // with the session's own settings table.
  tunnel::ProxyConfig proxy;
  std::string access_token_file;  // as resolved (relative to the config's directory)
  std::string client_token_file;  // empty = none given
  int line = 0;                   // line of the session's [[session]] header
};

// What AWS IoT expects from MQTT clients on port 443 (its HTTPS port).
inline constexpr std::string_view kAwsIotMqttAlpn = "x-amzn-mqtt-ca";

// [notify]: tunnels opened by the IoT service's MQTT notification
// (docs/notify.md). Paths are resolved; the key file was checked to be private.
struct NotifyConfig {
  bool enabled = false;  // true once a [notify] table is present, unless enabled = false
  std::string broker_host;
  std::uint16_t broker_port = 8883;
  std::string thing_name;
  std::string client_id;  // default: thing_name
  std::string cert_file;
  std::string key_file;
  std::string ca_file;
  std::uint32_t keepalive_s = 60;
  // The ALPN protocol the TLS handshake offers; empty = none. Resolved:
  // without an `alpn` key, kAwsIotMqttAlpn when the broker's port is 443.
  std::string alpn;
  // Where the notified sessions connect: empty = the region's endpoint.
  std::string tunnel_endpoint;
  std::string tunnel_cafile;
  std::string tunnel_capath;
  std::size_t max_sessions = 4;
  double rate_burst = 5;
  double rate_per_minute = 30;
  std::map<std::string, std::string> services;  // service id -> [host:]port
  int line = 0;                                 // of the [notify] header
  bool operator==(const NotifyConfig&) const = default;
};

struct Config {
  std::string path;  // the file this was read from
  ControlConfig control;
  std::string state_dir = "/var/lib/tunneld";
  LogConfig log;
  tunnel::Settings settings;  // defaults for every session
  std::vector<SessionConfig> sessions;
  NotifyConfig notify;
};

// A session name: 1 to 64 characters of kSessionNameRule, in a [[session]]
// table or from tunnelctl open --name. Session IDs (8 hex digits) are valid
// names too, so a client can check either before asking the daemon.
inline constexpr std::string_view kSessionNameRule =
    "1 to 64 characters of A-Z, a-z, 0-9, '-', '_' and '.'";
bool is_valid_session_name(std::string_view name);

// Reads and parses `path`. Throws ConfigError.
Config load_config(const std::string& path);

// Parses `text` as if read from `path` (used in messages and to resolve
// relative token file paths). Throws ConfigError.
Config parse_config(std::string_view text, const std::string& path);

// "auto", "stderr", "journal".
std::string_view to_string(LogTarget target);

}  // namespace tunneld
