#include "notify_message.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace tunneld::notify {
namespace {

using nlohmann::json;

bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

// Printable ASCII without spaces: the token goes into an HTTP header.
bool is_header_safe(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
  });
}

bool is_valid_region(std::string_view r) {
  return !r.empty() && r.size() <= 32 && std::all_of(r.begin(), r.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}

ParseResult refuse(std::string why) { return ParseResult{std::nullopt, std::move(why)}; }

}  // namespace

const ServiceMap& default_service_map() {
  static const ServiceMap map = {
      {"SSH", "localhost:22"},  {"VNC", "localhost:5900"},  {"RDP", "localhost:3389"},
      {"HTTP", "localhost:80"}, {"HTTPS", "localhost:443"},
  };
  return map;
}

bool is_valid_thing_name(std::string_view name) {
  return !name.empty() && name.size() <= kMaxThingNameLength &&
         std::all_of(name.begin(), name.end(),
                     [](char c) { return is_alnum(c) || c == ':' || c == '_' || c == '-'; });
}

bool is_valid_service_id(std::string_view id) {
  return !id.empty() && id.size() <= 127 && std::all_of(id.begin(), id.end(), [](char c) {
    return is_alnum(c) || c == '_' || c == '-';
  });
}

std::string notify_topic(std::string_view thing) {
  return "$aws/things/" + std::string(thing) + "/tunnels/notify";
}

ParseResult parse_notification(std::string_view payload, const ServiceMap& services) {
  if (payload.empty()) return refuse("empty payload");
  if (payload.size() > kMaxPayloadBytes) {
    return refuse("payload of " + std::to_string(payload.size()) + " bytes is over the " +
                  std::to_string(kMaxPayloadBytes) + "-byte limit");
  }
  // No exceptions: a parse_error's text quotes the input, which may hold the token.
  const json doc = json::parse(payload, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return refuse("payload is not JSON");
  if (!doc.is_object()) return refuse("payload is not a JSON object");

  const auto mode = doc.find("clientMode");
  if (mode == doc.end()) return refuse("clientMode is missing");
  if (!mode->is_string()) return refuse("clientMode is not a string");
  if (mode->get_ref<const std::string&>() != "destination") {
    return refuse("clientMode is not \"destination\" (tunneld only starts destinations)");
  }

  const auto token = doc.find("clientAccessToken");
  if (token == doc.end()) return refuse("clientAccessToken is missing");
  if (!token->is_string()) return refuse("clientAccessToken is not a string");
  const auto& token_text = token->get_ref<const std::string&>();
  if (token_text.size() < kMinTokenLength || token_text.size() > kMaxTokenLength) {
    return refuse("clientAccessToken has " + std::to_string(token_text.size()) +
                  " characters; expected " + std::to_string(kMinTokenLength) + " to " +
                  std::to_string(kMaxTokenLength));
  }
  if (!is_header_safe(token_text)) {
    return refuse("clientAccessToken contains spaces, control or non-ASCII characters");
  }

  const auto region = doc.find("region");
  if (region == doc.end()) return refuse("region is missing");
  if (!region->is_string() || !is_valid_region(region->get_ref<const std::string&>())) {
    return refuse("region is not a region name such as \"us-east-1\"");
  }

  const auto list = doc.find("services");
  if (list == doc.end()) return refuse("services is missing");
  if (!list->is_array()) return refuse("services is not an array");
  if (list->empty()) return refuse("services is empty");
  if (list->size() > kMaxServices) {
    return refuse("services lists " + std::to_string(list->size()) + " services; at most " +
                  std::to_string(kMaxServices) + " are allowed");
  }
  Notification n;
  for (const json& s : *list) {
    if (!s.is_string() || !is_valid_service_id(s.get_ref<const std::string&>())) {
      return refuse(
          "services holds an entry that is not a service id (1 to 127 characters of A-Z, "
          "a-z, 0-9, '_' and '-')");
    }
    const auto& id = s.get_ref<const std::string&>();
    if (std::any_of(n.targets.begin(), n.targets.end(),
                    [&](const ServiceTarget& t) { return t.service == id; })) {
      return refuse("service " + id + " is listed twice");
    }
    const auto mapped = services.find(id);
    if (mapped == services.end()) {
      return refuse("service " + id + " is not in [notify.services]");
    }
    n.targets.push_back(ServiceTarget{id, mapped->second});
  }
  n.access_token = token_text;
  n.region = region->get_ref<const std::string&>();
  return ParseResult{std::move(n), {}};
}

}  // namespace tunneld::notify
