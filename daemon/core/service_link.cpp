#include "service_link.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "logging.h"
#include "record_codec.h"
#include "socket_io.h"

namespace tunnel {
namespace {

using Clock = std::chrono::steady_clock;
using Cause = WsConnectionEnd::Cause;

std::uint64_t ms(int v) { return v > 0 ? static_cast<std::uint64_t>(v) : 1; }

bool is_ip_literal(const std::string& host) {
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

// Control answers the service has not read yet may add this much to the
// data window before the link stops reading (ws_connection.h).
constexpr std::size_t kControlOutputAllowance = std::size_t{1024} * 1024;

}  // namespace

// ---------------------------------------------------------------- handles

struct ServiceLink::Handles {
  ServiceLink* owner = nullptr;
  uv_timer_t connect_deadline{};  // TCP + proxy + TLS + upgrade
  uv_timer_t ping_timer{};
  uv_timer_t end_timer{};  // delivers on_link_closed when no connection does
  int open = 0;

  static ServiceLink* owner_of(const uv_timer_t* t) {
    return static_cast<Handles*>(t->data)->owner;
  }
  static void closed(uv_handle_t* h) {
    auto* self = static_cast<Handles*>(h->data);
    if (--self->open == 0) delete self;
  }
};

struct ServiceLink::Resolve {
  uv_getaddrinfo_t req{};
  ServiceLink* link = nullptr;  // null: abandoned, just free
};

ServiceLink::ServiceLink(LoopContext& ctx, ServiceLinkEvents& events)
    : ctx_(ctx), events_(events), h_(new Handles) {
  h_->owner = this;
  for (uv_timer_t* t : {&h_->connect_deadline, &h_->ping_timer, &h_->end_timer}) {
    uv_timer_init(ctx_.loop(), t);
    t->data = h_;
    ++h_->open;
  }
}

ServiceLink::~ServiceLink() { shutdown(); }

void ServiceLink::shutdown() {
  conn_.reset();
  abandon_resolve();
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
  }
  if (!h_) return;
  h_->owner = nullptr;
  for (uv_timer_t* t : {&h_->connect_deadline, &h_->ping_timer, &h_->end_timer})
    uv_close(reinterpret_cast<uv_handle_t*>(t), &Handles::closed);
  h_ = nullptr;
  stage_ = Stage::idle;
}

std::string ServiceLink::tcp_peer_text() const {
  return options_.https_proxy ? "the HTTPS proxy " + options_.https_proxy->display()
                              : "the service at " + endpoint_text();
}

std::string ServiceLink::endpoint_text() const {
  const auto& e = options_.endpoint;
  return (e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host) + ":" +
         std::to_string(e.port);
}

// ---------------------------------------------------------------- connect

void ServiceLink::connect(const LinkOptions& options) {
  if (!h_ || stage_ != Stage::idle) return;
  options_ = options;
  stage_ = Stage::resolving;
  end_ = LinkEnd{};
  response_ = ws::HttpResponseHead();
  outbox_.clear();
  rx_paused_ = false;
  awaiting_pong_ = false;
  connect_error_.clear();
  proxy_reply_ = ConnectReplyParser();
  uv_timer_start(
      &h_->connect_deadline,
      [](uv_timer_t* t) {
        if (ServiceLink* self = Handles::owner_of(t)) self->on_connect_timeout();
      },
      ms(options_.connect_timeout_ms), 0);

  resolve_ = new Resolve;
  resolve_->link = this;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  // Through a proxy, the TCP connection goes to the proxy; the service's name
  // is only resolved by the proxy.
  const std::string& host =
      options_.https_proxy ? options_.https_proxy->host : options_.endpoint.host;
  const std::string port =
      std::to_string(options_.https_proxy ? options_.https_proxy->port : options_.endpoint.port);
  const int rc = uv_getaddrinfo(
      ctx_.loop(), &resolve_->req,
      [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
        auto* r = reinterpret_cast<Resolve*>(req);
        ServiceLink* self = r->link;
        delete r;
        if (!self) {
          uv_freeaddrinfo(res);
          return;
        }
        self->resolve_ = nullptr;
        self->on_resolved(status, res);
      },
      host.c_str(), port.c_str(), &hints);
  if (rc != 0) {
    delete resolve_;
    resolve_ = nullptr;
    fail("cannot resolve " + (options_.https_proxy ? "the HTTPS proxy host " : std::string()) +
         host + ": " + uv_strerror(rc));
  }
}

void ServiceLink::on_connect_timeout() {
  if (stage_ == Stage::proxy_connect) {
    fail("timed out waiting for " + tcp_peer_text() + " to answer CONNECT");
  } else if (options_.https_proxy && (stage_ == Stage::resolving || stage_ == Stage::connecting)) {
    fail("timed out connecting to " + tcp_peer_text());
  } else {
    fail("timed out connecting to the service");
  }
}

void ServiceLink::abandon_resolve() {
  if (!resolve_) return;
  resolve_->link = nullptr;
  uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));  // the callback frees it
  resolve_ = nullptr;
}

