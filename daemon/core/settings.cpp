#include "settings.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <variant>

#include "http_proxy.h"

namespace tunnel {
namespace {

using ordered_json = nlohmann::ordered_json;

constexpr std::string_view kPrefix = "tunneling.proxy.";
constexpr int kIntMax = std::numeric_limits<int>::max();
constexpr int kOneDayMs = 24 * 60 * 60 * 1000;
constexpr int kBufferMax = 64 * 1024 * 1024;
constexpr int kWriteLimitMax = 1024 * 1024 * 1024;

// The subprotocols a service may speak (docs/protocol.md section 2). The setting
// names the version we ask for; any of them is a valid request.
constexpr std::array<std::string_view, 3> kSubprotocols = {
    "aws.iot.securetunneling-1.0",
    "aws.iot.securetunneling-2.0",
    "aws.iot.securetunneling-3.0",
};

struct IntField {
  int Settings::*member;
  int min;
  int max;
};
struct BoolField {
  bool Settings::*member;
};
struct StringField {
  std::string Settings::*member;
};

// One row per key: its place in the JSON tree (group "" = directly under
// tunneling.proxy), its member and its accepted range. The order is the
// reference's export order, tunneld's additions last in each group.
struct Field {
  std::string_view group;
  std::string_view name;
  std::variant<IntField, BoolField, StringField> kind;
};

std::span<const Field> fields() {
  static const Field table[] = {
      {"", "default_bind_address", StringField{&Settings::default_bind_address}},
      {"", "https_proxy", StringField{&Settings::https_proxy}},
      {"message", "data_length_size", IntField{&Settings::message_data_length_size, 2, 2}},
      {"message", "max_payload_size", IntField{&Settings::message_max_payload_size, 1, 64512}},
      {"message", "max_size", IntField{&Settings::message_max_size, 1, 65536}},
      {"tcp", "connection_retry_count",
       IntField{&Settings::tcp_connection_retry_count, -1, kIntMax}},
      {"tcp", "connection_retry_delay_ms",
       IntField{&Settings::tcp_connection_retry_delay_ms, 1, kOneDayMs}},
      {"tcp", "read_buffer_size", IntField{&Settings::tcp_read_buffer_size, 1, kBufferMax}},
      {"tcp", "write_buffer_limit", IntField{&Settings::tcp_write_buffer_limit, 1, kWriteLimitMax}},
      {"tcp", "max_simultaneous_connections", IntField{&Settings::tcp_max_connections, 1, 65535}},
      {"websocket", "ping_period_ms", IntField{&Settings::ws_ping_period_ms, 1, kOneDayMs}},
      {"websocket", "retry_delay_ms", IntField{&Settings::ws_retry_delay_ms, 1, kOneDayMs}},
      {"websocket", "connect_retry_count",
       IntField{&Settings::ws_connect_retry_count, -1, kIntMax}},
      {"websocket", "reconnect_on_data_error", BoolField{&Settings::ws_reconnect_on_data_error}},
      {"websocket", "subprotocol", StringField{&Settings::ws_subprotocol}},
      {"websocket", "max_frame_size",
       IntField{&Settings::ws_max_frame_size, 1, static_cast<int>(kMaxFrameSize)}},
      {"websocket", "write_buffer_size", IntField{&Settings::ws_write_buffer_size, 1, kBufferMax}},
      {"websocket", "read_buffer_size", IntField{&Settings::ws_read_buffer_size, 1, kBufferMax}},
      {"websocket", "pong_timeout_ms", IntField{&Settings::ws_pong_timeout_ms, 1, kOneDayMs}},
      {"websocket", "retry_max_delay_ms", IntField{&Settings::ws_retry_max_delay_ms, 1, kOneDayMs}},
      {"websocket", "connect_timeout_ms", IntField{&Settings::ws_connect_timeout_ms, 1, kOneDayMs}},
  };
  return table;
}

std::string dotted_key(const Field& f) {
  std::string key(kPrefix);
  if (!f.group.empty()) {
    key.append(f.group).append(".");
  }
  key.append(f.name);
  return key;
}

// Shows a rejected value in an error message; settings hold no secrets, but a
// pasted blob should not flood the terminal.
std::string describe(const ordered_json& v) {
  std::string text = v.dump();
  constexpr std::size_t kMax = 40;
  if (text.size() > kMax) {
    text = text.substr(0, kMax) + "...";
  }
  return text;
}

std::string range_text(const IntField& f) {
  if (f.min == f.max) {
    return "exactly " + std::to_string(f.min);
  }
  if (f.max == kIntMax) {
    return f.min == -1 ? "-1 (forever) or a non-negative integer"
                       : "an integer >= " + std::to_string(f.min);
  }
  return "an integer in " + std::to_string(f.min) + ".." + std::to_string(f.max);
}

std::optional<long long> parse_integer(const ordered_json& v) {
  if (v.is_number_integer()) {
    return v.get<long long>();
  }
  if (v.is_number_float()) {
    // 5000.0 is a whole number written by a tool that only knows doubles.
    const double d = v.get<double>();
    if (d >= -1e15 && d <= 1e15 && static_cast<double>(static_cast<long long>(d)) == d) {
      return static_cast<long long>(d);
    }
    return std::nullopt;
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    long long out = 0;
    const char* end = s.data() + s.size();
    auto [ptr, ec] = std::from_chars(s.data(), end, out);
    if (s.empty() || ec != std::errc{} || ptr != end) {
      return std::nullopt;
    }
    return out;
  }
  return std::nullopt;
}

std::optional<bool> parse_bool(const ordered_json& v) {
  if (v.is_boolean()) {
    return v.get<bool>();
  }
  if (v.is_number_integer()) {
    const auto n = v.get<long long>();
    if (n == 0 || n == 1) {
      return n == 1;
    }
    return std::nullopt;
  }
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s == "true" || s == "1") return true;
    if (s == "false" || s == "0") return false;
  }
  return std::nullopt;
}

