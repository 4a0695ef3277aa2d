// libFuzzer target for the settings JSON (daemon/core/settings.h), as read
// from --settings-json, tunnelctl's settings and the control protocol.
//  - settings_from_json either returns settings or throws SettingsError
//    (nothing else: no JSON library exception escapes);
//  - accepted settings export and re-import to the same settings (the
//    export drops proxy credentials, so those are compared without them),
//    and the export is the same with or without the credentials;
//  - validate() throws nothing but SettingsError, and what it accepts stays
//    accepted after the round trip.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "http_proxy.h"
#include "settings.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  tunnel::Settings s;
  try {
    s = tunnel::settings_from_json(text);
  } catch (const tunnel::SettingsError& e) {
    FUZZ_CHECK(std::string_view(e.what()).size() > 0);
    return 0;
  }
  bool valid = true;
  try {
    tunnel::validate(s);
  } catch (const tunnel::SettingsError&) {
    valid = false;
  }

  const std::string exported = tunnel::settings_to_json(s);
  tunnel::Settings expected = s;
  if (!s.https_proxy.empty() && !tunnel::is_direct(s.https_proxy)) {
    expected.https_proxy = tunnel::proxy_url_without_credentials(s.https_proxy);
    std::string error;
    FUZZ_CHECK(tunnel::parse_proxy_url(s.https_proxy, error).has_value());  // it was accepted
    // The export does not depend on the credentials at all.
    FUZZ_CHECK(exported == tunnel::settings_to_json(expected));
  }
  tunnel::Settings back;
  try {
    back = tunnel::settings_from_json(exported);
  } catch (const tunnel::SettingsError&) {
    FUZZ_CHECK(false);  // our own export must read back
  }
  FUZZ_CHECK(back == expected);
  if (valid) {
    try {
      tunnel::validate(back);
    } catch (const tunnel::SettingsError&) {
      FUZZ_CHECK(false);
    }
  }
  // Overlaying on non-default settings behaves the same for present keys.
  tunnel::Settings base;
  base.tcp_max_connections = 7;
  base.ws_ping_period_ms = 1234;
  try {
    const tunnel::Settings over = tunnel::settings_from_json(text, base);
    (void)over;
  } catch (const tunnel::SettingsError&) {
    FUZZ_CHECK(false);  // the same text was accepted over the defaults
  }
  return 0;
}
