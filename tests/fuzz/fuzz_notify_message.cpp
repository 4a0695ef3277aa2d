// libFuzzer target for the MQTT tunnel notification (daemon/notify/
// notify_message.h), the payload any publisher on the topic controls.
//  - parse_notification gives a notification or a one-line refusal, never
//    both, never an exception;
//  - a refusal never repeats the token (nor, for payloads over the cap,
//    anything at all of the payload);
//  - an accepted one has a token of 16..4096 characters, a valid region
//    text, 1..kMaxServicesPerSession targets, each a valid service id mapped
//    in the service map.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_check.h"
#include "notify/notify_message.h"

namespace nm = tunneld::notify;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  const auto& map = nm::default_service_map();
  const auto r = nm::parse_notification(payload, map);
  FUZZ_CHECK(r.notification.has_value() == r.refusal.empty());
  if (!r.notification) {
    FUZZ_CHECK(r.refusal.find('\n') == std::string::npos);
    // Whatever token the payload carries must not come back.
    const auto doc = nlohmann::json::parse(payload, nullptr, false);
    if (!doc.is_discarded() && doc.is_object()) {
      const auto it = doc.find("clientAccessToken");
      if (it != doc.end() && it->is_string()) {
        const auto& token = it->get_ref<const std::string&>();
        if (token.size() >= 8) FUZZ_CHECK(r.refusal.find(token) == std::string::npos);
      }
    }
    return 0;
  }
  const auto& n = *r.notification;
  FUZZ_CHECK(n.access_token.size() >= nm::kMinTokenLength &&
             n.access_token.size() <= nm::kMaxTokenLength);
  FUZZ_CHECK(size <= nm::kMaxPayloadBytes);
  FUZZ_CHECK(!n.targets.empty() && n.targets.size() <= nm::kMaxServicesPerSession);
  for (const auto& t : n.targets) {
    FUZZ_CHECK(nm::is_valid_service_id(t.service));
    const auto it = map.find(t.service);
    FUZZ_CHECK(it != map.end() && it->second == t.target);
  }
  return 0;
}
