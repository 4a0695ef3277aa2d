#include "daemon.h"

#include <openssl/rand.h>
#include <spdlog/fmt/fmt.h>

#include <cstdlib>

#include "control/control_codec.h"
#include "journal_log.h"
#include "logging.h"
#include "notify/notify_message.h"
#include "session_request.h"

namespace tunneld {
namespace {

auto log() { return tunnel::logging::get("tunneld"); }

constexpr std::uint64_t kStopDeadlineMs = 4500;

bool same_proxy_config(const tunnel::ProxyConfig& a, const tunnel::ProxyConfig& b) {
  return a.mode == b.mode && a.endpoint == b.endpoint && a.access_token == b.access_token &&
         a.client_token == b.client_token && a.local == b.local && a.services == b.services &&
         a.protocol_version == b.protocol_version && a.bind_address == b.bind_address &&
         a.capath == b.capath && a.cafile == b.cafile && a.verify_tls == b.verify_tls &&
         a.settings == b.settings && a.name == b.name;
}

control::Response error_response(control::Response::Status s, std::string text) {
  return control::make_error(0, s, std::move(text));
}

// libuv handles on the loop (closing ones included): the soak test reads it
// from the debug log to show that sessions opened and closed leave none.
std::size_t loop_handle_count(uv_loop_t* loop) {
  std::size_t n = 0;
  uv_walk(
      loop, [](uv_handle_t*, void* arg) { ++*static_cast<std::size_t*>(arg); }, &n);
  return n;
}

auto notify_log() { return tunnel::logging::get("notify"); }

}  // namespace

Daemon::Daemon(Config config, std::string config_path, Overrides overrides)
    : config_(std::move(config)),
      config_path_(std::move(config_path)),
      overrides_(std::move(overrides)),
      notifier_(platform::SystemdNotifier::from_environment()) {
  apply(overrides_, config_);
}

void Daemon::apply(const Overrides& o, Config& c) {
  if (!o.socket.empty()) c.control.socket = o.socket;
  if (!o.state_dir.empty()) c.state_dir = o.state_dir;
  if (!o.log_level.empty()) c.log.level = o.log_level;
}

Daemon::~Daemon() = default;

std::string Daemon::new_id() const {
  for (;;) {
    unsigned char b[4];
    RAND_bytes(b, sizeof b);
    std::string id = fmt::format("{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]);
    if (!sessions_.count(id)) return id;
  }
}

int Daemon::run() {
  uv_loop_init(&loop_);
  int status = 0;
  try {
    loop_context_ = std::make_unique<tunnel::LoopContext>(&loop_);
    store_.emplace(config_.state_dir);
    control::ControlServerOptions o;
    o.path = config_.control.socket;
    o.mode = config_.control.mode;
    o.group = config_.control.group;
    control_ = std::make_unique<control::ControlServer>(&loop_, o, *this);
    control_->listen();
  } catch (const std::exception& e) {
    log()->critical("cannot start: {}", e.what());
    status = 1;
  }
  if (status == 0) {
    restore_sessions();
    apply_config_sessions(config_);
    apply_notify_config(config_.notify);
    for (auto [sig, num] :
         {std::pair{&sigterm_, SIGTERM}, {&sigint_, SIGINT}, {&sighup_, SIGHUP}}) {
      uv_signal_init(&loop_, sig);
      sig->data = this;
      uv_signal_start(
          sig,
          [](uv_signal_t* h, int signum) {
            auto* d = static_cast<Daemon*>(h->data);
            if (signum == SIGHUP) {
              d->reload();
            } else {
              log()->info("{} received: stopping", signum == SIGTERM ? "SIGTERM" : "SIGINT");
              d->begin_stop();
            }
          },
          num);
    }
    uv_timer_init(&loop_, &stop_deadline_);
    stop_deadline_.data = this;
    uv_timer_init(&loop_, &tick_timer_);
    tick_timer_.data = this;
    std::uint64_t period = 1000;  // also the rate sampling period
    if (auto wd = notifier_.watchdog_interval()) {
      period = std::min<std::uint64_t>(period, std::max<std::int64_t>(wd->count() / 2000, 10));
    }
    tick_period_ms_ = period;
    uv_timer_start(
        &tick_timer_, [](uv_timer_t* t) { static_cast<Daemon*>(t->data)->tick(); }, period, period);
    notifier_.ready();
    update_status();
    log()->info("tunneld {} ready: {} session(s), control socket {}", TUNNELD_VERSION,
                sessions_.size(), config_.control.socket);
  } else {
    if (control_) control_->close();
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  mqtt_.reset();
  sessions_.clear();
  control_.reset();
  loop_context_.reset();
  uv_run(&loop_, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop_) != 0) log()->debug("event loop closed with handles open");
  if (status == 0) log()->info("stopped");
  return status;
}

// ------------------------------------------------------------ sessions

Daemon::Managed* Daemon::start_session(std::string id, Origin origin, tunnel::ProxyConfig cfg,
                                       std::string& error_text) {
  auto m = std::make_unique<Managed>();
  m->id = id;
  m->name = cfg.name.empty() ? id : cfg.name;
  m->origin = origin;
  cfg.name = m->name;
  cfg.listen_at_start = true;
  // The proxy is resolved here, for sessions from tunnelctl, from the state
  // directory and from tunneld.toml alike: the explicit value (request,
  // session, settings) first, else tunneld's own HTTPS_PROXY / NO_PROXY.
  tunnel::ProxyResolution via;
  if (!tunnel::resolve_https_proxy(cfg.settings.https_proxy, "https_proxy",
                                   tunnel::process_environment(), cfg.endpoint.host, via,
                                   error_text)) {
    return nullptr;
  }
  cfg.https_proxy = std::move(via.proxy);
  cfg.https_proxy_origin = std::move(via.origin);
  if (cfg.https_proxy) {
    log()->info("session {}: reaching the service through the HTTPS proxy {} (from {})", m->name,
                cfg.https_proxy->display(), cfg.https_proxy_origin);
  }
  const std::string endpoint = cfg.endpoint.host + ":" + std::to_string(cfg.endpoint.port);
  auto logger = platform::make_field_logger(
      tunnel::logging::get("session"), "session " + m->name,
      {{std::string(platform::kFieldSessionId), id},
       {std::string(platform::kFieldSessionName), m->name},
       {std::string(platform::kFieldMode), std::string(tunnel::to_string(cfg.mode))},
       {std::string(platform::kFieldEndpoint), endpoint}});
  m->session = std::make_unique<tunnel::ProxySession>(
      *loop_context_, std::move(cfg),
      [this, id](const tunnel::SessionOutcome& o) { on_session_done(id, o); });
  // Every line about a connection to the service carries its channel-id,
  // the id the service side logs too (TUNNEL_CHANNEL_ID, docs/systemd.md).
  m->session->set_on_channel([logger](const std::string& channel) {
    logger->set_field(platform::kFieldChannelId, channel);
  });
  m->session->set_logger(logger);
  Managed* raw = m.get();
  sessions_[id] = std::move(m);
  raw->session->start();
  if (raw->session->finished()) {
    // Failed at once (the listen port is taken): it is torn down, then forgotten.
    error_text = raw->session->outcome().reason;
    raw->removing = true;
    return nullptr;
  }
  return raw;
}

void Daemon::on_session_done(const std::string& id, const tunnel::SessionOutcome& outcome) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return;
  Managed& m = *it->second;
  m.ended = true;
  m.outcome = outcome;
  if (m.removing) {
    sessions_.erase(it);  // destroys the session from inside its done callback: allowed
  } else if (!stopping_) {
    // Ended for good (tunnel closed by the service, token refused, retries
    // exhausted): it must not come back after a restart. tunnelctl still
    // shows it, with the reason, until it is closed.
    log()->info("session {} ({}) ended: {}", m.name, m.id, outcome.reason);
    if (m.origin != Origin::config && store_) forget_state(m);
    if (m.origin == Origin::notify) {
      // A notify session is one tunnel, which nothing brings back once the
      // service has closed it (or refused its token): it is forgotten, so
      // that it no longer holds a place under max_sessions. Its token's
      // digest stays in notify_seen_ for redeliveries.
      log()->info("session {} ({}) forgotten (opened by a notification)", m.name, m.id);
      sessions_.erase(it);
    }
  }
  if (stopping_) {
    const bool all_done = std::all_of(sessions_.begin(), sessions_.end(),
                                      [](const auto& kv) { return kv.second->ended; });
    if (all_done) finish_stop();
    return;
  }
  update_status();
}

void Daemon::forget_state(const Managed& m) {
  const std::error_code ec = store_->remove(m.id);
  if (ec && ec != std::errc::no_such_file_or_directory) {
    log()->error("session {} ({}): cannot delete {}: {}; it will be restored after a restart",
                 m.name, m.id, store_->path_of(m.id), ec.message());
  }
}

void Daemon::restore_sessions() {
  StateLoadResult loaded = store_->load_all();
  for (const auto& e : loaded.errors) log()->error("state: {}", e);
  for (auto& s : loaded.sessions) {
    tunnel::ProxyConfig cfg;
    try {
      cfg = proxy_config_from(s.request, config_.settings);
    } catch (const InvalidRequest& e) {
      log()->error("state: session {} cannot be restored: {}", s.id, e.what());
      continue;
    }
    std::string err;
    const bool notified = s.request.origin() == "notify";
    if (Managed* m =
            start_session(s.id, notified ? Origin::notify : Origin::control, std::move(cfg), err)) {
      if (notified) {
        m->thing = s.request.notify_thing();
        note_notify_session(*m, s.request.access_token());
      }
      log()->info("session {} restored", s.id);
    } else {
      log()->error("session {} cannot be restored: {}", s.id, err);
    }
  }
}

void Daemon::apply_config_sessions(const Config& next) {
  // Sessions from the file are matched by name: removed ones stop, changed ones
  // restart, new ones start; sessions opened with tunnelctl are untouched.
  for (auto& [id, m] : sessions_) {
    if (m->origin != Origin::config || m->removing) continue;
    const std::string& name = m->name;  // clang < 16 cannot capture a structured binding
    const auto it = std::find_if(next.sessions.begin(), next.sessions.end(),
                                 [&](const SessionConfig& s) { return s.proxy.name == name; });
    if (it == next.sessions.end() || !same_proxy_config(it->proxy, m->from_file)) {
      log()->info("config: session {} {}", m->name,
                  it == next.sessions.end() ? "removed" : "changed: restarting");
      m->removing = true;
      m->session->stop();
    }
  }
  // Erase already-ended removals (their done callback has run).
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = (it->second->removing && it->second->ended) ? sessions_.erase(it) : std::next(it);
  }
  for (const auto& s : next.sessions) {
    const bool running = std::any_of(sessions_.begin(), sessions_.end(), [&](const auto& kv) {
      return !kv.second->removing && kv.second->name == s.proxy.name;
    });
    if (running) continue;
    std::string err;
    if (Managed* m = start_session(new_id(), Origin::config, s.proxy, err)) {
      m->from_file = s.proxy;
      log()->info("config: session {} started", s.proxy.name);
    } else {
      log()->error("{}:{}: session {}: {}", next.path, s.line, s.proxy.name, err);
    }
  }
}

