#include "relay_server.h"

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "client_connection.h"
#include "handshake.h"
#include "net_socket.h"
#include "socket_io.h"
#include "text.h"

namespace relay {
namespace {

using tunnel::text::iequals;
using tunnel::text::trim_ows;
const auto& log = server_log;

// Read passes per poll event before a connection yields the loop to others.
constexpr int kReadRoundsPerEvent = 4;
// Connections accepted per poll event of the listening socket.
constexpr int kAcceptsPerEvent = 64;
// Chunks kept for reuse across all queues (8 MiB at most).
constexpr std::size_t kPoolChunks = 64;
constexpr std::uint64_t kShutdownGraceMs = 3000;
// TLS handshake and HTTP upgrade request, from accept.
constexpr std::uint64_t kHandshakeTimeoutMs = 10000;
// A request head larger than this is answered 431 before it ends (those
// between config.max_request_bytes and this get 431 from evaluate_handshake,
// after the path check).
constexpr std::size_t kMaxHeadBytes = 8192;
// What a client may owe us in control answers (pongs) before we stop
// reading it: data never waits here (it waits in the record queues).
constexpr std::size_t kMaxPendingOutput = std::size_t{1024} * 1024;

void random_bytes(unsigned char* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1) throw std::runtime_error("RAND_bytes failed");
}

// 32 random bytes, base64url without padding (43 characters).
std::string random_token() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  unsigned char raw[33];
  random_bytes(raw, 32);
  raw[32] = 0;
  std::string out;
  for (int i = 0; i < 33; i += 3) {
    const unsigned v = (unsigned{raw[i]} << 16) | (unsigned{raw[i + 1]} << 8) | raw[i + 2];
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  out.resize(43);
  return out;
}

std::string random_hex(std::size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw(bytes, '\0');
  random_bytes(reinterpret_cast<unsigned char*>(raw.data()), bytes);
  std::string out;
  out.reserve(bytes * 2);
  for (const char c : raw) {
    out += kHex[(static_cast<unsigned char>(c) >> 4) & 15];
    out += kHex[static_cast<unsigned char>(c) & 15];
  }
  return out;
}

int alpn_select(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  // HTTP/1.1 only (the upgrade does not exist in h2 as clients use it).
  static const unsigned char kProtos[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, outlen, kProtos, sizeof kProtos, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

// The server TLS context: TLS 1.2 at least, the --tls-cert chain and
// --tls-key, ALPN http/1.1. Null with `error` naming the problem.
SSL_CTX* make_server_tls(const std::string& cert, const std::string& key, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  const char* what = nullptr;
  if (!ctx)
    what = "cannot create a TLS context";
  else if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    what = "cannot require TLS 1.2";
  else if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1)
    what = "cannot load the certificate chain from --tls-cert";
  else if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
    what = "cannot load the private key from --tls-key";
  else if (SSL_CTX_check_private_key(ctx) != 1)
    what = "--tls-key does not match the certificate in --tls-cert";
  if (what != nullptr) {
    char detail[256] = "";
    ERR_error_string_n(ERR_get_error(), detail, sizeof(detail));
    ERR_clear_error();
    error = std::string(what) + " (" + detail + ")";
    SSL_CTX_free(ctx);
    return nullptr;
  }
  tunnel::configure_tls_io(ctx);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_alpn_select_cb(ctx, &alpn_select, nullptr);
  return ctx;
}

std::string_view reason_phrase(int status) {
  static constexpr std::pair<int, std::string_view> kPhrases[] = {
      {400, "Bad Request"},         {401, "Unauthorized"}, {403, "Forbidden"},
      {404, "Not Found"},           {410, "Gone"},         {431, "Request Header Fields Too Large"},
      {503, "Service Unavailable"},
  };
  for (const auto& [code, phrase] : kPhrases) {
    if (code == status) return phrase;
  }
  return "Error";
}

std::string services_text(const std::vector<std::string>& services) {
  return services.empty() ? std::string("none, V1") : fmt::format("{}", fmt::join(services, ","));
}

}  // namespace

// ---------------------------------------------------------------- clients

RelayServer::ClientConnection::ClientConnection(RelayServer& s, std::uint64_t client_id,
                                                std::string from)
    : server(s), id(client_id), peer(std::move(from)) {
  tunnel::WsConnectionOptions o;
  o.side = tunnel::ws::Side::server;
  o.max_message_size = kMaxMessage;
  o.read_rounds_per_event = kReadRoundsPerEvent;
  o.max_pending_output = kMaxPendingOutput;
  ws = std::make_unique<tunnel::WsConnection>(*s.ctx_, *this, o);
  head = std::make_unique<tunnel::ws::HttpRequestHead>(kMaxHeadBytes);
  handshake_deadline = new uv_timer_t;
  uv_timer_init(s.loop_, handshake_deadline);
  handshake_deadline->data = this;
  uv_timer_start(
      handshake_deadline,
      [](uv_timer_t* t) {
        auto* c = static_cast<ClientConnection*>(t->data);
        log()->debug("connection from {}: no WebSocket upgrade within {} s, closing", c->peer,
                     kHandshakeTimeoutMs / 1000);
        c->ws->abort();
      },
      kHandshakeTimeoutMs, 0);
}

RelayServer::ClientConnection::~ClientConnection() { stop_handshake_deadline(); }

void RelayServer::ClientConnection::stop_handshake_deadline() {
  if (handshake_deadline == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(handshake_deadline),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  handshake_deadline = nullptr;
}

// ---------------------------------------------------------------- server

struct RelayServer::Handles {
  RelayServer* owner = nullptr;
  uv_poll_t listen{};
};

RelayServer::RelayServer(uv_loop_t* loop, RelayConfig config)
    : loop_(loop),
      config_(std::move(config)),
      registry_(&random_token, config_.registry_limits),
      pool_(tunnel::ws::kMaxHeaderSize, kMaxMessage, kPoolChunks) {}

RelayServer::~RelayServer() {
  clients_.clear();
  for (auto& [id, pair] : pairs_) {
    if (pair->expiry != nullptr)
      uv_close(reinterpret_cast<uv_handle_t*>(pair->expiry),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
  tunnel::net::close_socket(listen_socket_);
  if (tls_ != nullptr) SSL_CTX_free(tls_);
}

bool RelayServer::start(std::string& error) {
  for (const TunnelSpec& spec : config_.tunnels) {
    const Tunnel* t =
        registry_.add(spec.source_token, spec.destination_token, spec.services, error);
    if (t == nullptr) {
      error.insert(0, "--tunnel: ");
      return false;
    }
    create_pair(t->id, std::chrono::seconds(0));
    log()->info("tunnel {} configured (services: {})", t->id, services_text(t->services));
  }
  if (config_.tls()) {
    tls_ = make_server_tls(config_.tls_cert, config_.tls_key, error);
    if (tls_ == nullptr) return false;
  }
  if (!listen(error)) return false;
  ctx_ = std::make_unique<tunnel::LoopContext>(loop_);
  h_ = new Handles;
  h_->owner = this;
  uv_poll_init_socket(loop_, &h_->listen, listen_socket_);
  h_->listen.data = h_;
  uv_poll_start(&h_->listen, UV_READABLE, [](uv_poll_t* p, int status, int) {
    auto* self = static_cast<Handles*>(p->data)->owner;
    if (self != nullptr && status == 0) self->on_accept();
  });
  log()->info("listening on {} ({}), subprotocols {}", bound_.to_string(),
              config_.tls() ? "wss" : "plain ws", fmt::join(config_.subprotocols, ","));
  return true;
}

bool RelayServer::listen(std::string& error) {
  sockaddr_storage ss{};
  std::size_t ss_len = 0;
  const std::string& host = config_.listen.host;
  int rc = 0;
  if (host.find(':') != std::string::npos) {
    rc = uv_ip6_addr(host.c_str(), config_.listen.port, reinterpret_cast<sockaddr_in6*>(&ss));
    ss_len = sizeof(sockaddr_in6);
  } else {
    rc = uv_ip4_addr(host == "localhost" ? "127.0.0.1" : host.c_str(), config_.listen.port,
                     reinterpret_cast<sockaddr_in*>(&ss));
    ss_len = sizeof(sockaddr_in);
  }
  if (rc != 0) {
    error = "bad listen address " + config_.listen.to_string();
    return false;
  }
  listen_socket_ =
      tunnel::net::listen_on(reinterpret_cast<const sockaddr*>(&ss), ss_len, SOMAXCONN);
  if (listen_socket_ == tunnel::net::kNoSocket) {
    error =
        "cannot listen on " + config_.listen.to_string() + ": " + tunnel::net::last_error_text();
    return false;
  }
  bound_ = config_.listen;
  bound_.port = tunnel::net::local_port(listen_socket_);
  return true;
}

void RelayServer::on_accept() {
  for (int i = 0; i < kAcceptsPerEvent && !shutting_down_; ++i) {
    sockaddr_storage ss{};
    bool retry = false;
    const tunnel::net::Socket s = tunnel::net::accept_one(listen_socket_, ss, retry);
    if (s == tunnel::net::kNoSocket) {
      if (retry) continue;
      if (!tunnel::net::would_block())
        log()->warn("accept failed: {}", tunnel::net::last_error_text());
      return;
    }
    const std::uint64_t id = next_id_++;
    auto owned = std::make_unique<ClientConnection>(
        *this, id, tunnel::net::address_text(reinterpret_cast<const sockaddr*>(&ss)));
    ClientConnection& c = *owned;
    clients_[id] = std::move(owned);
    c.ws->accept(s);
    if (tls_ == nullptr) continue;
    SSL* ssl = SSL_new(tls_);
    if (ssl == nullptr || SSL_set_fd(ssl, s) != 1) {
      SSL_free(ssl);
      log()->warn("cannot start TLS: {}", tunnel::tls_error_text());
      c.ws->abort();
      continue;
    }
    SSL_set_accept_state(ssl);
    c.ws->start_tls(ssl);
  }
}

// ---------------------------------------------------------------- the upgrade

std::size_t RelayServer::on_head_bytes(ClientConnection& c, std::span<const std::uint8_t> bytes) {
  using R = tunnel::ws::HttpRequestHead::Result;
  if (!c.head) return bytes.size();
  std::size_t used = 0;
  const R r = c.head->feed({reinterpret_cast<const char*>(bytes.data()), bytes.size()}, used);
  // if/else, not a switch: clang's use-after-scope check reported the
  // logger temporaries of the case branches (on a path that jumped past them).
  if (r == R::need_more) return used;
  if (r == R::done) {
    on_request(c);
    return used;  // after an upgrade, the rest is the client's first frames
  }
  const auto& lg = log();
  if (r == R::too_large) {
    lg->info("handshake from {} rejected: 431 request head over {} bytes", c.peer, kMaxHeadBytes);
    reject_http(c, 431,
                "request head larger than " + std::to_string(config_.max_request_bytes) + " bytes");
  } else {
    lg->info("handshake from {} rejected: 400 {}", c.peer, c.head->error());
    reject_http(c, 400, "malformed HTTP request: " + c.head->error());
  }
  return bytes.size();
}

// The request target's path and query arguments, percent-decoded. False
// (answered 400) when an escape is bad.
bool RelayServer::parse_target(ClientConnection& c, HandshakeRequest& req) {
  const std::string_view target = c.head->target();
  const std::size_t q = target.find('?');
  const std::string_view query = q == std::string_view::npos ? "" : target.substr(q + 1);
  bool decoded = tunnel::ws::percent_decode(target.substr(0, q), req.path);
  for (std::size_t start = 0; decoded && start < query.size();) {
    std::size_t amp = query.find('&', start);
    if (amp == std::string_view::npos) amp = query.size();
    if (amp > start) {
      std::string arg;
      decoded = tunnel::ws::percent_decode(query.substr(start, amp - start), arg);
      req.query_args.push_back(std::move(arg));
    }
    start = amp + 1;
  }
  if (!decoded) reject_http(c, 400, "bad percent-encoding in the request target");
  return decoded;
}

void RelayServer::on_request(ClientConnection& c) {
  const tunnel::ws::HttpRequestHead& h = *c.head;
  if (!h.has_header("upgrade")) {
    // A plain HTTP request.
    reject_http(c, 400, "this is a secure tunneling relay: use a WebSocket upgrade on /tunnel");
    return;
  }
  if (shutting_down_) {
    reject_http(c, 503, "relay is shutting down");
    return;
  }
  if (!iequals(trim_ows(h.joined("upgrade")), "websocket")) {
    reject_http(c, 400, "only WebSocket upgrades are served");
    return;
  }
  HandshakeRequest req;
  if (!parse_target(c, req)) return;
  // Repeated header lines are joined with ", ": two access-token lines read
  // as two tokens, two client-token lines as an invalid one.
  if (h.has_header("access-token")) req.access_token_header = h.joined("access-token");
  req.cookie_header = h.joined("cookie");
  if (h.has_header("client-token")) req.client_token = h.joined("client-token");
  req.subprotocol_offer = h.joined("sec-websocket-protocol");
  req.request_bytes = h.size();

  HandshakeDecision d =
      evaluate_handshake(req, registry_, config_.subprotocols, config_.max_request_bytes);
  if (d.admitted() && (h.method() != "GET" || h.header_values("sec-websocket-key").size() != 1 ||
                       trim_ows(h.joined("sec-websocket-key")).empty() ||
                       trim_ows(h.joined("sec-websocket-version")) != "13")) {
    d.http_status = 400;
    d.reason =
        "not a WebSocket upgrade: needs GET, one Sec-WebSocket-Key, Sec-WebSocket-Version 13";
  }
  const auto it = d.admitted() ? pairs_.find(d.admission.tunnel_id) : pairs_.end();
  if (d.admitted() && it == pairs_.end()) {
    d.http_status = 410;
    d.reason = "the tunnel is closed";
  }
  if (!d.admitted()) {
    log()->info("handshake from {} rejected: {} {}{}", c.peer, d.http_status, d.reason,
                d.admission.tunnel_id.empty() ? "" : " [tunnel " + d.admission.tunnel_id + "]");
    reject_http(c, d.http_status, d.reason);
    return;
  }
  admit(c, *it->second, d);
}

// Admitted: answer 101 and attach the end.
void RelayServer::admit(ClientConnection& c, TunnelPair& pair, const HandshakeDecision& d) {
  c.channel_id = random_hex(16);
  c.ws->send_raw(tunnel::ws::build_upgrade_response(trim_ows(c.head->joined("sec-websocket-key")),
                                                    d.subprotocol, {{"channel-id", c.channel_id}}));
  c.head.reset();
  c.stop_handshake_deadline();
  c.upgraded = true;
  c.tunnel_id = pair.id;
  c.version = d.version;
  c.ws->open_websocket();
  const Role role = d.admission.role;
  const bool replaced = pair.ends[index_of(role)] != nullptr;
  if (ClientConnection* old = pair.ends[index_of(role)]) {
    log()->info("tunnel {} {}: channel {} replaces channel {} (same client-token)", pair.id,
                to_string(role), c.channel_id, old->channel_id);
    detach(*old);
    close_client(*old, 1000, "replaced by a new connection");
  }
  registry_.attach(pair.id, role, d.client_token);
  attach(c, pair, role);
  log()->info("tunnel {} {} connected: channel {}, {}{}{}", pair.id, to_string(role), c.channel_id,
              d.subprotocol, d.client_token.empty() ? "" : ", with client-token",
              replaced ? ", replacing" : "");
}

void RelayServer::reject_http(ClientConnection& c, int status, const std::string& reason) {
  const std::string body = reason + "\n";
  c.ws->send_raw(fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n{}",
      status, reason_phrase(status), body.size(), body));
  c.head.reset();
  // Half-closes once the response is written and drains what the client
  // still sends, so the response is not lost to a reset.
  c.ws->finish();
}

// ---------------------------------------------------------------- ends

void RelayServer::on_client_closed(ClientConnection& c, const tunnel::WsConnectionEnd& end) {
  using Cause = tunnel::WsConnectionEnd::Cause;
  const auto& lg = log();
  if (end.cause == Cause::poll_error) {
    lg->debug("connection from {}: {}", c.peer, end.detail);
  } else if (end.cause == Cause::tls_handshake) {
    lg->debug("TLS handshake from {} failed: {}", c.peer,
              end.detail.empty() ? std::string("the connection was closed") : end.detail);
  } else if (end.cause == Cause::io && (c.pair != nullptr || c.ws->close_sent())) {
    lg->debug("channel {}: {}", c.channel_id, end.io.describe("the client"));
  } else if (end.cause == Cause::close_timeout) {
    lg->debug("channel {}: no close frame from the client, closing", c.channel_id);
  }
  if (c.pair != nullptr) {
    lg->info("tunnel {} {} disconnected: channel {}", c.tunnel_id, to_string(c.role), c.channel_id);
    detach(c);
  } else if (!c.channel_id.empty()) {
    lg->debug("channel {} closed", c.channel_id);
  }
  clients_.erase(c.id);  // destroys c
  check_shutdown_done();
}

// ---------------------------------------------------------------- admin

std::optional<OpenedTunnel> RelayServer::open_tunnel(std::vector<std::string> services,
                                                     std::chrono::seconds lifetime,
                                                     std::string& error) {
  const Tunnel* opened = registry_.open(std::move(services), error);
  if (opened == nullptr) {
    log()->warn("tunnel not opened: {}", error);
    return std::nullopt;
  }
  const Tunnel& t = *opened;
  create_pair(t.id, lifetime);
  log()->info("tunnel {} opened (services: {}), lifetime {}s", t.id, services_text(t.services),
              lifetime.count());
  return OpenedTunnel{t.id, t.end(Role::source).access_token,
                      t.end(Role::destination).access_token};
}

bool RelayServer::close_tunnel(std::string_view id, std::string_view why) {
  const Tunnel* t = registry_.find(id);
  if (t == nullptr) return false;
  if (t->status == TunnelStatus::closed) return true;
  const std::string tunnel_id(id);
  if (const auto it = pairs_.find(tunnel_id); it != pairs_.end()) {
    for (ClientConnection* c : it->second->ends) {
      if (c == nullptr) continue;
      release_from_pair(*c);
      close_client(*c, 1000, "tunnel closed");
    }
    destroy_pair(tunnel_id);
  }
  registry_.close(tunnel_id);
  log()->info("tunnel {} closed: {}", tunnel_id, why);
  return true;
}

std::vector<TunnelView> RelayServer::tunnels() const {
  std::vector<TunnelView> out;
  for (const Tunnel* t : registry_.list()) {
    out.push_back(TunnelView{t->id, std::string(to_string(t->status)), t->services,
                             t->end(Role::source).connected, t->end(Role::destination).connected});
  }
  return out;
}

// ---------------------------------------------------------------- shutdown

void RelayServer::shutdown(std::function<void()> done) {
  if (shutting_down_) return;
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  if (h_ != nullptr) {
    h_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->listen),
             [](uv_handle_t* h) { delete static_cast<Handles*>(h->data); });
    h_ = nullptr;
  }
  tunnel::net::close_socket(listen_socket_);
  listen_socket_ = tunnel::net::kNoSocket;
  for (const auto& [id, c] : clients_) {
    if (!c->ws->open()) continue;
    release_from_pair(*c);
    close_client(*c, 1001, "relay shutting down");
  }
  while (!pairs_.empty()) destroy_pair(pairs_.begin()->first);
  shutdown_timer_ = new uv_timer_t;
  uv_timer_init(loop_, shutdown_timer_);
  shutdown_timer_->data = this;
  // Close frames go out after this iteration's I/O; what is left after the
  // grace period is closed without waiting further.
  uv_timer_start(
      shutdown_timer_, [](uv_timer_t* t) { static_cast<RelayServer*>(t->data)->finish_shutdown(); },
      kShutdownGraceMs, 0);
  check_shutdown_done();
}

void RelayServer::check_shutdown_done() {
  if (!shutting_down_ || shutdown_finished_ || shutdown_timer_ == nullptr) return;
  const bool websockets_left = std::any_of(clients_.begin(), clients_.end(),
                                           [](const auto& kv) { return kv.second->upgraded; });
  if (!websockets_left)
    uv_timer_start(
        shutdown_timer_,
        [](uv_timer_t* t) { static_cast<RelayServer*>(t->data)->finish_shutdown(); }, 0, 0);
}

void RelayServer::finish_shutdown() {
  if (shutdown_finished_) return;
  shutdown_finished_ = true;
  if (shutdown_timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(shutdown_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    shutdown_timer_ = nullptr;
  }
  const auto websockets = std::count_if(clients_.begin(), clients_.end(),
                                        [](const auto& kv) { return kv.second->upgraded; });
  clients_.clear();  // closes every socket
  if (websockets != 0) log()->info("{} connection(s) did not close in time", websockets);
  if (shutdown_done_) std::exchange(shutdown_done_, nullptr)();
}

void RelayServer::finish() {
  // Every connection is gone (finish_shutdown); the context's own handles
  // close here and the loop drains them.
  clients_.clear();
  ctx_.reset();
}

}  // namespace relay
