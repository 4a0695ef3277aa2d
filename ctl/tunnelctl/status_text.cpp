#include "status_text.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <ctime>
#include <utility>
#include <vector>

#include "json_text.h"
#include "text.h"

namespace tunnel::tunnelctl {
namespace {

namespace pb = tunneld::control;
using ordered_json = nlohmann::ordered_json;

std::string pad(std::string s, std::size_t width, bool right) {
  if (s.size() >= width) return s;
  const std::string fill(width - s.size(), ' ');
  return right ? fill + s : s + fill;
}

std::string dash_if_empty(std::string_view s) { return s.empty() ? "-" : printable(s); }

ordered_json session_object(const pb::SessionInfo& s) {
  ordered_json services = ordered_json::array();
  for (const auto& m : s.services()) {
    services.push_back(ordered_json{{"name", m.name()}, {"address", m.address()}});
  }
  ordered_json connections = ordered_json::array();
  for (const auto& c : s.connections()) {
    connections.push_back(ordered_json{{"service", c.service()},
                                       {"stream_id", c.stream_id()},
                                       {"connection_id", c.connection_id()},
                                       {"peer", c.peer()},
                                       {"bytes_in", c.bytes_in()},
                                       {"bytes_out", c.bytes_out()},
                                       {"rate_in", c.rate_in()},
                                       {"rate_out", c.rate_out()},
                                       {"age_s", c.age_s()}});
  }
  return ordered_json{
      {"id", s.id()},
      {"name", s.name()},
      {"mode", std::string(mode_name(s.mode()))},
      {"state", state_name(s.state())},
      {"endpoint", s.endpoint()},
      {"protocol", s.protocol()},
      {"stream_id", s.stream_id()},
      {"local_address", s.local_address()},
      {"bytes_in", s.bytes_in()},
      {"bytes_out", s.bytes_out()},
      {"rate_in", s.rate_in()},
      {"rate_out", s.rate_out()},
      {"reconnects", s.reconnects()},
      {"ping_rtt_us", s.ping_rtt_us()},
      {"uptime_s", s.uptime_s()},
      {"last_error", s.last_error()},
      {"channel_id", s.channel_id()},
      {"https_proxy", s.https_proxy()},
      {"services", std::move(services)},
      {"connections", std::move(connections)},
      {"origin", s.origin()},
      {"notify_thing", s.notify_thing()},
  };
}

}  // namespace

std::string printable(std::string_view s) {
  std::string out(s);
  std::replace_if(
      out.begin(), out.end(),
      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }, '?');
  return out;
}

std::string format_bytes(std::uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static constexpr std::array<const char*, 6> kUnits = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < kUnits.size()) {
    value /= 1024.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", value, kUnits[unit]);
  return buf;
}

std::string format_rate(std::uint64_t bytes_per_second) {
  return format_bytes(bytes_per_second) + "/s";
}

std::string format_rtt(std::uint64_t microseconds) {
  const double ms = static_cast<double>(microseconds) / 1000.0;
  char buf[32];
  std::snprintf(buf, sizeof buf, ms < 10 ? "%.2f ms" : ms < 1000 ? "%.1f ms" : "%.0f ms", ms);
  return buf;
}

std::string format_duration(std::uint64_t seconds) {
  const std::uint64_t d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60,
                      s = seconds % 60;
  char buf[64];
  if (seconds < 60) {
    std::snprintf(buf, sizeof buf, "%llus", static_cast<unsigned long long>(s));
  } else if (seconds < 3600) {
    std::snprintf(buf, sizeof buf, "%llum %02llus", static_cast<unsigned long long>(m),
                  static_cast<unsigned long long>(s));
  } else if (seconds < 86400) {
    std::snprintf(buf, sizeof buf, "%lluh %02llum %02llus", static_cast<unsigned long long>(h),
                  static_cast<unsigned long long>(m), static_cast<unsigned long long>(s));
  } else {
    std::snprintf(buf, sizeof buf, "%llud %02lluh %02llum", static_cast<unsigned long long>(d),
                  static_cast<unsigned long long>(h), static_cast<unsigned long long>(m));
  }
  return buf;
}

std::string_view mode_name(pb::Mode mode) {
  switch (mode) {
    case pb::MODE_SOURCE:
      return "source";
    case pb::MODE_DESTINATION:
      return "destination";
    default:
      return "unspecified";
  }
}

std::string state_name(pb::SessionInfo::State state) {
  if (state == pb::SessionInfo::STATE_UNSPECIFIED) return "unspecified";
  if (!pb::SessionInfo::State_IsValid(state)) return "unknown_" + std::to_string(state);
  return text::lower(pb::SessionInfo::State_Name(state));
}

