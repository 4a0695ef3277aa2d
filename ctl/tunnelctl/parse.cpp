#include <unistd.h>

#include <iostream>

#include "cli.h"
#include "config.h"
#include "open_request.h"
#include "option_values.h"
#include "secret_input.h"
#include "token_input.h"

namespace tunnel::tunnelctl {
namespace {

namespace pb = tunneld::control;

constexpr std::string_view kSocketEnv = "TUNNELD_SOCKET";

// tunnelctl's command line as CLI11 sees it: global options, at most one
// command, and the options and arguments of each command.
struct CommandLine {
  CLI::App app{"", "tunnelctl"};
  bool help = false;
  bool version = false;
  bool json = false;
  ValueOption socket, timeout;
  CLI::App* open = nullptr;
  CLI::App* list = nullptr;
  CLI::App* status = nullptr;
  CLI::App* close = nullptr;
  CLI::App* version_command = nullptr;
  CLI::App* help_command = nullptr;
  OpenOptions open_options;
  std::vector<std::string> status_args, close_args, help_args;

  CommandLine() {
    app.set_help_flag();
    app.allow_extras();
    app.require_subcommand(0, 1);
    app.add_flag("-h,--help", help);
    app.add_flag("-V,--version", version);
    app.add_flag("--json", json);
    add_value(app, socket, "--socket", "--socket");
    add_value(app, timeout, "--timeout", "--timeout");
    open = add_command("open");
    list = add_command("list");
    status = add_command("status");
    close = add_command("close");
    version_command = add_command("version");
    help_command = add_command("help");
    add_open_options(*open, open_options);
    status->add_option("session", status_args);
    close->add_option("session", close_args);
    help_command->add_option("command", help_args);
  }
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  CLI::App* add_command(const char* name) {
    CLI::App* sub = app.add_subcommand(name, "");
    sub->set_help_flag();
    sub->allow_extras();
    sub->fallthrough();
    return sub;
  }

  // "-s -d 22" gives -s the value "-d" and leaves "22" over: report the
  // forgotten value, not the stray argument it causes.
  void check_values() const {
    const OpenOptions& o = open_options;
    for (const ValueOption* v : {&socket, &timeout, &o.mode, &o.listen, &o.target, &o.region,
                                 &o.endpoint, &o.bind, &o.capath, &o.cafile, &o.settings,
                                 &o.client_token, &o.name, &o.token_file, &o.https_proxy}) {
      value_of(*v);
    }
  }

  // The command given; throws for leftovers: unknown options, stray
  // arguments, an unknown command, or no command at all.
  CLI::App* chosen_command() const {
    std::vector<std::string> rest = app.remaining();
    CLI::App* chosen = nullptr;
    for (CLI::App* sub : {open, list, status, close, version_command}) {
      if (sub->parsed()) {
        chosen = sub;
        const auto sub_rest = sub->remaining();
        rest.insert(rest.end(), sub_rest.begin(), sub_rest.end());
      }
    }
    if (!rest.empty()) reject_leftover(rest.front(), chosen);
    if (chosen == nullptr) {
      throw UsageError("no command given: use open, list, status, close or version; " +
                       std::string(kSeeHelp));
    }
    return chosen;
  }

  [[noreturn]] static void reject_leftover(const std::string& arg, const CLI::App* chosen) {
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
};

std::string cli11_message(const CLI::ParseError& e) {
  const std::string text = e.what();
  // ArgumentMismatch reads "--socket: 1 required TEXT missing".
  if (const auto colon = text.find(':'); colon != std::string::npos && text.starts_with("-") &&
                                         is_option_name(text.substr(0, colon))) {
    return "option " + text.substr(0, colon) + " needs a value; " + std::string(kSeeHelp);
  }
  return "invalid command line (" + text + "); " + std::string(kSeeHelp);
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

// The one session that status and close take.
std::string session_argument(const std::string& name, const std::vector<std::string>& args) {
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
  return args.front();
}

// --socket > TUNNELD_SOCKET > the default.
std::string socket_path(const CommandLine& cl, const Env& env) {
  if (const auto s = value_of(cl.socket)) return *s;
  if (auto from_env = env(kSocketEnv)) return std::move(*from_env);
  return std::string(kDefaultSocketPath);
}

void set_command(const CommandLine& cl, const CLI::App* chosen, const Env& env, const Stdin& in,
                 Invocation& inv) {
  if (chosen == cl.open) {
    inv.command = Command::open;
    inv.open = open_request_from(cl.open_options, env, in, inv.warnings);
  } else if (chosen == cl.list) {
    inv.command = Command::list;
  } else if (chosen == cl.version_command) {
    inv.command = Command::version;
  } else if (chosen == cl.status && cl.status_args.empty()) {
    inv.command = Command::notify_status;
  } else if (chosen == cl.status) {
    inv.command = Command::status;
    inv.session = session_argument("status", cl.status_args);
  } else {
    inv.command = Command::close;
    inv.session = session_argument("close", cl.close_args);
  }
}

Invocation parse(int argc, const char* const* argv, const Env& env, const Stdin& in) {
  refuse_token_on_argv(argc, argv);
  CommandLine cl;
  try {
    cl.app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    for (int i = 1; i < argc; ++i) {
      const std::string_view arg = argv[i] != nullptr ? argv[i] : "";
      if (arg == "-h" || arg == "--help") return {.command = Command::help, .text = help_text()};
    }
    throw UsageError(cli11_message(e));
  }
  if (cl.help || cl.help_command->parsed()) {
    return {.command = Command::help, .text = help_text()};
  }
  if (cl.version) return {.command = Command::client_version, .text = version_text()};
  cl.check_values();
  const CLI::App* chosen = cl.chosen_command();
  Invocation inv;
  inv.json = cl.json;
  inv.socket_path = socket_path(cl, env);
  if (const auto t = value_of(cl.timeout)) inv.timeout = parse_timeout(*t);
  set_command(cl, chosen, env, in, inv);
  return inv;
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
  for (const auto name : {kAccessTokenEnv, kClientTokenEnv}) {
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

}  // namespace tunnel::tunnelctl
