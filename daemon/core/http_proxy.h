// Reaching the tunneling service through an HTTP CONNECT proxy (RFC 9110
// section 9.3.6): proxy URLs, NO_PROXY matching, the CONNECT request and the
// proxy's reply. Pure: no sockets; the service link writes connect_request()
// and feeds what comes back to a ConnectReplyParser before it starts TLS.
//
// Secrets: HttpProxy::user and ::password are credentials. They appear only
// in the Proxy-Authorization header built by connect_request(); display(),
// every error text and every log line name the proxy as "host:port".
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel {

struct HttpProxy {
  std::string host;  // name or address; IPv6 literals without brackets
  std::uint16_t port = 0;
  std::string user, password;  // percent-decoded; secret; both empty = no auth
  bool has_credentials() const { return !user.empty() || !password.empty(); }
  // "host:port" ("[v6]:port"), never the credentials.
  std::string display() const;
  bool operator==(const HttpProxy&) const = default;
};

// Parses "http://[user[:password]@]host[:port][/]". The scheme may be left out
// ("host:port" means http). The port defaults to 80, the http scheme's port
// (as curl's and Go's readers of HTTPS_PROXY do for an http:// URL). user and
// password are percent-decoded (%40 is '@'); a literal '@' in the password is
// tolerated because the last '@' ends the user info. https:// and socks
// proxies, paths, queries and fragments are refused. On error returns nullopt
// and sets `error` to one line that never contains any part of the user info
// (and never the whole URL).
std::optional<HttpProxy> parse_proxy_url(std::string_view url, std::string& error);

// The URL again without credentials, "http://host:port", e.g. for an exported
// settings file. Empty for an empty or unparsable URL.
std::string proxy_url_without_credentials(std::string_view url);

// NO_PROXY semantics: entries separated by commas and/or white space; each is
// a host name suffix (".example.com" and "example.com" both match
// example.com and sub.example.com, "*.example.com" likewise), an IP address
// (matches that address only; IPv6 with or without brackets), or "*" (matches
// every host). An optional ":port" on an entry is ignored, as is a trailing
// dot. Case-insensitive. `host` is the service host as connected to (IPv6
// without brackets).
bool no_proxy_matches(std::string_view no_proxy, std::string_view host);

// The CONNECT request for host:port through `p`, ending in the blank line:
//   CONNECT host:port HTTP/1.1, Host: host:port, and Proxy-Authorization:
//   Basic base64(user:password) when p has credentials.
// Secret whenever p has credentials: never log it.
std::string connect_request(const HttpProxy& p, std::string_view host, std::uint16_t port);

// Reads the proxy's reply to CONNECT up to and including the blank line that
// ends its header block. Bounded: a header block over kMaxReplySize bytes is
// malformed. Accepts CRLF and bare LF line ends.
class ConnectReplyParser {
 public:
  static constexpr std::size_t kMaxReplySize = 8192;
  enum class Result { need_more, done, malformed };

  // Consumes bytes up to the end of the header block at most. `consumed`
  // says how many bytes of `bytes` belonged to the reply; the rest (after
  // done) is the start of the tunnelled stream and must be kept. Once done
  // or malformed, further calls return the same result and consume nothing.
  Result feed(std::string_view bytes, std::size_t& consumed);

  // After done: the status code and reason phrase, e.g. 407 and
  // "Proxy Authentication Required" (the reason is cut to 100 printable
  // characters, as it comes from the network).
  int status() const { return status_; }
  const std::string& reason() const { return reason_; }
  // After malformed: what was wrong, one line, e.g. "not an HTTP reply".
  const std::string& error() const { return error_; }
  // done with a 2xx status: the tunnel is open.
  bool success() const { return state_ == Result::done && status_ >= 200 && status_ < 300; }

 private:
  Result fail(std::string why);
  bool parse_status_line(std::string_view line);

  Result state_ = Result::need_more;
  std::string head_;  // bytes of the header block seen so far
  int status_ = 0;
  std::string reason_;
  std::string error_;
};

// Whether a proxy's non-2xx answer to CONNECT is final: 407 (credentials
// missing or refused), 401 (what some proxies, tinyproxy among them, answer
// instead) and 403 (refused by the proxy's policy or for these credentials).
// Retrying cannot change those; every other failure is retried, because
// proxies restart and shed load.
constexpr bool proxy_refusal_is_final(int status) {
  return status == 401 || status == 403 || status == 407;
}

// Looks up an environment variable; nullopt when unset or empty.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;
// This process's environment (getenv).
EnvLookup process_environment();

// "direct", in any case and with surrounding white space: the explicit
// choice of no proxy.
bool is_direct(std::string_view value);

// Which proxy a session uses to reach `service_host`:
//   1. `explicit_url` (a flag, a settings key, a tunneld.toml or tunnelctl
//      value) when non-empty: "direct" (any case) means no proxy (environment ignored),
//      anything else must parse and is used whatever NO_PROXY says;
//   2. else HTTPS_PROXY, then https_proxy from `env`, unless NO_PROXY (then
//      no_proxy) matches service_host.
// `origin` is set to where the answer came from ("HTTPS_PROXY", "NO_PROXY",
// `explicit_origin`, or "" when no proxy is configured anywhere), for a log
// line. On a malformed URL returns false and sets `error`, naming the origin
// but never the URL. On success `out` is the proxy, or nullopt for direct.
struct ProxyResolution {
  std::optional<HttpProxy> proxy;
  std::string origin;
};
bool resolve_https_proxy(std::string_view explicit_url, std::string_view explicit_origin,
                         const EnvLookup& env, std::string_view service_host, ProxyResolution& out,
                         std::string& error);

}  // namespace tunnel