Daemon::Managed* Daemon::find(const std::string& key) {
  if (auto it = sessions_.find(key); it != sessions_.end() && !it->second->removing) {
    return it->second.get();
  }
  for (auto& [id, m] : sessions_) {
    if (!m->removing && m->name == key) return m.get();
  }
  return nullptr;
}

// ------------------------------------------------------------ control requests

control::Response Daemon::handle(const control::Request& request,
                                 const control::PeerCredentials& peer, bool may_modify) {
  using control::Request;
  using control::Response;
  switch (request.body_case()) {
    case Request::kOpenRequest:
    case Request::kCloseRequest:
      if (!may_modify) {
        log()->warn("control: uid {} (pid {}) may not open or close sessions", peer.uid, peer.pid);
        return error_response(
            Response::UNAUTHORIZED,
            "permission denied: only root and members of group " +
                (config_.control.group.empty() ? std::string("tunneld") : config_.control.group) +
                " may open or close sessions");
      }
      if (stopping_) return error_response(Response::INTERNAL, "tunneld is stopping");
      return request.body_case() == Request::kOpenRequest
                 ? open(request.open_request())
                 : close_session(request.close_request().session());
    case Request::kListRequest:
      return list();
    case Request::kStatusRequest:
      return status(request.status_request().session());
    case Request::kNotifyStatusRequest:
      return notify_status();
    case Request::kVersionRequest: {
      Response r = control::make_response(0, Response::OK);
      r.mutable_version_response()->set_daemon_version(TUNNELD_VERSION);
      r.mutable_version_response()->set_protocol_version(control::kProtocolVersion);
      return r;
    }
    default:
      return error_response(Response::MALFORMED, "unknown request");
  }
}

