#include "cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "config.h"
#include "endpoint.h"
#include "http_proxy.h"
#include "proxy_config.h"
#include "secret_file.h"
#include "secret_input.h"
#include "settings.h"
#include "text.h"

#ifndef TUNNELD_VERSION
#define TUNNELD_VERSION "unknown"
#endif

namespace tunnel::tunnelctl {
namespace {

namespace pb = tunneld::control;
using ordered_json = nlohmann::ordered_json;
using tunnel::TokenFile;

constexpr std::string_view kTokenEnv = "AWSIOT_TUNNEL_ACCESS_TOKEN";
constexpr std::string_view kClientTokenEnv = "AWSIOT_TUNNEL_CLIENT_TOKEN";
constexpr std::string_view kEndpointEnv = "AWSIOT_TUNNEL_ENDPOINT";
constexpr std::string_view kRegionEnv = "AWSIOT_TUNNEL_REGION";
constexpr std::string_view kSocketEnv = "TUNNELD_SOCKET";

// An access token is a few hundred bytes; anything much larger is the wrong file.
constexpr std::size_t kMaxTokenFileSize = std::size_t{16} * 1024;

constexpr std::string_view kSeeHelp = "see tunnelctl --help";
constexpr std::string_view kGroupAdvice =
    "add yourself to group tunneld (usermod -aG tunneld $USER, then log in again)";
constexpr std::string_view kSameRelease = "use a tunnelctl of the same release as tunneld";

// ---------------------------------------------------------------------------
// Small text helpers.

// Arguments are repeated in messages only when they look like a word or an
// id: a pasted token is long or full of punctuation, and must not be echoed.
bool echoable(std::string_view s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
  });
}

std::string quoted_if_echoable(std::string_view s) {
  return echoable(s) ? " '" + std::string(s) + "'" : std::string();
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// Text from the daemon goes to a terminal: no control characters.
std::string printable(std::string_view s) {
  std::string out(s);
  std::replace_if(
      out.begin(), out.end(),
      [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }, '?');
  return out;
}

std::string dash_if_empty(std::string_view s) { return s.empty() ? "-" : printable(s); }

// ---------------------------------------------------------------------------
// The command line through CLI11. Every value is taken as a string and
// checked here, so that messages are ours (and never repeat a secret).

struct ValueOption {
  std::string display;  // "-s/--listen"
  std::string value;
  CLI::Option* option = nullptr;
};

void add_value(CLI::App& app, ValueOption& v, const std::string& names, std::string display) {
  v.display = std::move(display);
  v.option = app.add_option(names, v.value)->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
}

// Names of every option, to tell "-s -d 22" (a forgotten value) from a value.
constexpr std::array<std::string_view, 34> kOptionNames = {
    "-h", "--help", "-V", "--version", "--socket", "--timeout", "--json",
    // open
    "-m", "--mode", "-s", "--listen", "--source-listen-port", "-d", "--target", "--destination-app",
    "-r", "--region", "-e", "--endpoint", "--proxy-endpoint", "-b", "--bind-address",
    "--local-bind-address", "-c", "--capath", "--cafile", "-k", "--no-ssl-host-verify",
    "--settings-json", "-i", "--client-token", "--name", "--access-token-file", "--https-proxy"};

bool is_option_name(std::string_view s) {
  const auto name = s.substr(0, s.find('='));
  return std::find(kOptionNames.begin(), kOptionNames.end(), name) != kOptionNames.end();
}

// nullopt when not given; throws for repeated, empty or missing values.
std::optional<std::string> get(const ValueOption& v) {
  if (v.option == nullptr || v.option->count() == 0) return std::nullopt;
  if (v.option->count() > 1) {
    throw UsageError("option " + v.display + " is given more than once; give it once");
  }
  const std::string& value = v.value;
  if (value.empty()) throw UsageError("option " + v.display + " needs a non-empty value");
  if (value.size() > 1 && value.front() == '-' && is_option_name(value)) {
    throw UsageError("option " + v.display + " needs a value (found the option " +
                     value.substr(0, value.find('=')) + " in its place)");
  }
  return value;
}

// -t/--access-token is refused before CLI11 sees anything, so that no path
// through the parser can repeat its value.
void refuse_token_on_argv(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
    if (arg == "--") break;
    const bool long_form = arg == "--access-token" || arg.starts_with("--access-token=");
    const bool short_form = arg.starts_with("-t") && !arg.starts_with("--");
    if (long_form || short_form) {
      throw UsageError(
          "the access token is never taken from the command line (-t/--access-token): "
          "process listings and shell history would show it; set AWSIOT_TUNNEL_ACCESS_TOKEN, "
          "use --access-token-file FILE, or pipe it on standard input");
    }
  }
}

