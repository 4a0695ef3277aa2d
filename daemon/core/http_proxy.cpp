#include "http_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>

#include "printable.h"
#include "text.h"

namespace tunnel {
namespace {

constexpr std::string_view kHttpsProxyVars[] = {"HTTPS_PROXY", "https_proxy"};
constexpr std::string_view kNoProxyVars[] = {"NO_PROXY", "no_proxy"};
constexpr std::string_view kExpected = "expected http://[user:password@]host[:port]";
constexpr std::size_t kMaxReason = 100;

bool is_host_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' || c == '_';
}

std::string quoted(std::string_view s) { return "'" + std::string(s) + "'"; }

// An IPv4 or IPv6 literal as 4 or 16 bytes; nullopt for anything else.
struct IpAddress {
  int family = 0;
  std::array<unsigned char, 16> bytes{};
  std::size_t size() const { return family == AF_INET ? 4 : 16; }
  bool operator==(const IpAddress&) const = default;
};

std::optional<IpAddress> parse_ip(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string copy(text);
  IpAddress ip;
  if (inet_pton(AF_INET, copy.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET;
    return ip;
  }
  if (inet_pton(AF_INET6, copy.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET6;
    return ip;
  }
  return std::nullopt;
}

bool prefix_matches(const IpAddress& net, unsigned bits, const IpAddress& ip) {
  if (net.family != ip.family || bits > net.size() * 8) return false;
  const std::size_t whole = bits / 8;
  if (std::memcmp(net.bytes.data(), ip.bytes.data(), whole) != 0) return false;
  const unsigned rest = bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<unsigned char>(0xFF00U >> rest);
  return (net.bytes[whole] & mask) == (ip.bytes[whole] & mask);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    const int hi = hex_value(s[i + 1]);
    const int lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

std::string bracketed(std::string_view host) {
  if (host.find(':') != std::string_view::npos) return "[" + std::string(host) + "]";
  return std::string(host);
}

std::string base64(std::string_view data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(data.data()),
                                static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// host[:port] or [v6][:port], after the user info.
bool parse_host_part(std::string_view text, HttpProxy& out, std::string& error) {
  std::string_view port_text;
  bool has_port = false;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      error = "missing ']' after the IPv6 address of the proxy; " + std::string(kExpected);
      return false;
    }
    const auto inner = text.substr(1, close - 1);
    const auto ip = parse_ip(inner);
    if (!ip || ip->family != AF_INET6) {
      error = "the proxy host " + quoted(inner) + " is not an IPv6 address";
      return false;
    }
    out.host = std::string(inner);
    const auto rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        error = "unexpected characters after ']' in the proxy address; " + std::string(kExpected);
        return false;
      }
      has_port = true;
      port_text = rest.substr(1);
    }
  } else {
    const auto colon = text.find(':');
    const auto host = text.substr(0, colon);
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = text.substr(colon + 1);
    }
    if (host.empty()) {
      error = "the proxy URL has no host; " + std::string(kExpected);
      return false;
    }
    if (!std::all_of(host.begin(), host.end(), is_host_char)) {
      error = "the proxy host is not a host name or address (IPv6 goes in brackets); " +
              std::string(kExpected);
      return false;
    }
    out.host = std::string(host);
  }
  out.port = 80;
  if (has_port) {
    unsigned value = 0;
    const char* end = port_text.data() + port_text.size();
    const auto [ptr, ec] = std::from_chars(port_text.data(), end, value);
    if (port_text.empty() || ec != std::errc{} || ptr != end || value < 1 || value > 65535) {
      error = "invalid proxy port " + quoted(port_text.substr(0, 8)) +
              ": expected a number in 1..65535";
      return false;
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  return true;
}

}  // namespace

std::string HttpProxy::display() const { return bracketed(host) + ":" + std::to_string(port); }

std::optional<HttpProxy> parse_proxy_url(std::string_view url, std::string& error) {
  url = text::trim(url);
  if (url.empty()) {
    error = "the proxy URL is empty; " + std::string(kExpected);
    return std::nullopt;
  }
  if (std::any_of(url.begin(), url.end(), [](char c) {
        const auto u = static_cast<unsigned char>(c);
        return u <= 0x20 || u == 0x7f;
      })) {
    error = "the proxy URL contains spaces or control characters; " + std::string(kExpected);
    return std::nullopt;
  }
  std::string_view rest = url;
  if (const auto sep = url.find("://"); sep != std::string_view::npos) {
    const auto scheme = text::lower(url.substr(0, sep));
    // Only a short plain word is repeated: the text before "://" could be
    // anything if the password holds "://".
    const bool nameable =
        scheme.size() <= 10 && std::all_of(scheme.begin(), scheme.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) != 0;
        });
    if (scheme == "https") {
      error =
          "https:// proxies (TLS to the proxy itself) are not supported; give the proxy as "
          "http://host:port (the tunnel inside stays TLS end to end)";
      return std::nullopt;
    }
    if (scheme != "http") {
      error = "unsupported proxy scheme" + (nameable ? " " + quoted(scheme) : std::string()) +
              "; only HTTP CONNECT proxies are supported: " + std::string(kExpected);
      return std::nullopt;
    }
    rest = url.substr(sep + 3);
  }
  HttpProxy out;
  // The last '@' ends the user info, so that an unencoded '@' (or '/', '?',
  // '#') in a password still works.
  if (const auto at = rest.rfind('@'); at != std::string_view::npos) {
    const auto info = rest.substr(0, at);
    rest = rest.substr(at + 1);
    const auto colon = info.find(':');
    const auto user = percent_decode(info.substr(0, colon));
    const auto password = colon == std::string_view::npos
                              ? std::optional<std::string>(std::string())
                              : percent_decode(info.substr(colon + 1));
    if (!user || !password) {
      error =
          "the proxy URL's user name or password has a '%' not followed by two hex digits; "
          "write '%' as %25";
      return std::nullopt;
    }
    if (user->find(':') != std::string::npos) {
      error = "the proxy user name contains ':', which Basic authentication cannot carry";
      return std::nullopt;
    }
    out.user = *user;
    out.password = *password;
  }
  const auto end = rest.find_first_of("/?#");
  const auto host_part = rest.substr(0, end);
  if (end != std::string_view::npos && rest.substr(end) != "/") {
    error = "the proxy URL must not have a path, query or fragment; " + std::string(kExpected);
    return std::nullopt;
  }
  if (!parse_host_part(host_part, out, error)) return std::nullopt;
  return out;
}

