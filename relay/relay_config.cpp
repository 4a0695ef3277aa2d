#include "relay_config.h"
#include "text.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace relay {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t pos = s.find(sep, start);
    out.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) break;
    start = pos + 1;
  }
  return out;
}

bool is_ipv4(const std::string& host) {
  in_addr a{};
  return inet_pton(AF_INET, host.c_str(), &a) == 1;
}

bool is_ipv6(const std::string& host) {
  in6_addr a{};
  return inet_pton(AF_INET6, host.c_str(), &a) == 1;
}

}  // namespace

bool HostPort::is_loopback() const {
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) return a6.s6_addr[12] == 127;
  }
  return false;
}

std::string HostPort::to_string() const {
  const std::string p = std::to_string(port);
  return host.find(':') != std::string::npos ? "[" + host + "]:" + p : host + ":" + p;
}

std::optional<HostPort> parse_host_port(std::string_view text, std::string& error) {
  HostPort hp;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      error = "expected [IPV6]:PORT";
      return std::nullopt;
    }
    hp.host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || colon == 0) {
      error = "expected HOST:PORT";
      return std::nullopt;
    }
    hp.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  if (hp.host == "localhost") hp.host = "127.0.0.1";
  if (!is_ipv4(hp.host) && !is_ipv6(hp.host)) {
    error = "host must be a numeric IPv4/IPv6 address or localhost";
    return std::nullopt;
  }
  unsigned value = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
  if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
      value > 65535) {
    error = "port must be a number in 0..65535";
    return std::nullopt;
  }
  hp.port = static_cast<std::uint16_t>(value);
  return hp;
}

std::optional<std::string> load_admin_token(const std::string& path, std::string& error) {
  // O_NOFOLLOW and fstat on the opened file: what is checked is what is read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) {
    error = "cannot open it: " + std::string(std::strerror(errno));
    return std::nullopt;
  }
  struct stat st {};
  std::string token;
  if (::fstat(fd, &st) != 0) {
    error = "cannot stat it: " + std::string(std::strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    error = "not a regular file";
  } else if (st.st_uid != ::geteuid()) {
    error = "owned by uid " + std::to_string(st.st_uid) + ", not by the relay's user (uid " +
            std::to_string(::geteuid()) + "); chown it";
  } else if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    error = std::string("mode ") + mode + " lets other users read it; chmod 600 " + path;
  } else if (st.st_size > 4097) {
    error = "too large for a token (at most 4096 characters)";
  } else {
    token.resize(static_cast<std::size_t>(st.st_size));
    const ssize_t n = ::read(fd, token.data(), token.size());
    if (n != static_cast<ssize_t>(token.size())) error = "cannot read it";
  }
  ::close(fd);
  if (!error.empty()) return std::nullopt;
  if (!token.empty() && token.back() == '\n') token.pop_back();
  if (!token.empty() && token.back() == '\r') token.pop_back();
  if (token.size() < 16 || token.size() > 4096) {
    error = "a token must be 16 to 4096 characters (e.g. openssl rand -hex 32 > FILE)";
    return std::nullopt;
  }
  if (!std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    error = "a token must be printable ASCII without spaces";
    return std::nullopt;
  }
  return token;
}

bool valid_admin_host_name(std::string_view name) {
  if (name.empty() || name.size() > 253 || name.front() == '.' || name.front() == '-') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
  });
}