void ServiceLink::on_resolved(int status, addrinfo* res) {
  if (stage_ != Stage::resolving) {
    uv_freeaddrinfo(res);
    return;
  }
  if (status != 0 || !res) {
    if (res) uv_freeaddrinfo(res);
    fail(options_.https_proxy
             ? "cannot resolve the HTTPS proxy host " + options_.https_proxy->host + ": " +
                   uv_strerror(status)
             : "cannot resolve " + options_.endpoint.host + ": " + uv_strerror(status));
    return;
  }
  addrs_ = res;
  next_addr_ = res;
  try_next_address();
}

void ServiceLink::try_next_address() {
  while (next_addr_) {
    addrinfo* a = next_addr_;
    next_addr_ = a->ai_next;
    const net::Socket s = net::open_stream(a->ai_family);
    if (s == net::kNoSocket) {
      connect_error_ = net::last_error_text();
      continue;
    }
    if (!net::start_connect(s, a->ai_addr, a->ai_addrlen)) {
      connect_error_ = net::last_error_text();
      net::close_socket(s);
      continue;
    }
    WsConnectionOptions o;
    o.side = ws::Side::client;
    o.output_low_watermark = options_.write_low_watermark;
    o.max_pending_output = 2 * options_.write_low_watermark + kControlOutputAllowance;
    WsConnectionEvents& events = *this;
    conn_ = std::make_unique<WsConnection>(ctx_, events, o);
    conn_->connect(s);
    stage_ = Stage::connecting;
    return;
  }
  fail("cannot connect to " + tcp_peer_text() + ": " +
       (connect_error_.empty() ? std::string("no address") : connect_error_));
}

void ServiceLink::on_connected() {
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
    next_addr_ = nullptr;
  }
  if (options_.https_proxy) {
    start_proxy_connect();
    return;
  }
  start_transport();
}

// ---------------------------------------------------------------- HTTPS proxy

void ServiceLink::start_proxy_connect() {
  stage_ = Stage::proxy_connect;
  proxy_reply_ = ConnectReplyParser();
  std::string request =
      connect_request(*options_.https_proxy, options_.endpoint.host, options_.endpoint.port);
  conn_->send_raw(request);
  // The request may carry credentials: keep no copy beyond the write buffer.
  OPENSSL_cleanse(request.data(), request.size());
  // Exactly the reply's bytes are taken off the socket: whatever follows the
  // blank line belongs to the TLS stream, which OpenSSL reads from it.
  conn_->read_http(true);
}

std::size_t ServiceLink::on_proxy_reply(std::span<const std::uint8_t> bytes) {
  std::size_t used = 0;
  const auto r = proxy_reply_.feed(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), used);
  if (r == ConnectReplyParser::Result::malformed) {
    fail("bad answer from " + tcp_peer_text() + " to CONNECT: " + proxy_reply_.error());
    return used;
  }
  if (r != ConnectReplyParser::Result::done) return used;
  const int status = proxy_reply_.status();
  const std::string answer = "HTTP " + std::to_string(status) +
                             (proxy_reply_.reason().empty() ? "" : " " + proxy_reply_.reason());
  if (proxy_reply_.success()) {
    logging::get("ws")->debug("{}: CONNECT {} answered {}", tcp_peer_text(), endpoint_text(),
                              answer);
    start_transport();
    return used;
  }
  end_.proxy_status = status;
  if (proxy_refusal_is_final(status)) {
    on_proxy_refused(status, answer);
    return used;
  }
  fail(tcp_peer_text() + " answered CONNECT " + endpoint_text() + " with " + answer);
  return used;
}

