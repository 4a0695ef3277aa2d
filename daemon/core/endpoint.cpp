#include "endpoint.h"
#include "text.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

namespace tunnel {
namespace {

bool is_region_char(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

// Host names and IPv4 literals: letters, digits, '-', '.', '_' (the last shows
// up in internal DNS names; TLS verification is the real check).
bool is_host_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_';
}

bool is_ipv6_literal(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) {
    return false;
  }
  std::string copy(text);
  in6_addr addr{};
  return inet_pton(AF_INET6, copy.c_str(), &addr) == 1;
}

std::string quoted(std::string_view text) { return "'" + std::string(text) + "'"; }

// Parses a decimal port. `min_port` is 1 for remote endpoints, 0 for local
// listen addresses (0 = ephemeral).
std::optional<std::uint16_t> parse_port(std::string_view text, unsigned min_port,
                                        std::string& error) {
  unsigned value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc{} || ptr != end || value < min_port || value > 65535) {
    error = "invalid port " + quoted(text) + ": expected a number in " + std::to_string(min_port) +
            "..65535";
    return std::nullopt;
  }
  return static_cast<std::uint16_t>(value);
}

struct SplitHost {
  std::string host;
  std::string_view port;  // empty = none given
};

// Splits "host", "host:port", "[v6]" and "[v6]:port". A bare IPv6 address is
// refused: "::1:22" could be an address or an address and a port.
std::optional<SplitHost> split_host_port(std::string_view text, std::string& error) {
  SplitHost out;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      error = "missing ']' after IPv6 address in " + quoted(text);
      return std::nullopt;
    }
    const auto inner = text.substr(1, close - 1);
    if (!is_ipv6_literal(inner)) {
      error = quoted(inner) + " is not an IPv6 address";
      return std::nullopt;
    }
    out.host = std::string(inner);
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        error = "unexpected " + quoted(rest) + " after ']' in " + quoted(text);
        return std::nullopt;
      }
      out.port = rest.substr(1);
      if (out.port.empty()) {
        error = "missing port after ':' in " + quoted(text);
        return std::nullopt;
      }
    }
    return out;
  }
  const auto colon = text.find(':');
  if (colon != std::string_view::npos && text.find(':', colon + 1) != std::string_view::npos) {
    error = "IPv6 address " + quoted(text) + " must be written in brackets, e.g. [::1]:443";
    return std::nullopt;
  }
  const auto host = text.substr(0, colon);
  if (host.empty()) {
    error = "empty host in " + quoted(text);
    return std::nullopt;
  }
  if (!std::all_of(host.begin(), host.end(), is_host_char)) {
    error = "invalid host name " + quoted(host);
    return std::nullopt;
  }
  out.host = std::string(host);
  if (colon != std::string_view::npos) {
    out.port = text.substr(colon + 1);
    if (out.port.empty()) {
      error = "missing port after ':' in " + quoted(text);
      return std::nullopt;
    }
  }
  return out;
}

}  // namespace

std::optional<ServiceEndpoint> endpoint_for_region(std::string_view region, std::string& error) {
  const bool well_formed = !region.empty() && region.size() <= 64 &&
                           std::all_of(region.begin(), region.end(), is_region_char) &&
                           region.front() != '-' && region.back() != '-';
  if (!well_formed) {
    error = "invalid region " + quoted(region) + ": expected a name like us-east-1";
    return std::nullopt;
  }
  ServiceEndpoint ep;
  ep.host = "data.tunneling.iot." + std::string(region) + ".amazonaws.com";
  if (region.starts_with("cn-")) {
    ep.host += ".cn";
  }
  return ep;
}

std::optional<ServiceEndpoint> parse_endpoint(std::string_view text, std::string& error) {
  ServiceEndpoint ep;
  std::string_view rest = text;
  if (const auto scheme_end = rest.find("://"); scheme_end != std::string_view::npos) {
    const auto scheme = rest.substr(0, scheme_end);
    if (text::iequals(scheme, "wss")) {
      ep.tls = true;
    } else if (text::iequals(scheme, "ws")) {
      ep.tls = false;
      ep.port = 80;
    } else {
      error = "unsupported scheme " + quoted(scheme) +
              " in endpoint: use wss:// (or ws:// for a relay on this machine)";
      return std::nullopt;
    }
    rest = rest.substr(scheme_end + 3);
  }
  if (rest.empty()) {
    error = "empty endpoint: expected host[:port] or wss://host[:port]";
    return std::nullopt;
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {
    error = "endpoint " + quoted(text) +
            " has a query or fragment: give only host[:port]; the handshake path and query are "
            "added automatically";
    return std::nullopt;
  }
  if (rest.find('@') != std::string_view::npos) {
    error = "endpoint " + quoted(text) + " has user information: give only host[:port]";
    return std::nullopt;
  }
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    if (rest.substr(slash) != "/") {
      error = "endpoint " + quoted(text) + " has the path " + quoted(rest.substr(slash)) +
              ": give only host[:port]; the handshake path (/tunnel) is added automatically";
      return std::nullopt;
    }
    rest = rest.substr(0, slash);
  }
  auto split = split_host_port(rest, error);
  if (!split) {
    return std::nullopt;
  }
  if (!split->port.empty()) {
    const auto port = parse_port(split->port, 1, error);
    if (!port) {
      return std::nullopt;
    }
    ep.port = *port;
  }
  ep.host = std::move(split->host);
  if (!ep.tls && !is_loopback_host(ep.host)) {
    error =
        "ws:// (no TLS) is only allowed for a relay on this machine (127.0.0.1, ::1, "
        "localhost); use wss:// for " +
        quoted(ep.host);
    return std::nullopt;
  }
  return ep;
}

std::optional<HostPort> parse_host_port(std::string_view text, std::string_view default_host,
                                        std::string& error) {
  if (text.empty()) {
    error = "empty address: expected PORT, HOST:PORT or [IPv6]:PORT";
    return std::nullopt;
  }
  HostPort out;
  if (std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (default_host.empty()) {
      error = "no host given for port " + quoted(text) + ": expected HOST:PORT";
      return std::nullopt;
    }
    const auto port = parse_port(text, 0, error);
    if (!port) {
      return std::nullopt;
    }
    out.host = std::string(default_host);
    out.port = *port;
    return out;
  }
  auto split = split_host_port(text, error);
  if (!split) {
    return std::nullopt;
  }
  if (split->port.empty()) {
    error = "missing port in " + quoted(text) + ": expected PORT, HOST:PORT or [IPv6]:PORT";
    return std::nullopt;
  }
  const auto port = parse_port(split->port, 0, error);
  if (!port) {
    return std::nullopt;
  }
  out.host = std::move(split->host);
  out.port = *port;
  return out;
}

bool is_loopback_host(std::string_view host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (text::iequals(host, "localhost") || text::iequals(host, "localhost.")) {
    return true;
  }
  if (host.empty() || host.size() >= INET6_ADDRSTRLEN) {
    return false;
  }
  const std::string copy(host);
  in_addr v4{};
  if (inet_pton(AF_INET, copy.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6{};
  if (inet_pton(AF_INET6, copy.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) {
      return true;
    }
    // ::ffff:127.x.y.z is an IPv4 loopback address seen through an IPv6 socket.
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;
}

std::string handshake_path(std::string_view mode_name) {
  return "/tunnel?local-proxy-mode=" + std::string(mode_name);
}

}  // namespace tunnel
