#include "proxy_session.h"

#include <netdb.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "logging.h"
#include "net_socket.h"
#include "text.h"

namespace tunnel {
namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t ms(int v) { return v > 0 ? static_cast<std::uint64_t>(v) : 1; }

// Close codes after which the tunnel itself is over (docs/protocol.md section 7).
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

MachineOptions machine_options(const ProxyConfig& c) {
  MachineOptions o;
  for (const auto& m : c.services) o.services.push_back(m.id);
  o.max_payload = static_cast<std::size_t>(
      std::clamp(c.settings.message_max_payload_size, 1, static_cast<int>(kMaxPayloadSize)));
  o.max_connections = static_cast<std::size_t>(std::max(1, c.settings.tcp_max_connections));
  o.assume_v3_peer = c.protocol_version == 3;
  return o;
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : std::string(sep)) + i;
  return out;
}

// How a connection names itself in logs: "stream 3" (V1), "SSH1 stream 3
// connection 2" (V3).
std::string conn_name(const ConnRef& c) {
  std::string out = c.service.empty() ? std::string() : c.service + " ";
  out += "stream " + std::to_string(c.stream_id);
  if (c.connection_id > 1) out += " connection " + std::to_string(c.connection_id);
  return out;
}

template <typename F>
void start_timer(uv_timer_t* t, std::uint64_t delay_ms, F f) {
  static_assert(std::is_convertible_v<F, uv_timer_cb>);
  uv_timer_start(t, f, delay_ms, 0);
}

}  // namespace

std::string_view to_string(SessionState s) {
  static constexpr std::string_view kNames[] = {"idle",         "connecting", "connected",
                                                "reconnecting", "stopping",   "ended"};
  static_assert(std::size(kNames) == static_cast<std::size_t>(SessionState::ended) + 1);
  return text::enum_name(s, kNames);
}

ProxySession::ProxySession(LoopContext& ctx, ProxyConfig config, DoneFn done)
    : ctx_(ctx),
      config_(std::move(config)),
      done_(std::move(done)),
      log_(logging::get("session")),
      machine_(config_.mode, *this, machine_options(config_)),
      decoder_(kMaxRecordSize, kMaxPayloadSize),
      backoff_(static_cast<std::uint32_t>(std::max(1, config_.settings.ws_retry_delay_ms)),
               static_cast<std::uint32_t>(std::max(config_.settings.ws_retry_delay_ms,
                                                   config_.settings.ws_retry_max_delay_ms)),
               std::random_device{}()),
      link_(ctx, *this) {
  if (config_.client_token.empty()) config_.client_token = generate_client_token();
}

ProxySession::~ProxySession() {
  for (LocalConnection* c : connections_.take_all()) c->close(false);
}