// Final: retrying with the same credentials or against the same policy
// cannot help. 401 is what some proxies (tinyproxy) answer instead of 407.
void ServiceLink::on_proxy_refused(int status, const std::string& answer) {
  const HttpProxy& proxy = *options_.https_proxy;
  const std::string where = "(HTTPS_PROXY, --https-proxy or the https_proxy setting)";
  if (status == 403) {
    fail(tcp_peer_text() + " refused CONNECT " + endpoint_text() + " (" + answer +
         "): its policy or the credentials do not allow it; check the proxy's access rules" +
         (proxy.has_credentials() ? " and the user and password in the proxy URL " + where
                                  : std::string()));
  } else if (proxy.has_credentials()) {
    fail(tcp_peer_text() + " refused the credentials (" + answer +
         "); check the user and password in the proxy URL " + where);
  } else {
    fail(tcp_peer_text() + " requires credentials (" + answer +
         "); give them in the proxy URL: http://USER:PASSWORD@" + proxy.display());
  }
}

// ---------------------------------------------------------------- TLS and upgrade

void ServiceLink::start_transport() {
  if (!options_.endpoint.tls) {
    start_upgrade();
    return;
  }
  SSL_CTX* tls = nullptr;
  try {
    tls = ctx_.client_tls(options_.trust);
  } catch (const std::exception& e) {
    fail(e.what());
    return;
  }
  SSL* ssl = SSL_new(tls);
  if (!ssl || SSL_set_fd(ssl, conn_->socket()) != 1) {
    SSL_free(ssl);
    fail("cannot start TLS: " + tls_error_text());
    return;
  }
  const std::string& host = options_.endpoint.host;
  if (!options_.verify_tls) {
    SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
  } else if (is_ip_literal(host)) {
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
  } else {
    SSL_set1_host(ssl, host.c_str());
  }
  if (!is_ip_literal(host)) SSL_set_tlsext_host_name(ssl, host.c_str());
  SSL_set_connect_state(ssl);
  stage_ = Stage::tls;
  conn_->start_tls(ssl);
}

void ServiceLink::on_secured() { start_upgrade(); }

void ServiceLink::start_upgrade() {
  stage_ = Stage::upgrading;
  const auto& e = options_.endpoint;
  const bool default_port = e.port == (e.tls ? 443 : 80);
  upgrade_ = ws::UpgradeRequest{};
  upgrade_.host = e.host.find(':') != std::string::npos ? "[" + e.host + "]" : e.host;
  if (!default_port) upgrade_.host += ":" + std::to_string(e.port);
  upgrade_.path = options_.path;
  upgrade_.subprotocols = options_.subprotocols;
  upgrade_.key = ws::make_websocket_key();
  upgrade_.headers.emplace_back("access-token", options_.access_token);
  if (!options_.client_token.empty())
    upgrade_.headers.emplace_back("client-token", options_.client_token);
  upgrade_.headers.emplace_back("User-Agent", "tunneld/" TUNNELD_VERSION);
  std::string request = ws::build_upgrade_request(upgrade_);
  conn_->send_raw(request);
  // The request carries the tokens: keep no copy beyond the write buffer.
  OPENSSL_cleanse(request.data(), request.size());
  upgrade_.headers.clear();
  conn_->read_http();
}

std::size_t ServiceLink::on_http_bytes(std::span<const std::uint8_t> bytes) {
  if (stage_ == Stage::proxy_connect) return on_proxy_reply(bytes);
  if (stage_ == Stage::upgrading) return on_upgrade_reply(bytes);
  return bytes.size();
}

