// Which access tokens recent notifications carried, to tell a redelivered
// notification from a new tunnel. MQTT QoS 1 delivers at least once: the
// broker may send the same message again (after a reconnect, with clean
// session off), and the copy must not open a second session with a
// single-use token that is already in use (docs/notify.md, "Duplicates").
//
// Only SHA-256 digests are kept, never a token. Bounded: the last
// kCapacity digests remembered, the oldest forgotten first. Pure.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <string_view>

namespace tunneld::notify {

using TokenDigest = std::array<std::uint8_t, 32>;

TokenDigest digest_of(std::string_view token);

class SeenTokens {
 public:
  // A notification carries one token and opens at most one session; with the
  // rate limit's default of 30 a minute this covers the last 8 minutes of a
  // flood, and days of normal use. 8 KiB.
  static constexpr std::size_t kCapacity = 256;

  explicit SeenTokens(std::size_t capacity = kCapacity) : capacity_(capacity) {}
  bool contains(const TokenDigest& d) const;
  // Remembers `d` as the newest; forgets the oldest beyond the capacity.
  void remember(const TokenDigest& d);
  std::size_t size() const { return digests_.size(); }

 private:
  std::size_t capacity_;
  std::deque<TokenDigest> digests_;  // oldest first
};

}  // namespace tunneld::notify