std::string cli11_message(const CLI::ParseError& e) {
  const std::string text = e.what();
  // ArgumentMismatch reads "--socket: 1 required TEXT missing".
  if (const auto colon = text.find(':'); colon != std::string::npos && text.starts_with("-") &&
                                         is_option_name(text.substr(0, colon))) {
    return "option " + text.substr(0, colon) + " needs a value; " + std::string(kSeeHelp);
  }
  return "invalid command line (" + text + "); " + std::string(kSeeHelp);
}

// ---------------------------------------------------------------------------
// Reading secrets.

std::string read_token_from_stdin(const Stdin& in, std::string_view why) {
  std::optional<std::string> line = in.read_line ? in.read_line() : std::nullopt;
  std::string token(line ? text::trim(*line) : std::string_view());
  if (token.empty()) {
    throw UsageError("no access token on standard input (" + std::string(why) +
                     "): pipe the token as one line, set AWSIOT_TUNNEL_ACCESS_TOKEN, or use "
                     "--access-token-file FILE");
  }
  return token;
}

// Reads the first line of a token file (mode 0600, or a pipe).
std::string read_token_file(const std::string& path) {
  using tunnel::TokenFileProblem;
  const TokenFile f = tunnel::read_token_file(
      path, {.max_size = kMaxTokenFileSize, .regular_file_only = false, .first_line_only = true});
  switch (f.problem) {
    case TokenFileProblem::none:
      return f.token;
    case TokenFileProblem::cannot_open:
    case TokenFileProblem::cannot_stat:
    case TokenFileProblem::not_regular_file:
    case TokenFileProblem::cannot_read:
      break;
    case TokenFileProblem::is_directory:
      throw UsageError("--access-token-file " + path + " is a directory; name the token file");
    case TokenFileProblem::too_open:
      throw UsageError("permissions " + tunnel::octal_mode(f.mode) + " of the access token file " +
                       path + " are too open: it must be readable only by you; chmod 600 " + path +
                       " (and get a fresh token if others may have read it)");
    case TokenFileProblem::too_large:
      throw UsageError("the access token file " + path + " is larger than " +
                       std::to_string(kMaxTokenFileSize / 1024) +
                       " KiB; is it the right file? It should hold the token on one line");
    case TokenFileProblem::empty:
      throw UsageError(
          "the access token file " + path +
          " is empty (or starts with an empty line); write the token on its first line");
    case TokenFileProblem::not_header_safe:
      throw cli::access_token_not_header_safe("the access token file " + path);
  }
  throw UsageError("cannot read the access token file " + path + ": " +
                   std::strerror(f.error_number) + "; check --access-token-file");
}

// ---------------------------------------------------------------------------
// `open`: from options to an OpenRequest.

struct OpenOptions {
  ValueOption mode, listen, target, region, endpoint, bind, capath, cafile, settings, client_token,
      name, token_file, https_proxy, protocol;
  std::vector<std::string> services;  // --service NAME=[HOST:]PORT, repeatable
  bool no_verify = false;
};

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
                  const std::optional<std::string>& bind, pb::OpenRequest& req) {
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
  if (bind) req.set_bind_address(*bind);
}