std::size_t ServiceLink::on_upgrade_reply(std::span<const std::uint8_t> bytes) {
  std::size_t used = 0;
  const auto r = response_.feed(
      std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), used);
  if (r == ws::HttpResponseHead::Result::need_more) return used;
  if (r == ws::HttpResponseHead::Result::malformed) {
    fail("bad WebSocket upgrade response from the service: " + response_.error(), 0, true);
    return used;
  }
  const ws::UpgradeResult up = ws::check_upgrade_response(response_, upgrade_);
  if (!up.ok) {
    fail(up.error, up.http_status, up.http_status == 0);
    return used;
  }
  stage_ = Stage::open;
  end_.was_open = true;
  conn_->set_source(this);
  conn_->open_websocket();
  uv_timer_stop(&h_->connect_deadline);
  const auto period = ms(options_.ping_period_ms);
  uv_timer_start(
      &h_->ping_timer,
      [](uv_timer_t* t) {
        if (ServiceLink* self = Handles::owner_of(t)) self->on_ping_tick();
      },
      period, period);
  events_.on_link_open(up.subprotocol, up.channel_id);
  return used;  // what follows the response is decoded as frames
}

// ---------------------------------------------------------------- messages

void ServiceLink::on_message_data(std::span<const std::uint8_t> payload) {
  if (stage_ == Stage::open || stage_ == Stage::ending) events_.on_link_data(payload);
}

void ServiceLink::on_pong(std::span<const std::uint8_t> /*payload*/) {
  if (!awaiting_pong_) return;
  awaiting_pong_ = false;
  events_.on_link_rtt(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - ping_sent_).count());
}

void ServiceLink::on_peer_close(int /*code*/) {
  // The service will not read what is not framed yet.
  outbox_.clear();
  stage_ = Stage::ending;
}

void ServiceLink::on_frame_error(ws::FrameError error) {
  fail("WebSocket protocol error from the service: " + std::string(ws::to_string(error)), 0, true);
}

void ServiceLink::frame_outbox() {
  if (outbox_.empty() || !conn_) return;
  const std::size_t max_frame =
      std::clamp<std::size_t>(options_.max_frame_size, 1024, kMaxFrameSize);
  const std::string_view all(outbox_);
  for (std::size_t off = 0; off < all.size(); off += max_frame)
    conn_->send_message({all.substr(off, max_frame)});
  outbox_.clear();
  if (outbox_.capacity() > 4 * kMaxFrameSize) std::string().swap(outbox_);
}

std::span<const std::uint8_t> ServiceLink::next_frame(WsConnection& /*conn*/) {
  frame_outbox();  // copied (masked) into the connection's buffer
  return {};
}

void ServiceLink::send_record_parts(std::string_view head, std::string_view payload,
                                    std::string_view tail) {
  const std::size_t n = head.size() + payload.size() + tail.size();
  const std::size_t max_frame =
      std::clamp<std::size_t>(options_.max_frame_size, 1024, kMaxFrameSize);
  if (!is_open() || n > max_frame) {
    // Not open yet, closing, or a frame limit below the record: the
    // byte-stream path frames it later.
    outbox_.reserve(outbox_.size() + n);
    outbox_.append(head);
    outbox_.append(payload);
    outbox_.append(tail);
    return;
  }
  frame_outbox();  // what came first leaves first
  conn_->send_message({head, payload, tail});
}

void ServiceLink::flush() {
  if (!is_open()) return;
  if (queued() > options_.write_low_watermark) conn_->notify_when_drained();
  conn_->flush();
}

void ServiceLink::on_output_drained() {
  if (stage_ != Stage::open) return;
  if (queued() <= options_.write_low_watermark) {
    events_.on_link_drained();
  } else {
    conn_->notify_when_drained();  // the outbox is framed once the buffer is written
  }
}

// ---------------------------------------------------------------- liveness

void ServiceLink::pause_receive(bool paused) {
  if (rx_paused_ == paused) return;
  rx_paused_ = paused;
  // We stop reading: a pong cannot arrive, so silence proves nothing.
  if (paused) awaiting_pong_ = false;
  if (conn_ && (stage_ == Stage::open || stage_ == Stage::ending)) conn_->pause_reading(paused);
}

