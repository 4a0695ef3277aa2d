// libFuzzer target for tunnelctl's command line (ctl/tunnelctl/cli.h): argv,
// environment, standard input and the files it names, from the input
// (argv_input.h).
//  - parse_command_line returns an Invocation or throws UsageError only;
//  - a UsageError is one line and never holds a token; neither do warnings;
//  - an `open` carries an access token, and its request encodes into one
//    control frame under the daemon's cap;
//  - help and --version print something;
//  - protobuf logs no error: a request it cannot serialize (a string field
//    that is not UTF-8) is a parser bug, found once by replaying a corpus.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "argv_input.h"
#include "control/control_codec.h"
#include "fuzz_check.h"
#include "sample_files.h"
#include "tunnelctl/cli.h"

namespace ctl = tunnel::tunnelctl;

namespace {

std::string g_dir;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_dir = fuzz::make_sample_dir();
  google::protobuf::SetLogHandler([](google::protobuf::LogLevel level, const char* /*file*/,
                                     int /*line*/, const std::string& message) {
    if (level >= google::protobuf::LOGLEVEL_ERROR) std::fprintf(stderr, "%s\n", message.c_str());
    FUZZ_CHECK(level < google::protobuf::LOGLEVEL_ERROR);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto cl = fuzz::parse_input(data, size, "tunnelctl", g_dir);
  if (!cl) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto argv = cl->argv();
  const ctl::Env env = [&](std::string_view name) { return cl->getenv(name); };
  std::size_t next_line = 0;
  ctl::Stdin in;
  in.is_terminal = cl->stdin_lines.empty();
  in.read_line = [&]() -> std::optional<std::string> {
    if (next_line >= cl->stdin_lines.size()) return std::nullopt;
    return cl->stdin_lines[next_line++];
  };
  ctl::Invocation inv;
  try {
    inv = ctl::parse_command_line(static_cast<int>(cl->args.size()), argv.data(), env, in);
  } catch (const ctl::UsageError& e) {
    const std::string_view what = e.what();
    FUZZ_CHECK(!what.empty() && what.find('\n') == std::string_view::npos);
    FUZZ_CHECK(cl->secrets_misplaced || !fuzz::leaks(what, input));
    return 0;
  }
  for (const auto& w : inv.warnings) FUZZ_CHECK(cl->secrets_misplaced || !fuzz::leaks(w, input));
  switch (inv.command) {
    case ctl::Command::help:
    case ctl::Command::client_version:
      FUZZ_CHECK(!inv.text.empty());
      return 0;
    case ctl::Command::open:
      FUZZ_CHECK(!inv.open.access_token().empty());
      break;
    case ctl::Command::status:
    case ctl::Command::close:
      FUZZ_CHECK(!inv.session.empty());
      break;
    default:
      break;
  }
  FUZZ_CHECK(!inv.socket_path.empty());
  FUZZ_CHECK(inv.timeout.count() > 0);
  const auto request = ctl::make_request(inv, 42);
  FUZZ_CHECK(request.request_id() == 42 && request.version() == tunneld::control::kProtocolVersion);
  std::string frame;
  FUZZ_CHECK(tunneld::control::append_frame(frame, request, tunneld::control::kMaxRequestSize));
  return 0;
}