control::Response Daemon::open(const control::OpenRequest& request) {
  // A client's name reaches logs, the journal and the state file: no spaces,
  // no control characters. Not echoed. (Notification sessions are named
  // "notify-THING-N" after a validated thing name, in the same rule.)
  if (!request.name().empty() && !is_valid_session_name(request.name())) {
    return error_response(control::Response::INVALID_ARGUMENT,
                          "name: expected " + std::string(kSessionNameRule));
  }
  control::OpenRequest r = request;
  // Only tunneld says where a session came from.
  r.clear_origin();
  r.clear_notify_thing();
  return open_session(std::move(r), Origin::control);
}

control::Response Daemon::open_session(control::OpenRequest r, Origin origin) {
  using control::Response;
  tunnel::ProxyConfig cfg;
  try {
    cfg = proxy_config_from(r, config_.settings);
  } catch (const InvalidRequest& e) {
    return error_response(Response::INVALID_ARGUMENT, e.what());
  }
  const std::string id = new_id();
  if (r.name().empty()) r.set_name(id);
  if (find(r.name())) {
    return error_response(Response::ALREADY_EXISTS, "a session named '" + r.name() + "' exists");
  }
  cfg.name = r.name();
  // The client token is what lets this session reconnect (also after a
  // restart) although access tokens are single use: fix it now and persist it.
  if (r.client_token().empty()) r.set_client_token(tunnel::generate_client_token());
  cfg.client_token = r.client_token();
  if (std::error_code ec = store_->save(id, r)) {
    const std::string why = "cannot persist the session in " + store_->dir() + ": " + ec.message() +
                            "; free space or make it writable, then open again";
    log()->error("session {} not opened: {}", r.name(), why);
    return error_response(Response::INTERNAL, why);
  }
  std::string err;
  Managed* m = start_session(id, origin, std::move(cfg), err);
  if (!m) {
    store_->remove(id);
    return error_response(Response::INVALID_ARGUMENT, err);
  }
  m->thing = r.notify_thing();
  log()->info("session {} ({}) opened: {} {}", m->name, id,
              tunnel::to_string(m->session->config().mode), m->session->stats().local_address);
  if (log()->should_log(spdlog::level::debug)) {
    log()->debug("{} session(s), {} libuv handles on the loop", sessions_.size(),
                 loop_handle_count(&loop_));
  }
  Response resp = control::make_response(0, Response::OK);
  resp.mutable_open_response()->set_session_id(id);
  resp.mutable_open_response()->set_bound_port(m->session->listen_port());
  update_status();
  return resp;
}

