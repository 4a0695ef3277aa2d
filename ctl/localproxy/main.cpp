// localproxy: one tunnel session in the foreground, with the reference local
// proxy's command line. Parsing lives in cli.cpp, the session in the engine.
#include <uv.h>

#include <cstdio>
#include <fstream>
#include <memory>

#include "cli.h"
#include "core_dumps.h"
#include "logging.h"
#include "proxy_session.h"
#include "settings.h"
#include "loop_context.h"

namespace lp = tunnel::localproxy;

namespace {

int export_settings(const lp::Options& o) {
  std::ofstream f(o.export_path, std::ios::trunc);
  f << tunnel::settings_to_json(o.config.settings);
  f.close();
  if (!f) {
    std::fprintf(stderr, "localproxy: cannot write %s\n", o.export_path.c_str());
    return lp::kExitFailure;
  }
  return lp::kExitOk;
}

struct SignalWatch {
  uv_signal_t handle{};
};

}  // namespace

int main(int argc, char** argv) {
  const tunnel::CoreDumps dumps = tunnel::keep_secrets_out_of_core_dumps();
  lp::Options opts;
  try {
    opts = lp::parse_command_line(argc, argv, lp::process_env());
  } catch (const lp::UsageError& e) {
    std::fprintf(stderr, "localproxy: %s\n", e.what());
    return lp::kExitUsage;
  }
  switch (opts.action) {
    case lp::Action::help:
      std::fputs(lp::help_text().c_str(), stdout);
      return lp::kExitOk;
    case lp::Action::version:
      std::fputs(lp::version_text().c_str(), stdout);
      return lp::kExitOk;
    case lp::Action::export_settings:
      return export_settings(opts);
    case lp::Action::run:
      break;
  }

  tunnel::logging::set_level(tunnel::logging::level_from_verbosity(opts.verbosity));
  auto log = tunnel::logging::get("localproxy");
  for (const auto& w : opts.warnings) log->warn("{}", w);
  if (dumps == tunnel::CoreDumps::allowed_by_variable)
    log->warn("TUNNELD_ALLOW_CORE_DUMPS=1: a core of localproxy holds its tokens");

  uv_loop_t loop;
  uv_loop_init(&loop);
  int exit_code = lp::kExitOk;
  std::string failure;
  {
    std::unique_ptr<tunnel::LoopContext> context;
    try {
      context = std::make_unique<tunnel::LoopContext>(&loop);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "localproxy: %s\n", e.what());
      uv_loop_close(&loop);
      return lp::kExitFailure;
    }
    SignalWatch sigterm, sigint;
    log->info("localproxy {} starting in {} mode, service {}:{}", TUNNELD_VERSION,
              tunnel::to_string(opts.config.mode), opts.config.endpoint.host,
              opts.config.endpoint.port);
    std::unique_ptr<tunnel::ProxySession> session;
    session = std::make_unique<tunnel::ProxySession>(
        *context, opts.config, [&](const tunnel::SessionOutcome& o) {
          // A libuv close callback: the loop may be torn down from here.
          exit_code = o.ok ? lp::kExitOk : lp::kExitFailure;
          if (!o.ok) failure = o.reason;
          uv_close(reinterpret_cast<uv_handle_t*>(&sigterm.handle), nullptr);
          uv_close(reinterpret_cast<uv_handle_t*>(&sigint.handle), nullptr);
        });
    for (auto* s : {&sigterm, &sigint}) {
      uv_signal_init(&loop, &s->handle);
      s->handle.data = session.get();
    }
    auto on_signal = [](uv_signal_t* h, int signum) {
      auto* sess = static_cast<tunnel::ProxySession*>(h->data);
      tunnel::logging::get("localproxy")
          ->info("{} received: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
      sess->stop();
    };
    uv_signal_start(&sigterm.handle, on_signal, SIGTERM);
    uv_signal_start(&sigint.handle, on_signal, SIGINT);
    if (opts.config.https_proxy) {
      log->info("reaching the service through the HTTPS proxy {} (from {})",
                opts.config.https_proxy->display(), opts.config.https_proxy_origin);
    }
    session->start();
    uv_run(&loop, UV_RUN_DEFAULT);
    session.reset();
    context.reset();
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) log->debug("event loop closed with handles still open");
  if (!failure.empty()) std::fprintf(stderr, "localproxy: %s\n", failure.c_str());
  return exit_code;
}