std::string proxy_url_without_credentials(std::string_view url) {
  std::string error;
  const auto p = parse_proxy_url(url, error);
  return p ? "http://" + p->display() : std::string();
}

bool no_proxy_matches(std::string_view no_proxy, std::string_view host_in) {
  std::string host = text::lower(text::trim(host_in));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  while (!host.empty() && host.back() == '.') host.pop_back();
  if (host.empty()) return false;
  const auto host_ip = parse_ip(host);

  std::size_t pos = 0;
  while (pos < no_proxy.size()) {
    const auto end = no_proxy.find_first_of(", \t\r\n", pos);
    std::string entry = text::lower(
        no_proxy.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
    pos = end == std::string_view::npos ? no_proxy.size() : end + 1;
    if (entry.empty()) continue;
    if (entry == "*") return true;
    // Drop a port: "[v6]:port", "name:port"; a bare IPv6 address keeps its colons.
    if (entry.front() == '[') {
      const auto close = entry.find(']');
      if (close == std::string::npos) continue;
      const std::string after = entry.substr(close + 1);
      entry = entry.substr(1, close - 1) + (after.starts_with("/") ? after : std::string());
    } else if (std::count(entry.begin(), entry.end(), ':') == 1) {
      entry.erase(entry.find(':'));
    }
    // CIDR: "10.0.0.0/8", "fd00::/8".
    if (const auto slash = entry.find('/'); slash != std::string::npos) {
      const auto net = parse_ip(std::string_view(entry).substr(0, slash));
      const std::string_view bits_text = std::string_view(entry).substr(slash + 1);
      unsigned bits = 0;
      const auto [ptr, ec] =
          std::from_chars(bits_text.data(), bits_text.data() + bits_text.size(), bits);
      if (net && host_ip && ec == std::errc{} && ptr == bits_text.data() + bits_text.size() &&
          !bits_text.empty() && prefix_matches(*net, bits, *host_ip)) {
        return true;
      }
      continue;
    }
    if (const auto entry_ip = parse_ip(entry)) {
      if (host_ip && *host_ip == *entry_ip) return true;
      continue;
    }
    if (host_ip) continue;  // a name never matches an address
    while (!entry.empty() && entry.back() == '.') entry.pop_back();
    if (entry.starts_with("*.")) {
      entry.erase(0, 2);
    } else if (entry.starts_with(".")) {
      entry.erase(0, 1);
    }
    if (entry.empty()) continue;
    if (host == entry) return true;
    if (host.size() > entry.size() && host.ends_with(entry) &&
        host[host.size() - entry.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

std::string connect_request(const HttpProxy& p, std::string_view host, std::uint16_t port) {
  const std::string target = bracketed(host) + ":" + std::to_string(port);
  std::string out = "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n";
  if (p.has_credentials()) {
    out += "Proxy-Authorization: Basic " + base64(p.user + ":" + p.password) + "\r\n";
  }
  out += "\r\n";
  return out;
}

ConnectReplyParser::Result ConnectReplyParser::fail(std::string why) {
  error_ = std::move(why);
  state_ = Result::malformed;
  head_.clear();
  return state_;
}

bool ConnectReplyParser::parse_status_line(std::string_view line) {
  // HTTP/1.x SP 3DIGIT [SP reason]
  if (line.size() < 12 || !line.starts_with("HTTP/1.") || line[7] < '0' || line[7] > '9' ||
      line[8] != ' ') {
    return false;
  }
  const auto code = line.substr(9, 3);
  if (!std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return false;
  }
  status_ = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  if (status_ < 100) return false;
  auto reason = line.substr(12);
  if (!reason.empty()) {
    if (reason.front() != ' ') return false;
    reason.remove_prefix(1);
  }
  reason_ = printable_ascii(reason, kMaxReason);
  return true;
}

ConnectReplyParser::Result ConnectReplyParser::feed(std::string_view bytes, std::size_t& consumed) {
  consumed = 0;
  if (state_ != Result::need_more) return state_;
  static constexpr std::string_view kMagic = "HTTP/";
  // The header block is at most 8 KiB, so one byte at a time costs nothing
  // and finds its end exactly.
  for (const char c : bytes) {
    ++consumed;
    if (c == '\0') return fail("the proxy's reply contains a NUL byte; it is not HTTP");
    head_.push_back(c);
    if (head_.size() <= kMagic.size() && head_.back() != kMagic[head_.size() - 1]) {
      return fail("the proxy's reply is not HTTP (is it an HTTP proxy?)");
    }
    if (head_.size() > kMaxReplySize) {
      return fail("the proxy's reply headers exceed " + std::to_string(kMaxReplySize) + " bytes");
    }
    if (c != '\n') continue;
    const bool end = head_.ends_with("\n\n") || head_.ends_with("\n\r\n");
    if (!end) continue;
    // The whole header block is here: check it line by line.
    std::string_view rest = head_;
    bool first = true;
    while (!rest.empty()) {
      const auto nl = rest.find('\n');
      std::string_view line = rest.substr(0, nl);
      rest.remove_prefix(nl + 1);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (first) {
        if (!parse_status_line(line)) {
          return fail("the proxy's status line is not 'HTTP/1.x NNN reason'");
        }
        first = false;
        continue;
      }
      if (line.empty()) break;
      if (line.front() == ' ' || line.front() == '\t') continue;  // obsolete line folding
      const auto colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        return fail("the proxy's reply has a header line without a name");
      }
    }
    head_.clear();
    head_.shrink_to_fit();
    state_ = Result::done;
    return state_;
  }
  return state_;
}

bool is_direct(std::string_view value) { return text::lower(text::trim(value)) == "direct"; }

EnvLookup process_environment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* v = std::getenv(std::string(name).c_str());
    if (v == nullptr || *v == '\0') return std::nullopt;
    return std::string(v);
  };
}

bool resolve_https_proxy(std::string_view explicit_url, std::string_view explicit_origin,
                         const EnvLookup& env, std::string_view service_host, ProxyResolution& out,
                         std::string& error) {
  out = ProxyResolution{};
  explicit_url = text::trim(explicit_url);
  if (!explicit_url.empty()) {
    out.origin = std::string(explicit_origin);
    if (is_direct(explicit_url)) return true;
    auto p = parse_proxy_url(explicit_url, error);
    if (!p) {
      error.insert(0, ": ").insert(0, explicit_origin);
      return false;
    }
    out.proxy = std::move(*p);
    return true;
  }
  if (!env) return true;
  for (const auto name : kHttpsProxyVars) {
    const auto value = env(name);
    if (!value || text::trim(*value).empty()) continue;
    for (const auto no_name : kNoProxyVars) {
      if (const auto no = env(no_name); no && !text::trim(*no).empty()) {
        if (no_proxy_matches(*no, service_host)) {
          out.origin = std::string(no_name);
          return true;
        }
        break;  // NO_PROXY, when set, hides no_proxy
      }
    }
    auto p = parse_proxy_url(*value, error);
    if (!p) {
      error.insert(0, ": ").insert(0, name);
      return false;
    }
    out.origin = std::string(name);
    out.proxy = std::move(*p);
    return true;
  }
  return true;
}

}  // namespace tunnel
