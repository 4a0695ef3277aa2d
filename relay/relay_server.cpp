#include "relay_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <stdexcept>
#include <utility>

#include "handshake.h"

namespace relay {
namespace {

std::shared_ptr<spdlog::logger> log() {
  static const auto logger = [] {
    auto l = spdlog::get("relay");
    return l ? l : spdlog::default_logger();
  }();
  return logger;
}

// lws reads at most this much per POLLIN on a WebSocket and hands RECEIVE at
// most this much at once (TLS delivers at most one 16 KiB record per read anyway).
constexpr std::size_t kRxBufferSize = std::size_t{64} * 1024;
// Chunks kept for reuse across all queues (8 MiB at most).
constexpr std::size_t kPoolChunks = 64;
constexpr std::uint64_t kShutdownGraceMs = 3000;

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

std::string header(lws* wsi, lws_token_indexes token) {
  const int n = lws_hdr_total_length(wsi, token);
  if (n <= 0) return {};
  // lws_hdr_copy joins repeated headers with ',': leave room for them.
  std::string s(static_cast<std::size_t>(n) * 2 + 16, '\0');
  const int got = lws_hdr_copy(wsi, s.data(), static_cast<int>(s.size()), token);
  s.resize(got > 0 ? static_cast<std::size_t>(got) : 0);
  return s;
}

std::optional<std::string> custom_header(lws* wsi, const char* name_with_colon) {
  const int nlen = static_cast<int>(std::strlen(name_with_colon));
  const int n = lws_hdr_custom_length(wsi, name_with_colon, nlen);
  if (n < 0) return std::nullopt;
  std::string s(static_cast<std::size_t>(n) + 1, '\0');
  if (lws_hdr_custom_copy(wsi, s.data(), n + 1, name_with_colon, nlen) < 0) return std::nullopt;
  s.resize(static_cast<std::size_t>(n));
  return s;
}

// The request head size as lws kept it: every known header (name, value,
// separators) plus the custom headers this relay reads. Unknown headers are
// not visible through the lws API; lws itself drops requests whose header
// data overflow max_http_header_data.
std::size_t approximate_request_bytes(lws* wsi) {
  std::size_t total = 0;
  for (int t = 0; t < WSI_TOKEN_COUNT; ++t) {
    const auto tok = static_cast<lws_token_indexes>(t);
    const int n = lws_hdr_total_length(wsi, tok);
    if (n <= 0) continue;
    const unsigned char* name = lws_token_to_string(tok);
    total += static_cast<std::size_t>(n) +
             (name ? std::strlen(reinterpret_cast<const char*>(name)) : 0) + 3;
  }
  for (const char* name : {"access-token:", "client-token:"}) {
    const int n = lws_hdr_custom_length(wsi, name, static_cast<int>(std::strlen(name)));
    if (n >= 0) total += static_cast<std::size_t>(n) + std::strlen(name) + 3;
  }
  return total;
}

// lws only says "init_server_ssl failed": load the pair once here to name
// the actual problem.
bool check_tls_files(const std::string& cert, const std::string& key, std::string& error) {
  const std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_server_method()),
                                                              &SSL_CTX_free);
  const char* what = nullptr;
  if (!ctx)
    what = "cannot create a TLS context";
  else if (SSL_CTX_use_certificate_chain_file(ctx.get(), cert.c_str()) != 1)
    what = "cannot load the certificate chain from --tls-cert";
  else if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)
    what = "cannot load the private key from --tls-key";
  else if (SSL_CTX_check_private_key(ctx.get()) != 1)
    what = "--tls-key does not match the certificate in --tls-cert";
  if (what == nullptr) return true;
  char detail[256] = "";
  ERR_error_string_n(ERR_get_error(), detail, sizeof(detail));
  ERR_clear_error();
  error = std::string(what) + " (" + detail + ")";
  return false;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 410:
      return "Gone";
    case 431:
      return "Request Header Fields Too Large";
    case 503:
      return "Service Unavailable";
    default:
      return "Error";
  }
}

}  // namespace