void resolve_role(const OpenOptions& o, pb::OpenRequest& req) {
  const auto mode_value = get(o.mode);
  const auto listen = get(o.listen);
  const auto target = get(o.target);
  std::optional<pb::Mode> mode;
  if (mode_value) {
    mode = parse_mode(*mode_value);
    if (!mode) {
      throw UsageError("invalid --mode" + quoted_if_echoable(*mode_value) +
                       ": expected source (src) or dest (destination, dst)");
    }
  }
  if (!o.services.empty()) {
    // --service NAME=[HOST:]PORT (repeatable): the mode comes from --mode, or
    // from -s/-d given as mappings too.
    if (listen || target) {
      throw UsageError("--service replaces -s/--listen and -d/--target; give services one way");
    }
    if (!mode) {
      throw UsageError("--service needs --mode source or --mode dest (listen or connect?)");
    }
    req.set_mode(*mode);
    std::string joined;
    for (const auto& s : o.services) joined += (joined.empty() ? "" : ",") + s;
    add_services(joined, "--service", *mode, get(o.bind), req);
    return;
  }
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
  req.set_mode(role);

  const std::string& text = listen ? *listen : *target;
  const std::string& display = listen ? o.listen.display : o.target.display;
  if (text.find('=') != std::string::npos) {
    add_services(text, display, role, get(o.bind), req);
    return;
  }
  std::string error;
  const auto hp = parse_host_port(text, "localhost", error);
  if (!hp) throw UsageError(display + ": " + error);
  const auto bind = get(o.bind);
  if (listen) {
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
  if (bind) req.set_bind_address(*bind);
}

void resolve_endpoint(const OpenOptions& o, const Env& env, pb::OpenRequest& req,
                      std::vector<std::string>& warnings) {
  const auto endpoint = get(o.endpoint);
  const auto region = get(o.region);
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

void resolve_access_token(const OpenOptions& o, const Env& env, const Stdin& in,
                          pb::OpenRequest& req, std::vector<std::string>& warnings) {
  const auto file = get(o.token_file);
  const auto from_env = env(kTokenEnv);
  std::string token;
  std::string origin;
  if (file) {
    if (*file == "-") {
      token = read_token_from_stdin(in, "--access-token-file -");
      origin = "standard input";
    } else {
      token = read_token_file(*file);
      origin = "the access token file " + *file;
    }
    if (from_env) {
      warnings.push_back(
          "AWSIOT_TUNNEL_ACCESS_TOKEN ignored: --access-token-file takes precedence");
    }
  } else if (from_env) {
    token = *from_env;
    origin = std::string(kTokenEnv);
  } else if (!in.is_terminal) {
    token = read_token_from_stdin(in, "it is not a terminal and no other source was given");
    origin = "standard input";
  } else {
    throw UsageError(
        "no access token: set AWSIOT_TUNNEL_ACCESS_TOKEN, use --access-token-file FILE (mode "
        "0600), or pipe the token on standard input");
  }
  cli::require_header_safe_access_token(token, origin);
  req.set_access_token(std::move(token));
}

void resolve_client_token(const OpenOptions& o, const Env& env, pb::OpenRequest& req,
                          std::vector<std::string>& warnings) {
  std::optional<std::string> token = get(o.client_token);
  std::string origin = o.client_token.display;
  if (token) {
    warnings.emplace_back(cli::kClientTokenOnArgvWarning);
  } else {
    token = env(kClientTokenEnv);
    origin = std::string(kClientTokenEnv);
  }
  if (!token) return;
  cli::require_valid_client_token(*token, origin);
  req.set_client_token(std::move(*token));
}

// The daemon opens these paths, from its own working directory.
void resolve_tls(const OpenOptions& o, pb::OpenRequest& req, std::vector<std::string>& warnings) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (const auto dir = get(o.capath)) {
    cli::require_ca_directory(*dir, o.capath.display);
    req.set_capath(fs::absolute(*dir, ec).lexically_normal().string());
  }
  if (const auto file = get(o.cafile)) {
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
  const auto url = get(o.https_proxy);
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
  const auto path = get(o.settings);
  if (!path) return;
  req.set_settings_json(cli::read_settings_file(*path).json);
}

pb::OpenRequest resolve_open(const OpenOptions& o, const Env& env, const Stdin& in,
                             std::vector<std::string>& warnings) {
  pb::OpenRequest req;
  // Cheap checks first: a usage mistake must not consume the token on stdin.
  resolve_role(o, req);
  if (const auto v = get(o.protocol)) {
    const std::string w = text::lower(*v);
    if (w != "v1" && w != "v2" && w != "v3") {
      throw UsageError(
          "-y/--protocol: expected V1, V2 or V3 (default: offer all three and detect "
          "the peer's)");
    }
    req.set_protocol_version(static_cast<unsigned>(w[1] - '0'));
  }
  resolve_endpoint(o, env, req, warnings);
  if (const auto name = get(o.name)) {
    // Checked here too: a name protobuf cannot carry (not UTF-8) would
    // otherwise reach the daemon as a malformed request.
    if (!tunneld::is_valid_session_name(*name)) {
      throw UsageError("--name: expected " + std::string(tunneld::kSessionNameRule));
    }
    req.set_name(*name);
  }
  resolve_tls(o, req, warnings);
  resolve_settings(o, req);
  resolve_proxy(o, req, warnings);
  resolve_client_token(o, env, req, warnings);
  resolve_access_token(o, env, in, req, warnings);
  return req;
}

std::chrono::milliseconds parse_timeout(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const double seconds = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || *end != '\0' || errno != 0 || !std::isfinite(seconds) ||
      seconds <= 0 || seconds > 3600) {
    throw UsageError("invalid --timeout" + quoted_if_echoable(text) +
                     ": expected seconds between 0.001 and 3600, e.g. 10 or 0.5");
  }
  return std::chrono::milliseconds(std::max<long long>(1, std::llround(seconds * 1000)));
}

Invocation parse(int argc, const char* const* argv, const Env& env, const Stdin& in) {
  refuse_token_on_argv(argc, argv);

  CLI::App app{"", "tunnelctl"};
  app.set_help_flag();
  app.allow_extras();
  app.require_subcommand(0, 1);
  bool help = false;
  bool version = false;
  bool json = false;
  ValueOption socket, timeout;
  app.add_flag("-h,--help", help);
  app.add_flag("-V,--version", version);
  app.add_flag("--json", json);
  add_value(app, socket, "--socket", "--socket");
  add_value(app, timeout, "--timeout", "--timeout");

  const auto add_command = [&app](const char* name) {
    CLI::App* sub = app.add_subcommand(name, "");
    sub->set_help_flag();
    sub->allow_extras();
    sub->fallthrough();
    return sub;
  };
  CLI::App* open_cmd = add_command("open");
  CLI::App* list_cmd = add_command("list");
  CLI::App* status_cmd = add_command("status");
  CLI::App* close_cmd = add_command("close");
  CLI::App* version_cmd = add_command("version");
  CLI::App* help_cmd = add_command("help");
  OpenOptions open_options;
  add_open_options(*open_cmd, open_options);
  std::vector<std::string> status_args, close_args, help_args;
  status_cmd->add_option("session", status_args);
  close_cmd->add_option("session", close_args);
  help_cmd->add_option("command", help_args);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
      if (arg == "-h" || arg == "--help") return {.command = Command::help, .text = help_text()};
    }
    throw UsageError(cli11_message(e));
  }

  Invocation inv;
  if (help || help_cmd->parsed()) {
    inv.command = Command::help;
    inv.text = help_text();
    return inv;
  }
  if (version) {
    inv.command = Command::client_version;
    inv.text = version_text();
    return inv;
  }

  // "-s -d 22" gives -s the value "-d" and leaves "22" over: report the
  // forgotten value, not the stray argument it causes.
  for (const ValueOption* v :
       {&socket, &timeout, &open_options.mode, &open_options.listen, &open_options.target,
        &open_options.region, &open_options.endpoint, &open_options.bind, &open_options.capath,
        &open_options.cafile, &open_options.settings, &open_options.client_token,
        &open_options.name, &open_options.token_file, &open_options.https_proxy}) {
    get(*v);
  }

  // Leftovers: unknown options, stray arguments, an unknown command.
  std::vector<std::string> rest = app.remaining();
  CLI::App* chosen = nullptr;
  for (CLI::App* sub : {open_cmd, list_cmd, status_cmd, close_cmd, version_cmd}) {
    if (sub->parsed()) {
      chosen = sub;
      const auto sub_rest = sub->remaining();
      rest.insert(rest.end(), sub_rest.begin(), sub_rest.end());
    }
  }
  for (const std::string& arg : rest) {
    if (arg.size() > 1 && arg.front() == '-' && arg != "--") {
      const std::string name = arg.substr(0, arg.find('='));
      throw UsageError("unknown option" + quoted_if_echoable(name) +
                       (chosen != nullptr ? " for tunnelctl " + chosen->get_name() : "") + "; " +
                       std::string(kSeeHelp));
    }
    if (chosen == nullptr) {
      throw UsageError("unknown command" + quoted_if_echoable(arg) +
                       ": expected open, list, status, close or version; " + std::string(kSeeHelp));
    }
    throw UsageError("unexpected argument" + quoted_if_echoable(arg) + " for tunnelctl " +
                     chosen->get_name() + "; " + std::string(kSeeHelp));
  }
  if (chosen == nullptr) {
    throw UsageError("no command given: use open, list, status, close or version; " +
                     std::string(kSeeHelp));
  }

  inv.json = json;
  if (const auto s = get(socket)) {
    inv.socket_path = *s;
  } else if (auto from_env = env(kSocketEnv)) {
    inv.socket_path = std::move(*from_env);
  } else {
    inv.socket_path = std::string(kDefaultSocketPath);
  }
  if (const auto t = get(timeout)) inv.timeout = parse_timeout(*t);

  if (chosen == open_cmd) {
    inv.command = Command::open;
    inv.open = resolve_open(open_options, env, in, inv.warnings);
  } else if (chosen == list_cmd) {
    inv.command = Command::list;
  } else if (chosen == version_cmd) {
    inv.command = Command::version;
  } else {
    const bool is_status = chosen == status_cmd;
    const auto& args = is_status ? status_args : close_args;
    const std::string name = is_status ? "status" : "close";
    if (args.empty() && is_status) {
      inv.command = Command::notify_status;
      return inv;
    }
    if (args.empty()) {
      throw UsageError("tunnelctl " + name + " needs a session: tunnelctl " + name +
                       " ID|NAME (tunnelctl list shows them)");
    }
    if (args.size() > 1) {
      throw UsageError("tunnelctl " + name + " takes one session, got " +
                       std::to_string(args.size()) + "; run it once per session");
    }
    if (args.front().empty()) {
      // An empty id would reach the daemon as "no such session" (or, for
      // status, look like asking for the notify link).
      throw UsageError("tunnelctl " + name + " got an empty session; tunnelctl " + name +
                       " ID|NAME (tunnelctl list shows them)");
    }
    if (!tunneld::is_valid_session_name(args.front())) {
      // No session can have it (IDs are 8 hex digits, names follow the
      // rule); not echoed, it may hold anything.
      throw UsageError("tunnelctl " + name +
                       ": no session is called that; session IDs and names are " +
                       std::string(tunneld::kSessionNameRule) + " (tunnelctl list shows them)");
    }
    inv.command = is_status ? Command::status : Command::close;
    inv.session = args.front();
  }
  return inv;
}

