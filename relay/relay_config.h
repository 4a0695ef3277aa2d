// Configuration of tunnel-relay, and the parsers for its command-line values.
// Pure: no sockets, no loop; the CLI in main.cpp fills a RelayConfig with these.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tunnel_registry.h"

namespace relay {

inline constexpr std::string_view kSubprotocolPrefix = "aws.iot.securetunneling-";

// A numeric listen address. `host` is an IPv4 or IPv6 literal ("localhost" is
// mapped to 127.0.0.1 by the parser); port 0 asks the kernel for a free port.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;

  bool is_loopback() const;
  // "127.0.0.1:443" or "[::1]:443": the form printed in the ready line.
  std::string to_string() const;
};

// Parses "HOST:PORT", "[V6]:PORT". Returns nullopt and sets `error` when invalid.
std::optional<HostPort> parse_host_port(std::string_view text, std::string& error);

// --tunnel SRC_TOKEN:DST_TOKEN[:svc1,svc2]
struct TunnelSpec {
  std::string source_token;
  std::string destination_token;
  std::vector<std::string> services;
};
std::optional<TunnelSpec> parse_tunnel_spec(std::string_view text, std::string& error);

// A service id as the open-tunnel API accepts it: 1..127 of [A-Za-z0-9_.-].
bool valid_service_id(std::string_view id);
// Up to 3 distinct valid service ids (docs/protocol.md section 5).
bool valid_service_list(const std::vector<std::string>& services, std::string& error);

// --subprotocols "aws.iot.securetunneling-2.0,3.0": full names or bare versions
// (1.0, 2.0, 3.0). Returns full names, in the given order, without duplicates.
std::optional<std::vector<std::string>> parse_subprotocols(std::string_view text,
                                                           std::string& error);
std::vector<std::string> default_subprotocols();
// 1, 2 or 3 for a known subprotocol name, 0 otherwise.
int subprotocol_version(std::string_view name);

// --admin-token-file: the bearer token of the admin API. The file must be a
// regular file owned by the effective user, without any permission for group
// or others, holding 16..4096 printable ASCII characters without spaces (one
// trailing newline is ignored). Returns nullopt and sets `error` (which
// never quotes the file's content) otherwise.
std::optional<std::string> load_admin_token(const std::string& path, std::string& error);

// --admin-host NAME: a DNS name (letters, digits, '-', '.'; at most 253).
bool valid_admin_host_name(std::string_view name);

struct RelayConfig {
  HostPort listen;
  std::optional<HostPort> admin;
  // Who may use the admin API (docs/relay.md): extra names accepted in Host,
  // TLS with --tls-cert/--tls-key, and the bearer token (a secret).
  std::vector<std::string> admin_hosts;
  bool admin_tls = false;
  std::string admin_token;
  std::string tls_cert;  // both empty: plain ws (loopback only)
  std::string tls_key;
  std::vector<TunnelSpec> tunnels;
  std::vector<std::string> subprotocols = default_subprotocols();

  // Flow control: records waiting for one end are bounded. Reading from the
  // sending end pauses at the high-water mark and resumes at half of it.
  std::size_t queue_limit_connected = std::size_t{512} * 1024;  // the receiving end is connected
  std::size_t queue_limit_absent = std::size_t{256} * 1024;     // it is not connected (yet)
  std::size_t max_request_bytes = 4096;                         // handshake request size cap (431)
  std::chrono::seconds default_lifetime{12 * 3600};  // POST /tunnels without lifetimeSeconds
  std::chrono::seconds max_lifetime{12 * 3600};
  // --max-open-tunnels, --keep-closed-tunnels: what the relay holds at most.
  RegistryLimits registry_limits;

  // --notify-broker: publish tunnel notifications for POST /tunnels with a
  // thingName (docs/notify.md). Loopback only, TLS with a client certificate.
  std::optional<HostPort> notify_broker;
  std::string notify_cafile;
  std::string notify_cert;
  std::string notify_key;
  std::string notify_region = "us-east-1";

  bool tls() const { return !tls_cert.empty(); }
  // Cross-field checks (TLS pair, plain ws only on loopback, an admin API
  // off loopback only with a token and TLS).
  bool validate(std::string& error) const;
};

}  // namespace relay
