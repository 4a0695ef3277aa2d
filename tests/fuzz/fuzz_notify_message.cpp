// libFuzzer target for the MQTT tunnel notification (daemon/notify/
// notify_message.h), the payload any publisher on the topic controls.
//  - parse_notification gives a notification or a one-line refusal, never
//    both, never an exception;
//  - a refusal never repeats the token (nor, for payloads over the cap,
//    anything at all of the payload);
//  - an accepted one has a token of 16..4096 characters, a valid region
//    text, 1..kMaxServices distinct targets, each a valid service id mapped
//    in the service map.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_check.h"
#include "notify/notify_message.h"

namespace nm = tunneld::notify;

namespace {

// Letters by 13, digits by 5: a different text of the same shape.
std::string rotated(std::string s) {
  for (char& ch : s) {
    if (ch >= 'a' && ch <= 'z')
      ch = static_cast<char>('a' + (ch - 'a' + 13) % 26);
    else if (ch >= 'A' && ch <= 'Z')
      ch = static_cast<char>('A' + (ch - 'A' + 13) % 26);
    else if (ch >= '0' && ch <= '9')
      ch = static_cast<char>('0' + (ch - '0' + 5) % 10);
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  const auto& map = nm::default_service_map();
  const auto r = nm::parse_notification(payload, map);
  FUZZ_CHECK(r.notification.has_value() == r.refusal.empty());
  if (!r.notification) {
    FUZZ_CHECK(r.refusal.find('\n') == std::string::npos);
    // Whatever token the payload carries must not come back. A token that
    // is itself part of the refusal's fixed text ("clientMode is not") is
    // no leak: the same payload with the token's letters and digits rotated
    // (same length, same character classes, so the same verdict) must then
    // give a refusal that still holds it.
    auto doc = nlohmann::json::parse(payload, nullptr, false);
    if (!doc.is_discarded() && doc.is_object()) {
      const auto it = doc.find("clientAccessToken");
      if (it != doc.end() && it->is_string()) {
        const std::string token = it->get<std::string>();
        if (token.size() >= 8 && r.refusal.find(token) != std::string::npos) {
          *it = rotated(token);
          const auto again = nm::parse_notification(doc.dump(), map);
          FUZZ_CHECK(again.refusal.find(token) != std::string::npos);
        }
      }
    }
    return 0;
  }
  const auto& n = *r.notification;
  FUZZ_CHECK(n.access_token.size() >= nm::kMinTokenLength &&
             n.access_token.size() <= nm::kMaxTokenLength);
  FUZZ_CHECK(size <= nm::kMaxPayloadBytes);
  FUZZ_CHECK(!n.targets.empty() && n.targets.size() <= nm::kMaxServices);
  for (const auto& t : n.targets) {
    FUZZ_CHECK(nm::is_valid_service_id(t.service));
    FUZZ_CHECK(std::count_if(n.targets.begin(), n.targets.end(),
                             [&](const auto& other) { return other.service == t.service; }) == 1);
    const auto it = map.find(t.service);
    FUZZ_CHECK(it != map.end() && it->second == t.target);
  }
  return 0;
}