void ProxySession::start() {
  if (state_ != SessionState::idle) return;
  uv_loop_t* loop = ctx_.loop();
  for (uv_timer_t* t : {&retry_timer_, &accept_timer_, &nudge_timer_, &stuck_timer_}) {
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
  // One header offering every version we speak, preferred first.
  o.subprotocols = config_.offered_subprotocols();
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
  if (on_channel_) on_channel_(channel_id);
  decoder_.reset();
  rx_paused_ = false;
  log_->info("connected to {}:{} as {} (channel-id {}, protocol {})", config_.endpoint.host,
             config_.endpoint.port, to_string(config_.mode), channel_id.empty() ? "-" : channel_id,
             subprotocol);
  machine_.on_link_up(subprotocol_version(subprotocol));
  if (finished_) return;  // the tunnel's services cannot work with this version
  if (config_.mode == Mode::source) {
    if (!listening_) {
      listen_attempt();
    } else {
      accept_ready();
    }
  }
}

void ProxySession::on_link_data(std::span<const std::uint8_t> bytes) {
  in_receive_ = true;
  const CodecError err = decoder_.feed(bytes, [this](Message& m) {
    if (m.type() == Message::SESSION_RESET) {
      log_->warn("the service reset the session (SESSION_RESET): closing every stream");
    }
    machine_.on_record(m);
    return link_.is_open() && !finished_;
  });
  in_receive_ = false;
  if (err != CodecError::none && link_.is_open()) {
    protocol_error("bad record from the service: " + std::string(to_string(err)));
  }
}

// The send queue fell to half of websocket.write_buffer_size: the next round
// of local connections' chunks.
void ProxySession::on_link_drained() { pump_local(); }

void ProxySession::on_link_rtt(std::int64_t rtt_us) { stats_.last_rtt_us = rtt_us; }

void ProxySession::kill_link(const std::string& why) { link_.abort(why); }

void ProxySession::on_link_closed(const LinkEnd& end) {
  const bool was_established = established_;
  established_ = false;
  machine_.on_link_down();
  rx_paused_ = false;
  if (finished_) {
    close_handles();
    return;
  }
  if (state_ == SessionState::stopping) {
    finish({true, "stopped", 0});
    return;
  }
  if (proxy_refusal_is_final(end.proxy_status)) {
    // Like a 4xx handshake: the credentials or the proxy's policy refused
    // us, a retry cannot help.
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
    // The link's reason names the peer (the service, or the HTTPS proxy).
    log_->warn("no connection to the service: {}", stats_.last_error);
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

void ProxySession::send_data(const WireAddress& to, std::string_view chunk) {
  const DataRecordFraming f(to.stream_id, chunk.size(), to.service_id, to.connection_id);
  link_.send_record_parts(f.head(), chunk, f.tail());
  stats_.bytes_to_service += chunk.size();
  link_.flush();
}

void ProxySession::open_local(const ConnRef& ref) {
  const auto services = config_.effective_services();
  const auto it = std::find_if(services.begin(), services.end(),
                               [&](const ServiceMapping& m) { return m.id == ref.service; });
  if (it == services.end()) return;  // the machine only names configured services
  ConnectOptions o;
  o.target = it->local;
  o.bind_address = config_.bind_address;
  const int count = config_.settings.tcp_connection_retry_count;
  o.retry_count = count < 0 ? -1 : std::max(0, count - 1);  // count = attempts in all
  o.retry_delay_ms = config_.settings.tcp_connection_retry_delay_ms;
  log_->debug("{}: connecting to {}:{}", conn_name(ref), o.target.host, o.target.port);
  LocalConnection* c =
      LocalConnection::connect(ctx_.loop(), o, ref.stream_id, *this,
                               static_cast<std::size_t>(config_.settings.tcp_read_buffer_size));
  c->set_low_watermark(static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit) / 2);
  connections_.add(ref, c);
}

void ProxySession::write_local(const ConnRef& ref, std::string_view bytes) {
  ConnectionEntry* e = connections_.find(ref);
  if (!e || !e->conn) return;
  stats_.bytes_from_service += bytes.size();
  e->bytes_from_tunnel += bytes.size();
  e->conn->write(bytes);
  check_local_bound(*e);
}

void ProxySession::check_local_bound(ConnectionEntry& e) {
  const auto limit = static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit);
  const std::size_t pending = e.conn->pending_write_bytes();
  if (!several_connections()) {
    // One connection per service: nobody else to starve, so pause the
    // tunnel (lossless) as V1 always did.
    if (pending > limit) set_rx_paused(true);
    return;
  }
  // Several connections: the protocol has no per-connection flow control.
  // A connection may hold up to 4x the limit without slowing the others.
  // Beyond that the WebSocket pauses (nothing is lost: a slow reader sets
  // the pace for a while) and a watch starts: a reader that then takes
  // nothing for kStuckReaderMs is stuck, and that connection alone is reset.
  if (pending > 4 * limit) {
    set_rx_paused(true);
    if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&stuck_timer_)) && !handles_closing_) {
      connections_.stuck_connections(4 * limit, std::chrono::milliseconds(kStuckReaderMs),
                                     Clock::now());  // starts the watch
      uv_timer_start(
          &stuck_timer_,
          [](uv_timer_t* t) { static_cast<ProxySession*>(t->data)->check_stuck_readers(); },
          kStuckCheckMs, kStuckCheckMs);
    }
    return;
  }
  // Memory bound of the session whatever the number of connections.
  if (connections_.local_bound_bytes() > 16 * limit) set_rx_paused(true);
}

