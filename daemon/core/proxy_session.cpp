#include "proxy_session.h"

#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "logging.h"

namespace tunnel {
namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t ms(int v) { return v > 0 ? static_cast<std::uint64_t>(v) : 1; }

// Close codes after which the tunnel itself is over (protocol.md section 7).
// Going away / restart / try later mean a service instance went down: retry.
bool close_code_is_transient(int code) {
  return code == 1001 || code == 1006 || code == 1011 || code == 1012 || code == 1013 ||
         code == 1014;
}

std::string http_status_hint(int status) {
  switch (status) {
    case 400:
      return "bad request (wrong endpoint or protocol?)";
    case 401:
      return "the access token is invalid or was already used";
    case 403:
      return "the access token is not valid for this mode or endpoint";
    case 404:
      return "not found (wrong endpoint?)";
    case 410:
      return "the tunnel is closed";
    case 429:
      return "too many requests";
    default:
      return "the service refused the connection";
  }
}

template <typename F>
void start_timer(uv_timer_t* t, std::uint64_t delay_ms, F f) {
  static_assert(std::is_convertible_v<F, uv_timer_cb>);
  uv_timer_start(t, f, delay_ms, 0);
}

}  // namespace

std::string_view to_string(SessionState s) {
  switch (s) {
    case SessionState::idle:
      return "idle";
    case SessionState::connecting:
      return "connecting";
    case SessionState::connected:
      return "connected";
    case SessionState::backing_off:
      return "reconnecting";
    case SessionState::stopping:
      return "stopping";
    case SessionState::ended:
      return "ended";
  }
  return "?";
}

ProxySession::ProxySession(WsContext& ws, ProxyConfig config, DoneFn done)
    : ws_(ws),
      config_(std::move(config)),
      done_(std::move(done)),
      log_(logging::get("session")),
      machine_(config_.mode, *this,
               static_cast<std::size_t>(std::clamp(config_.settings.message_max_payload_size, 1,
                                                   static_cast<int>(kMaxPayloadSize)))),
      decoder_(kMaxRecordSize, kMaxPayloadSize),
      backoff_(static_cast<std::uint32_t>(std::max(1, config_.settings.ws_retry_delay_ms)),
               static_cast<std::uint32_t>(std::max(config_.settings.ws_retry_delay_ms,
                                                   config_.settings.ws_retry_max_delay_ms)),
               std::random_device{}()),
      link_(ws, *this) {
  if (config_.client_token.empty()) config_.client_token = generate_client_token();
}

ProxySession::~ProxySession() {
  if (conn_) conn_->close(false);
}

void ProxySession::start() {
  if (state_ != SessionState::idle) return;
  uv_loop_t* loop = ws_.loop();
  for (uv_timer_t* t : {&retry_timer_, &accept_timer_, &nudge_timer_}) {
    uv_timer_init(loop, t);
    t->data = this;
    ++open_handles_;
  }
  stats_.started = Clock::now();
  if (config_.mode == Mode::destination) {
    stats_.local_address = config_.local.host + ":" + std::to_string(config_.local.port);
  }
  if (config_.mode == Mode::source && config_.listen_at_start) {
    listen_attempt();
    if (finished_) return;
  }
  connect_ws();
}

// ---------------------------------------------------------------- link