control::Response Daemon::close_session(const std::string& key) {
  using control::Response;
  Managed* m = find(key);
  if (!m)
    return error_response(Response::NOT_FOUND, "no session '" + key + "' (see tunnelctl list)");
  const std::string id = m->id;
  // What runs is what is persisted: a session whose file cannot be deleted
  // would come back after a restart, so it keeps running and the close fails.
  if (m->origin != Origin::config) {
    if (std::error_code ec = store_->remove(id); ec && ec != std::errc::no_such_file_or_directory) {
      const std::string why = "cannot delete " + store_->path_of(id) + ": " + ec.message() +
                              "; the session keeps running (it would come back after a "
                              "restart); make the state directory writable, then close again";
      log()->error("session {} ({}) not closed: {}", m->name, id, why);
      return error_response(Response::INTERNAL, why);
    }
  }
  log()->info("session {} ({}) closed by request", m->name, id);
  if (m->ended) {
    sessions_.erase(id);
  } else {
    m->removing = true;
    m->session->stop();
  }
  update_status();
  return control::make_response(0, Response::OK);
}

void Daemon::fill_info(const Managed& m, control::SessionInfo& info) const {
  info.set_id(m.id);
  info.set_name(m.name);
  fill_session_info(*m.session, info);
  info.set_rate_in(m.rate_in);
  info.set_rate_out(m.rate_out);
  switch (m.origin) {
    case Origin::config:
      info.set_origin("config");
      break;
    case Origin::control:
      info.set_origin("tunnelctl");
      break;
    case Origin::notify:
      info.set_origin("notify");
      break;
  }
  info.set_notify_thing(m.thing);
}