bool ProxySession::several_connections() const {
  return machine_.peer_connections() == PeerConnections::multiple && connections_.size() > 1;
}

void ProxySession::check_stuck_readers() {
  const auto limit = static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit);
  for (const ConnRef& ref : connections_.stuck_connections(
           4 * limit, std::chrono::milliseconds(kStuckReaderMs), Clock::now())) {
    ConnectionEntry* e = connections_.find(ref);
    // A connection whose local connect still runs has not read anything yet:
    // not stuck (the paused WebSocket bounds what waits for it meanwhile).
    if (!e || !e->conn || !e->conn->connected()) continue;
    log_->warn(
        "{}: the local reader is stuck (took nothing for {} ms, {} bytes pending); resetting this "
        "connection",
        conn_name(ref), kStuckReaderMs, e->conn->pending_write_bytes());
    if (LocalConnection* c = connections_.remove(ref)) c->close(false);
    machine_.on_local_closed(ref);
  }
  if (!connections_.any_over(4 * limit)) uv_timer_stop(&stuck_timer_);
  maybe_resume_rx();
}

void ProxySession::maybe_resume_rx() {
  if (!rx_paused_) return;
  const auto limit = static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit);
  if (!several_connections()) {
    if (connections_.local_bound_bytes() <= limit / 2) set_rx_paused(false);
    return;
  }
  if (connections_.local_bound_bytes() <= 8 * limit && !connections_.any_over(2 * limit)) {
    set_rx_paused(false);
  }
}

void ProxySession::close_local(const ConnRef& ref, bool flush) {
  LocalConnection* c = connections_.remove(ref);
  if (!c) return;
  log_->info("{}: closed by the tunnel{}", conn_name(ref), flush ? "" : " (aborted)");
  // Closing with flush lets the local peer read what the tunnel delivered.
  c->close(flush);
  maybe_resume_rx();
}

