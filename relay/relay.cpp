#include "relay.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <uv.h>

#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "admin_api.h"
#include "notify_publisher.h"
#include "relay_server.h"

namespace relay {
namespace {

// Owns the loop-level handles of one relay run.
class RelayProcess {
 public:
  explicit RelayProcess(const RelayConfig& config) : config_(config), server_(&loop_, config) {
    uv_loop_init(&loop_);
  }

  int run() {
    std::string error;
    HostPort admin_bound;
    bool ok = server_.start(error);
    if (ok && config_.admin) {
      api_.emplace(server_, config_.default_lifetime, config_.max_lifetime);
      if (config_.notify_broker) {
        NotifyPublisherConfig n;
        n.host = config_.notify_broker->host;
        n.port = config_.notify_broker->port;
        n.cafile = config_.notify_cafile;
        n.certfile = config_.notify_cert;
        n.keyfile = config_.notify_key;
        n.region = config_.notify_region;
        try {
          notifier_.emplace(std::move(n));
          // Ready means usable: give the broker a moment before saying so.
          if (!notifier_->wait_connected(5000))
            spdlog::get("relay")->warn("notify broker {} not connected yet (retrying)",
                                       config_.notify_broker->to_string());
          api_->set_notifier(&*notifier_);
        } catch (const std::exception& e) {
          error = e.what();
          ok = false;
        }
      }
      AdminServerOptions admin_options;
      admin_options.access.bound_host = config_.admin->host;
      admin_options.access.names = config_.admin_hosts;
      admin_options.access.tls = config_.admin_tls;
      admin_options.access.token = config_.admin_token;
      if (config_.admin_tls) {
        admin_options.tls_cert = config_.tls_cert;
        admin_options.tls_key = config_.tls_key;
      }
      admin_.emplace(&loop_, *api_, std::move(admin_options));
      if (ok) ok = admin_->listen(*config_.admin, admin_bound, error);
    }
    int rc = 0;
    if (!ok) {
      spdlog::get("relay")->error("cannot start: {}", error);
      rc = 1;
      stop();
    } else {
      for (int signum : {SIGTERM, SIGINT}) {
        auto* h = new uv_signal_t;
        uv_signal_init(&loop_, h);
        h->data = this;
        uv_signal_start(h, &RelayProcess::on_signal, signum);
        signals_.push_back(h);
      }
      nlohmann::ordered_json ready{{"event", "ready"}, {"listen", server_.bound().to_string()}};
      if (admin_) ready["admin"] = admin_bound.to_string();
      std::fputs((ready.dump() + "\n").c_str(), stdout);
      std::fflush(stdout);
    }
    uv_run(&loop_, UV_RUN_DEFAULT);
    server_.finish();
    uv_run(&loop_, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop_) != 0) spdlog::get("relay")->warn("event loop not empty at exit");
    return rc;
  }

 private:
  static void on_signal(uv_signal_t* h, int signum) {
    auto* self = static_cast<RelayProcess*>(h->data);
    spdlog::get("relay")->info("{}: closing every connection (1001) and exiting",
                               signum == SIGTERM ? "SIGTERM" : "SIGINT");
    self->stop();
  }

  void stop() {
    for (uv_signal_t* h : signals_)
      uv_close(reinterpret_cast<uv_handle_t*>(h),
               [](uv_handle_t* x) { delete reinterpret_cast<uv_signal_t*>(x); });
    signals_.clear();
    if (admin_) admin_->close();
    server_.shutdown([] {});
  }

  const RelayConfig& config_;
  uv_loop_t loop_{};
  RelayServer server_;
  std::optional<NotifyPublisher> notifier_;  // before api_: it outlives the API's use
  std::optional<AdminApi> api_;
  std::optional<AdminServer> admin_;
  std::vector<uv_signal_t*> signals_;  // owned; freed from their close callbacks
};

}  // namespace

bool setup_logging(std::string_view level) {
  const auto lvl = spdlog::level::from_str(std::string(level));
  if (lvl == spdlog::level::off && level != "off") return false;
  auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  for (const char* name : {"relay", "admin"}) {
    spdlog::drop(name);
    auto logger = std::make_shared<spdlog::logger>(name, sink);
    logger->set_level(lvl);
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ [%n] %v");
    logger->flush_on(spdlog::level::trace);
    spdlog::register_logger(logger);
  }
  return true;
}

int run_relay(const RelayConfig& config) {
  RelayProcess process(config);
  return process.run();
}

}  // namespace relay