void ServiceLink::on_ping_tick() {
  if (!is_open()) return;
  if (conn_->pending_output() == 0) conn_->release_idle_buffer();  // idle: hold no write buffer
  if (rx_paused_) {
    awaiting_pong_ = false;
    return;
  }
  if (awaiting_pong_) {
    const auto waited =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - ping_sent_).count();
    if (waited >= options_.pong_timeout_ms) {
      logging::get("ws")->warn("no pong from the service for {} ms: the link is dead", waited);
      fail("no pong within " + std::to_string(options_.pong_timeout_ms) + " ms");
    }
    return;
  }
  std::uint8_t payload[8] = {};
  const auto now = static_cast<std::uint64_t>(Clock::now().time_since_epoch().count());
  std::memcpy(payload, &now, sizeof payload);
  awaiting_pong_ = true;
  ping_sent_ = Clock::now();
  conn_->send_ping(payload);
}

// ---------------------------------------------------------------- ending

void ServiceLink::close(int code, std::string_view reason) {
  if (!is_open()) {
    if (active() && stage_ != Stage::ending) abort("stopping");
    return;
  }
  frame_outbox();
  stage_ = Stage::ending;
  conn_->close(code, reason);
}

void ServiceLink::abort(std::string reason) { fail(std::move(reason)); }

void ServiceLink::fail(std::string reason, int http_status, bool protocol_error) {
  if (stage_ == Stage::idle || !h_ || !end_.reason.empty()) return;
  end_.reason = std::move(reason);
  end_.http_status = http_status;
  end_.protocol_error = protocol_error;
  stop_connection();
  if (conn_ && !conn_->ended()) {
    // Best effort: tell the service why (1002), without waiting.
    conn_->abort(protocol_error ? 1002 : 0);  // on_closed ends the link
    return;
  }
  if (!conn_)
    uv_timer_start(
        &h_->end_timer,
        [](uv_timer_t* t) {
          if (ServiceLink* self = Handles::owner_of(t)) self->deliver_link_end();
        },
        0, 0);
}

// Stops what the link itself runs for the connection being given up.
void ServiceLink::stop_connection() {
  stage_ = Stage::ending;
  abandon_resolve();
  if (addrs_) {
    uv_freeaddrinfo(addrs_);
    addrs_ = nullptr;
    next_addr_ = nullptr;
  }
  uv_timer_stop(&h_->connect_deadline);
  uv_timer_stop(&h_->ping_timer);
  outbox_.clear();
}

std::string ServiceLink::describe_end(const WsConnectionEnd& end) const {
  const bool to_proxy = stage_ == Stage::proxy_connect;
  switch (end.cause) {
    case Cause::poll_error:
      return "connection to " + (to_proxy ? tcp_peer_text() : std::string("the service")) +
             " failed: " + end.detail;
    case Cause::io:
      if (to_proxy) {
        return end.io.kind == IoEnd::Kind::closed
                   ? tcp_peer_text() + " closed the connection without answering CONNECT"
                   : end.io.describe(tcp_peer_text());
      }
      return end.io.describe("the service") +
             (stage_ == Stage::upgrading ? " during the WebSocket upgrade" : "");
    case Cause::tls_handshake:
      if (options_.verify_tls && end.verify_result != X509_V_OK) {
        return std::string("TLS certificate verification failed: ") +
               X509_verify_cert_error_string(end.verify_result) +
               " (trust the service's CA with -c DIR or --cafile FILE)";
      }
      return "TLS handshake with " + endpoint_text() + " failed: " +
             (end.detail.empty() ? std::string("the connection was closed") : end.detail);
    case Cause::close_timeout:
      return "the service did not acknowledge the close";
    default:
      return end.peer_close_code
                 ? "closed by the service (close code " + std::to_string(end.peer_close_code) + ")"
                 : std::string("closed");
  }
}

void ServiceLink::on_closed(const WsConnectionEnd& end) {
  if (end.cause == Cause::connect_failed && stage_ == Stage::connecting) {
    connect_error_ = end.detail;
    conn_.reset();  // allowed inside on_closed
    try_next_address();
    return;
  }
  if (end_.reason.empty()) {
    end_.reason = describe_end(end);
    end_.protocol_error = end.cause == Cause::frame_error;
  }
  end_.peer_close_code = end.peer_close_code;
  stop_connection();
  conn_.reset();
  deliver_link_end();
}

void ServiceLink::deliver_link_end() {
  if (stage_ == Stage::idle) return;
  stage_ = Stage::idle;
  const LinkEnd end = end_;
  events_.on_link_closed(end);  // may connect() again: we are idle
}

}  // namespace tunnel