void ProxySession::abort_all_local() {
  for (LocalConnection* c : connections_.take_all()) c->close(false);
  set_rx_paused(false);
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

void ProxySession::session_error(std::string reason) {
  // Reconnecting cannot help (the tunnel's services or version do not fit
  // this configuration): the session fails with the reason.
  stats_.last_error = reason;
  finish({false, std::move(reason), 0});
}

void ProxySession::accept_ready() {
  if (config_.mode != Mode::source || handles_closing_) return;
  start_timer(&accept_timer_, 0,
              [](uv_timer_t* t) { static_cast<ProxySession*>(t->data)->try_accept_all(); });
}

void ProxySession::note(std::string_view what) { log_->debug("{}", what); }

void ProxySession::schedule_nudge(const ConnRef& c, std::uint32_t delay_ms) {
  if (handles_closing_) return;
  nudge_conn_ = c;
  start_timer(&nudge_timer_, delay_ms, [](uv_timer_t* t) {
    auto* self = static_cast<ProxySession*>(t->data);
    self->machine_.on_nudge_due(self->nudge_conn_);
  });
}

// ---------------------------------------------------------------- local side

std::size_t ProxySession::data_chunk_size() const {
  return static_cast<std::size_t>(
      std::clamp(config_.settings.message_max_payload_size, 1, static_cast<int>(kMaxPayloadSize)));
}

void ProxySession::pump_local() {
  // Round robin: one record's worth from each connection with bytes waiting,
  // while the WebSocket's queue has room.
  const auto room = static_cast<std::size_t>(config_.settings.ws_write_buffer_size);
  const std::size_t chunk = data_chunk_size();
  while (link_.queued() < room) {
    ConnectionEntry* e = connections_.next_ready();
    if (!e) break;
    const std::size_t n = std::min(e->pending_bytes(), chunk);
    machine_.on_local_data(e->ref, std::string_view(e->pending).substr(e->pending_off, n));
    connections_.consumed(*e, n);
  }
}

void ProxySession::on_local_connected(LocalConnection& c) {
  ConnectionEntry* e = connections_.find(&c);
  if (!e) return;
  e->peer = c.peer();
  log_->info("{}: connected to {}", conn_name(e->ref), c.peer());
  machine_.on_local_connected(e->ref);
}

void ProxySession::on_local_connect_failed(LocalConnection& c, const std::string& reason) {
  ConnectionEntry* e = connections_.find(&c);
  if (!e) return;
  const ConnRef ref = e->ref;
  log_->warn("{}: {}; resetting it", conn_name(ref), reason);
  stats_.last_error = reason;
  connections_.remove(ref);
  c.close(false);
  maybe_resume_rx();
  machine_.on_local_connect_failed(ref);
}

void ProxySession::on_local_read(LocalConnection& c, std::string_view bytes) {
  ConnectionEntry* e = connections_.find(&c);
  if (!e) return;
  // Fast path: nobody else is waiting for the WebSocket and it has room, so
  // records are made straight from the loop's read buffer; only what does
  // not fit is stashed (a copy, and the socket paused until it is sent).
  if (e->pending_bytes() == 0 && connections_.none_waiting()) {
    const ConnRef ref = e->ref;
    const auto room = static_cast<std::size_t>(config_.settings.ws_write_buffer_size);
    const std::size_t chunk = data_chunk_size();
    while (!bytes.empty() && link_.queued() < room) {
      const std::size_t n = std::min(bytes.size(), chunk);
      machine_.on_local_data(ref, bytes.substr(0, n));
      bytes.remove_prefix(n);
      e = connections_.find(ref);
      if (!e) return;  // the machine ended the connection
      e->bytes_to_tunnel += n;
    }
  }
  if (bytes.empty()) return;
  connections_.stash(*e, bytes);
  pump_local();
}

void ProxySession::on_local_closed(LocalConnection& c, const std::string& reason) {
  ConnectionEntry* e = connections_.find(&c);
  if (!e) return;
  const ConnRef ref = e->ref;
  log_->info("{}: local connection ended ({})", conn_name(ref), reason);
  // Bytes read before the end still go out, ahead of the reset.
  while (e->pending_bytes() > 0) {
    const std::size_t n = e->pending_bytes();
    machine_.on_local_data(ref, std::string_view(e->pending).substr(e->pending_off, n));
    e->pending_off += n;
  }
  connections_.remove(ref);
  c.close(true);
  maybe_resume_rx();
  machine_.on_local_closed(ref);
}

void ProxySession::on_local_drained(LocalConnection& c) {
  if (!connections_.find(&c)) return;
  maybe_resume_rx();
}

std::uint16_t ProxySession::listen_port() const {
  return listeners_.empty() ? 0 : listeners_.front()->port;
}

std::vector<std::pair<std::string, std::uint16_t>> ProxySession::listen_ports() const {
  std::vector<std::pair<std::string, std::uint16_t>> out;
  for (const auto& l : listeners_) out.emplace_back(l->service, l->port);
  return out;
}

void ProxySession::listen_attempt() {
  if (finished_ || listening_) return;
  ++listen_attempts_;
  if (listeners_.empty()) {
    for (const auto& m : config_.effective_services()) {
      auto l = std::make_unique<Listener>();
      l->owner = this;
      l->service = m.id;
      l->address = m.local;
      listeners_.push_back(std::move(l));
    }
  }
  std::string error;
  for (auto& l : listeners_) {
    if (!l->tcp && !bind_listener(*l, error)) break;
  }
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
  listening_ = true;
  std::vector<std::string> where;
  for (const auto& l : listeners_) {
    const std::string addr =
        (l->address.host.find(':') != std::string::npos ? "[" + l->address.host + "]"
                                                        : l->address.host) +
        ":" + std::to_string(l->port);
    where.push_back(l->service.empty() ? addr : l->service + "=" + addr);
    log_->info("listening on {}{}", addr, l->service.empty() ? "" : " for service " + l->service);
  }
  stats_.local_address = join(where, ",");
  if (on_listening_) on_listening_(listen_port());
}

bool ProxySession::bind_listener(Listener& l, std::string& error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(l.address.port);
  const std::string& host = l.address.host;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    error = "cannot resolve listen address " + host + ": " + gai_strerror(rc);
    if (res) freeaddrinfo(res);
    return false;
  }
  l.tcp = new uv_tcp_t;
  uv_tcp_init(ctx_.loop(), l.tcp);
  l.tcp->data = &l;
  ++open_handles_;
  rc = uv_tcp_bind(l.tcp, res->ai_addr, 0);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(l.tcp), 128, [](uv_stream_t* s, int status) {
      auto* lis = static_cast<Listener*>(s->data);
      if (status < 0) {
        lis->owner->log_->warn("accept failed: {}", uv_strerror(status));
        return;
      }
      lis->pending = true;
      lis->owner->try_accept(*lis);
    });
  }
  if (rc != 0) {
    error = "cannot listen on " + net::address_text(res->ai_addr) + ": " + uv_strerror(rc);
    if (!l.service.empty()) error += " (service " + l.service + ")";
    uv_close(reinterpret_cast<uv_handle_t*>(l.tcp), [](uv_handle_t* h) {
      auto* lis = static_cast<Listener*>(h->data);
      delete reinterpret_cast<uv_tcp_t*>(h);
      lis->owner->release_handle();
    });
    l.tcp = nullptr;
    freeaddrinfo(res);
    return false;
  }
  freeaddrinfo(res);
  sockaddr_storage ss{};
  int len = sizeof ss;
  uv_tcp_getsockname(l.tcp, reinterpret_cast<sockaddr*>(&ss), &len);
  const auto* sa = reinterpret_cast<const sockaddr*>(&ss);
  l.port = ntohs(sa->sa_family == AF_INET6 ? reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port
                                           : reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
  return true;
}