RelayServer::RelayServer(uv_loop_t* loop, RelayConfig config)
    : loop_(loop),
      config_(std::move(config)),
      registry_(&random_token),
      pool_(LWS_PRE, kMaxMessage, kPoolChunks) {}

RelayServer::~RelayServer() {
  for (auto& [id, link] : links_) {
    if (link->expiry != nullptr)
      uv_close(reinterpret_cast<uv_handle_t*>(link->expiry),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
  if (context_ != nullptr) lws_context_destroy(context_);
}

bool RelayServer::start(std::string& error) {
  for (const TunnelSpec& spec : config_.tunnels) {
    const Tunnel* t =
        registry_.add(spec.source_token, spec.destination_token, spec.services, error);
    if (t == nullptr) {
      error.insert(0, "--tunnel: ");
      return false;
    }
    create_link(t->id, std::chrono::seconds(0));
    log()->info("tunnel {} configured (services: {})", t->id,
                t->services.empty() ? std::string("none, V1")
                                    : fmt::format("{}", fmt::join(t->services, ",")));
  }

  for (const std::string& name : config_.subprotocols) {
    lws_protocols p{};
    p.name = name.c_str();
    p.callback = &RelayServer::lws_callback;
    p.per_session_data_size = 0;
    p.rx_buffer_size = kRxBufferSize;
    p.id = static_cast<unsigned>(subprotocol_version(name));
    p.user = this;
    // One lws_write of a whole message goes to SSL_write at once instead of
    // being cut at rx_buffer_size with the rest copied into lws's buflist.
    p.tx_packet_size = kMaxMessage + LWS_PRE;
    protocols_.push_back(p);
  }
  protocols_.push_back(lws_protocols{});  // terminator

  if (config_.tls() && !check_tls_files(config_.tls_cert, config_.tls_key, error)) return false;

  lws_context_creation_info ci{};
  ci.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
               LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
  void* loops[] = {loop_};
  ci.foreign_loops = loops;
  ci.pt_serv_buf_size = kRxBufferSize + LWS_PRE;
  // lws keeps header values (and unknown headers with their names) in this
  // much space and drops a request that overflows it, without a status. The
  // API shows only known headers, so the 431 check (approximate_request_bytes)
  // cannot see unknown ones: this bound, a little above the 4 KiB rule, caps
  // them instead.
  ci.max_http_header_data = 5 * 1024;
  ci.max_http_header_pool = 64;
  ci.user = this;
  context_ = lws_create_context(&ci);
  if (context_ == nullptr) {
    error = "lws_create_context failed (is libwebsockets-evlib-uv installed?)";
    return false;
  }

  lws_context_creation_info vi{};
  vi.vhost_name = "relay";
  vi.port = config_.listen.port;
  vi.iface = config_.listen.host.c_str();
  vi.protocols = protocols_.data();
  vi.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
  vi.timeout_secs = 10;
  vi.user = this;
  if (config_.tls()) {
    vi.ssl_cert_filepath = config_.tls_cert.c_str();
    vi.ssl_private_key_filepath = config_.tls_key.c_str();
    vi.ssl_options_set = SSL_OP_NO_TLSv1 | SSL_OP_NO_TLSv1_1;
    // No h2: WebSocket over HTTP/1.1 only, through HTTP_CONFIRM_UPGRADE.
    vi.alpn = "http/1.1";
  }
  vhost_ = lws_create_vhost(context_, &vi);
  if (vhost_ == nullptr) {
    error = "cannot listen on " + config_.listen.to_string() +
            (config_.tls() ? " (or cannot load --tls-cert/--tls-key)" : "");
    return false;
  }
  bound_ = config_.listen;
  bound_.port = static_cast<std::uint16_t>(lws_get_vhost_listen_port(vhost_));
  log()->info("listening on {} ({}), subprotocols {}", bound_.to_string(),
              config_.tls() ? "wss" : "plain ws", fmt::join(config_.subprotocols, ","));
  return true;
}

int RelayServer::lws_callback(lws* wsi, lws_callback_reasons reason, void* user, void* in,
                              std::size_t len) {
  lws_context* ctx = wsi != nullptr ? lws_get_context(wsi) : nullptr;
  auto* self = ctx != nullptr ? static_cast<RelayServer*>(lws_context_user(ctx)) : nullptr;
  if (self == nullptr) return lws_callback_http_dummy(wsi, reason, user, in, len);

  switch (reason) {
    case LWS_CALLBACK_HTTP:
      // A plain HTTP request (no upgrade).
      self->reject_http(wsi, 400,
                        "this is a secure tunneling relay: use a WebSocket upgrade on /tunnel");
      return lws_http_transaction_completed(wsi) != 0 ? -1 : 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
      return self->on_confirm_upgrade(wsi, static_cast<const char*>(in));
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: {
      // Only upgrades decided in HTTP_CONFIRM_UPGRADE get here with a
      // matching slot; lws must have bound the subprotocol chosen there.
      const lws_protocols* p = lws_get_protocol(wsi);
      return (self->pending_.wsi == wsi && p != nullptr && p->name != nullptr &&
              self->pending_.subprotocol == p->name)
                 ? 0
                 : 1;
    }
    case LWS_CALLBACK_ADD_HEADERS:
      return self->on_add_headers(wsi, static_cast<lws_process_html_args*>(in));
    case LWS_CALLBACK_ESTABLISHED:
      return self->on_established(wsi);
    case LWS_CALLBACK_RECEIVE: {
      const auto it = self->connections_.find(wsi);
      if (it == self->connections_.end()) return -1;
      return self->on_receive(*it->second, static_cast<const std::uint8_t*>(in), len);
    }
    case LWS_CALLBACK_SERVER_WRITEABLE: {
      const auto it = self->connections_.find(wsi);
      if (it == self->connections_.end()) return -1;
      return self->on_writeable(*it->second);
    }
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE: {
      const auto it = self->connections_.find(wsi);
      if (it != self->connections_.end() && len >= 2) {
        const auto* b = static_cast<const unsigned char*>(in);
        log()->debug("channel {}: peer sent close {}", it->second->channel_id, (b[0] << 8) | b[1]);
      }
      return 0;
    }
    case LWS_CALLBACK_CLOSED:
    case LWS_CALLBACK_WSI_DESTROY:
      self->on_closed(wsi);
      if (self->pending_.wsi == wsi) self->pending_ = PendingUpgrade{};
      break;
    default:
      break;
  }
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

void RelayServer::reject_http(lws* wsi, int status, const std::string& reason) {
  const std::string body = reason + "\n";
  const std::string head = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n"
      "Connection: close\r\n\r\n",
      status, reason_phrase(status), body.size());
  std::vector<unsigned char> buf(LWS_PRE + head.size() + body.size());
  std::memcpy(buf.data() + LWS_PRE, head.data(), head.size());
  std::memcpy(buf.data() + LWS_PRE + head.size(), body.data(), body.size());
  lws_write(wsi, buf.data() + LWS_PRE, head.size() + body.size(), LWS_WRITE_HTTP_HEADERS);
}

int RelayServer::on_confirm_upgrade(lws* wsi, const char* upgrade) {
  char peer[64] = "?";
  lws_get_peer_simple(wsi, peer, sizeof(peer));
  if (shutting_down_) {
    reject_http(wsi, 503, "relay is shutting down");
    return 1;
  }
  if (upgrade == nullptr || strcasecmp(upgrade, "websocket") != 0) {
    reject_http(wsi, 400, "only WebSocket upgrades are served");
    return 1;
  }

  HandshakeRequest req;
  req.path = header(wsi, WSI_TOKEN_GET_URI);
  for (int i = 0; i < 64; ++i) {
    char arg[512];
    const int n = lws_hdr_copy_fragment(wsi, arg, sizeof(arg), WSI_TOKEN_HTTP_URI_ARGS, i);
    if (n < 0) break;
    req.query_args.emplace_back(arg, static_cast<std::size_t>(n));
  }
  req.access_token_header = custom_header(wsi, "access-token:");
  req.cookie_header = header(wsi, WSI_TOKEN_HTTP_COOKIE);
  req.client_token = custom_header(wsi, "client-token:");
  req.subprotocol_offer = header(wsi, WSI_TOKEN_PROTOCOL);
  req.request_bytes = approximate_request_bytes(wsi);

  HandshakeDecision d =
      evaluate_handshake(req, registry_, config_.subprotocols, config_.max_request_bytes);
  if (!d.admitted()) {
    log()->info("handshake from {} rejected: {} {}{}", peer, d.http_status, d.reason,
                d.admission.tunnel_id.empty() ? "" : " [tunnel " + d.admission.tunnel_id + "]");
    reject_http(wsi, d.http_status, d.reason);
    return 1;
  }
  pending_ = PendingUpgrade{
      wsi, d.admission, d.subprotocol, d.version, std::move(d.client_token), random_hex(16)};
  return 0;
}

int RelayServer::on_add_headers(lws* wsi, lws_process_html_args* args) {
  if (pending_.wsi != wsi || args == nullptr) return 0;
  auto* p = reinterpret_cast<unsigned char*>(args->p);
  unsigned char* end = p + args->max_len;
  if (lws_add_http_header_by_name(
          wsi, reinterpret_cast<const unsigned char*>("channel-id:"),
          reinterpret_cast<const unsigned char*>(pending_.channel_id.data()),
          static_cast<int>(pending_.channel_id.size()), &p, end) != 0)
    return 1;
  args->p = reinterpret_cast<char*>(p);
  return 0;
}

int RelayServer::on_established(lws* wsi) {
  if (pending_.wsi != wsi) {
    log()->error("WebSocket established without an admitted handshake; closing it");
    return -1;
  }
  PendingUpgrade up = std::move(pending_);
  pending_ = PendingUpgrade{};
#ifdef TCP_NOTSENT_LOWAT
  // As the proxies do (service_link.cpp): little unsent data in the kernel,
  // so one end's bulk records cannot delay the other records for long.
  if (const lws_sockfd_type fd = lws_get_socket_fd(wsi); fd >= 0) {
    const int lowat = 128 * 1024;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
  }
#endif
  const auto lit = links_.find(up.admission.tunnel_id);
  if (lit == links_.end()) return -1;  // closed meanwhile (cannot happen within one lws_read)
  Link& link = *lit->second;
  const Role role = up.admission.role;
  const std::size_t i = index_of(role);

  auto owned = std::make_unique<Connection>();
  Connection& c = *owned;
  c.wsi = wsi;
  c.channel_id = std::move(up.channel_id);
  c.tunnel_id = link.id;
  c.role = role;
  c.version = up.version;
  connections_[wsi] = std::move(owned);

  bool replaced = false;
  if (Connection* old = link.conns[i]) {
    log()->info("tunnel {} {}: channel {} replaces channel {} (same client-token)", link.id,
                to_string(role), c.channel_id, old->channel_id);
    detach(*old);
    request_close(*old, 1000, "replaced by a new connection");
    replaced = true;
  }
  registry_.attach(link.id, role, up.client_token);
  link.conns[i] = &c;
  c.link = &link;

  const Tunnel* t = registry_.find(link.id);
  if (t != nullptr && !t->services.empty()) {
    if (c.version >= 2)
      link.queues[i].push_front_record(bytes_of(service_ids_record(t->services)));
    else
      log()->warn("tunnel {} has services but channel {} speaks V1: no SERVICE_IDS sent", link.id,
                  c.channel_id);
  }
  log()->info("tunnel {} {} connected: channel {}, {}{}{}", link.id, to_string(role), c.channel_id,
              up.subprotocol, up.client_token.empty() ? "" : ", with client-token",
              replaced ? ", replacing" : "");
  wake_writer(link, role);
  maybe_resume(link, role);
  return 0;
}

int RelayServer::on_receive(Connection& c, const std::uint8_t* data, std::size_t len) {
  if (c.close_request || c.link == nullptr) return 0;  // closing: what it sends is dropped
  if (lws_frame_is_binary(c.wsi) == 0) {
    log()->warn("tunnel {} {} channel {}: text frame, closing (1003)", c.tunnel_id,
                to_string(c.role), c.channel_id);
    static constexpr char kWhy[] = "text frames are not allowed";
    lws_close_reason(c.wsi, LWS_CLOSE_STATUS_UNACCEPTABLE_OPCODE,
                     reinterpret_cast<unsigned char*>(const_cast<char*>(kWhy)), sizeof(kWhy) - 1);
    return -1;
  }
  const std::size_t rest_of_frame = lws_remaining_packet_payload(c.wsi);
  if (c.message_bytes + len + rest_of_frame > kMaxMessage) {
    log()->warn("tunnel {} {} channel {}: message larger than {} bytes, closing (1009)",
                c.tunnel_id, to_string(c.role), c.channel_id, kMaxMessage);
    static constexpr char kWhy[] = "message too big";
    lws_close_reason(c.wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE,
                     reinterpret_cast<unsigned char*>(const_cast<char*>(kWhy)), sizeof(kWhy) - 1);
    return -1;
  }
  c.message_bytes = lws_is_final_fragment(c.wsi) != 0 ? 0 : c.message_bytes + len;

  Link& link = *c.link;
  const Role receiver = peer_of(c.role);
  RecordQueue& out = link.queues[index_of(receiver)];
  std::string why;
  int code = 1008;
  const bool ok = c.splitter.feed({data, len}, out, [&](std::span<const std::uint8_t> body) {
    return inspect_control_record(c.role, body, link.streams, why, code);
  });
  wake_writer(link, receiver);
  if (!ok) {
    log()->warn("tunnel {} {} channel {}: protocol error, closing ({}): {}", c.tunnel_id,
                to_string(c.role), c.channel_id, code, why);
    lws_close_reason(c.wsi, static_cast<lws_close_status>(code),
                     reinterpret_cast<unsigned char*>(why.data()), why.size());
    return -1;
  }
  if (!c.rx_paused && out.size() >= queue_limit(link, receiver)) {
    lws_rx_flow_control(c.wsi, 0);
    c.rx_paused = true;
  }
  return 0;
}

int RelayServer::on_writeable(Connection& c) {
  c.writable_requested = false;
  if (c.close_request || c.link == nullptr) return 0;
  RecordQueue& q = c.link->queues[index_of(c.role)];
  const std::span<std::uint8_t> msg = q.front();
  if (msg.empty()) return 0;
  // One write per WRITEABLE; lws buffers what the socket did not take and
  // holds back the next WRITEABLE until that is flushed.
  const int n = lws_write(c.wsi, msg.data(), msg.size(), LWS_WRITE_BINARY);
  if (n < static_cast<int>(msg.size())) {
    log()->info("tunnel {} {} channel {}: write failed, closing", c.tunnel_id, to_string(c.role),
                c.channel_id);
    return -1;
  }
  q.pop_front(msg.size());
  if (q.has_committed()) request_writable(c);
  maybe_resume(*c.link, c.role);
  return 0;
}

void RelayServer::on_closed(lws* wsi) {
  const auto it = connections_.find(wsi);
  if (it == connections_.end()) return;
  Connection& c = *it->second;
  if (c.link != nullptr)
    log()->info("tunnel {} {} disconnected: channel {}", c.tunnel_id, to_string(c.role),
                c.channel_id);
  else
    log()->debug("channel {} closed", c.channel_id);
  detach(c);
  connections_.erase(it);
  if (shutting_down_ && connections_.empty() && shutdown_timer_ != nullptr && context_ != nullptr &&
      !destroying_)
    uv_timer_start(
        shutdown_timer_,
        [](uv_timer_t* t) { static_cast<RelayServer*>(t->data)->destroy_context(); }, 0, 0);
}

void RelayServer::detach(Connection& c) {
  Link* l = c.link;
  if (l == nullptr) return;
  const Role role = c.role;
  const Role peer = peer_of(role);
  c.link = nullptr;
  l->conns[index_of(role)] = nullptr;
  registry_.detach(l->id, role);
  // A record the gone connection was half-way through sending is discarded.
  if (c.splitter.mid_record()) l->queues[index_of(peer)].abort_record();
  c.splitter.reset();
  // Records queued for the gone connection belong to its streams: dropped.
  l->queues[index_of(role)].drop_committed();
  // Its streams are dead: tell the peer (protocol.md section 4, last rule).
  for (const std::string& rec : l->streams.take_resets())
    l->queues[index_of(peer)].push_back_record(bytes_of(rec));
  wake_writer(*l, peer);
  maybe_resume(*l, role);
}

void RelayServer::request_close(Connection& c, int code, std::string reason) {
  if (c.close_request) return;
  log()->debug("channel {}: closing with {} ({})", c.channel_id, code, reason);
  c.close_request = std::make_pair(code, std::move(reason));
  if (c.rx_paused) {
    // lws waits for the peer's close frame: let it read.
    lws_rx_flow_control(c.wsi, 1);
    c.rx_paused = false;
  }
  auto& [close_code, why] = *c.close_request;
  lws_close_reason(c.wsi, static_cast<lws_close_status>(close_code),
                   reinterpret_cast<unsigned char*>(why.data()), why.size());
  // Not "return -1 from WRITEABLE": Debian's lws is a _DEBUG build, and on
  // libuv its POLLOUT close path calls close twice ("uv repeat test"); the
  // second call kills the socket before the close frame is sent. A single
  // synchronous close takes the polite path: lws sends the close frame,
  // waits for the peer's, and times out on its own. It may also free the
  // wsi at once (CLOSED runs now): `c` must not be used after this call.
  lws_set_timeout(c.wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_SYNC);
}

std::size_t RelayServer::queue_limit(const Link& l, Role receiver) const {
  return l.conns[index_of(receiver)] != nullptr ? config_.queue_limit_connected
                                                : config_.queue_limit_absent;
}

void RelayServer::maybe_resume(Link& l, Role receiver) {
  Connection* sender = l.conns[index_of(peer_of(receiver))];
  if (sender != nullptr && sender->rx_paused &&
      l.queues[index_of(receiver)].size() <= queue_limit(l, receiver) / 2) {
    lws_rx_flow_control(sender->wsi, 1);
    sender->rx_paused = false;
  }
}

void RelayServer::wake_writer(Link& l, Role receiver) {
  Connection* c = l.conns[index_of(receiver)];
  if (c != nullptr && l.queues[index_of(receiver)].has_committed()) request_writable(*c);
}

void RelayServer::request_writable(Connection& c) {
  // lws re-arms the libuv poll handle on every call (uv_poll_start: two
  // epoll_ctl calls) even when POLLOUT is armed already; ask once per
  // WRITEABLE instead of once per received fragment.
  if (c.writable_requested) return;
  c.writable_requested = true;
  lws_callback_on_writable(c.wsi);
}

RelayServer::Link* RelayServer::create_link(const std::string& id, std::chrono::seconds lifetime) {
  auto link = std::make_unique<Link>(pool_);
  link->id = id;
  link->owner = this;
  if (lifetime.count() > 0) {
    link->expiry = new uv_timer_t;
    uv_timer_init(loop_, link->expiry);
    link->expiry->data = link.get();
    uv_timer_start(link->expiry, &RelayServer::on_expiry,
                   static_cast<std::uint64_t>(lifetime.count()) * 1000, 0);
  }
  Link* raw = link.get();
  links_[id] = std::move(link);
  return raw;
}

void RelayServer::destroy_link(const std::string& id) {
  const auto it = links_.find(id);
  if (it == links_.end()) return;
  if (it->second->expiry != nullptr)
    uv_close(reinterpret_cast<uv_handle_t*>(it->second->expiry),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  links_.erase(it);
}

void RelayServer::on_expiry(uv_timer_t* t) {
  auto* link = static_cast<Link*>(t->data);
  const std::string id = link->id;  // close_tunnel destroys the link
  link->owner->close_tunnel(id, "lifetime expired");
}

OpenedTunnel RelayServer::open_tunnel(std::vector<std::string> services,
                                      std::chrono::seconds lifetime) {
  const Tunnel& t = registry_.open(std::move(services));
  create_link(t.id, lifetime);
  log()->info(
      "tunnel {} opened (services: {}), lifetime {}s", t.id,
      t.services.empty() ? std::string("none, V1") : fmt::format("{}", fmt::join(t.services, ",")),
      lifetime.count());
  return OpenedTunnel{t.id, t.end(Role::source).access_token,
                      t.end(Role::destination).access_token};
}

bool RelayServer::close_tunnel(std::string_view id, std::string_view why) {
  const Tunnel* t = registry_.find(id);
  if (t == nullptr) return false;
  if (t->status == TunnelStatus::closed) return true;
  const std::string tunnel_id(id);
  if (const auto it = links_.find(tunnel_id); it != links_.end()) {
    Link& l = *it->second;
    for (Connection* c : l.conns) {
      if (c == nullptr) continue;
      c->link = nullptr;
      c->splitter.reset();
      request_close(*c, 1000, "tunnel closed");
    }
    destroy_link(tunnel_id);
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

void RelayServer::shutdown(std::function<void()> done) {
  if (shutting_down_) return;
  shutting_down_ = true;
  shutdown_done_ = std::move(done);
  // request_close() may free a connection at once: collect first.
  std::vector<lws*> open;
  for (auto& [wsi, c] : connections_) {
    c->link = nullptr;
    c->splitter.reset();
    open.push_back(wsi);
  }
  for (lws* wsi : open) {
    const auto it = connections_.find(wsi);
    if (it != connections_.end()) request_close(*it->second, 1001, "relay shutting down");
  }
  while (!links_.empty()) destroy_link(links_.begin()->first);
  shutdown_timer_ = new uv_timer_t;
  uv_timer_init(loop_, shutdown_timer_);
  shutdown_timer_->data = this;
  // Close frames go out on the next WRITEABLEs; the context is destroyed once
  // every connection is gone, or after a grace period.
  uv_timer_start(
      shutdown_timer_, [](uv_timer_t* t) { static_cast<RelayServer*>(t->data)->destroy_context(); },
      connections_.empty() ? 0 : kShutdownGraceMs, 0);
}

void RelayServer::destroy_context() {
  if (destroying_) return;
  destroying_ = true;
  if (shutdown_timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(shutdown_timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    shutdown_timer_ = nullptr;
  }
  if (!connections_.empty())
    log()->info("{} connection(s) did not close in time", connections_.size());
  // First destroy from a uv callback: lws closes its handles; the second
  // call in finish(), after the loop drained, frees the context.
  if (context_ != nullptr) lws_context_destroy(context_);
  connections_.clear();
  if (shutdown_done_) std::exchange(shutdown_done_, nullptr)();
}

void RelayServer::finish() {
  if (context_ != nullptr) {
    lws_context_destroy(context_);
    context_ = nullptr;
  }
}

}  // namespace relay