// ---------------------------------------------------------------------------
// Output.

std::string pad(std::string s, std::size_t width, bool right) {
  if (s.size() >= width) return s;
  const std::string fill(width - s.size(), ' ');
  return right ? fill + s : s + fill;
}

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

// Invalid UTF-8 from the daemon must not make the JSON dump throw.
std::string dump(const ordered_json& j) {
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
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

Outcome render_ok(const Invocation& inv, const pb::Response& r) {
  Outcome o;
  switch (inv.command) {
    case Command::open: {
      if (r.body_case() != pb::Response::kOpenResponse) return missing_body("the new session");
      const auto& open = r.open_response();
      const bool source = inv.open.mode() == pb::MODE_SOURCE;
      if (inv.json) {
        ordered_json j{{"session_id", open.session_id()}};
        if (source) j["bound_port"] = open.bound_port();
        o.out = dump(j);
      } else {
        o.out = printable(open.session_id()) + "\n";
        if (source && open.bound_port() != 0) {
          o.out += "listening on " + std::to_string(open.bound_port()) + "\n";
        }
      }
      return o;
    }
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
    case Command::notify_status: {
      if (r.body_case() != pb::Response::kNotifyStatusResponse) {
        return missing_body("the notify link's status");
      }
      const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
      o.out = inv.json ? notify_status_json(r.notify_status_response())
                       : format_notify_status(r.notify_status_response(), now_ms);
      return o;
    }
    case Command::close:
      o.out = inv.json ? dump(ordered_json{{"closed", inv.session}})
                       : "closed " + printable(inv.session) + "\n";
      return o;
    case Command::version: {
      if (r.body_case() != pb::Response::kVersionResponse) return missing_body("its version");
      const auto& v = r.version_response();
      if (inv.json) {
        o.out = dump(ordered_json{
            {"client_version", TUNNELD_VERSION},
            {"client_protocol_version", pb::kProtocolVersion},
            {"daemon_version", v.daemon_version()},
            {"protocol_version", v.protocol_version()},
        });
      } else {
        o.out = version_text() + "tunneld " + printable(v.daemon_version()) +
                " (control protocol " + std::to_string(v.protocol_version()) + ")\n";
      }
      return o;
    }
    case Command::help:
    case Command::client_version:
      break;
  }
  return o;
}

}  // namespace