void ProxySession::try_accept_all() {
  for (auto& l : listeners_) try_accept(*l);
}

void ProxySession::try_accept(Listener& l) {
  if (!l.pending || !established_ || finished_ || state_ == SessionState::stopping || !l.tcp) {
    return;
  }
  // A client that must wait (its service's connection is active and the peer
  // carries one at a time) stays in the backlog until accept_ready().
  if (!machine_.can_accept(l.service)) return;
  l.pending = false;
  LocalConnection* c =
      LocalConnection::accept(reinterpret_cast<uv_stream_t*>(l.tcp), 0, *this,
                              static_cast<std::size_t>(config_.settings.tcp_read_buffer_size));
  if (!c) return;
  const auto ref = machine_.on_local_accepted(l.service);
  if (!ref) {
    log_->warn("local client {} refused{}: {} simultaneous connections is the limit", c->peer(),
               l.service.empty() ? "" : " on service " + l.service,
               config_.settings.tcp_max_connections);
    c->close(false);
    return;
  }
  c->set_stream_id(ref->stream_id);
  c->set_low_watermark(static_cast<std::size_t>(config_.settings.tcp_write_buffer_limit) / 2);
  connections_.add(*ref, c);
  log_->info("{}: accepted {}", conn_name(*ref), c->peer());
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
    // Reset every connection toward the peer (CONNECTION_RESET or
    // STREAM_RESET, as the peer speaks).
    std::vector<ConnRef> refs;
    for (const auto& [ref, e] : connections_.entries()) refs.push_back(ref);
    for (const ConnRef& ref : refs) {
      if (LocalConnection* c = connections_.remove(ref)) c->close(false);
      machine_.on_local_closed(ref);
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
  abort_all_local();
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
  auto on_closed = [](uv_handle_t* h) { static_cast<ProxySession*>(h->data)->release_handle(); };
  link_.shutdown();
  for (uv_timer_t* t : {&retry_timer_, &accept_timer_, &nudge_timer_, &stuck_timer_}) {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(t))) {
      uv_close(reinterpret_cast<uv_handle_t*>(t), on_closed);
    }
  }
  for (auto& l : listeners_) {
    if (!l->tcp || uv_is_closing(reinterpret_cast<uv_handle_t*>(l->tcp))) continue;
    uv_close(reinterpret_cast<uv_handle_t*>(l->tcp), [](uv_handle_t* h) {
      auto* lis = static_cast<Listener*>(h->data);
      delete reinterpret_cast<uv_tcp_t*>(h);
      lis->tcp = nullptr;
      lis->owner->release_handle();
    });
  }
}

}  // namespace tunnel