void ProxySession::connect_ws() {
  if (finished_ || state_ == SessionState::stopping) return;
  state_ = SessionState::connecting;
  established_ = false;
  const Settings& st = config_.settings;
  LinkOptions o;
  o.endpoint = config_.endpoint;
  o.path = handshake_path(to_string(config_.mode));
  o.subprotocols = {st.ws_subprotocol};
  o.access_token = config_.access_token;
  o.client_token = config_.client_token;
  o.trust = TlsTrust{config_.capath, config_.cafile};
  o.verify_tls = config_.verify_tls;
  o.max_frame_size = static_cast<std::size_t>(
      std::clamp(st.ws_max_frame_size, 1024, static_cast<int>(kMaxFrameSize)));
  o.write_low_watermark = static_cast<std::size_t>(std::max(1, st.ws_write_buffer_size / 2));
  o.connect_timeout_ms = st.ws_connect_timeout_ms;
  o.ping_period_ms = st.ws_ping_period_ms;
  o.pong_timeout_ms = st.ws_pong_timeout_ms;
  o.https_proxy = config_.https_proxy;
  log_->debug("connecting to {}:{} as {}{}", config_.endpoint.host, config_.endpoint.port,
              to_string(config_.mode),
              config_.https_proxy ? " through the HTTPS proxy " + config_.https_proxy->display()
                                  : std::string());
  link_.connect(o);
}

void ProxySession::on_link_open(const std::string& subprotocol, const std::string& channel_id) {
  established_ = true;
  state_ = SessionState::connected;
  consecutive_failures_ = 0;
  backoff_.reset();
  if (stats_.connects++ > 0) ++stats_.reconnects;
  stats_.connected_since = Clock::now();
  stats_.subprotocol = subprotocol;
  stats_.channel_id = channel_id;
  decoder_.reset();
  rx_paused_ = false;
  log_->info("connected to {}:{} as {} (channel-id {}, protocol {})", config_.endpoint.host,
             config_.endpoint.port, to_string(config_.mode), channel_id.empty() ? "-" : channel_id,
             subprotocol);
  machine_.on_link_up();
  if (config_.mode == Mode::source) {
    if (!listening_) {
      listen_attempt();
    } else {
      schedule_accept();
    }
  }
}

void ProxySession::on_link_data(std::span<const std::uint8_t> bytes) {
  in_receive_ = true;
  const CodecError err = decoder_.feed(bytes, [this](Message& m) {
    machine_.on_record(m);
    return link_.is_open() && !finished_;
  });
  in_receive_ = false;
  if (err != CodecError::none && link_.is_open()) {
    protocol_error("bad record from the service: " + std::string(to_string(err)));
  }
}

void ProxySession::on_link_drained() {
  if (local_paused_ && conn_) {
    local_paused_ = false;
    conn_->resume_reading();
  }
}

void ProxySession::on_link_rtt(std::int64_t rtt_us) { stats_.last_rtt_us = rtt_us; }

void ProxySession::kill_link(const std::string& why) { link_.abort(why); }

void ProxySession::on_link_closed(const LinkEnd& end) {
  const bool was_established = established_;
  established_ = false;
  machine_.on_link_down();
  rx_paused_ = false;
  if (local_paused_ && conn_) conn_->resume_reading();
  local_paused_ = false;
  if (finished_) {
    close_handles();
    return;
  }
  if (state_ == SessionState::stopping) {
    finish({true, "stopped", 0});
    return;
  }
  if (end.proxy_status == 407) {
    // Like a 4xx handshake: the credentials are wrong, a retry cannot help.
    finish({false, end.reason, end.proxy_status});
    return;
  }
  if (end.http_status >= 400 && end.http_status < 500) {
    finish({false,
            "handshake rejected by the service: HTTP " + std::to_string(end.http_status) + " (" +
                http_status_hint(end.http_status) + ")",
            end.http_status});
    return;
  }
  if (was_established && end.peer_close_code != 0 &&
      !close_code_is_transient(end.peer_close_code)) {
    finish({true,
            "tunnel closed by the service (close code " + std::to_string(end.peer_close_code) + ")",
            0});
    return;
  }
  if (end.protocol_error) {
    log_->error("protocol error: {}", end.reason);
    if (!config_.settings.ws_reconnect_on_data_error) {
      finish({false, "protocol error: " + end.reason, 0});
      return;
    }
  }
  stats_.last_error =
      end.reason + (end.http_status > 0 ? " (HTTP " + std::to_string(end.http_status) + ")" : "");
  if (was_established) {
    log_->warn("lost the connection to the service: {}", stats_.last_error);
  } else {
    log_->warn("cannot connect to the service at {}:{}: {}", config_.endpoint.host,
               config_.endpoint.port, stats_.last_error);
  }
  schedule_reconnect();
}

