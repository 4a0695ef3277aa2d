#include "local_side.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "endpoint.h"
#include "text.h"

namespace tunnel::localproxy {
namespace {

std::string mode_name(Mode m) { return m == Mode::source ? "source" : "destination"; }

std::optional<Mode> parse_mode(std::string_view text) {
  const auto w = text::lower(text);
  if (w == "source" || w == "src") return Mode::source;
  if (w == "destination" || w == "dst") return Mode::destination;
  return std::nullopt;
}

HostPort parse_local(std::string_view text, Mode mode, const std::string& default_host,
                     const std::string& what) {
  std::string error;
  auto local = parse_host_port(std::string(text), default_host, error);
  if (!local) throw UsageError(what + ": " + error);
  if (mode == Mode::destination && local->port == 0) {
    throw UsageError(what + ": the destination port must be 1..65535");
  }
  return *local;
}

void add_mapping(std::vector<ServiceMapping>& out, std::string_view name, std::string_view value,
                 Mode mode, const std::string& default_host, const std::string& what,
                 bool replace) {
  name = text::trim(name);
  value = text::trim(value);
  if (!is_valid_service_id(name)) throw UsageError(what + ": " + service_id_error(name));
  const auto it =
      std::find_if(out.begin(), out.end(), [&](const ServiceMapping& m) { return m.id == name; });
  if (it != out.end()) {
    if (replace) throw UsageError(what + ": service " + std::string(name) + " is given twice");
    return;  // the command line wins over --config-dir
  }
  out.push_back(ServiceMapping{
      std::string(name),
      parse_local(value, mode, default_host, what + " (service " + std::string(name) + ")")});
}

// "SSH1=5555,HTTP1=8080" (source) or "SSH1=22,HTTP1=127.0.0.1:80" (destination).
std::vector<ServiceMapping> parse_mappings(std::string_view text, Mode mode,
                                           const std::string& default_host,
                                           const std::string& what) {
  std::vector<ServiceMapping> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string_view item = text.substr(start, comma - start);
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      throw UsageError(what + ": " + in_quotes(item) +
                       " is not a NAME=PORT mapping; give every service as NAME=[ADDRESS:]PORT");
    }
    add_mapping(out, item.substr(0, eq), item.substr(eq + 1), mode, default_host, what, true);
    start = comma + 1;
  }
  return out;
}

// The reference's service-mapping files: every regular file of DIR, lines
// "NAME = [ADDRESS:]PORT", '#' comments. Names already mapped are kept.
void read_config_dir(const std::string& dir, Mode mode, const std::string& default_host,
                     std::vector<ServiceMapping>& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw UsageError("--config-dir " + dir + " is not a directory");
  }
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    if (e.is_regular_file(ec)) files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f);
    std::string line;
    int n = 0;
    while (std::getline(in, line)) {
      ++n;
      std::string_view l = line;
      if (const auto hash = l.find('#'); hash != std::string_view::npos) l = l.substr(0, hash);
      l = text::trim(l);
      if (l.empty()) continue;
      const std::string where = f.string() + ":" + std::to_string(n);
      const std::size_t eq = l.find('=');
      if (eq == std::string_view::npos) {
        throw UsageError(where + ": expected NAME = [ADDRESS:]PORT, got " + in_quotes(l));
      }
      add_mapping(out, l.substr(0, eq), l.substr(eq + 1), mode, default_host, where, false);
    }
  }
}

// -m/--mode, when given.
std::optional<Mode> mode_option(const std::optional<Found>& mode_found) {
  if (!mode_found) return std::nullopt;
  const auto mode = parse_mode(mode_found->value);
  if (!mode) {
    throw UsageError("invalid value " + in_quotes(mode_found->value) + " for " +
                     described(kMode, *mode_found) +
                     ": expected source (src) or destination (dst)");
  }
  return mode;
}