Stdin process_stdin() {
  Stdin in;
  in.is_terminal = ::isatty(STDIN_FILENO) == 1;
  in.read_line = []() -> std::optional<std::string> {
    std::string line;
    if (!std::getline(std::cin, line) && line.empty()) return std::nullopt;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return line;
  };
  return in;
}

Invocation parse_command_line(int argc, const char* const* argv, const Env& env, const Stdin& in) {
  std::vector<std::string> secrets =
      cli::secrets_on_argv(argc, argv, {{"-i", "client-token"}, {"", "https-proxy"}});
  for (const auto name : {kTokenEnv, kClientTokenEnv}) {
    if (auto v = env(name)) secrets.push_back(std::move(*v));
  }
  try {
    return parse(argc, argv, env, in);
  } catch (const UsageError& e) {
    throw UsageError(cli::redact(e.what(), secrets));
  }
}

pb::Request make_request(const Invocation& inv, std::uint64_t request_id) {
  pb::Request r = pb::make_request(request_id);
  switch (inv.command) {
    case Command::open:
      *r.mutable_open_request() = inv.open;
      break;
    case Command::list:
      r.mutable_list_request();
      break;
    case Command::status:
      r.mutable_status_request()->set_session(inv.session);
      break;
    case Command::notify_status:
      r.mutable_notify_status_request();
      break;
    case Command::close:
      r.mutable_close_request()->set_session(inv.session);
      break;
    case Command::version:
      r.mutable_version_request();
      break;
    case Command::help:
    case Command::client_version:
      break;
  }
  return r;
}

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

