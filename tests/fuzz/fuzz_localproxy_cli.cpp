// libFuzzer target for localproxy's command line (ctl/localproxy/cli.h):
// argv, environment and the files it names, from the input (argv_input.h).
//  - parse_command_line returns Options or throws UsageError, nothing else;
//  - a UsageError is one line and never holds an access or client token;
//  - an Options to run is complete: a mode, a token, valid settings, a
//    verbosity within 0..6, at most 3 services with distinct names; its
//    warnings never hold a token.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>

#include "argv_input.h"
#include "cli.h"
#include "fuzz_check.h"
#include "sample_files.h"

namespace lp = tunnel::localproxy;

namespace {

std::string g_dir;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  g_dir = fuzz::make_sample_dir();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto cl = fuzz::parse_input(data, size, "localproxy", g_dir);
  if (!cl) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto argv = cl->argv();
  const lp::Env env = [&](std::string_view name) { return cl->getenv(name); };
  lp::Options o;
  try {
    o = lp::parse_command_line(static_cast<int>(cl->args.size()), argv.data(), env);
  } catch (const lp::UsageError& e) {
    const std::string_view what = e.what();
    FUZZ_CHECK(!what.empty() && what.find('\n') == std::string_view::npos);
    FUZZ_CHECK(cl->secrets_misplaced || !fuzz::leaks(what, input));
    return 0;
  }
  for (const auto& w : o.warnings) FUZZ_CHECK(cl->secrets_misplaced || !fuzz::leaks(w, input));
  FUZZ_CHECK(o.verbosity >= 0 && o.verbosity <= 6);
  if (o.action == lp::Action::run) {
    FUZZ_CHECK(!o.config.access_token.empty());
    tunnel::validate(o.config.settings);  // throws (and fails) if not
    FUZZ_CHECK(o.config.services.size() <= 3);
    std::set<std::string> names;
    for (const auto& s : o.config.services) FUZZ_CHECK(names.insert(s.id).second);
    FUZZ_CHECK(o.destination_client_type.empty() || o.destination_client_type == "V1" ||
               o.destination_client_type == "V2" || o.destination_client_type == "V3");
  } else if (o.action == lp::Action::export_settings) {
    FUZZ_CHECK(!o.export_path.empty());
  }
  return 0;
}