std::string format_list(const pb::ListResponse& list) {
  if (list.sessions().empty()) {
    return "no sessions; tunnelctl open starts one\n";
  }
  static constexpr std::array<const char*, 10> kHeader = {
      "ID", "NAME", "MODE", "STATE", "ENDPOINT", "LOCAL", "STREAM", "IN", "OUT", "RECONNECTS"};
  // STREAM and the counters are right-aligned, the way numbers read.
  static constexpr std::array<bool, 10> kRight = {false, false, false, false, false,
                                                  false, true,  true,  true,  true};
  std::vector<std::array<std::string, 10>> rows;
  rows.push_back({});
  std::copy(kHeader.begin(), kHeader.end(), rows.back().begin());
  for (const auto& s : list.sessions()) {
    rows.push_back(
        {dash_if_empty(s.id()), dash_if_empty(s.name()), std::string(mode_name(s.mode())),
         state_name(s.state()), dash_if_empty(s.endpoint()), dash_if_empty(s.local_address()),
         s.stream_id() == 0 ? "-" : std::to_string(s.stream_id()), format_bytes(s.bytes_in()),
         format_bytes(s.bytes_out()), std::to_string(s.reconnects())});
  }
  std::array<std::size_t, 10> width{};
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      if (i != 0) line += "  ";
      line += pad(row[i], width[i], kRight[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

std::string format_status(const pb::SessionInfo& s) {
  std::vector<std::pair<const char*, std::string>> lines = {
      {"id", dash_if_empty(s.id())},
      {"name", dash_if_empty(s.name())},
      {"mode", std::string(mode_name(s.mode()))},
      {"state", state_name(s.state())},
      {"endpoint", dash_if_empty(s.endpoint())},
      {"proxy", s.https_proxy().empty() ? "none (direct)" : printable(s.https_proxy())},
      {"protocol", dash_if_empty(s.protocol())},
      {"channel id", dash_if_empty(s.channel_id())},
      {"stream id", s.stream_id() == 0 ? "none" : std::to_string(s.stream_id())},
      {"local", dash_if_empty(s.local_address())},
      {"bytes in", format_bytes(s.bytes_in()) + " (" + std::to_string(s.bytes_in()) +
                       " bytes, tunnel to local)"},
      {"bytes out", format_bytes(s.bytes_out()) + " (" + std::to_string(s.bytes_out()) +
                        " bytes, local to tunnel)"},
      {"rate in", format_rate(s.rate_in())},
      {"rate out", format_rate(s.rate_out())},
      {"reconnects", std::to_string(s.reconnects())},
      {"ping rtt", s.ping_rtt_us() == 0 ? "none yet" : format_rtt(s.ping_rtt_us())},
      {"uptime", format_duration(s.uptime_s())},
      {"last error", s.last_error().empty() ? "none" : printable(s.last_error())},
  };
  if (!s.origin().empty()) {
    lines.push_back(
        {"origin", printable(s.origin()) + (s.notify_thing().empty()
                                                ? std::string()
                                                : " (thing " + printable(s.notify_thing()) + ")")});
  }
  std::string out;
  for (const auto& [label, value] : lines) {
    out += pad(std::string(label) + ":", 12, false) + value + "\n";
  }
  for (const auto& m : s.services()) {
    out += pad("service:", 12, false) + printable(m.name()) + " " + printable(m.address()) + "\n";
  }
  if (!s.connections().empty()) {
    out += "connections:\n";
    for (const auto& c : s.connections()) {
      std::string id = (c.service().empty() ? "" : printable(c.service()) + " ") + "stream " +
                       std::to_string(c.stream_id()) + " conn " + std::to_string(c.connection_id());
      out += "  " + id + "  peer " + dash_if_empty(printable(c.peer())) + "  in " +
             format_bytes(c.bytes_in()) + " (" + format_rate(c.rate_in()) + ")  out " +
             format_bytes(c.bytes_out()) + " (" + format_rate(c.rate_out()) + ")  age " +
             format_duration(c.age_s()) + "\n";
    }
  }
  return out;
}

std::string session_json(const pb::SessionInfo& info) { return json_text(session_object(info)); }

std::string list_json(const pb::ListResponse& list) {
  ordered_json sessions = ordered_json::array();
  for (const auto& s : list.sessions()) sessions.push_back(session_object(s));
  return json_text(ordered_json{{"sessions", std::move(sessions)}});
}

std::string format_notify_status(const pb::NotifyStatusResponse& s, std::int64_t now_unix_ms) {
  if (!s.enabled()) {
    return "notify:     disabled (no enabled [notify] table in tunneld.toml; see "
           "docs/notify.md)\n";
  }
  std::string last = "none yet";
  if (s.last_notification_unix_ms() > 0) {
    const std::int64_t ms = s.last_notification_unix_ms();
    const std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    last = std::string(buf) + "Z";
    if (now_unix_ms >= ms) {
      last +=
          " (" + format_duration(static_cast<std::uint64_t>((now_unix_ms - ms) / 1000)) + " ago)";
    }
  }
  const std::vector<std::pair<const char*, std::string>> lines = {
      {"notify", s.connected() ? "connected" : "not connected"},
      {"broker", dash_if_empty(printable(s.broker()))},
      {"thing", dash_if_empty(printable(s.thing_name()))},
      {"client id", dash_if_empty(printable(s.client_id()))},
      {"topic", dash_if_empty(printable(s.topic()))},
      {"last notification", last},
      {"accepted", std::to_string(s.accepted())},
      {"refused",
       std::to_string(s.refused()) +
           (s.last_refusal().empty() ? "" : " (last: " + printable(s.last_refusal()) + ")")},
      {"duplicates", std::to_string(s.duplicates()) + " (redeliveries dropped)"},
      {"sessions", std::to_string(s.sessions())},
      {"connects", std::to_string(s.connects())},
      {"last error", s.last_error().empty() ? "none" : printable(s.last_error())},
  };
  std::string out;
  for (const auto& [label, value] : lines) {
    out += pad(std::string(label) + ":", 19, false) + value + "\n";
  }
  return out;
}

std::string notify_status_json(const pb::NotifyStatusResponse& s) {
  return json_text(ordered_json{
      {"enabled", s.enabled()},
      {"connected", s.connected()},
      {"broker", s.broker()},
      {"thing_name", s.thing_name()},
      {"client_id", s.client_id()},
      {"topic", s.topic()},
      {"last_notification_unix_ms", s.last_notification_unix_ms()},
      {"accepted", s.accepted()},
      {"refused", s.refused()},
      {"last_refusal", s.last_refusal()},
      {"duplicates", s.duplicates()},
      {"sessions", s.sessions()},
      {"connects", s.connects()},
      {"last_error", s.last_error()},
  });
}

}  // namespace tunnel::tunnelctl
