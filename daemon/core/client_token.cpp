// Client tokens (docs/protocol.md section 2): one per session, reused on every
// reconnect so the service lets the same access token back in.
#include <openssl/rand.h>

#include <algorithm>
#include <array>
#include <stdexcept>

#include "proxy_config.h"

namespace tunnel {

std::string generate_client_token() {
  std::array<unsigned char, 16> bytes{};
  if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
    throw std::runtime_error("cannot generate a client token: the OpenSSL random generator failed");
  }
  // RFC 9562 version 4 layout: version nibble 4, variant bits 10.
  bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);
  bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);

  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) {
      out.push_back('-');
    }
    out.push_back(kHex[bytes[i] >> 4]);
    out.push_back(kHex[bytes[i] & 0x0f]);
  }
  return out;
}

bool is_valid_client_token(std::string_view token) {
  return token.size() >= 32 && token.size() <= 128 &&
         std::all_of(token.begin(), token.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-';
         });
}

}  // namespace tunnel