bool valid_service_id(std::string_view id) {
  if (id.empty() || id.size() > 127) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

bool valid_service_list(const std::vector<std::string>& services, std::string& error) {
  if (services.size() > 3) {
    error = "at most 3 services per tunnel";
    return false;
  }
  for (std::size_t i = 0; i < services.size(); ++i) {
    if (!valid_service_id(services[i])) {
      error = "invalid service id (1..127 of A-Z a-z 0-9 _ . -)";
      return false;
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (services[i] == services[j]) {
        error = "duplicate service id '" + services[i] + "'";
        return false;
      }
    }
  }
  return true;
}

std::optional<TunnelSpec> parse_tunnel_spec(std::string_view text, std::string& error) {
  const auto parts = split(text, ':');
  if (parts.size() < 2 || parts.size() > 3) {
    error = "expected SRC_TOKEN:DST_TOKEN[:svc1,svc2]";
    return std::nullopt;
  }
  TunnelSpec spec{std::string(parts[0]), std::string(parts[1]), {}};
  if (spec.source_token.empty() || spec.destination_token.empty()) {
    error = "access tokens must not be empty";
    return std::nullopt;
  }
  if (spec.source_token == spec.destination_token) {
    error = "source and destination tokens must differ";
    return std::nullopt;
  }
  if (parts.size() == 3) {
    for (std::string_view svc : split(parts[2], ','))
      spec.services.emplace_back(tunnel::text::trim_ows(svc));
    if (!valid_service_list(spec.services, error)) return std::nullopt;
  }
  return spec;
}

int subprotocol_version(std::string_view name) {
  if (name == "aws.iot.securetunneling-1.0") return 1;
  if (name == "aws.iot.securetunneling-2.0") return 2;
  if (name == "aws.iot.securetunneling-3.0") return 3;
  return 0;
}

std::vector<std::string> default_subprotocols() {
  return {"aws.iot.securetunneling-1.0", "aws.iot.securetunneling-2.0",
          "aws.iot.securetunneling-3.0"};
}

std::optional<std::vector<std::string>> parse_subprotocols(std::string_view text,
                                                           std::string& error) {
  std::vector<std::string> out;
  for (std::string_view item : split(text, ',')) {
    item = tunnel::text::trim_ows(item);
    std::string name(item);
    if (subprotocol_version(name) == 0) name.insert(0, kSubprotocolPrefix);
    if (subprotocol_version(name) == 0) {
      error = "unknown subprotocol '" + std::string(item) + "' (use 1.0, 2.0, 3.0)";
      return std::nullopt;
    }
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(std::move(name));
  }
  return out;
}

bool RelayConfig::validate(std::string& error) const {
  if (tls_cert.empty() != tls_key.empty()) {
    error = "--tls-cert and --tls-key go together";
    return false;
  }
  if (!tls() && !listen.is_loopback()) {
    error = "plain ws (no --tls-cert/--tls-key) is only allowed on a loopback address";
    return false;
  }
  if (admin_tls && !admin) {
    error = "--admin-tls needs --admin";
    return false;
  }
  if (admin_tls && !tls()) {
    error = "--admin-tls serves the admin API with --tls-cert and --tls-key: give both";
    return false;
  }
  if (!admin_token.empty() && !admin) {
    error = "--admin-token-file needs --admin";
    return false;
  }
  if (!admin_hosts.empty() && !admin) {
    error = "--admin-host needs --admin";
    return false;
  }
  for (const std::string& name : admin_hosts) {
    if (!valid_admin_host_name(name)) {
      error = "--admin-host takes a DNS name (letters, digits, '-' and '.')";
      return false;
    }
  }
  if (admin && !admin->is_loopback() && (admin_token.empty() || !admin_tls)) {
    error =
        "--admin on an address other than loopback needs --admin-token-file and --admin-tls "
        "(the admin API hands out access tokens)";
    return false;
  }
  if (subprotocols.empty()) {
    error = "--subprotocols must name at least one subprotocol";
    return false;
  }
  if (registry_limits.max_open < 1) {
    error = "--max-open-tunnels must be at least 1";
    return false;
  }
  if (tunnels.size() > registry_limits.max_open) {
    error = "--max-open-tunnels " + std::to_string(registry_limits.max_open) +
            " leaves no room for the " + std::to_string(tunnels.size()) + " --tunnel given";
    return false;
  }
  if (notify_broker) {
    if (!notify_broker->is_loopback()) {
      error = "--notify-broker must be a loopback address (the relay is a test tool)";
      return false;
    }
    if (notify_cafile.empty() || notify_cert.empty() || notify_key.empty()) {
      error = "--notify-broker needs --notify-cafile, --notify-cert and --notify-key";
      return false;
    }
    if (!admin) {
      error = "--notify-broker needs --admin (notifications are sent when it opens a tunnel)";
      return false;
    }
  }
  return true;
}

}  // namespace relay
