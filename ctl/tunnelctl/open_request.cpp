#include "open_request.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string_view>

#include "config.h"
#include "endpoint.h"
#include "http_proxy.h"
#include "proxy_config.h"
#include "secret_input.h"
#include "text.h"
#include "token_input.h"

namespace tunnel::tunnelctl {
namespace {

namespace pb = tunneld::control;

constexpr std::string_view kEndpointEnv = "AWSIOT_TUNNEL_ENDPOINT";
constexpr std::string_view kRegionEnv = "AWSIOT_TUNNEL_REGION";

std::optional<pb::Mode> parse_mode(std::string_view text) {
  const std::string w = text::lower(text);
  if (w == "source" || w == "src") return pb::MODE_SOURCE;
  if (w == "destination" || w == "dest" || w == "dst") return pb::MODE_DESTINATION;
  return std::nullopt;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// "SSH1=5555,HTTP1=127.0.0.1:8080" into req.services (checked again by tunneld).
void add_services(std::string_view text, const std::string& display, pb::Mode mode,
                  pb::OpenRequest& req) {
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string item(text.substr(start, comma - start));
    start = comma + 1;
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw UsageError(display + ": '" + item + "' is not a NAME=[HOST:]PORT mapping");
    }
    const std::string name = item.substr(0, eq);
    // Checked here too, so that the request never carries a name protobuf
    // cannot serialize (not UTF-8) and the error comes from tunnelctl.
    if (!is_valid_service_id(name)) throw UsageError(display + ": " + service_id_error(name));
    const std::string address = item.substr(eq + 1);
    for (const auto& m : req.services()) {
      if (m.name() == name) throw UsageError(display + ": service " + name + " given twice");
    }
    std::string error;
    const auto hp = parse_host_port(address, "localhost", error);
    if (!hp) throw UsageError(display + " (service " + name + "): " + error);
    if (mode == pb::MODE_DESTINATION && hp->port == 0) {
      throw UsageError(display + " (service " + name + "): the destination port must be 1..65535");
    }
    auto* m = req.add_services();
    m->set_name(name);
    m->set_address(address);
  }
  if (req.services_size() > 3) {
    throw UsageError(display + ": " + std::to_string(req.services_size()) +
                     " services; a tunnel carries at most 3");
  }
}

// --mode, when given.
std::optional<pb::Mode> mode_option(const OpenOptions& o) {
  const auto value = value_of(o.mode);
  if (!value) return std::nullopt;
  const auto mode = parse_mode(*value);
  if (!mode) {
    throw UsageError("invalid --mode" + quoted_if_echoable(*value) +
                     ": expected source (src) or dest (destination, dst)");
  }
  return mode;
}

// --service NAME=[HOST:]PORT (repeatable): the mode comes from --mode.
void resolve_service_options(const OpenOptions& o, std::optional<pb::Mode> mode,
                             bool listen_or_target, pb::OpenRequest& req) {
  if (listen_or_target) {
    throw UsageError("--service replaces -s/--listen and -d/--target; give services one way");
  }
  if (!mode) {
    throw UsageError("--service needs --mode source or --mode dest (listen or connect?)");
  }
  req.set_mode(*mode);
  std::string joined;
  for (const auto& s : o.services) joined += (joined.empty() ? "" : ",") + s;
  add_services(joined, "--service", *mode, req);
}

// Source with -s/--listen, destination with -d/--target; --mode must agree.
pb::Mode role_of(std::optional<pb::Mode> mode, bool listen, bool target) {
  if (listen && target) {
    throw UsageError(
        "-s/--listen and -d/--target are mutually exclusive: a session either listens for local "
        "clients (source) or connects to a local service (destination); give one");
  }
  if (!listen && !target) {
    if (mode == pb::MODE_SOURCE) {
      throw UsageError("source mode needs -s/--listen [HOST:]PORT to listen on");
    }
    if (mode == pb::MODE_DESTINATION) {
      throw UsageError("destination mode needs -d/--target [HOST:]PORT to connect to");
    }
    throw UsageError(
        "no mode: give -s/--listen [HOST:]PORT to accept local clients (source), or "
        "-d/--target [HOST:]PORT to forward to a local service (destination)");
  }
  const pb::Mode role = listen ? pb::MODE_SOURCE : pb::MODE_DESTINATION;
  if (mode && *mode != role) {
    throw UsageError(listen ? "--mode dest conflicts with -s/--listen (a source option); use "
                              "-d/--target [HOST:]PORT with --mode dest, or drop --mode"
                            : "--mode source conflicts with -d/--target (a destination option); "
                              "use -s/--listen [HOST:]PORT with --mode source, or drop --mode");
  }
  return role;
}

// One unnamed service: -s [HOST:]PORT or -d [HOST:]PORT.
void set_local_address(const std::string& text, const std::string& display, pb::Mode role,
                       const std::optional<std::string>& bind, pb::OpenRequest& req) {
  std::string error;
  const auto hp = parse_host_port(text, "localhost", error);
  if (!hp) throw UsageError(display + ": " + error);
  if (role == pb::MODE_SOURCE) {
    if (bind && !all_digits(text) && hp->host != *bind) {
      throw UsageError("-s/--listen names the address '" + hp->host +
                       "' but -b/--bind-address says '" + *bind +
                       "'; give the address in one place");
    }
    req.set_listen(text);
  } else {
    if (hp->port == 0) throw UsageError("-d/--target: the destination port must be 1..65535");
    req.set_target(text);
  }
}

// The mode and the local side: services, or one listen or target address.
void resolve_role(const OpenOptions& o, pb::OpenRequest& req) {
  const auto mode = mode_option(o);
  const auto listen = value_of(o.listen);
  const auto target = value_of(o.target);
  const auto bind = value_of(o.bind);
  if (!o.services.empty()) {
    resolve_service_options(o, mode, listen || target, req);
  } else {
    const pb::Mode role = role_of(mode, listen.has_value(), target.has_value());
    req.set_mode(role);
    const std::string& text = listen ? *listen : *target;
    const std::string& display = listen ? o.listen.display : o.target.display;
    if (text.find('=') != std::string::npos) {
      add_services(text, display, role, req);
    } else {
      set_local_address(text, display, role, bind, req);
    }
  }
  if (bind) req.set_bind_address(*bind);
}

void resolve_protocol(const OpenOptions& o, pb::OpenRequest& req) {
  const auto v = value_of(o.protocol);
  if (!v) return;
  const std::string w = text::lower(*v);
  if (w != "v1" && w != "v2" && w != "v3") {
    throw UsageError(
        "-y/--protocol: expected V1, V2 or V3 (default: offer all three and detect "
        "the peer's)");
  }
  req.set_protocol_version(static_cast<unsigned>(w[1] - '0'));
}

void resolve_endpoint(const OpenOptions& o, const Env& env, pb::OpenRequest& req,
                      std::vector<std::string>& warnings) {
  const auto endpoint = value_of(o.endpoint);
  const auto region = value_of(o.region);
  const auto env_endpoint = env(kEndpointEnv);
  const auto env_region = env(kRegionEnv);
  std::optional<std::string> chosen_endpoint, chosen_region;
  std::string origin;
  if (endpoint && region) {
    throw UsageError("-e/--endpoint and -r/--region are mutually exclusive; give one");
  }
  if (endpoint || region) {
    chosen_endpoint = endpoint;
    chosen_region = region;
    origin = endpoint ? o.endpoint.display : o.region.display;
    for (const auto& [value, name] :
         {std::pair{env_endpoint, kEndpointEnv}, std::pair{env_region, kRegionEnv}}) {
      if (value)
        warnings.push_back(std::string(name) + " ignored: " + origin + " takes precedence");
    }
  } else if (env_endpoint && env_region) {
    throw UsageError(
        "AWSIOT_TUNNEL_ENDPOINT and AWSIOT_TUNNEL_REGION are both set; unset one, or choose with "
        "-e/--endpoint or -r/--region");
  } else if (env_endpoint || env_region) {
    chosen_endpoint = env_endpoint;
    chosen_region = env_region;
    origin = std::string(env_endpoint ? kEndpointEnv : kRegionEnv);
  } else {
    throw UsageError(
        "no service endpoint: give -r/--region REGION (e.g. us-east-1) or -e/--endpoint "
        "HOST[:PORT], or set AWSIOT_TUNNEL_REGION or AWSIOT_TUNNEL_ENDPOINT");
  }
  std::string error;
  if (chosen_endpoint) {
    if (!parse_endpoint(*chosen_endpoint, error)) throw UsageError(origin + ": " + error);
    req.set_endpoint(*chosen_endpoint);
  } else {
    if (!endpoint_for_region(*chosen_region, error)) throw UsageError(origin + ": " + error);
    req.set_region(*chosen_region);
  }
}

void resolve_name(const OpenOptions& o, pb::OpenRequest& req) {
  const auto name = value_of(o.name);
  if (!name) return;
  // Checked here too: a name protobuf cannot carry (not UTF-8) would
  // otherwise reach the daemon as a malformed request.
  if (!tunneld::is_valid_session_name(*name)) {
    throw UsageError("--name: expected " + std::string(tunneld::kSessionNameRule));
  }
  req.set_name(*name);
}

// The daemon opens these paths, from its own working directory.
void resolve_tls(const OpenOptions& o, pb::OpenRequest& req, std::vector<std::string>& warnings) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (const auto dir = value_of(o.capath)) {
    cli::require_ca_directory(*dir, o.capath.display);
    req.set_capath(fs::absolute(*dir, ec).lexically_normal().string());
  }
  if (const auto file = value_of(o.cafile)) {
    cli::require_ca_file(*file, o.cafile.display);
    req.set_cafile(fs::absolute(*file, ec).lexically_normal().string());
  }
  if (o.no_verify) {
    req.set_no_ssl_host_verify(true);
    warnings.emplace_back(cli::kNoHostVerifyWarning);
  }
}

