// libFuzzer target for the HTTP heads tunneld reads before any WebSocket
// byte: the service's upgrade response (daemon/core/ws_handshake.h) and an
// HTTP CONNECT proxy's reply (daemon/core/http_proxy.h), plus the proxy URL
// and NO_PROXY readers that take environment text. The first byte picks the
// parser, the second the feed size; the rest is the text.
//  - both head parsers: bounded (never consume or keep more than their cap),
//    the same result and the same split point whatever the feed size, and
//    once done or malformed they consume nothing more;
//  - check_upgrade_response admits only a 101 with the right
//    Sec-WebSocket-Accept and an offered subprotocol;
//  - a CONNECT reply's reason is at most 100 printable characters, success
//    means a 2xx;
//  - parse_proxy_url never puts the user info into its error (unless it is
//    text the error holds anyway) or display();
//    what it accepts prints without credentials and parses again to the same
//    host and port.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http_proxy.h"
#include "ws_handshake.h"

namespace {

constexpr std::size_t kMaxHead = 1024;
const std::string kKey = "dGhlIHNhbXBsZSBub25jZQ==";  // RFC 6455's example key

struct HeadRun {
  int result = 0;
  std::size_t used = 0;
  int status = 0;
  bool operator==(const HeadRun&) const = default;
};

HeadRun run_upgrade(std::string_view text, std::size_t step) {
  tunnel::ws::HttpResponseHead head(kMaxHead);
  HeadRun out;
  for (;;) {
    std::size_t used = 0;
    const auto piece = text.substr(std::min(out.used, text.size()), step);
    const auto r = head.feed(piece, used);
    FUZZ_CHECK(used <= piece.size());
    out.used += used;
    FUZZ_CHECK(out.used <= kMaxHead);
    if (r != tunnel::ws::HttpResponseHead::Result::need_more) {
      std::size_t again = 7;
      FUZZ_CHECK(head.feed("x\r\n\r\n", again) == r && again == 0);
      out.result = static_cast<int>(r);
      if (r == tunnel::ws::HttpResponseHead::Result::done) {
        out.status = head.status();
        FUZZ_CHECK(out.status >= 100 && out.status <= 999);
        FUZZ_CHECK(text.substr(0, out.used).ends_with("\r\n\r\n"));
        tunnel::ws::UpgradeRequest req;
        req.key = kKey;
        req.subprotocols = {"aws.iot.securetunneling-3.0", "aws.iot.securetunneling-1.0"};
        const auto up = tunnel::ws::check_upgrade_response(head, req);
        if (up.ok) {
          FUZZ_CHECK(head.status() == 101);
          FUZZ_CHECK(head.header("sec-websocket-accept") == tunnel::ws::websocket_accept_for(kKey));
          FUZZ_CHECK(std::find(req.subprotocols.begin(), req.subprotocols.end(), up.subprotocol) !=
                     req.subprotocols.end());
        } else {
          FUZZ_CHECK(!up.error.empty());
        }
      } else {
        FUZZ_CHECK(!head.error().empty());
      }
      return out;
    }
    FUZZ_CHECK(used == piece.size());
    if (out.used >= text.size()) return out;
  }
}

HeadRun run_connect(std::string_view text, std::size_t step) {
  tunnel::ConnectReplyParser p;
  HeadRun out;
  for (;;) {
    std::size_t used = 0;
    const auto piece = text.substr(std::min(out.used, text.size()), step);
    const auto r = p.feed(piece, used);
    FUZZ_CHECK(used <= piece.size());
    out.used += used;
    FUZZ_CHECK(out.used <= tunnel::ConnectReplyParser::kMaxReplySize);
    if (r != tunnel::ConnectReplyParser::Result::need_more) {
      std::size_t again = 7;
      FUZZ_CHECK(p.feed("HTTP/1.1 200 OK\r\n\r\n", again) == r && again == 0);
      out.result = static_cast<int>(r);
      if (r == tunnel::ConnectReplyParser::Result::done) {
        out.status = p.status();
        FUZZ_CHECK(p.reason().size() <= 100);
        for (const char c : p.reason()) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
        FUZZ_CHECK(p.success() == (p.status() >= 200 && p.status() < 300));
      } else {
        FUZZ_CHECK(!p.error().empty() && !p.success());
      }
      return out;
    }
    FUZZ_CHECK(used == piece.size());
    if (out.used >= text.size()) return out;
  }
}

// The user info of a proxy URL ("user:password" before the last '@').
std::string_view userinfo_of(std::string_view text) {
  const std::size_t at = text.rfind('@');
  if (at == std::string_view::npos) return {};
  const std::size_t scheme = text.find("://");
  const std::size_t from = scheme == std::string_view::npos || scheme > at ? 0 : scheme + 3;
  return text.substr(from, at - from);
}

void proxy_url(std::string_view text) {
  std::string error;
  const auto p = tunnel::parse_proxy_url(text, error);
  const std::string_view userinfo = userinfo_of(text);
  if (!p) {
    FUZZ_CHECK(!error.empty());
    // The error may hold the user info only as fixed text: the same URL with
    // other user info (same shape) gives an error that holds it too.
    if (userinfo.size() >= 6 && error.find(userinfo) != std::string::npos) {
      // Other letters and digits, the same punctuation, so the same error.
      std::string other(text);
      const auto from = static_cast<std::size_t>(userinfo.data() - text.data());
      for (std::size_t i = from; i < from + userinfo.size(); ++i) {
        char& c = other[i];
        if (c >= 'a' && c <= 'z') c = static_cast<char>('a' + (c - 'a' + 1) % 26);
        if (c >= 'A' && c <= 'Z') c = static_cast<char>('A' + (c - 'A' + 1) % 26);
        if (c >= '0' && c <= '9') c = static_cast<char>('0' + (c - '0' + 1) % 10);
      }
      std::string error2;
      (void)tunnel::parse_proxy_url(other, error2);
      FUZZ_CHECK(error2.find(userinfo) != std::string::npos);
    }
    return;
  }
  FUZZ_CHECK(!p->host.empty() && p->port != 0);
  const std::string shown = p->display();
  // What is shown is the address and nothing else: no user, no password
  // (a password may still coincide with part of the address, e.g.
  // "ample.com:" for the host proxexample.com; that is not a leak).
  const std::string host = p->host.find(':') != std::string::npos ? "[" + p->host + "]" : p->host;
  FUZZ_CHECK(shown == host + ":" + std::to_string(p->port));
  FUZZ_CHECK(p->host.find('@') == std::string::npos);  // no user info left in the host
  const std::string bare = tunnel::proxy_url_without_credentials(text);
  FUZZ_CHECK(!bare.empty());
  std::string e2;
  const auto q = tunnel::parse_proxy_url(bare, e2);
  FUZZ_CHECK(q && q->host == p->host && q->port == p->port && !q->has_credentials());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t step = 1 + data[1];
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  switch (data[0] % 4) {
    case 0:
      FUZZ_CHECK(run_upgrade(text, step) == run_upgrade(text, text.size() + 1));
      break;
    case 1:
      FUZZ_CHECK(run_connect(text, step) == run_connect(text, text.size() + 1));
      break;
    case 2:
      proxy_url(text);
      break;
    default: {
      // NO_PROXY list, host after the first newline; and the resolver with
      // the same text as HTTPS_PROXY.
      const std::size_t nl = text.find('\n');
      const std::string_view list = text.substr(0, nl);
      const std::string_view host = nl == std::string_view::npos ? "" : text.substr(nl + 1);
      const bool m = tunnel::no_proxy_matches(list, host);
      // "*" matches every host (one that is more than blanks, dots, brackets).
      const bool some_host = std::any_of(host.begin(), host.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      });
      if (list == "*" && some_host) FUZZ_CHECK(m);
      const tunnel::EnvLookup env = [&](std::string_view name) -> std::optional<std::string> {
        if (name == "HTTPS_PROXY") return std::string(host);
        if (name == "NO_PROXY") return std::string(list);
        return std::nullopt;
      };
      tunnel::ProxyResolution res;
      std::string error;
      if (tunnel::resolve_https_proxy("", "--https-proxy", env, "relay.example.com", res, error)) {
        if (res.proxy) FUZZ_CHECK(!res.origin.empty());
      } else {
        FUZZ_CHECK(!error.empty());
      }
      break;
    }
  }
  return 0;
}
