#include "ws_handshake.h"
#include "text.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace tunnel::ws {
namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// Whether a comma-separated header value lists `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    if (text::iequals(text::trim_ows(value.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return false;
}

bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u != 0x7F;
  });
}

}  // namespace

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()),
                                static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

HttpResponseHead::Result HttpResponseHead::feed(std::string_view bytes, std::size_t& consumed) {
  consumed = 0;
  if (done_) return Result::done;
  if (!error_.empty()) return Result::malformed;
  // Look for the end of the head across the old and the new bytes.
  const std::size_t old = buf_.size();
  const std::size_t room = max_size_ - old;
  const std::size_t take = std::min(room, bytes.size());
  buf_.append(bytes.substr(0, take));
  const std::size_t from = old >= 3 ? old - 3 : 0;
  const std::size_t end = buf_.find("\r\n\r\n", from);
  if (end == std::string::npos) {
    consumed = take;
    if (buf_.size() >= max_size_) {
      error_ = "HTTP response head larger than " + std::to_string(max_size_) + " bytes";
      return Result::malformed;
    }
    return Result::need_more;
  }
  const std::size_t head_len = end + 4;
  consumed = head_len - old;
  buf_.resize(head_len);
  return parse();
}

namespace {

// The next CRLF-terminated line of a complete head (the caller found its
// blank line), without the CRLF; `rest` moves past it.
std::string_view take_line(std::string_view& rest) {
  const std::size_t eol = rest.find("\r\n");
  const std::string_view line = rest.substr(0, eol);
  rest.remove_prefix(eol + 2);
  return line;
}

}  // namespace

HttpResponseHead::Result HttpResponseHead::parse() {
  std::string_view rest(buf_);
  const auto next_line = [&rest] { return take_line(rest); };
  const std::string_view status_line = next_line();
  // HTTP/1.x SP 3DIGIT [SP reason]
  if (status_line.size() < 12 || status_line.substr(0, 7) != "HTTP/1." || status_line[8] != ' ' ||
      !std::isdigit(static_cast<unsigned char>(status_line[9])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[10])) ||
      !std::isdigit(static_cast<unsigned char>(status_line[11])) ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    error_ = "not an HTTP/1.x response";
    return Result::malformed;
  }
  status_ = (status_line[9] - '0') * 100 + (status_line[10] - '0') * 10 + (status_line[11] - '0');
  if (status_ < 100) {
    error_ = "invalid HTTP status";
    return Result::malformed;
  }
  const std::string_view reason = status_line.size() > 13 ? status_line.substr(13) : "";
  reason_ = printable(reason) ? std::string(reason) : std::string();
  for (;;) {
    const std::string_view line = next_line();
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0 || line[0] == ' ' || line[0] == '\t') {
      error_ = "malformed HTTP header line";
      return Result::malformed;
    }
    headers_.emplace_back(std::string(text::trim_ows(line.substr(0, colon))),
                          std::string(text::trim_ows(line.substr(colon + 1))));
  }
  done_ = true;
  buf_.clear();
  buf_.shrink_to_fit();
  return Result::done;
}

std::string_view HttpResponseHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers_) {
    if (text::iequals(k, name)) return v;
  }
  return {};
}

std::size_t HttpResponseHead::header_count(std::string_view name) const {
  return static_cast<std::size_t>(
      std::count_if(headers_.begin(), headers_.end(),
                    [&](const auto& h) { return text::iequals(h.first, name); }));
}

HttpRequestHead::Result HttpRequestHead::feed(std::string_view bytes, std::size_t& consumed) {
  consumed = 0;
  if (done_) return Result::done;
  if (!error_.empty()) return size_ > max_size_ ? Result::too_large : Result::malformed;
  const std::size_t old = buf_.size();
  // One byte over the limit tells "exactly at the limit" from "over it".
  const std::size_t take = std::min(max_size_ + 1 - old, bytes.size());
  buf_.append(bytes.substr(0, take));
  const std::size_t from = old >= 3 ? old - 3 : 0;
  const std::size_t end = buf_.find("\r\n\r\n", from);
  if (end == std::string::npos || end + 4 > max_size_) {
    consumed = take;
    if (buf_.size() > max_size_) {
      size_ = buf_.size();
      error_ = "HTTP request head larger than " + std::to_string(max_size_) + " bytes";
      buf_.clear();
      buf_.shrink_to_fit();
      return Result::too_large;
    }
    return Result::need_more;
  }
  size_ = end + 4;
  consumed = size_ - old;
  buf_.resize(size_);
  return parse();
}

