#include "ws_handshake.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace tunnel::ws {
namespace {

constexpr std::string_view kGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether a comma-separated header value lists `token` (case-insensitive).
bool has_token(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    if (iequals(trim(value.substr(0, comma)), token)) return true;
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

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

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

HttpResponseHead::Result HttpResponseHead::parse() {
  std::string_view rest(buf_);
  auto next_line = [&rest]() {
    const std::size_t eol = rest.find("\r\n");
    std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    return line;
  };
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
    headers_.emplace_back(std::string(trim(line.substr(0, colon))),
                          std::string(trim(line.substr(colon + 1))));
  }
  done_ = true;
  buf_.clear();
  buf_.shrink_to_fit();
  return Result::done;
}

std::string_view HttpResponseHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers_) {
    if (iequals(k, name)) return v;
  }
  return {};
}

std::size_t HttpResponseHead::header_count(std::string_view name) const {
  return static_cast<std::size_t>(std::count_if(
      headers_.begin(), headers_.end(), [&](const auto& h) { return iequals(h.first, name); }));
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
  if (!iequals(trim(head.header("upgrade")), "websocket") ||
      !has_token(head.header("connection"), "upgrade")) {
    r.error = "the service's upgrade response lacks Upgrade: websocket / Connection: Upgrade";
    return r;
  }
  if (trim(head.header("sec-websocket-accept")) != websocket_accept_for(request.key)) {
    r.error =
        "the service's Sec-WebSocket-Accept does not match the request (not a WebSocket "
        "server, or a proxy in the way rewrote the handshake)";
    return r;
  }
  const std::string_view chosen = trim(head.header("sec-websocket-protocol"));
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
  const std::string_view channel = trim(head.header("channel-id"));
  if (printable(channel) && channel.size() <= 128) r.channel_id = std::string(channel);
  r.ok = true;
  return r;
}

}  // namespace tunnel::ws
