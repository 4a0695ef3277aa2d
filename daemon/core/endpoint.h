// Where the tunneling service is and how to reach it (docs/protocol.md section 2).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel {

struct ServiceEndpoint {
  std::string host;  // IPv6 literals without brackets ("::1")
  std::uint16_t port = 443;
  bool tls = true;  // false only for ws:// on loopback
  bool operator==(const ServiceEndpoint&) const = default;
};

// data.tunneling.iot.<region>.amazonaws.com (".com.cn" for cn-* regions), port 443.
// Empty optional (and `error` set) for a region that is not [a-z0-9-]+.
std::optional<ServiceEndpoint> endpoint_for_region(std::string_view region, std::string& error);

// Accepts "host", "host:port", "[v6]:port", "wss://host[:port][/]" and
// "ws://host[:port][/]"; ws:// only when host is loopback (127.0.0.0/8, ::1,
// localhost). Empty optional and `error` set otherwise. Default port 443, or
// 80 for ws://. A path other than "/", a query or user info is refused.
std::optional<ServiceEndpoint> parse_endpoint(std::string_view text, std::string& error);

// host:port split for local addresses ("22", "localhost:22", "[::1]:22",
// "::1" is not accepted: ambiguous). `default_host` fills a bare port.
// Port 0 is accepted (an ephemeral listen port); callers that need a real
// port check for it. IPv6 hosts come back without brackets.
struct HostPort {
  std::string host;
  std::uint16_t port = 0;
  bool operator==(const HostPort&) const = default;
};
std::optional<HostPort> parse_host_port(std::string_view text, std::string_view default_host,
                                        std::string& error);

bool is_loopback_host(std::string_view host);

// The request path and query of the handshake for a mode ("source"/"destination").
std::string handshake_path(std::string_view mode_name);

}  // namespace tunnel