// Checked here for a quick usage error; tunneld checks again and resolves the
// proxy against its own environment when none is given.
void resolve_proxy(const OpenOptions& o, pb::OpenRequest& req, std::vector<std::string>& warnings) {
  const auto url = value_of(o.https_proxy);
  if (!url) return;
  if (!is_direct(*url)) {
    std::string error;
    const auto p = parse_proxy_url(*url, error);
    if (!p) throw UsageError("--https-proxy: " + error);
    if (p->has_credentials()) {
      warnings.push_back(
          "the proxy credentials given with --https-proxy are visible to other users in process "
          "listings; put \"https_proxy\" in a --settings-json file (mode 0600), or set "
          "HTTPS_PROXY in tunneld's environment");
    }
  }
  req.set_https_proxy(*url);
}

void resolve_settings(const OpenOptions& o, pb::OpenRequest& req) {
  const auto path = value_of(o.settings);
  if (!path) return;
  req.set_settings_json(cli::read_settings_file(*path).json);
}

}  // namespace

void add_open_options(CLI::App& open, OpenOptions& o) {
  add_value(open, o.mode, "-m,--mode", "--mode");
  add_value(open, o.listen, "-s,--listen,--source-listen-port", "-s/--listen");
  add_value(open, o.target, "-d,--target,--destination-app", "-d/--target");
  add_value(open, o.region, "-r,--region", "-r/--region");
  add_value(open, o.endpoint, "-e,--endpoint,--proxy-endpoint", "-e/--endpoint");
  add_value(open, o.bind, "-b,--bind-address,--local-bind-address", "-b/--bind-address");
  add_value(open, o.capath, "-c,--capath", "-c/--capath");
  add_value(open, o.cafile, "--cafile", "--cafile");
  add_value(open, o.settings, "--settings-json", "--settings-json");
  add_value(open, o.client_token, "-i,--client-token", "-i/--client-token");
  add_value(open, o.name, "--name", "--name");
  add_value(open, o.token_file, "--access-token-file", "--access-token-file");
  add_value(open, o.https_proxy, "--https-proxy", "--https-proxy");
  open.add_flag("-k,--no-ssl-host-verify", o.no_verify);
  add_value(open, o.protocol, "-y,--protocol", "-y/--protocol");
  open.add_option("--service", o.services);
}

pb::OpenRequest open_request_from(const OpenOptions& o, const Env& env, const Stdin& in,
                                  std::vector<std::string>& warnings) {
  pb::OpenRequest req;
  // Cheap checks first: a usage mistake must not consume the token on stdin.
  resolve_role(o, req);
  resolve_protocol(o, req);
  resolve_endpoint(o, env, req, warnings);
  resolve_name(o, req);
  resolve_tls(o, req, warnings);
  resolve_settings(o, req);
  resolve_proxy(o, req, warnings);
  if (auto token =
          read_client_token(value_of(o.client_token), o.client_token.display, env, warnings)) {
    req.set_client_token(std::move(*token));
  }
  req.set_access_token(read_access_token(value_of(o.token_file), env, in, warnings));
  return req;
}

}  // namespace tunnel::tunnelctl