void check_int(const Field& f, const IntField& spec, long long value) {
  if (value < spec.min || value > spec.max) {
    throw SettingsError(dotted_key(f) + ": expected " + range_text(spec) + ", got " +
                        std::to_string(value));
  }
}

void check_string(const Field& f, const std::string& value) {
  if (f.name == "subprotocol") {
    if (std::find(kSubprotocols.begin(), kSubprotocols.end(), value) == kSubprotocols.end()) {
      throw SettingsError(dotted_key(f) +
                          ": expected aws.iot.securetunneling-1.0, -2.0 or -3.0, got \"" + value +
                          "\"");
    }
  } else if (f.name == "https_proxy") {
    // Empty = the environment decides. The error never repeats the URL: it
    // may hold a password.
    std::string error;
    if (!value.empty() && !is_direct(value) && !parse_proxy_url(value, error)) {
      throw SettingsError(dotted_key(f) + ": " + error);
    }
  } else if (value.empty()) {
    throw SettingsError(dotted_key(f) + ": must not be empty");
  }
}

void apply(const Field& f, const ordered_json& v, Settings& out) {
  if (const auto* spec = std::get_if<IntField>(&f.kind)) {
    const auto n = parse_integer(v);
    if (!n) {
      throw SettingsError(dotted_key(f) + ": expected " + range_text(*spec) + ", got " +
                          describe(v));
    }
    check_int(f, *spec, *n);
    out.*(spec->member) = static_cast<int>(*n);
  } else if (const auto* spec = std::get_if<BoolField>(&f.kind)) {
    const auto b = parse_bool(v);
    if (!b) {
      throw SettingsError(dotted_key(f) + ": expected true or false, got " + describe(v));
    }
    out.*(spec->member) = *b;
  } else if (const auto* spec = std::get_if<StringField>(&f.kind)) {
    if (!v.is_string()) {
      throw SettingsError(dotted_key(f) + ": expected a string, got " + describe(v));
    }
    const auto& s = v.get_ref<const std::string&>();
    check_string(f, s);
    out.*(spec->member) = s;
  }
}