control::Response Daemon::list() {
  control::Response r = control::make_response(0, control::Response::OK);
  auto* l = r.mutable_list_response();
  for (const auto& [id, m] : sessions_) {
    if (!m->removing) fill_info(*m, *l->add_sessions());
  }
  return r;
}

control::Response Daemon::status(const std::string& key) {
  Managed* m = find(key);
  if (!m) {
    return error_response(control::Response::NOT_FOUND,
                          "no session '" + key + "' (see tunnelctl list)");
  }
  control::Response r = control::make_response(0, control::Response::OK);
  fill_info(*m, *r.mutable_status_response()->mutable_session());
  return r;
}

// ------------------------------------------------------------ lifecycle

void Daemon::reload() {
  if (config_path_.empty()) {
    log()->info("SIGHUP: no configuration file to reload");
    return;
  }
  log()->info("SIGHUP: reloading {}", config_path_);
  Config next;
  try {
    next = load_config(config_path_);
  } catch (const ConfigError& e) {
    log()->error("reload failed, keeping the running configuration: {}", e.what());
    return;
  }
  apply(overrides_, next);
  notifier_.reloading();
  if (next.control != config_.control || next.state_dir != config_.state_dir) {
    log()->warn("control socket and state directory changes take effect at the next restart");
  }
  if (auto lvl = spdlog::level::from_str(next.log.level); lvl != tunnel::logging::level()) {
    tunnel::logging::set_level(lvl);
  }
  apply_config_sessions(next);
  apply_notify_config(next.notify);
  config_.notify = next.notify;
  config_.sessions = next.sessions;
  config_.settings = next.settings;
  config_.log = next.log;
  notifier_.ready();
  update_status();
}

void Daemon::begin_stop() {
  if (stopping_) return;
  stopping_ = true;
  notifier_.stopping();
  control_->close();
  if (mqtt_) mqtt_->close();
  uv_timer_start(
      &stop_deadline_,
      [](uv_timer_t*) {
        // The promise is exit 0 within 5 s; sessions had their chance to say goodbye.
        log()->error("sessions did not stop within {} ms: exiting anyway", kStopDeadlineMs);
        spdlog::shutdown();
        std::_Exit(0);
      },
      kStopDeadlineMs, 0);
  log()->info("stopping {} session(s)", sessions_.size());
  bool any = false;
  for (auto& [id, m] : sessions_) {
    if (!m->ended) {
      any = true;
      m->session->stop();
    }
  }
  if (!any) finish_stop();
}

void Daemon::finish_stop() {
  if (stopped_) return;
  stopped_ = true;
  for (uv_signal_t* s : {&sigterm_, &sigint_, &sighup_}) {
    uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&tick_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&stop_deadline_), nullptr);
}

void Daemon::tick() {
  for (auto& [id, m] : sessions_) {
    const auto& st = m->session->stats();
    m->rate_in = (st.bytes_from_service - m->last_in) * 1000 / tick_period_ms_;
    m->rate_out = (st.bytes_to_service - m->last_out) * 1000 / tick_period_ms_;
    m->last_in = st.bytes_from_service;
    m->last_out = st.bytes_to_service;
  }
  if (notifier_.watchdog_interval()) notifier_.watchdog_ping();
  update_status();
}

void Daemon::update_status() {
  std::size_t connected = 0, connecting = 0, ended = 0, total = 0;
  for (const auto& [id, m] : sessions_) {
    if (m->removing) continue;
    ++total;
    switch (m->session->state()) {
      case tunnel::SessionState::connected:
        ++connected;
        break;
      case tunnel::SessionState::ended:
        ++ended;
        break;
      default:
        ++connecting;
    }
  }
  notifier_.status(fmt::format("{} session(s): {} connected, {} connecting, {} ended", total,
                               connected, connecting, ended));
}

}  // namespace tunneld

