// libFuzzer target for the relay's handshake admission (relay/handshake.h)
// against a registry with two tunnels, over a sequence of handshakes whose
// admitted ones attach (and may detach or close the tunnel), so the
// single-use token and client-token reconnect rules are exercised.
// Input: handshakes separated by a byte 0x1e; in each, lines in order: path,
// query ('&'-separated), access-token header ("!" = absent), Cookie header,
// client-token ("!" = absent), Sec-WebSocket-Protocol, then an action byte.
// "$S" "$D" stand for the source/destination tokens of tunnel t1, "$s" "$d"
// for t2's, "$C" for a valid client token.
//  - admitted exactly when 101; then the subprotocol is one accepted, the
//    version 1..3, the token is the one of the admitted end of an open
//    tunnel and the role is the mode asked for;
//  - a refusal is a 4xx with a reason that never holds a token;
//  - a token once used is refused later unless the same client token comes
//    back (docs/protocol.md section 2).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "handshake.h"
#include "relay_config.h"
#include "tunnel_registry.h"

namespace {

const std::vector<std::string> kTokens = {
    "srcTokenOne-AAAAAAAAAAAAAAAAAAAA", "dstTokenOne-BBBBBBBBBBBBBBBBBBBB",
    "srcTokenTwo-CCCCCCCCCCCCCCCCCCCC", "dstTokenTwo-DDDDDDDDDDDDDDDDDDDD"};
const std::string kClient = "clientToken0123456789abcdefABCDEF-0123";

std::string expand(std::string s) {
  static const char kKeys[] = {'S', 'D', 's', 'd'};
  for (std::size_t i = 0; i + 1 < s.size(); ++i) {
    if (s[i] != '$') continue;
    for (std::size_t k = 0; k < 4; ++k) {
      if (s[i + 1] == kKeys[k]) s.replace(i, 2, kTokens[k]);
    }
    if (i + 1 < s.size() && s[i + 1] == 'C') s.replace(i, 2, kClient);
  }
  return s;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t p = s.find(sep, start);
    out.emplace_back(s.substr(start, p == std::string_view::npos ? p : p - start));
    if (p == std::string_view::npos) return out;
    start = p + 1;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& t : kTokens) {
    if (text.find(t) != std::string_view::npos) return 0;  // keep "never a token" checkable
  }
  relay::TunnelRegistry reg([] { return std::string("fresh-token"); });
  std::string error;
  FUZZ_CHECK(reg.add(kTokens[0], kTokens[1], {}, error) != nullptr);
  FUZZ_CHECK(reg.add(kTokens[2], kTokens[3], {"SSH", "HTTP"}, error) != nullptr);
  const std::vector<std::string> accepted = {
      "aws.iot.securetunneling-3.0", "aws.iot.securetunneling-2.0", "aws.iot.securetunneling-1.0"};

  const auto blocks = split(text, '\x1e');  // record separator between handshakes
  std::size_t n = 0;
  for (const auto& block : blocks) {
    if (++n > 16) break;
    auto lines = split(block, '\n');
    lines.resize(std::max<std::size_t>(lines.size(), 7));
    relay::HandshakeRequest req;
    req.path = lines[0];
    for (auto& a : split(expand(lines[1]), '&')) req.query_args.push_back(std::move(a));
    if (lines[2] != "!") req.access_token_header = expand(lines[2]);
    req.cookie_header = expand(lines[3]);
    if (lines[4] != "!") req.client_token = expand(lines[4]);
    req.subprotocol_offer = lines[5];
    req.request_bytes = block.size();
    const std::uint8_t action = lines[6].empty() ? 0 : static_cast<std::uint8_t>(lines[6][0]);

    const auto d = relay::evaluate_handshake(req, reg, accepted, 8192);
    FUZZ_CHECK(d.admitted() == (d.http_status == 101));
    for (const auto& t : kTokens) FUZZ_CHECK(d.reason.find(t) == std::string::npos);
    if (!d.admitted()) {
      FUZZ_CHECK(d.http_status >= 400 && d.http_status < 500);
      FUZZ_CHECK(!d.reason.empty());
      continue;
    }
    FUZZ_CHECK(std::find(accepted.begin(), accepted.end(), d.subprotocol) != accepted.end());
    FUZZ_CHECK(d.version >= 1 && d.version <= 3 &&
               d.version == relay::subprotocol_version(d.subprotocol));
    FUZZ_CHECK(d.admission.admitted());
    const relay::Tunnel* t = reg.find(d.admission.tunnel_id);
    FUZZ_CHECK(t != nullptr && t->status == relay::TunnelStatus::open);
    const relay::TunnelEnd& end = t->end(d.admission.role);
    FUZZ_CHECK(d.client_token.empty() || relay::valid_client_token(d.client_token));
    if (end.ever_connected)
      FUZZ_CHECK(!end.client_token.empty() && end.client_token == d.client_token);
    FUZZ_CHECK(d.admission.replaces_connected == (end.ever_connected && end.connected));
    // What the relay does once the WebSocket is up.
    reg.attach(d.admission.tunnel_id, d.admission.role, d.client_token);
    FUZZ_CHECK(reg.find(d.admission.tunnel_id)->end(d.admission.role).connected);
    if (action & 1) reg.detach(d.admission.tunnel_id, d.admission.role);
    if (action & 2) {
      FUZZ_CHECK(reg.close(d.admission.tunnel_id));
      FUZZ_CHECK(reg.admit(end.access_token, d.admission.role, d.client_token).http_status == 410);
    }
  }
  // cookie_values and choose_subprotocol on the raw text.
  for (const auto& v : relay::cookie_values(text, relay::kTokenCookie)) {
    FUZZ_CHECK(text.find(v) != std::string_view::npos);
  }
  const std::string chosen = relay::choose_subprotocol(text, accepted);
  FUZZ_CHECK(chosen.empty() ||
             std::find(accepted.begin(), accepted.end(), chosen) != accepted.end());
  return 0;
}