std::string session_json(const pb::SessionInfo& info) { return dump(session_object(info)); }

std::string list_json(const pb::ListResponse& list) {
  ordered_json sessions = ordered_json::array();
  for (const auto& s : list.sessions()) sessions.push_back(session_object(s));
  return dump(ordered_json{{"sessions", std::move(sessions)}});
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
  return dump(ordered_json{
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
      {"sessions", s.sessions()},
      {"connects", s.connects()},
      {"last_error", s.last_error()},
  });
}

std::string help_text() {
  return R"(Usage: tunnelctl [--socket PATH] [--timeout SECONDS] [--json] COMMAND [ARGS]

Controls tunneld, the secure tunneling daemon, over its control socket.

Commands:
  open (-s [HOST:]PORT | -d [HOST:]PORT) [options]
                          open a tunnel session; prints its id (and, for a
                          source, the port it listens on)
  list                    show every session
  status ID|NAME          show one session in detail
  status                  show the MQTT notify link (docs/notify.md)
  close ID|NAME           close a session (and forget it across restarts)
  version                 show the versions of tunnelctl, tunneld and the
                          control protocol
  help                    show this help

Global options:
  --socket PATH           control socket (default: $TUNNELD_SOCKET, else
                          /run/tunneld/control.sock)
  --timeout SECONDS       give up waiting for tunneld after this (default 10)
  --json                  print JSON instead of text (open, list, status,
                          close, version)
  -h, --help              show this help
  -V, --version           show tunnelctl's version without asking tunneld

Options of open (the localproxy spellings work too):
  -m, --mode MODE         source (src) or dest (destination, dst); optional,
                          must agree with -s/-d
  -s, --listen [HOST:]PORT
                          source: accept local clients here (0 = any free port)
  -d, --target [HOST:]PORT
                          destination: connect here (HOST defaults to localhost)
  -s/-d NAME=[HOST:]PORT,...
      --service NAME=[HOST:]PORT
                          several services (V2/V3, at most 3): one mapping
                          each; --service is repeatable and needs --mode
  -y, --protocol V1|V2|V3 speak only this version (default: offer V3, V2, V1
                          and detect what the peer speaks)
  -r, --region REGION     region of the tunnel (e.g. us-east-1); or set
                          AWSIOT_TUNNEL_REGION
  -e, --endpoint ENDPOINT service endpoint HOST[:PORT] or wss://HOST[:PORT];
                          or set AWSIOT_TUNNEL_ENDPOINT. Excludes -r
  -b, --bind-address ADDR source: listen address; destination: local address
                          of outgoing connections
  -c, --capath DIR        extra directory of hashed CA certificates
      --cafile FILE       extra PEM bundle of CA certificates
  -k, --no-ssl-host-verify
                          do not verify the service's certificate (testing)
      --settings-json FILE
                          fine-grained settings (JSON); the contents are sent
  -i, --client-token TOKEN
                          client token to reconnect with (or set
                          AWSIOT_TUNNEL_CLIENT_TOKEN); default: tunneld makes one
      --https-proxy URL   reach the service through this HTTP CONNECT proxy,
                          http://[user:password@]host[:port], or 'direct';
                          default: tunneld's settings, then its HTTPS_PROXY
                          and NO_PROXY. Credentials here show in process
                          listings: prefer a --settings-json file
      --name NAME         a name to use instead of the id
      --access-token-file FILE|-
                          read the access token from FILE (mode 0600) or,
                          with -, from standard input

The access token is never taken from the command line. It comes from
--access-token-file, else AWSIOT_TUNNEL_ACCESS_TOKEN, else one line of standard
input when that is not a terminal.

Exit status: 0 ok, 1 tunneld refused the request, 2 usage error, 3 tunneld
not running or not answering, 4 permission denied, 5 no such session,
6 protocol or version mismatch. See docs/tunnelctl.md.
)";
}

std::string version_text() {
  return std::string("tunnelctl ") + TUNNELD_VERSION + " (control protocol " +
         std::to_string(pb::kProtocolVersion) + ")\n";
}

}  // namespace tunnel::tunnelctl
