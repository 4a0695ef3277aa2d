#include "session_request.h"

#include <algorithm>
#include <chrono>
#include <vector>

#include "endpoint.h"
#include "secret_file.h"
#include "settings.h"

namespace tunneld {
control::Mode to_control_mode(tunnel::Mode m) {
  return m == tunnel::Mode::source ? control::MODE_SOURCE : control::MODE_DESTINATION;
}

namespace {

tunnel::Settings settings_of(const control::OpenRequest& r, const tunnel::Settings& defaults) {
  try {
    tunnel::Settings settings = r.settings_json().empty()
                                    ? defaults
                                    : tunnel::settings_from_json(r.settings_json(), defaults);
    tunnel::validate(settings);
    return settings;
  } catch (const tunnel::SettingsError& e) {
    throw InvalidRequest(std::string("settings: ") + e.what());
  }
}

// A source listens on the bind address (else the settings' default); a
// destination's bare port means localhost.
std::string default_host(const control::OpenRequest& r, const tunnel::Settings& settings) {
  if (r.mode() != control::MODE_SOURCE) return "localhost";
  return r.bind_address().empty() ? settings.default_bind_address : r.bind_address();
}

std::vector<tunnel::ServiceMapping> services_of(const control::OpenRequest& r,
                                                const std::string& host) {
  std::vector<tunnel::ServiceMapping> services;
  for (const auto& m : r.services()) {
    if (!tunnel::is_valid_service_id(m.name())) {
      throw InvalidRequest("services: a service name must be " +
                           std::string(tunnel::kServiceIdRule));
    }
    for (const auto& other : services) {
      if (other.id == m.name()) throw InvalidRequest("services: " + m.name() + " given twice");
    }
    std::string error;
    auto hp = tunnel::parse_host_port(m.address(), host, error);
    if (!hp) throw InvalidRequest("service " + m.name() + ": " + error);
    if (r.mode() != control::MODE_SOURCE && hp->port == 0) {
      throw InvalidRequest("service " + m.name() + ": port 0 is not a service port");
    }
    services.push_back(tunnel::ServiceMapping{m.name(), *hp});
  }
  return services;
}

// The mode and the local side: the services, or one listen or target address.
void set_local_side(const control::OpenRequest& r, tunnel::ProxyConfig& c) {
  const bool multi = !c.services.empty();
  std::string error;
  switch (r.mode()) {
    case control::MODE_SOURCE: {
      c.mode = tunnel::Mode::source;
      if (multi) {
        c.local = c.services.front().local;
        if (!r.target().empty() || !r.listen().empty())
          throw InvalidRequest("listen: give either services or one listen address");
        return;
      }
      if (!r.target().empty()) throw InvalidRequest("target: a source session listens (--listen)");
      auto hp = tunnel::parse_host_port(r.listen(), default_host(r, c.settings), error);
      if (!hp) throw InvalidRequest("listen: " + error);
      c.local = *hp;
      return;
    }
    case control::MODE_DESTINATION: {
      c.mode = tunnel::Mode::destination;
      c.bind_address = r.bind_address();
      if (multi) {
        c.local = c.services.front().local;
        if (!r.target().empty() || !r.listen().empty())
          throw InvalidRequest("target: give either services or one target");
        return;
      }
      if (!r.listen().empty())
        throw InvalidRequest("listen: a destination session connects (--target)");
      auto hp = tunnel::parse_host_port(r.target(), "localhost", error);
      if (!hp) throw InvalidRequest("target: " + error);
      if (hp->port == 0) throw InvalidRequest("target: port 0 is not a service port");
      c.local = *hp;
      return;
    }
    default:
      throw InvalidRequest("mode: say source (--listen) or destination (--target)");
  }
}

tunnel::ServiceEndpoint endpoint_of(const control::OpenRequest& r) {
  if (!r.endpoint().empty() && !r.region().empty()) {
    throw InvalidRequest("endpoint and region are mutually exclusive");
  }
  std::string error;
  if (!r.endpoint().empty()) {
    auto ep = tunnel::parse_endpoint(r.endpoint(), error);
    if (!ep) throw InvalidRequest("endpoint: " + error);
    return *ep;
  }
  if (!r.region().empty()) {
    auto ep = tunnel::endpoint_for_region(r.region(), error);
    if (!ep) throw InvalidRequest("region: " + error);
    return *ep;
  }
  throw InvalidRequest("endpoint: give -e ENDPOINT or -r REGION");
}

void set_tokens(const control::OpenRequest& r, tunnel::ProxyConfig& c) {
  if (r.access_token().empty()) throw InvalidRequest("access token: missing");
  if (!tunnel::is_header_safe_token(r.access_token())) {
    throw InvalidRequest("access token: contains spaces or control characters");
  }
  c.access_token = r.access_token();
  if (!r.client_token().empty()) {
    if (!tunnel::is_valid_client_token(r.client_token())) {
      throw InvalidRequest("client token: must be 32 to 128 characters of A-Z, a-z, 0-9 and -");
    }
    c.client_token = r.client_token();
  }
}

}  // namespace

tunnel::ProxyConfig proxy_config_from(const control::OpenRequest& r,
                                      const tunnel::Settings& defaults) {
  tunnel::ProxyConfig c;
  c.settings = settings_of(r, defaults);
  if (r.services_size() > 3) throw InvalidRequest("services: a tunnel carries at most 3");
  if (r.protocol_version() > 3) throw InvalidRequest("protocol_version: expected 0..3");
  c.protocol_version = static_cast<int>(r.protocol_version());
  c.services = services_of(r, default_host(r, c.settings));
  set_local_side(r, c);
  c.endpoint = endpoint_of(r);
  set_tokens(r, c);
  if (!r.https_proxy().empty()) {
    // Overrides the settings' https_proxy; the daemon's environment is only
    // consulted when neither is set (Daemon::start_session resolves).
    std::string proxy_error;
    if (!tunnel::is_direct(r.https_proxy()) &&
        !tunnel::parse_proxy_url(r.https_proxy(), proxy_error)) {
      throw InvalidRequest("https proxy: " + proxy_error);
    }
    c.settings.https_proxy = r.https_proxy();
  }
  c.capath = r.capath();
  c.cafile = r.cafile();
  c.verify_tls = !r.no_ssl_host_verify();
  c.name = r.name();
  return c;
}

void fill_session_info(const tunnel::ProxySession& s, control::SessionInfo& info) {
  using control::SessionInfo;
  const auto& cfg = s.config();
  const auto& st = s.stats();
  info.set_mode(to_control_mode(cfg.mode));
  switch (s.state()) {
    case tunnel::SessionState::idle:
      info.set_state(SessionInfo::STARTING);
      break;
    case tunnel::SessionState::connecting:
      info.set_state(SessionInfo::CONNECTING);
      break;
    case tunnel::SessionState::connected:
      info.set_state(SessionInfo::CONNECTED);
      break;
    case tunnel::SessionState::backing_off:
      info.set_state(SessionInfo::RECONNECTING);
      break;
    case tunnel::SessionState::stopping:
      info.set_state(SessionInfo::STOPPING);
      break;
    case tunnel::SessionState::ended:
      info.set_state(s.outcome().ok ? SessionInfo::CLOSED : SessionInfo::FAILED);
      break;
  }
  info.set_endpoint(cfg.endpoint.host + ":" + std::to_string(cfg.endpoint.port));
  info.set_protocol(st.subprotocol);
  info.set_stream_id(s.active_stream().value_or(0));
  info.set_local_address(st.local_address);
  info.set_bytes_in(st.bytes_from_service);
  info.set_bytes_out(st.bytes_to_service);
  info.set_reconnects(static_cast<std::uint32_t>(st.reconnects));
  info.set_ping_rtt_us(st.last_rtt_us > 0 ? static_cast<std::uint64_t>(st.last_rtt_us) : 0);
  const auto up = std::chrono::steady_clock::now() - st.started;
  info.set_uptime_s(
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(up).count()));
  const bool ended = s.state() == tunnel::SessionState::ended;
  info.set_last_error(ended ? s.outcome().reason : st.last_error);
  info.set_channel_id(st.channel_id);
  info.set_https_proxy(cfg.https_proxy ? cfg.https_proxy->display() : std::string());
  const auto ports = s.listen_ports();
  for (const auto& m : cfg.services) {
    auto* sm = info.add_services();
    sm->set_name(m.id);
    std::uint16_t port = m.local.port;
    for (const auto& [id, p] : ports) {
      if (id == m.id && p != 0) port = p;
    }
    sm->set_address(m.local.host + ":" + std::to_string(port));
  }
  const auto now = std::chrono::steady_clock::now();
  for (const auto& [ref, e] : s.connections().entries()) {
    auto* c = info.add_connections();
    c->set_service(ref.service);
    c->set_stream_id(ref.stream_id);
    c->set_connection_id(ref.connection_id);
    c->set_peer(e.peer);
    c->set_bytes_in(e.bytes_from_tunnel);
    c->set_bytes_out(e.bytes_to_tunnel);
    const auto age_ms = std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(now - e.started).count());
    c->set_age_s(static_cast<std::uint64_t>(age_ms / 1000));
    c->set_rate_in(e.bytes_from_tunnel * 1000 / static_cast<std::uint64_t>(age_ms));
    c->set_rate_out(e.bytes_to_tunnel * 1000 / static_cast<std::uint64_t>(age_ms));
  }
}

}  // namespace tunneld