void ProxySession::schedule_reconnect() {
  ++consecutive_failures_;
  const int limit = config_.settings.ws_connect_retry_count;
  if (limit >= 0 && consecutive_failures_ > limit) {
    finish({false,
            "giving up after " + std::to_string(consecutive_failures_) +
                " failed connection attempt(s): " + stats_.last_error,
            0});
    return;
  }
  const std::uint32_t delay = backoff_.next_delay_ms();
  state_ = SessionState::backing_off;
  log_->info("reconnecting in {} ms", delay);
  start_timer(&retry_timer_, delay,
              [](uv_timer_t* t) { static_cast<ProxySession*>(t->data)->connect_ws(); });
}

void ProxySession::set_rx_paused(bool paused) {
  if (rx_paused_ == paused) return;
  rx_paused_ = paused;
  log_->trace("tunnel receive {}", paused ? "paused: local writes pending" : "resumed");
  link_.pause_receive(paused);
}

// ---------------------------------------------------------------- effects

void ProxySession::send_record(const Message& m) {
  if (!encode_record(m, link_.outbox())) {
    log_->error("cannot encode a record of type {}", static_cast<int>(m.type()));
    return;
  }
  link_.flush();
}

void ProxySession::send_data(std::int32_t stream_id, std::string_view chunk) {
  encode_data_record(stream_id, chunk, link_.outbox(), machine_.service_id());
  stats_.bytes_to_service += chunk.size();
  link_.flush();
}

void ProxySession::open_local(std::int32_t stream_id) {
  ConnectOptions o;
  o.target = config_.local;
  o.bind_address = config_.bind_address;
  const int count = config_.settings.tcp_connection_retry_count;
  o.retry_count = count < 0 ? -1 : std::max(0, count - 1);  // count = attempts in all
  o.retry_delay_ms = config_.settings.tcp_connection_retry_delay_ms;
  log_->debug("stream {}: connecting to {}:{}", stream_id, o.target.host, o.target.port);
  conn_ = LocalConnection::connect(ws_.loop(), o, stream_id, *this,
                                   static_cast<std::size_t>(config_.settings.tcp_read_buffer_size));
  conn_->set_low_watermark(static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit) / 2);
}

void ProxySession::write_local(std::int32_t stream_id, std::string&& bytes) {
  if (!conn_ || conn_->stream_id() != stream_id) return;
  stats_.bytes_from_service += bytes.size();
  conn_->write(std::move(bytes));
  if (conn_->pending_write_bytes() >
      static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit)) {
    set_rx_paused(true);
  }
}

void ProxySession::close_local(std::int32_t stream_id, bool flush) {
  if (!conn_ || conn_->stream_id() != stream_id) return;
  log_->info("stream {}: closed by the tunnel{}", stream_id, flush ? "" : " (aborted)");
  drop_local(flush);
}

void ProxySession::drop_local(bool flush) {
  // Closing with flush lets the local peer read what the tunnel delivered.
  if (conn_) conn_->close(flush);
  conn_ = nullptr;
  local_paused_ = false;
  set_rx_paused(false);
  schedule_accept();
}

void ProxySession::protocol_error(std::string reason) {
  log_->error("protocol error: {}", reason);
  stats_.last_error = "protocol error: " + reason;
  if (!config_.settings.ws_reconnect_on_data_error) {
    finish({false, "protocol error: " + reason, 0});
    return;
  }
  kill_link("protocol error: " + reason);
}

void ProxySession::note(std::string_view what) { log_->debug("{}", what); }

void ProxySession::schedule_nudge(std::int32_t stream_id, std::uint32_t delay_ms) {
  if (handles_closing_) return;
  nudge_stream_ = stream_id;
  start_timer(&nudge_timer_, delay_ms, [](uv_timer_t* t) {
    auto* self = static_cast<ProxySession*>(t->data);
    self->machine_.on_nudge_due(self->nudge_stream_);
  });
}