// nlohmann reports a byte offset; a person editing the file wants a line.
std::string parse_error_text(std::string_view text, const nlohmann::json::parse_error& e) {
  const std::size_t byte = std::min<std::size_t>(e.byte, text.size() + 1);
  std::size_t line = 1;
  std::size_t column = 1;
  for (std::size_t i = 0; i + 1 < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  std::string reason = e.what();
  // "[json.exception.parse_error.101] parse error at line 1, column 2: <reason>"
  if (const auto pos = reason.find(": "); pos != std::string::npos) {
    reason = reason.substr(pos + 2);
  }
  return "invalid JSON at line " + std::to_string(line) + ", column " + std::to_string(column) +
         ": " + reason;
}

const ordered_json* child_object(const ordered_json& parent, std::string_view name,
                                 std::string_view path) {
  const auto it = parent.find(std::string(name));
  if (it == parent.end()) {
    return nullptr;
  }
  if (!it->is_object()) {
    throw SettingsError(std::string(path) + ": expected an object, got " + describe(*it));
  }
  return &*it;
}

}  // namespace

std::string settings_to_json(const Settings& s) {
  ordered_json proxy = ordered_json::object();
  for (const auto& f : fields()) {
    std::string value;
    if (const auto* spec = std::get_if<IntField>(&f.kind)) {
      value = std::to_string(s.*(spec->member));
    } else if (const auto* spec = std::get_if<BoolField>(&f.kind)) {
      value = s.*(spec->member) ? "true" : "false";
    } else if (const auto* spec = std::get_if<StringField>(&f.kind)) {
      value = s.*(spec->member);
      // An exported file is shared and printed: never with proxy credentials.
      if (spec->member == &Settings::https_proxy && !is_direct(value)) {
        value = proxy_url_without_credentials(value);
      }
    }
    if (f.group.empty()) {
      proxy[std::string(f.name)] = value;
    } else {
      proxy[std::string(f.group)][std::string(f.name)] = value;
    }
  }
  ordered_json root;
  root["tunneling"]["proxy"] = std::move(proxy);
  return root.dump(4) + "\n";
}

Settings settings_from_json(std::string_view json_text, const Settings& base) {
  ordered_json root;
  try {
    root = ordered_json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw SettingsError(parse_error_text(json_text, e));
  } catch (const nlohmann::json::exception& e) {
    // Well-formed JSON the parser still refuses: a number beyond the range
    // of a double (out_of_range.406, e.g. 1e999). Found by fuzz-settings;
    // it used to escape as an unexpected exception and abort the process.
    std::string reason = e.what();
    if (const auto pos = reason.find("] "); pos != std::string::npos) {
      reason = reason.substr(pos + 2);
    }
    throw SettingsError("invalid JSON: " + reason);
  }
  if (!root.is_object()) {
    throw SettingsError("expected a JSON object at the top level, got " + describe(root));
  }
  Settings out = base;
  const auto* tunneling = child_object(root, "tunneling", "tunneling");
  if (tunneling == nullptr) {
    return out;
  }
  const auto* proxy = child_object(*tunneling, "proxy", "tunneling.proxy");
  if (proxy == nullptr) {
    return out;
  }
  for (const auto& f : fields()) {
    const ordered_json* parent = proxy;
    if (!f.group.empty()) {
      parent = child_object(*proxy, f.group, std::string(kPrefix) + std::string(f.group));
      if (parent == nullptr) {
        continue;
      }
    }
    const auto it = parent->find(std::string(f.name));
    if (it != parent->end()) {
      apply(f, *it, out);
    }
  }
  return out;
}

void validate(const Settings& s) {
  for (const auto& f : fields()) {
    if (const auto* spec = std::get_if<IntField>(&f.kind)) {
      check_int(f, *spec, s.*(spec->member));
    } else if (const auto* spec = std::get_if<StringField>(&f.kind)) {
      check_string(f, s.*(spec->member));
    }
  }
  if (s.message_max_payload_size >= s.message_max_size) {
    throw SettingsError(std::string(kPrefix) +
                        "message.max_payload_size: must be less than message.max_size (" +
                        std::to_string(s.message_max_size) + "), got " +
                        std::to_string(s.message_max_payload_size));
  }
  if (s.ws_retry_max_delay_ms < s.ws_retry_delay_ms) {
    throw SettingsError(
        std::string(kPrefix) +
        "websocket.retry_max_delay_ms: must be at least websocket.retry_delay_ms (" +
        std::to_string(s.ws_retry_delay_ms) + "), got " + std::to_string(s.ws_retry_max_delay_ms));
  }
}

}  // namespace tunnel
