#include "output.h"

#include <chrono>
#include <string_view>

#include "control/control_codec.h"
#include "help_text.h"
#include "json_text.h"
#include "status_text.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif

namespace tunnel::tunnelctl {
namespace {

namespace pb = tunneld::control;
using ordered_json = nlohmann::ordered_json;

constexpr std::string_view kGroupAdvice =
    "add yourself to group tunneld (usermod -aG tunneld $USER, then log in again)";

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

std::string default_error(pb::Response::Status status) {
  return "tunneld answered " + pb::status_name(status) +
         " without details; see journalctl -u tunneld";
}

// The daemon's message, completed with what to do where it does not say.
std::string daemon_error_message(const pb::Response& r) {
  std::string message = r.error().empty() ? default_error(r.status()) : printable(r.error());
  switch (r.status()) {
    case pb::Response::NOT_FOUND:
      if (!contains(message, "tunnelctl list")) message += "; tunnelctl list shows the sessions";
      break;
    case pb::Response::UNAUTHORIZED:
      if (!contains(message, "usermod")) message += "; " + std::string(kGroupAdvice);
      break;
    case pb::Response::BAD_VERSION:
    case pb::Response::BAD_LENGTH:
    case pb::Response::MALFORMED:
    case pb::Response::STATUS_UNSPECIFIED:
      if (!contains(message, "same release")) message += "; " + std::string(kSameRelease);
      break;
    default:
      break;
  }
  return message;
}

Outcome missing_body(std::string_view what) {
  return {kExitProtocol,
          {},
          "tunnelctl: tunneld answered OK without " + std::string(what) + "; " +
              std::string(kSameRelease) + "\n"};
}

std::string open_text(const Invocation& inv, const pb::OpenResponse& open) {
  const bool source = inv.open.mode() == pb::MODE_SOURCE;
  if (inv.json) {
    ordered_json j{{"session_id", open.session_id()}};
    if (source) j["bound_port"] = open.bound_port();
    return json_text(j);
  }
  std::string out = printable(open.session_id()) + "\n";
  if (source && open.bound_port() != 0) {
    out += "listening on " + std::to_string(open.bound_port()) + "\n";
  }
  return out;
}

std::string version_answer_text(const Invocation& inv, const pb::VersionResponse& v) {
  if (inv.json) {
    return json_text(ordered_json{
        {"client_version", TUNNELD_VERSION},
        {"client_protocol_version", pb::kProtocolVersion},
        {"daemon_version", v.daemon_version()},
        {"protocol_version", v.protocol_version()},
    });
  }
  return version_text() + "tunneld " + printable(v.daemon_version()) + " (control protocol " +
         std::to_string(v.protocol_version()) + ")\n";
}

std::string notify_status_text(const Invocation& inv, const pb::NotifyStatusResponse& s) {
  if (inv.json) return notify_status_json(s);
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  return format_notify_status(s, now_ms);
}

Outcome render_ok(const Invocation& inv, const pb::Response& r) {
  Outcome o;
  switch (inv.command) {
    case Command::open:
      if (r.body_case() != pb::Response::kOpenResponse) return missing_body("the new session");
      o.out = open_text(inv, r.open_response());
      return o;
    case Command::list:
      if (r.body_case() != pb::Response::kListResponse) return missing_body("the session list");
      o.out = inv.json ? list_json(r.list_response()) : format_list(r.list_response());
      return o;
    case Command::status:
      if (r.body_case() != pb::Response::kStatusResponse || !r.status_response().has_session()) {
        return missing_body("the session's status");
      }
      o.out = inv.json ? session_json(r.status_response().session())
                       : format_status(r.status_response().session());
      return o;
    case Command::notify_status:
      if (r.body_case() != pb::Response::kNotifyStatusResponse) {
        return missing_body("the notify link's status");
      }
      o.out = notify_status_text(inv, r.notify_status_response());
      return o;
    case Command::close:
      o.out = inv.json ? json_text(ordered_json{{"closed", inv.session}})
                       : "closed " + printable(inv.session) + "\n";
      return o;
    case Command::version:
      if (r.body_case() != pb::Response::kVersionResponse) return missing_body("its version");
      o.out = version_answer_text(inv, r.version_response());
      return o;
    case Command::help:
    case Command::client_version:
      break;
  }
  return o;
}

}  // namespace

int exit_code_for(pb::Response::Status status) {
  switch (status) {
    case pb::Response::OK:
      return kExitOk;
    case pb::Response::NOT_FOUND:
      return kExitNotFound;
    case pb::Response::UNAUTHORIZED:
      return kExitPermission;
    case pb::Response::STATUS_UNSPECIFIED:
    case pb::Response::BAD_VERSION:
    case pb::Response::BAD_LENGTH:
    case pb::Response::MALFORMED:
      return kExitProtocol;
    default:
      // INVALID_ARGUMENT, ALREADY_EXISTS, INTERNAL and statuses added later:
      // the daemon understood and refused.
      return kExitDaemonError;
  }
}

int exit_code_for(ControlErrorKind kind) {
  switch (kind) {
    case ControlErrorKind::unreachable:
    case ControlErrorKind::timeout:
    case ControlErrorKind::connection_lost:
      return kExitUnreachable;
    case ControlErrorKind::permission_denied:
      return kExitPermission;
    case ControlErrorKind::protocol:
      return kExitProtocol;
  }
  return kExitProtocol;
}

Outcome render_response(const Invocation& inv, const pb::Response& response) {
  if (response.status() == pb::Response::OK) return render_ok(inv, response);
  Outcome o;
  o.exit_code = exit_code_for(response.status());
  o.err = "tunnelctl: " + daemon_error_message(response) + "\n";
  if (inv.command == Command::version && !inv.json) o.out = version_text();
  return o;
}

Outcome render_failure(const Invocation& inv, const ControlError& error) {
  Outcome o;
  o.exit_code = exit_code_for(error.kind);
  o.err = "tunnelctl: " + error.message + "\n";
  // The client's own version is known without a daemon.
  if (inv.command == Command::version && !inv.json) o.out = version_text();
  return o;
}

}  // namespace tunnel::tunnelctl