// ---------------------------------------------------------------- local side

void ProxySession::on_local_connected(LocalConnection& c) {
  if (&c != conn_) return;
  log_->info("stream {}: connected to {}", c.stream_id(), c.peer());
  machine_.on_local_connected(c.stream_id());
}

void ProxySession::on_local_connect_failed(LocalConnection& c, const std::string& reason) {
  if (&c != conn_) return;
  const std::int32_t id = c.stream_id();
  log_->warn("stream {}: {}; resetting the stream", id, reason);
  stats_.last_error = reason;
  c.close(false);
  conn_ = nullptr;
  set_rx_paused(false);
  machine_.on_local_connect_failed(id);
}

void ProxySession::on_local_read(LocalConnection& c, std::string_view bytes) {
  if (&c != conn_) return;
  machine_.on_local_data(c.stream_id(), bytes);
  if (link_.queued() >= static_cast<std::size_t>(config_.settings.ws_write_buffer_size)) {
    local_paused_ = true;
    c.pause_reading();
  }
}

void ProxySession::on_local_closed(LocalConnection& c, const std::string& reason) {
  if (&c != conn_) return;
  const std::int32_t id = c.stream_id();
  log_->info("stream {}: local connection ended ({})", id, reason);
  conn_ = nullptr;
  c.close(true);
  local_paused_ = false;
  set_rx_paused(false);
  machine_.on_local_closed(id);
  schedule_accept();
}

void ProxySession::on_local_drained(LocalConnection& c) {
  if (&c != conn_) return;
  if (rx_paused_ && c.pending_write_bytes() <=
                        static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit) / 2) {
    set_rx_paused(false);
  }
}

void ProxySession::listen_attempt() {
  if (finished_ || listening_ || listener_) return;
  ++listen_attempts_;
  std::string error;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(config_.local.port);
  const std::string& host = config_.local.host;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    error = "cannot resolve listen address " + host + ": " + gai_strerror(rc);
  } else {
    listener_ = new uv_tcp_t;
    uv_tcp_init(ws_.loop(), listener_);
    listener_->data = this;
    ++open_handles_;
    rc = uv_tcp_bind(listener_, res->ai_addr, 0);
    if (rc == 0) {
      rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 16, [](uv_stream_t* s, int status) {
        auto* self = static_cast<ProxySession*>(s->data);
        if (status < 0) {
          self->log_->warn("accept failed: {}", uv_strerror(status));
          return;
        }
        self->pending_accept_ = true;
        self->try_accept();
      });
    }
    if (rc != 0) {
      error = "cannot listen on " + sockaddr_to_string(res->ai_addr) + ": " + uv_strerror(rc);
      uv_close(reinterpret_cast<uv_handle_t*>(listener_), [](uv_handle_t* h) {
        auto* self = static_cast<ProxySession*>(h->data);
        delete reinterpret_cast<uv_tcp_t*>(h);
        self->release_handle();
      });
      listener_ = nullptr;
    }
  }
  if (res) freeaddrinfo(res);
  if (!error.empty()) {
    stats_.last_error = error;
    const int count = config_.settings.tcp_connection_retry_count;
    const bool first_at_start = config_.listen_at_start && listen_attempts_ == 1 && !established_;
    if (first_at_start || (count >= 0 && listen_attempts_ >= std::max(1, count))) {
      finish({false, error, 0});
      return;
    }
    log_->warn("{}; retrying in {} ms", error, config_.settings.tcp_connection_retry_delay_ms);
    start_timer(&retry_timer_, ms(config_.settings.tcp_connection_retry_delay_ms),
                [](uv_timer_t* t) { static_cast<ProxySession*>(t->data)->listen_attempt(); });
    return;
  }
  sockaddr_storage ss{};
  int len = sizeof ss;
  uv_tcp_getsockname(listener_, reinterpret_cast<sockaddr*>(&ss), &len);
  const auto* sa = reinterpret_cast<const sockaddr*>(&ss);
  listen_port_ =
      ntohs(sa->sa_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port
                                      : reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
  listening_ = true;
  stats_.local_address = sockaddr_to_string(sa);
  log_->info("listening on {}", stats_.local_address);
  if (on_listening_) on_listening_(listen_port_);
}