// ------------------------------------------------------------ notify

namespace tunneld {

void Daemon::apply_notify_config(const NotifyConfig& next) {
  notify_gate_.set_limits(
      notify::GateLimits{next.max_sessions, next.rate_burst, next.rate_per_minute});
  const bool running = mqtt_ != nullptr;
  // Only the link's own settings reconnect it; the service map, the limits and
  // the tunnel endpoint apply to the next notification without a reconnect.
  const bool link_changed =
      next.enabled != notify_config_.enabled || next.broker_host != notify_config_.broker_host ||
      next.broker_port != notify_config_.broker_port ||
      next.thing_name != notify_config_.thing_name || next.client_id != notify_config_.client_id ||
      next.cert_file != notify_config_.cert_file || next.key_file != notify_config_.key_file ||
      next.ca_file != notify_config_.ca_file || next.keepalive_s != notify_config_.keepalive_s ||
      next.alpn != notify_config_.alpn;
  notify_config_ = next;
  if (running && !link_changed) return;
  if (running) {
    notify_log()->info("notify: [notify] changed: {}",
                       next.enabled ? "reconnecting the MQTT link" : "MQTT link closed");
    mqtt_->close();
    mqtt_.reset();
  }
  if (!next.enabled) return;
  notify::MqttLinkOptions o;
  o.host = next.broker_host;
  o.port = next.broker_port;
  o.client_id = next.client_id;
  o.cafile = next.ca_file;
  o.certfile = next.cert_file;
  o.keyfile = next.key_file;
  o.alpn = next.alpn;
  o.keepalive_s = next.keepalive_s;
  o.topic = notify::notify_topic(next.thing_name);
  mqtt_ = std::make_unique<notify::MqttLink>(
      &loop_, std::move(o),
      [this](std::string_view topic, std::string_view payload) { on_notification(topic, payload); },
      notify_log());
  notify_log()->info("notify: connecting to {}:{} as {} for thing {}{}", next.broker_host,
                     next.broker_port, next.client_id, next.thing_name,
                     next.alpn.empty() ? "" : ", ALPN " + next.alpn);
  mqtt_->start();
}

void Daemon::refuse_notification(const std::string& why) {
  ++notify_refused_;
  notify_last_refusal_ = why;
  notify_log()->warn("notify: notification refused: {}", why);
}

void Daemon::on_notification(std::string_view topic, std::string_view payload) {
  notify_last_unix_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  if (stopping_) return;
  if (topic != notify::notify_topic(notify_config_.thing_name)) {
    refuse_notification("message on a topic other than the thing's notify topic");
    return;
  }
  notify::ParseResult parsed = notify::parse_notification(payload, notify_config_.services);
  if (!parsed.notification) {
    refuse_notification(parsed.refusal);
    return;
  }
  const notify::TokenDigest digest = notify::digest_of(parsed.notification->access_token);
  if (is_duplicate(digest)) return;
  const notify::GateDecision d =
      notify_gate_.admit(std::chrono::steady_clock::now(), notify_sessions(true));
  if (!d.accept) {
    refuse_notification(d.refusal);
    return;
  }
  open_notified(*parsed.notification, digest);
}

// MQTT QoS 1 delivers at least once: a copy of a notification carries the
// token of a session that runs (or ran) already. It is dropped; the session
// is not touched.
bool Daemon::is_duplicate(const notify::TokenDigest& digest) {
  const auto live = std::find_if(sessions_.begin(), sessions_.end(), [&](const auto& kv) {
    return kv.second->origin == Origin::notify && kv.second->token_digest == digest;
  });
  if (live == sessions_.end() && !notify_seen_.contains(digest)) return false;
  ++notify_duplicates_;
  notify_log()->debug("notify: duplicate notification dropped: same token as {}",
                      live != sessions_.end()
                          ? "session " + live->second->name + " (" + live->second->id + ")"
                          : std::string("a session that has ended"));
  return true;
}

// One destination session per notification, carrying all its services.
void Daemon::open_notified(const notify::Notification& n, const notify::TokenDigest& digest) {
  control::OpenRequest r;
  r.set_name(next_notify_name());
  r.set_mode(control::MODE_DESTINATION);
  std::string services;
  for (const notify::ServiceTarget& t : n.targets) {
    auto* m = r.add_services();
    m->set_name(t.service);
    m->set_address(t.target);
    services += (services.empty() ? "" : ", ") + t.service + " -> " + t.target;
  }
  if (!notify_config_.tunnel_endpoint.empty()) {
    r.set_endpoint(notify_config_.tunnel_endpoint);
  } else {
    r.set_region(n.region);
  }
  r.set_access_token(n.access_token);
  r.set_cafile(notify_config_.tunnel_cafile);
  r.set_capath(notify_config_.tunnel_capath);
  r.set_origin("notify");
  r.set_notify_thing(notify_config_.thing_name);
  const std::string name = r.name();
  const control::Response resp = open_session(std::move(r), Origin::notify);
  if (resp.status() != control::Response::OK) {
    refuse_notification("cannot open the session: " + resp.error());
    return;
  }
  const std::string& id = resp.open_response().session_id();
  if (auto it = sessions_.find(id); it != sessions_.end()) it->second->token_digest = digest;
  notify_seen_.remember(digest);
  ++notify_accepted_;
  notify_log()->info("notify: notification accepted: session {} ({}) for {}", name, id, services);
}

// notify-<thing>-<n>, n counting up while tunneld runs (after a restart,
// from the highest restored n), within the session name rule: ':' of a thing
// name as '.', the thing shortened so that the name fits 64 characters.
std::string Daemon::next_notify_name() {
  std::string thing = notify_config_.thing_name;
  std::replace(thing.begin(), thing.end(), ':', '.');
  for (;;) {
    const std::string n = std::to_string(notify_next_number_++);
    std::string name = "notify-" + thing.substr(0, 64 - 8 - n.size()) + "-" + n;
    if (find(name) == nullptr) return name;
  }
}

// A restored notify session: its token is known as seen, and later names
// continue after its number.
void Daemon::note_notify_session(Managed& m, const std::string& access_token) {
  m.token_digest = notify::digest_of(access_token);
  notify_seen_.remember(*m.token_digest);
  const auto dash = m.name.rfind('-');
  if (m.name.rfind("notify-", 0) != 0 || dash == std::string::npos || dash + 1 == m.name.size() ||
      m.name.size() - dash > 10) {
    return;
  }
  const std::string digits = m.name.substr(dash + 1);
  if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    notify_next_number_ = std::max<std::uint64_t>(notify_next_number_, std::stoull(digits) + 1);
  }
}

