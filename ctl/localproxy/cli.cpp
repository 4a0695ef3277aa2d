#include "cli.h"

#include <algorithm>
#include <charconv>

#include "endpoint.h"
#include "http_proxy.h"
#include "local_side.h"
#include "option_sources.h"
#include "secret_input.h"
#include "text.h"

namespace tunnel::localproxy {
namespace {

// From sources to Options: each resolve_* turns the options of one concern
// into fields of the result.

int resolve_verbosity(const Sources& sources) {
  const auto f = sources.pick(kVerbose);
  if (!f) {
    return 4;
  }
  unsigned level = 0;
  const char* end = f->value.data() + f->value.size();
  auto [ptr, ec] = std::from_chars(f->value.data(), end, level);
  if (ec != std::errc{} || ptr != end || level > 255) {
    throw UsageError("invalid value " + in_quotes(f->value) + " for " + described(kVerbose, *f) +
                     ": expected a number 0..255 (0 off ... 4 info, 5 debug, 6 trace)");
  }
  return static_cast<int>(std::min(level, 6u));
}

Settings resolve_settings(const Sources& sources) {
  const auto f = sources.pick(kSettingsJson);
  if (!f) {
    return Settings{};
  }
  return cli::read_settings_file(f->value).settings;
}

void resolve_tokens(const Sources& sources, ProxyConfig& config,
                    std::vector<std::string>& warnings) {
  const auto token = sources.pick(kAccessToken);
  if (!token) {
    throw UsageError(
        "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN, or write access-token = ... in a "
        "--config file (-t also works but shows the token in process listings)");
  }
  cli::require_header_safe_access_token(token->value, token->origin);
  if (token->level == Level::command_line) {
    warnings.push_back(
        "the access token given with -t is visible to other users in process listings and in "
        "shell history; set AWSIOT_TUNNEL_ACCESS_TOKEN instead");
  }
  config.access_token = token->value;

  if (const auto client = sources.pick(kClientToken)) {
    cli::require_valid_client_token(client->value, client->origin);
    if (client->level == Level::command_line) {
      warnings.emplace_back(cli::kClientTokenOnArgvWarning);
    }
    config.client_token = client->value;
  }
}

void resolve_endpoint(const Sources& sources, ProxyConfig& config,
                      std::vector<std::string>& warnings) {
  const auto choice = resolve_pair(sources, kEndpoint, kRegion, warnings);
  if (!choice) {
    throw UsageError(
        "no service endpoint: give -r/--region REGION (or set AWSIOT_TUNNEL_REGION), or "
        "-e/--proxy-endpoint HOST[:PORT] (or set AWSIOT_TUNNEL_ENDPOINT)");
  }
  std::string error;
  const auto ep = choice->id == kEndpoint ? parse_endpoint(choice->found.value, error)
                                          : endpoint_for_region(choice->found.value, error);
  if (!ep) {
    throw UsageError(described(choice->id, choice->found) + ": " + error);
  }
  config.endpoint = *ep;
}

// Needs the endpoint (NO_PROXY is matched against its host) and the settings.
void resolve_proxy(const Sources& sources, const Env& env, ProxyConfig& config,
                   std::vector<std::string>& warnings) {
  std::string url = config.settings.https_proxy;
  std::string origin;
  if (const auto f = sources.pick(kSettingsJson)) {
    origin = "tunneling.proxy.https_proxy in the settings file " + f->value;
  }
  if (const auto f = sources.pick(kHttpsProxy)) {
    url = f->value;
    origin = described(kHttpsProxy, *f);
    std::string ignored;
    const auto p = parse_proxy_url(url, ignored);
    if (f->level == Level::command_line && p && p->has_credentials()) {
      warnings.push_back(
          "the proxy credentials given with --https-proxy are visible to other users in process "
          "listings; set HTTPS_PROXY, or put the URL in a --config or --settings-json file "
          "(mode 0600)");
    }
  }
  ProxyResolution via;
  std::string error;
  if (!resolve_https_proxy(url, origin, env, config.endpoint.host, via, error)) {
    throw UsageError(error);
  }
  config.https_proxy = std::move(via.proxy);
  config.https_proxy_origin = std::move(via.origin);
}
void resolve_tls(const Sources& sources, ProxyConfig& config, std::vector<std::string>& warnings) {
  if (const auto f = sources.pick(kCapath)) {
    cli::require_ca_directory(f->value, described(kCapath, *f));
    config.capath = f->value;
  }
  if (const auto f = sources.pick(kCafile)) {
    cli::require_ca_file(f->value, described(kCafile, *f));
    config.cafile = f->value;
  }
  if (sources.pick(kNoVerify)) {
    config.verify_tls = false;
    warnings.emplace_back(cli::kNoHostVerifyWarning);
  }
}

std::string resolve_client_type(const Sources& sources, Mode mode,
                                std::vector<std::string>& warnings) {
  const auto f = sources.pick(kClientType);
  if (!f) {
    return {};
  }
  std::string value = text::lower(f->value);
  if (value == "v1" || value == "v2" || value == "v3") {
    value[0] = 'V';
  } else {
    // The reference treats an unknown value as "V3 destination"; so do we.
    warnings.push_back(described(kClientType, *f) + ": unknown value " + in_quotes(f->value) +
                       ", assuming a V3 destination (expected V1 or V2)");
    return {};
  }
  if (mode == Mode::destination) {
    warnings.push_back(described(kClientType, *f) +
                       " is a source mode option in the reference; here it makes this "
                       "destination speak only " +
                       value);
  }
  return value;
}

Options parse(int argc, const char* const* argv, const Env& env,
              std::vector<std::string>& secrets) {
  Options out;
  Sources sources(env);
  const ArgvRequest asked = read_command_line(argc, argv, sources);
  if (asked.help) {
    out.action = Action::help;
    return out;
  }
  if (asked.version) {
    out.action = Action::version;
    return out;
  }
  if (const auto it = sources.command_line.find(kConfig); it != sources.command_line.end()) {
    sources.config_path = it->second;
    read_config_file(sources, secrets, out.warnings);
  }
  out.verbosity = resolve_verbosity(sources);
  out.config.settings = resolve_settings(sources);
  if (const auto it = sources.command_line.find(kExport); it != sources.command_line.end()) {
    out.action = Action::export_settings;
    out.export_path = it->second;
    return out;
  }
  resolve_tokens(sources, out.config, out.warnings);
  resolve_endpoint(sources, out.config, out.warnings);
  resolve_local(sources, out.config, out.warnings);
  resolve_tls(sources, out.config, out.warnings);
  resolve_proxy(sources, env, out.config, out.warnings);
  out.destination_client_type = resolve_client_type(sources, out.config.mode, out.warnings);
  if (!out.destination_client_type.empty()) {
    // -y V1|V2|V3: offer and speak only that version.
    out.config.protocol_version = out.destination_client_type[1] - '0';
  }
  out.config.name = "localproxy";
  return out;
}

}  // namespace

Options parse_command_line(int argc, const char* const* argv, const Env& env) {
  std::vector<cli::SecretOption> secret_options;
  for (const auto& s : kSpecs) {
    if (s.secret) secret_options.push_back({s.short_name, s.long_name});
  }
  std::vector<std::string> secrets = cli::secrets_on_argv(argc, argv, secret_options);
  for (const auto& s : kSpecs) {
    if (s.secret && !s.env.empty()) {
      if (auto v = env(s.env)) {
        secrets.push_back(std::move(*v));
      }
    }
  }
  for (const std::string_view name : {"HTTPS_PROXY", "https_proxy"}) {
    if (auto v = env(name)) {
      secrets.push_back(std::move(*v));
    }
  }
  try {
    return parse(argc, argv, env, secrets);
  } catch (const UsageError& e) {
    throw UsageError(cli::redact(e.what(), secrets));
  }
}

}  // namespace tunnel::localproxy
