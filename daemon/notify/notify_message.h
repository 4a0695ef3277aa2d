// The tunnel notification the IoT service publishes on
// $aws/things/<thing>/tunnels/notify when a tunnel is opened for a thing:
//
//   {"clientAccessToken": "...", "clientMode": "destination",
//    "region": "us-east-1", "services": ["SSH"]}
//
// Pure: bytes and the configured service map in, either a notification ready
// to become a destination session or one line saying why it was refused.
// Refusal reasons never contain the token, nor raw payload bytes.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tunneld::notify {

// A real notification is well under 2 KiB; anything past this is refused
// before parsing so that a hostile publisher cannot make the daemon allocate.
inline constexpr std::size_t kMaxPayloadBytes = std::size_t{8} * 1024;
// The service allows at most three services per tunnel; one destination
// session carries them all (protocol V2/V3 multiplexing).
inline constexpr std::size_t kMaxServices = 3;
// Access tokens of the service are several hundred characters.
inline constexpr std::size_t kMinTokenLength = 16;
inline constexpr std::size_t kMaxTokenLength = 4096;
inline constexpr std::size_t kMaxThingNameLength = 128;

// Service id (as in the notification, e.g. "SSH") -> [host:]port to connect to.
using ServiceMap = std::map<std::string, std::string>;

// SSH localhost:22, VNC localhost:5900, RDP localhost:3389, HTTP localhost:80,
// HTTPS localhost:443 (docs/notify.md).
const ServiceMap& default_service_map();

struct ServiceTarget {
  std::string service;  // as named in the notification
  std::string target;   // [host:]port from the service map
};

struct Notification {
  std::string access_token;  // secret
  std::string region;
  // In the notification's order, 1 to kMaxServices distinct services, every
  // one mapped through [notify.services].
  std::vector<ServiceTarget> targets;
};

struct ParseResult {
  std::optional<Notification> notification;
  std::string refusal;  // set when notification is empty; one line, no secret
};

ParseResult parse_notification(std::string_view payload, const ServiceMap& services);

// Thing names: 1 to 128 characters of A-Z, a-z, 0-9, ':', '_' and '-'.
bool is_valid_thing_name(std::string_view name);
// Service ids: 1 to 127 characters of A-Z, a-z, 0-9, '_' and '-'.
bool is_valid_service_id(std::string_view id);
// "$aws/things/<thing>/tunnels/notify"
std::string notify_topic(std::string_view thing);

}  // namespace tunneld::notify
