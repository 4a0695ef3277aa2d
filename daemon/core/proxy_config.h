// Everything one tunnel session needs to run, whichever front end built it
// (localproxy's command line, tunnelctl over the control socket, tunneld.toml).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "endpoint.h"
#include "http_proxy.h"
#include "session_machine.h"
#include "settings.h"

namespace tunnel {

// One service of a multi-service (V2/V3) tunnel: its id as the tunnel names
// it, and where the source listens (port 0 = any free one) or what the
// destination connects to.
struct ServiceMapping {
  std::string id;
  HostPort local;
  bool operator==(const ServiceMapping&) const = default;
};

struct ProxyConfig {
  Mode mode = Mode::source;
  ServiceEndpoint endpoint;
  std::string access_token;  // secret: never logged, never in argv of children
  std::string client_token;  // secret; empty = generate once at start
  // Source: where to listen (host = bind address). Destination: what to connect to.
  HostPort local;
  // Destination: local address to bind outgoing connections to (-b); empty = none.
  std::string bind_address;
  std::string capath;      // -c: extra hashed CA directory
  std::string cafile;      // --cafile: extra CA bundle
  bool verify_tls = true;  // -k turns it off
  Settings settings;
  std::string name;  // shown in logs and status; no secret
  // Source: bind the listener at start, before the service is reached (the
  // daemon reports the port at once and fails fast when it is taken). The
  // reference localproxy connects first, then listens (the default).
  bool listen_at_start = false;
  // The HTTP CONNECT proxy to reach the service through, or nullopt to
  // connect directly. Resolved by the front end with resolve_https_proxy()
  // from settings.https_proxy (flag, settings key, tunneld.toml, tunnelctl)
  // and the environment (HTTPS_PROXY, https_proxy, NO_PROXY, no_proxy). Holds
  // credentials: only https_proxy->display() may be shown or logged.
  std::optional<HttpProxy> https_proxy;
  std::string https_proxy_origin;  // where it came from, e.g. "HTTPS_PROXY"; no secret
  // Services by id (V2/V3). Empty: one unnamed service at `local`, whatever
  // single service the tunnel names (the V1 way).
  std::vector<ServiceMapping> services;
  // 0: offer V3, V2 and V1 and speak what the service picks (the peer's
  // version is then detected from its records). 1..3: offer only this one
  // (-y V1|V2|V3); 3 also tells a source that the destination speaks V3.
  int protocol_version = 0;

  // The services this session carries: `services`, or {"", local}.
  std::vector<ServiceMapping> effective_services() const;
  // Sec-WebSocket-Protocol values to offer, preferred first.
  std::vector<std::string> offered_subprotocols() const;
};

// "aws.iot.securetunneling-2.0" -> 2; 0 when not one of the three.
int subprotocol_version(std::string_view subprotocol);
std::string subprotocol_name(int version);

// A service id as a session is configured with it (-s/-d NAME=..., a
// [[session]] services table, a tunnelctl open request): 1 to 128 printable
// ASCII characters other than '=' and ','. It travels in every record's
// serviceId (a protobuf string: UTF-8) and in log lines, so control
// characters and non-ASCII bytes are refused; the service's own names
// (AWS: [a-zA-Z0-9:_-]) all fit.
inline constexpr std::string_view kServiceIdRule =
    "1 to 128 printable ASCII characters, without spaces, '=' or ','";
bool is_valid_service_id(std::string_view id);
// Why `id` is refused, for a usage error: "'a b' is not a service name
// (RULE)"; an id that is not one short printable line is not repeated ("a
// name is not ...").
std::string service_id_error(std::string_view id);

// A client token: 32 hex chars + dashes (UUIDv4 shape), from the OS CSPRNG.
std::string generate_client_token();
// 32..128 chars of [A-Za-z0-9-] (docs/protocol.md section 2).
bool is_valid_client_token(std::string_view token);

}  // namespace tunnel
