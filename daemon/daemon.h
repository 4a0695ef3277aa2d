// tunneld: one process hosting many tunnel sessions on one libuv loop, driven
// by its configuration file and by tunnelctl over the control socket.
//
// Owns the loop, the WebSocket context, the sessions, the control server, the
// state store and the systemd glue. Signals arrive as uv_signal_t events:
// SIGTERM/SIGINT stop gracefully (every session resets its stream and closes
// its WebSocket; exit 0 within 5 s), SIGHUP reloads the configuration.
#pragma once

#include <uv.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "config.h"
#include "control/control_server.h"
#include "loop_context.h"
#include "notify/mqtt_link.h"
#include "notify/notify_gate.h"
#include "notify/notify_message.h"
#include "notify/seen_tokens.h"
#include "proxy_session.h"
#include "state_store.h"
#include "systemd_notify.h"

namespace tunneld {

class Daemon final : public control::RequestHandler {
 public:
  // What the command line overrides in the file; kept across reloads.
  struct Overrides {
    std::string socket;
    std::string state_dir;
    std::string log_level;
  };
  // `config` is the loaded configuration; `config_path` is re-read on SIGHUP
  // (empty: no file, nothing to reload); `overrides` apply on top, each time.
  Daemon(Config config, std::string config_path, Overrides overrides = {});
  static void apply(const Overrides& o, Config& c);
  ~Daemon() override;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until stopped. Returns the process exit status (start-up failures
  // are logged and return 1).
  int run();

  control::Response handle(const control::Request& request, const control::PeerCredentials& peer,
                           bool may_modify) override;

 private:
  enum class Origin { config, control, notify };
  struct Managed {
    std::string id;
    std::string name;
    Origin origin = Origin::control;
    std::string thing;  // Origin::notify: the thing whose notification opened it
    // Origin::notify: SHA-256 of its access token, to recognise a redelivery.
    std::optional<notify::TokenDigest> token_digest;
    // Config sessions: the [[session]] as read from the file (before the
    // daemon filled in a generated client token), to tell changes on reload.
    tunnel::ProxyConfig from_file;
    std::unique_ptr<tunnel::ProxySession> session;
    bool removing = false;  // close requested: forget once it has ended
    bool ended = false;
    tunnel::SessionOutcome outcome;
    // rates, sampled every second
    std::uint64_t last_in = 0, last_out = 0, rate_in = 0, rate_out = 0;
  };

  control::Response open(const control::OpenRequest& r);
  // The one path from an OpenRequest to a persisted, running session, for
  // tunnelctl open and for notifications alike.
  control::Response open_session(control::OpenRequest r, Origin origin);
  control::Response list();
  control::Response status(const std::string& key);
  control::Response close_session(const std::string& key);
  Managed* find(const std::string& id_or_name);

  // Creates and starts a session; returns it, or nullopt with `error` set.
  Managed* start_session(std::string id, Origin origin, tunnel::ProxyConfig config,
                         std::string& error);
  void on_session_done(const std::string& id, const tunnel::SessionOutcome& outcome);
  void restore_sessions();
  // Deletes a session's state file; a failure is logged (it would be restored).
  void forget_state(const Managed& m);
  void apply_config_sessions(const Config& next);
  void reload();
  void begin_stop();
  void finish_stop();
  void tick();
  void update_status();
  std::string new_id() const;
  void fill_info(const Managed& m, control::SessionInfo& info) const;

  // ---- notify (docs/notify.md)
  void apply_notify_config(const NotifyConfig& next);
  void on_notification(std::string_view topic, std::string_view payload);
  void refuse_notification(const std::string& why);
  bool is_duplicate(const notify::TokenDigest& digest);
  void open_notified(const notify::Notification& n, const notify::TokenDigest& digest);
  std::string next_notify_name();
  void note_notify_session(Managed& m, const std::string& access_token);
  std::size_t notify_sessions(bool closing_too) const;
  control::Response notify_status();

  Config config_;
  std::string config_path_;
  Overrides overrides_;
  uv_loop_t loop_{};
  std::unique_ptr<tunnel::LoopContext> loop_context_;
  std::unique_ptr<control::ControlServer> control_;
  std::optional<StateStore> store_;
  platform::SystemdNotifier notifier_;
  std::map<std::string, std::unique_ptr<Managed>> sessions_;  // by id
  std::unique_ptr<notify::MqttLink> mqtt_;
  NotifyConfig notify_config_;  // what mqtt_ runs with
  notify::NotifyGate notify_gate_{notify::GateLimits{}};
  // Tokens of the last notifications that opened a session (and of restored
  // notify sessions), as digests; kept for the life of the process.
  notify::SeenTokens notify_seen_;
  std::uint64_t notify_next_number_ = 1;  // the n of the next notify-<thing>-<n>
  std::uint64_t notify_accepted_ = 0, notify_refused_ = 0, notify_duplicates_ = 0;
  std::int64_t notify_last_unix_ms_ = 0;
  std::string notify_last_refusal_;
  uv_signal_t sigterm_{}, sigint_{}, sighup_{};
  uv_timer_t tick_timer_{};     // rates, STATUS=, watchdog
  uv_timer_t stop_deadline_{};  // the 5 s promise of a graceful stop
  std::uint64_t tick_period_ms_ = 1000;
  bool stopping_ = false;
  bool stopped_ = false;
};

}  // namespace tunneld
