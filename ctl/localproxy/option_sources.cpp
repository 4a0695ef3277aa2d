#include "option_sources.h"

#include <algorithm>
#include <cctype>

namespace tunnel::localproxy {
namespace {

std::string level_name(Level level, const Sources& sources) {
  switch (level) {
    case Level::command_line:
      return "on the command line";
    case Level::config_file:
      return "in " + sources.config_path;
    case Level::environment:
      return "in the environment";
  }
  return {};
}

}  // namespace

std::string display(const Spec& s) {
  std::string out;
  if (!s.short_name.empty()) {
    out.append(s.short_name).append("/");
  }
  out.append("--").append(s.long_name);
  return out;
}

std::string display(Id id) { return display(kSpecs[id]); }

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

bool looks_like_a_name(std::string_view s) {
  return !s.empty() && s.size() <= 40 && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
  });
}

std::string described(Id id, const Found& f) {
  switch (f.level) {
    case Level::command_line:
      return display(id) + " on the command line";
    case Level::config_file:
      return display(id) + " in " + f.origin;
    case Level::environment:
      break;
  }
  return f.origin;
}

std::optional<Choice> resolve_pair(const Sources& sources, Id a, Id b,
                                   std::vector<std::string>& warnings) {
  std::optional<Choice> winner;
  for (const auto level : Sources::kLevels) {
    auto fa = sources.at(a, level);
    auto fb = sources.at(b, level);
    if (!winner) {
      if (fa && fb) {
        if (level == Level::environment) {
          throw UsageError(std::string(kSpecs[a].env) + " and " + std::string(kSpecs[b].env) +
                           " are both set; unset one, or choose with " + display(a) + " or " +
                           display(b));
        }
        throw UsageError(display(a) + " and " + display(b) +
                         " are mutually exclusive (both given " + level_name(level, sources) +
                         "); use one");
      }
      if (fa) {
        winner = Choice{a, std::move(*fa)};
      } else if (fb) {
        winner = Choice{b, std::move(*fb)};
      }
      continue;
    }
    for (auto* ignored : {&fa, &fb}) {
      if (*ignored) {
        const Id ignored_id = ignored == &fa ? a : b;
        warnings.push_back(described(ignored_id, **ignored) + " ignored: " +
                           described(winner->id, winner->found) + " takes precedence");
      }
    }
  }
  return winner;
}

}  // namespace tunnel::localproxy
