// Text that came from the network, made fit for one log line or error
// message: a peer's bytes must never start a second line or carry terminal
// control sequences.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tunnel {

// At most `max` bytes of `text`, each byte outside printable ASCII
// (0x20-0x7e) shown as '?'.
inline std::string printable_ascii(std::string_view text, std::size_t max) {
  const std::string_view head = text.substr(0, max);
  std::string out;
  out.reserve(head.size());
  for (const char c : head) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  return out;
}

}  // namespace tunnel