void ProxySession::schedule_accept() {
  if (config_.mode != Mode::source || handles_closing_ || !pending_accept_) return;
  start_timer(&accept_timer_, 0,
              [](uv_timer_t* t) { static_cast<ProxySession*>(t->data)->try_accept(); });
}

void ProxySession::try_accept() {
  if (!pending_accept_ || conn_ || !established_ || finished_ || state_ == SessionState::stopping ||
      !listener_) {
    return;
  }
  pending_accept_ = false;
  LocalConnection* c =
      LocalConnection::accept(reinterpret_cast<uv_stream_t*>(listener_), 0, *this,
                              static_cast<std::size_t>(config_.settings.tcp_read_buffer_size));
  if (!c) return;
  conn_ = c;
  c->set_low_watermark(static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit) / 2);
  const std::int32_t id = machine_.on_local_accepted();
  c->set_stream_id(id);
  log_->info("stream {}: accepted {}", id, c->peer());
}

// ---------------------------------------------------------------- ending

void ProxySession::stop() {
  if (finished_ || state_ == SessionState::stopping) return;
  if (state_ == SessionState::idle) {
    finished_ = true;
    outcome_ = {true, "stopped", 0};
    return;
  }
  state_ = SessionState::stopping;
  if (established_ && link_.is_open()) {
    if (auto id = machine_.active_stream()) {
      if (conn_) conn_->close(false);
      conn_ = nullptr;
      machine_.on_local_closed(*id);  // STREAM_RESET to the peer
    }
    // Flushes, sends the close frame (1000) and waits up to 2 s for the
    // service's answer; on_link_closed then ends the session.
    link_.close(1000, "local proxy stopping");
    return;
  }
  if (link_.active()) {
    kill_link("stopping");
    return;
  }
  finish({true, "stopped", 0});
}

void ProxySession::finish(SessionOutcome outcome) {
  if (finished_) return;
  finished_ = true;
  outcome_ = std::move(outcome);
  if (outcome_.ok) {
    log_->info("session ended: {}", outcome_.reason);
  } else {
    log_->error("session failed: {}", outcome_.reason);
  }
  if (conn_) conn_->close(false);
  conn_ = nullptr;
  if (link_.active()) {
    kill_link(outcome_.reason);  // close_handles() follows in on_link_closed
    return;
  }
  close_handles();
}

void ProxySession::release_handle() {
  if (--open_handles_ == 0 && handles_closing_) {
    auto done = std::move(done_);
    state_ = SessionState::ended;
    if (done) done(outcome_);  // may destroy *this: nothing after this
  }
}

void ProxySession::close_handles() {
  if (handles_closing_) return;
  handles_closing_ = true;
  state_ = SessionState::stopping;
  auto on_closed = [](uv_handle_t* h) {
    auto* self = static_cast<ProxySession*>(h->data);
    if (reinterpret_cast<uv_tcp_t*>(h) == self->listener_) {
      delete self->listener_;
      self->listener_ = nullptr;
    }
    self->release_handle();
  };
  link_.shutdown();
  for (uv_timer_t* t : {&retry_timer_, &accept_timer_, &nudge_timer_}) {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(t))) {
      uv_close(reinterpret_cast<uv_handle_t*>(t), on_closed);
    }
  }
  if (listener_ && !uv_is_closing(reinterpret_cast<uv_handle_t*>(listener_))) {
    uv_close(reinterpret_cast<uv_handle_t*>(listener_), on_closed);
  }
}

}  // namespace tunnel
