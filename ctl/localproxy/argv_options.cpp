// localproxy's argv, through CLI11. Every value is taken as a string and
// checked here, so that messages are ours (and never repeat a secret).
#include <CLI/CLI.hpp>

#include "option_sources.h"

namespace tunnel::localproxy {
namespace {

// CLI11 takes "-t -s" as "-t with the value '-s'"; a value that is one of our
// option names means the user forgot the value.
std::optional<std::string_view> option_name_in(std::string_view value) {
  if (value.size() < 2 || value.front() != '-') {
    return std::nullopt;
  }
  for (const auto& s : kSpecs) {
    if (value == s.short_name) {
      return s.short_name;
    }
    if (value.starts_with("--") && value.substr(2).starts_with(s.long_name) &&
        (value.size() == 2 + s.long_name.size() || value[2 + s.long_name.size()] == '=')) {
      return value.substr(0, 2 + s.long_name.size());
    }
  }
  return std::nullopt;
}

std::string cli11_message(const CLI::ParseError& e) {
  std::string text = e.what();
  // ArgumentMismatch reads "--access-token: 1 required TEXT missing".
  if (const auto colon = text.find(':'); colon != std::string::npos && text.starts_with("--")) {
    const std::string_view name = std::string_view(text).substr(2, colon - 2);
    for (const auto& s : kSpecs) {
      if (s.long_name == name) {
        return "option " + display(s) + " needs a value; see localproxy --help";
      }
    }
  }
  return "invalid command line (" + text + "); see localproxy --help";
}

// Every option of kSpecs defined on one CLI11 app, with where CLI11 puts
// what it finds.
struct ArgvOptions {
  CLI::App app{"", "localproxy"};
  std::array<std::string, kSpecCount> values;
  std::array<bool, kSpecCount> flags{};
  std::array<CLI::Option*, kSpecCount> opts{};

  ArgvOptions() {
    app.set_help_flag();
    app.allow_extras();
    for (std::size_t i = 0; i < kSpecCount; ++i) {
      const Spec& s = kSpecs[i];
      std::string names;
      if (!s.short_name.empty()) {
        names.append(s.short_name).append(",");
      }
      names.append("--").append(s.long_name);
      if (s.kind == Kind::flag) {
        opts[i] = app.add_flag(names, flags[i]);
      } else {
        opts[i] =
            app.add_option(names, values[i])->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
      }
    }
  }
  ArgvOptions(const ArgvOptions&) = delete;
  ArgvOptions& operator=(const ArgvOptions&) = delete;

  // The values given, checked, into sources.command_line.
  void store(Sources& sources) const {
    for (std::size_t i = 0; i < kSpecCount; ++i) {
      const auto id = static_cast<Id>(i);
      if (kSpecs[i].kind == Kind::flag) {
        if (flags[i]) {
          sources.command_line[id] = "true";
        }
        continue;
      }
      if (opts[i]->count() == 0) {
        continue;
      }
      if (opts[i]->count() > 1) {
        throw UsageError("option " + display(id) + " is given more than once");
      }
      if (values[i].empty()) {
        throw UsageError("option " + display(id) + " needs a non-empty value");
      }
      if (const auto other = option_name_in(values[i])) {
        throw UsageError("option " + display(id) + " needs a value (found the option " +
                         std::string(*other) + " in its place)");
      }
      sources.command_line[id] = values[i];
    }
  }

  // Throws for what CLI11 left over: an unknown option or a stray argument.
  void reject_leftovers() const {
    const auto rest = app.remaining();
    if (!rest.empty()) {
      const std::string& first = rest.front();
      if (first.size() > 1 && first.front() == '-' && first != "--") {
        const auto name = first.substr(0, first.find('='));
        if (name.size() > 1 && looks_like_a_name(name)) {
          throw UsageError("unknown option " + name + "; see localproxy --help");
        }
        throw UsageError("unknown option; see localproxy --help");
      }
      throw UsageError(
          "unexpected argument: localproxy takes only options (e.g. -s 5000); see localproxy "
          "--help");
    }
  }
};

}  // namespace

ArgvRequest read_command_line(int argc, const char* const* argv, Sources& sources) {
  ArgvOptions options;
  ArgvRequest request;
  try {
    options.app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version still work on an otherwise broken line.
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
      request.help = request.help || arg == "-h" || arg == "--help";
      request.version = request.version || arg == "-V" || arg == "--version";
    }
    if (request.help || request.version) {
      return request;
    }
    throw UsageError(cli11_message(e));
  }
  request.help = options.flags[kHelp];
  request.version = options.flags[kVersion];
  if (request.help || request.version) {
    return request;
  }
  options.store(sources);
  options.reject_leftovers();
  return request;
}

}  // namespace tunnel::localproxy