// Source with -s, destination with -d, or -m with --config-dir; -m must agree.
Mode role_mode_of(const Sources& sources, const std::optional<Choice>& role,
                  const std::optional<Found>& mode_found) {
  const std::optional<Mode> mode = mode_option(mode_found);
  if (!role && mode && sources.pick(kConfigDir)) {
    return *mode;  // -m plus --config-dir: the mappings come from the directory.
  }
  if (!role) {
    if (mode == Mode::source) {
      throw UsageError("source mode needs -s/--source-listen-port [ADDRESS:]PORT to listen on");
    }
    if (mode == Mode::destination) {
      throw UsageError("destination mode needs -d/--destination-app [HOST:]PORT to connect to");
    }
    throw UsageError(
        "no mode: give -s [ADDRESS:]PORT to accept local clients (source), or -d [HOST:]PORT to "
        "forward to a local service (destination)");
  }
  const Mode role_mode = role->id == kSource ? Mode::source : Mode::destination;
  if (mode && *mode != role_mode) {
    throw UsageError(described(kMode, *mode_found) + " says " + mode_name(*mode) + " mode but " +
                     described(role->id, role->found) + " selects " + mode_name(role_mode) +
                     " mode; drop one");
  }
  return role_mode;
}

// The services of -s/-d and of --config-dir, checked as a whole.
std::vector<ServiceMapping> mappings_of(const Sources& sources, const std::optional<Choice>& role,
                                        Mode role_mode, const std::string& default_host) {
  std::vector<ServiceMapping> mappings;
  if (role) {
    const std::string& text = role->found.value;
    if (text.find('=') != std::string::npos) {
      mappings = parse_mappings(text, role_mode, default_host, described(role->id, role->found));
    } else {
      mappings.push_back(ServiceMapping{
          "", parse_local(text, role_mode, default_host, described(role->id, role->found))});
    }
  }
  if (const auto dir = sources.pick(kConfigDir)) {
    if (!mappings.empty() && mappings.front().id.empty()) {
      throw UsageError(described(role->id, role->found) + " gives one unnamed service but " +
                       described(kConfigDir, *dir) +
                       " names services; use NAME=PORT mappings in one place");
    }
    read_config_dir(dir->value, role_mode, default_host, mappings);
  }
  if (mappings.empty()) {
    throw UsageError(
        mode_name(role_mode) + " mode needs " +
        (role_mode == Mode::source ? "-s/--source-listen-port" : "-d/--destination-app") +
        " or a --config-dir with service mappings");
  }
  if (mappings.size() > 3) {
    throw UsageError(std::to_string(mappings.size()) +
                     " services configured; a tunnel carries at most 3");
  }
  return mappings;
}

}  // namespace

void resolve_local(const Sources& sources, ProxyConfig& config,
                   std::vector<std::string>& warnings) {
  const auto role = resolve_pair(sources, kSource, kDestination, warnings);
  const Mode role_mode = role_mode_of(sources, role, sources.pick(kMode));
  config.mode = role_mode;

  const auto bind = sources.pick(kBindAddress);
  const std::string default_host = role_mode == Mode::source
                                       ? (bind ? bind->value : config.settings.default_bind_address)
                                       : std::string("localhost");
  std::vector<ServiceMapping> mappings = mappings_of(sources, role, role_mode, default_host);
  if (bind && role_mode == Mode::source) {
    for (const auto& m : mappings) {
      if (m.local.host != bind->value) {
        throw UsageError("a listen address " + in_quotes(m.local.host) + " is given but " +
                         described(kBindAddress, *bind) + " says " + in_quotes(bind->value) +
                         "; give the address in one place");
      }
    }
  }
  config.local = mappings.front().local;
  if (!mappings.front().id.empty()) config.services = std::move(mappings);
  // Destination: bind outgoing connections only when asked to, else connecting
  // to another host through a loopback default would fail.
  config.bind_address = bind ? bind->value : std::string();
}

}  // namespace tunnel::localproxy
