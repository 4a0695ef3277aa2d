// The --config file: "long-option-name = value" lines, '#' or ';' comments.
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "http_proxy.h"
#include "option_sources.h"
#include "text.h"

namespace tunnel::localproxy {
namespace {

std::optional<bool> parse_bool_word(std::string_view text) {
  const auto w = text::lower(text);
  if (w == "true" || w == "1" || w == "yes" || w == "on") return true;
  if (w == "false" || w == "0" || w == "no" || w == "off") return false;
  return std::nullopt;
}

// The value after '=': trimmed, without an inline comment or surrounding quotes.
std::string_view config_value(std::string_view value) {
  value = text::trim(value);
  // Inline comments need whitespace before the marker, so that values such
  // as paths may still contain '#' or ';'.
  for (std::size_t i = 1; i < value.size(); ++i) {
    if ((value[i] == '#' || value[i] == ';') &&
        std::isspace(static_cast<unsigned char>(value[i - 1])) != 0) {
      value = text::trim(value.substr(0, i));
      break;
    }
  }
  if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') &&
      value.back() == value.front()) {
    value = value.substr(1, value.size() - 2);
  }
  return value;
}

// The option a key names; `where` is "lp.ini:3: ".
Id config_key(const std::string& key, const std::string& where) {
  const auto spec =
      std::find_if(kSpecs.begin(), kSpecs.end(), [&](const Spec& s) { return s.long_name == key; });
  if (spec == kSpecs.end()) {
    throw UsageError(where + "unknown option" +
                     (looks_like_a_name(key) ? " " + in_quotes(key) : std::string()) +
                     " (names are the long options without '--', e.g. region)");
  }
  if (!spec->in_config_file) {
    throw UsageError(where + in_quotes(key) + " cannot be set in a config file");
  }
  return static_cast<Id>(spec - kSpecs.begin());
}

// One line into sources.config_file.
void read_config_line(std::string_view line, int line_no, Sources& sources,
                      std::vector<std::string>& secrets) {
  const std::string where = sources.config_path + ":" + std::to_string(line_no) + ": ";
  if (line.front() == '[') {
    throw UsageError(where + "sections ([...]) are not supported; write 'name = value' lines");
  }
  const auto eq = line.find('=');
  if (eq == std::string_view::npos) {
    throw UsageError(where +
                     "expected 'name = value', where name is a long option such as "
                     "region or source-listen-port");
  }
  const std::string key(text::trim(line.substr(0, eq)));
  std::string_view value = config_value(line.substr(eq + 1));
  const Id id = config_key(key, where);
  if (const auto it = sources.config_file.find(id); it != sources.config_file.end()) {
    throw UsageError(where + in_quotes(key) + " is already set on line " +
                     std::to_string(it->second.line));
  }
  if (value.empty()) {
    throw UsageError(where + in_quotes(key) + " has an empty value");
  }
  if (kSpecs[id].secret) {
    secrets.emplace_back(value);
  }
  if (kSpecs[id].kind == Kind::flag) {
    const auto on = parse_bool_word(value);
    if (!on) {
      throw UsageError(where + in_quotes(key) + " expects true or false");
    }
    if (!*on) {
      return;
    }
    value = "true";
  }
  sources.config_file[id] = FileEntry{std::string(value), line_no};
}

// A file that holds a secret and that every user may read is worth a warning.
void warn_if_secrets_readable(const Sources& sources, std::vector<std::string>& warnings) {
  const std::string& path = sources.config_path;
  struct stat st {};
  if (sources.config_file.count(kAccessToken) != 0 && ::stat(path.c_str(), &st) == 0 &&
      (st.st_mode & S_IROTH) != 0) {
    warnings.push_back("config file " + path +
                       " holds the access token and is readable by every user; chmod 600 it");
  }
  if (const auto it = sources.config_file.find(kHttpsProxy); it != sources.config_file.end()) {
    std::string ignored;
    const auto p = parse_proxy_url(it->second.value, ignored);
    if (p && p->has_credentials() && ::stat(path.c_str(), &st) == 0 &&
        (st.st_mode & S_IROTH) != 0) {
      warnings.push_back("config file " + path +
                         " holds proxy credentials (https-proxy) and is readable by every user; "
                         "chmod 600 it");
    }
  }
}

}  // namespace

void read_config_file(Sources& sources, std::vector<std::string>& secrets,
                      std::vector<std::string>& warnings) {
  const std::string& path = sources.config_path;
  std::ifstream in(path);
  if (!in) {
    throw UsageError("cannot read config file " + path + ": " + std::strerror(errno));
  }
  std::string raw;
  int line_no = 0;
  while (std::getline(in, raw)) {
    ++line_no;
    const std::string_view line = text::trim(raw);
    if (!line.empty() && line.front() != '#' && line.front() != ';') {
      read_config_line(line, line_no, sources, secrets);
    }
  }
  if (in.bad()) {
    throw UsageError("cannot read config file " + path + ": " + std::strerror(errno));
  }
  warn_if_secrets_readable(sources, warnings);
}

}  // namespace tunnel::localproxy
