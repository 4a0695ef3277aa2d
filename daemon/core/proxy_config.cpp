#include "proxy_config.h"

#include <algorithm>

#include "record_codec.h"

namespace tunnel {

namespace {
constexpr std::string_view kPrefix = "aws.iot.securetunneling-";
}

bool is_valid_service_id(std::string_view id) {
  return !id.empty() && id.size() <= kMaxServiceIdSize &&
         std::all_of(id.begin(), id.end(), [](char c) {
           const auto u = static_cast<unsigned char>(c);
           return u > 0x20 && u < 0x7f && c != '=' && c != ',';
         });
}

std::string service_id_error(std::string_view id) {
  const bool printable = id.size() <= 200 && std::all_of(id.begin(), id.end(), [](char c) {
                           const auto u = static_cast<unsigned char>(c);
                           return u >= 0x20 && u < 0x7f;
                         });
  return (printable ? "'" + std::string(id) + "'" : std::string("a name")) +
         " is not a service name (" + std::string(kServiceIdRule) + ")";
}

int subprotocol_version(std::string_view subprotocol) {
  if (subprotocol.substr(0, kPrefix.size()) != kPrefix) return 0;
  const std::string_view v = subprotocol.substr(kPrefix.size());
  if (v == "1.0") return 1;
  if (v == "2.0") return 2;
  if (v == "3.0") return 3;
  return 0;
}

std::string subprotocol_name(int version) {
  return std::string(kPrefix) + std::to_string(version) + ".0";
}

std::vector<ServiceMapping> ProxyConfig::effective_services() const {
  if (!services.empty()) return services;
  return {ServiceMapping{std::string(), local}};
}

std::vector<std::string> ProxyConfig::offered_subprotocols() const {
  int forced = protocol_version;
  // The reference's setting names one version; ours offers all three unless
  // the setting was changed from the reference's default (then it forces).
  if (forced == 0 && settings.ws_subprotocol != Settings{}.ws_subprotocol) {
    forced = subprotocol_version(settings.ws_subprotocol);
  }
  if (forced >= 1 && forced <= 3) return {subprotocol_name(forced)};
  return {subprotocol_name(3), subprotocol_name(2), subprotocol_name(1)};
}

}  // namespace tunnel