// Notify-opened sessions that exist: running, and with `closing_too` those
// still closing (they hold resources until they are gone).
std::size_t Daemon::notify_sessions(bool closing_too) const {
  return static_cast<std::size_t>(
      std::count_if(sessions_.begin(), sessions_.end(), [&](const auto& kv) {
        const Managed& m = *kv.second;
        return m.origin == Origin::notify && !m.ended && (closing_too || !m.removing);
      }));
}

control::Response Daemon::notify_status() {
  control::Response r = control::make_response(0, control::Response::OK);
  auto* s = r.mutable_notify_status_response();
  const NotifyConfig& c = notify_config_;
  s->set_enabled(c.enabled);
  if (c.enabled) {
    s->set_broker(c.broker_host + ":" + std::to_string(c.broker_port));
    s->set_thing_name(c.thing_name);
    s->set_client_id(c.client_id);
    s->set_topic(notify::notify_topic(c.thing_name));
  }
  if (mqtt_) {
    s->set_connected(mqtt_->connected());
    s->set_last_error(mqtt_->last_error());
    s->set_connects(mqtt_->connects());
  }
  s->set_last_notification_unix_ms(notify_last_unix_ms_);
  s->set_accepted(notify_accepted_);
  s->set_refused(notify_refused_);
  s->set_last_refusal(notify_last_refusal_);
  s->set_duplicates(notify_duplicates_);
  s->set_sessions(static_cast<std::uint32_t>(notify_sessions(false)));
  return r;
}

}  // namespace tunneld