HttpRequestHead::Result HttpRequestHead::parse() {
  std::string_view rest(buf_);
  const auto next_line = [&rest] { return take_line(rest); };
  // method SP request-target SP HTTP/1.x
  const std::string_view line = next_line();
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp1 == std::string_view::npos || sp1 == 0 || sp2 == std::string_view::npos ||
      sp2 == sp1 + 1 || line.substr(sp2 + 1).size() != 8 || line.substr(sp2 + 1, 7) != "HTTP/1." ||
      !printable(line)) {
    error_ = "not an HTTP/1.x request";
    buf_.clear();
    return Result::malformed;
  }
  method_ = std::string(line.substr(0, sp1));
  target_ = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  for (;;) {
    const std::string_view h = next_line();
    if (h.empty()) break;
    const std::size_t colon = h.find(':');
    if (colon == std::string_view::npos || colon == 0 || h[0] == ' ' || h[0] == '\t' ||
        h[colon - 1] == ' ' || h[colon - 1] == '\t') {
      error_ = "malformed HTTP header line";
      buf_.clear();
      return Result::malformed;
    }
    headers_.emplace_back(std::string(h.substr(0, colon)),
                          std::string(text::trim_ows(h.substr(colon + 1))));
  }
  done_ = true;
  buf_.clear();
  buf_.shrink_to_fit();
  return Result::done;
}

std::vector<std::string_view> HttpRequestHead::header_values(std::string_view name) const {
  std::vector<std::string_view> out;
  for (const auto& [k, v] : headers_) {
    if (text::iequals(k, name)) out.emplace_back(v);
  }
  return out;
}

std::string HttpRequestHead::joined(std::string_view name) const {
  std::string out;
  for (const std::string_view v : header_values(name)) {
    if (!out.empty()) out += ", ";
    out += v;
  }
  return out;
}

bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  out.reserve(in.size());
  const auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex(in[i + 1]);
    const int lo = hex(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return true;
}

std::string build_upgrade_response(std::string_view key, std::string_view subprotocol,
                                   const std::vector<std::pair<std::string, std::string>>& extra) {
  std::string out;
  out.reserve(256);
  out += "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
  out += "Sec-WebSocket-Accept: ";
  out += websocket_accept_for(key);
  out += "\r\n";
  if (!subprotocol.empty()) {
    out += "Sec-WebSocket-Protocol: ";
    out += subprotocol;
    out += "\r\n";
  }
  for (const auto& [k, v] : extra) {
    out += k;
    out += ": ";
    out += v;
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

std::string make_websocket_key() {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("the OS CSPRNG failed");
  return base64_encode(std::string_view(reinterpret_cast<const char*>(raw), sizeof raw));
}

std::string websocket_accept_for(std::string_view key) {
  std::string in(key);
  in += kGuid;
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(in.data()), in.size(), digest);
  return base64_encode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

std::string build_upgrade_request(const UpgradeRequest& r) {
  std::string out;
  out.reserve(512);
  out += "GET ";
  out += r.path;
  out += " HTTP/1.1\r\nHost: ";
  out += r.host;
  out += "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ";
  out += r.key;
  out += "\r\nSec-WebSocket-Version: 13\r\n";
  if (!r.subprotocols.empty()) {
    out += "Sec-WebSocket-Protocol: ";
    for (std::size_t i = 0; i < r.subprotocols.size(); ++i) {
      if (i) out += ", ";
      out += r.subprotocols[i];
    }
    out += "\r\n";
  }
  for (const auto& [k, v] : r.headers) {
    out += k;
    out += ": ";
    out += v;
    out += "\r\n";
  }
  out += "\r\n";
  return out;
}

UpgradeResult check_upgrade_response(const HttpResponseHead& head, const UpgradeRequest& request) {
  UpgradeResult r;
  if (head.status() != 101) {
    r.http_status = head.status();
    r.error = "the service answered HTTP " + std::to_string(head.status()) +
              (head.reason().empty() ? "" : " " + head.reason()) +
              " instead of a WebSocket upgrade";
    return r;
  }
  if (!text::iequals(text::trim_ows(head.header("upgrade")), "websocket") ||
      !has_token(head.header("connection"), "upgrade")) {
    r.error = "the service's upgrade response lacks Upgrade: websocket / Connection: Upgrade";
    return r;
  }
  if (text::trim_ows(head.header("sec-websocket-accept")) != websocket_accept_for(request.key)) {
    r.error =
        "the service's Sec-WebSocket-Accept does not match the request (not a WebSocket "
        "server, or a proxy in the way rewrote the handshake)";
    return r;
  }
  const std::string_view chosen = text::trim_ows(head.header("sec-websocket-protocol"));
  if (head.header_count("sec-websocket-protocol") > 1 ||
      std::find(request.subprotocols.begin(), request.subprotocols.end(), chosen) ==
          request.subprotocols.end()) {
    std::string offered;
    for (const auto& s : request.subprotocols) offered += (offered.empty() ? "" : ", ") + s;
    r.error = "the service chose subprotocol '" +
              std::string(printable(chosen) ? chosen : "(unprintable)") + "', not one offered (" +
              offered + ")";
    return r;
  }
  r.subprotocol = std::string(chosen);
  const std::string_view channel = text::trim_ows(head.header("channel-id"));
  if (printable(channel) && channel.size() <= 128) r.channel_id = std::string(channel);
  r.ok = true;
  return r;
}

}  // namespace tunnel::ws
