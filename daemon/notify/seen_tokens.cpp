#include "seen_tokens.h"

#include <openssl/sha.h>

#include <algorithm>

namespace tunneld::notify {

TokenDigest digest_of(std::string_view token) {
  TokenDigest d{};
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), d.data());
  return d;
}

bool SeenTokens::contains(const TokenDigest& d) const {
  return std::find(digests_.begin(), digests_.end(), d) != digests_.end();
}

void SeenTokens::remember(const TokenDigest& d) {
  if (capacity_ == 0) return;
  if (const auto it = std::find(digests_.begin(), digests_.end(), d); it != digests_.end()) {
    digests_.erase(it);
  }
  digests_.push_back(d);
  while (digests_.size() > capacity_) digests_.pop_front();
}

}  // namespace tunneld::notify
