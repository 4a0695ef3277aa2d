#include "mqtt_link.h"

#include <mosquitto.h>
#include <openssl/ssl.h>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>

namespace tunneld::notify {
namespace {

constexpr std::uint64_t kMiscPeriodMs = 1000;
// A broker that accepts TCP but never completes TLS and CONNACK is given up on.
constexpr std::uint64_t kConnectTimeoutMs = 10000;

void init_library_once() {
  static std::once_flag once;
  std::call_once(once, [] { mosquitto_lib_init(); });
}

template <typename Handle>
void close_and_free(Handle*& h) {
  if (h == nullptr) return;
  h->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(h),
           [](uv_handle_t* closed) { delete reinterpret_cast<Handle*>(closed); });
  h = nullptr;
}

}  // namespace

MqttLink::MqttLink(uv_loop_t* loop, MqttLinkOptions options, OnMessage on_message,
                   std::shared_ptr<spdlog::logger> logger)
    : loop_(loop),
      options_(std::move(options)),
      on_message_(std::move(on_message)),
      log_(std::move(logger)),
      backoff_(options_.retry_initial_ms, options_.retry_max_ms, std::random_device{}()) {}

MqttLink::~MqttLink() { close(); }

void MqttLink::start() {
  if (state_ != State::idle) return;
  init_library_once();
  // Clean session off: the broker keeps the subscription and queues QoS 1
  // notifications while the link is down.
  mosq_ = mosquitto_new(options_.client_id.c_str(), /*clean_session=*/false, this);
  if (mosq_ == nullptr) {
    last_error_ = "cannot create the MQTT client (out of memory or bad client id)";
    log_->error("notify: {}", last_error_);
    state_ = State::closed;
    return;
  }
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_connect_callback_set(mosq_, &MqttLink::on_connect_cb);
  mosquitto_disconnect_callback_set(mosq_, &MqttLink::on_disconnect_cb);
  mosquitto_message_callback_set(mosq_, &MqttLink::on_message_cb);
  mosquitto_subscribe_callback_set(mosq_, &MqttLink::on_subscribe_cb);
  mosquitto_log_callback_set(mosq_, &MqttLink::on_log_cb);
  if (!options_.alpn.empty()) {
    // Set once: libmosquitto copies the text and applies it to every attempt.
    const int rc = mosquitto_string_option(mosq_, MOSQ_OPT_TLS_ALPN, options_.alpn.c_str());
    if (rc != MOSQ_ERR_SUCCESS) {
      log_->error("notify: cannot offer the ALPN protocol {}: {}", options_.alpn,
                  mosquitto_strerror(rc));
    }
  }

  misc_timer_ = new uv_timer_t;
  uv_timer_init(loop_, misc_timer_);
  misc_timer_->data = this;
  uv_timer_start(
      misc_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<MqttLink*>(t->data);
        if (self == nullptr || self->mosq_ == nullptr) return;
        if (self->state_ == State::connecting &&
            uv_now(self->loop_) - self->connect_started_ms_ > kConnectTimeoutMs) {
          // Stop watching first: the next attempt closes this socket.
          close_and_free(self->poll_);
          self->poll_fd_ = -1;
          self->last_lib_error_ =
              "no CONNACK within " + std::to_string(kConnectTimeoutMs / 1000) + " s";
          self->lost(MOSQ_ERR_TIMEOUT);
          return;
        }
        if (self->state_ == State::connecting || self->state_ == State::connected) {
          const int rc = mosquitto_loop_misc(self->mosq_);
          if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) self->lost(rc);
          self->sync_poll();
        }
      },
      kMiscPeriodMs, kMiscPeriodMs);
  retry_timer_ = new uv_timer_t;
  uv_timer_init(loop_, retry_timer_);
  retry_timer_->data = this;
  attempt();
}

void MqttLink::close() {
  if (state_ == State::closed && mosq_ == nullptr) return;
  state_ = State::closed;
  // The poll is stopped before libmosquitto closes the socket it watches.
  close_and_free(poll_);
  poll_fd_ = -1;
  close_and_free(misc_timer_);
  close_and_free(retry_timer_);
  if (mosq_ != nullptr) {
    mosquitto_disconnect(mosq_);
    mosquitto_destroy(mosq_);
    mosq_ = nullptr;
  }
}

void MqttLink::attempt() {
  if (state_ == State::closed) return;
  state_ = State::connecting;
  last_lib_error_.clear();
  write_stalled_ = false;
  tcp_connected_ = false;
  tls_done_ = false;
  alpn_selected_.clear();
  broker_alert_.clear();
  connect_started_ms_ = uv_now(loop_);
  int rc = mosquitto_tls_set(mosq_, options_.cafile.c_str(), nullptr, options_.certfile.c_str(),
                             options_.keyfile.c_str(), nullptr);
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = mosquitto_tls_opts_set(mosq_, /*SSL_VERIFY_PEER*/ 1, "tlsv1.2", nullptr);
  }
  if (rc == MOSQ_ERR_SUCCESS) {
    rc = ever_attempted_ ? mosquitto_reconnect_async(mosq_)
                         : mosquitto_connect_async(mosq_, options_.host.c_str(), options_.port,
                                                   static_cast<int>(options_.keepalive_s));
    const int err = errno;
    ever_attempted_ = ever_attempted_ || rc == MOSQ_ERR_SUCCESS;
    // On loopback the connect, and even the TLS handshake, can fail inside
    // this call: tell a refused connection from a broker that hung up.
    note_connected_by_failure(rc, err);
    if (rc == MOSQ_ERR_ERRNO && last_lib_error_.empty()) last_lib_error_ = std::strerror(err);
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    lost(rc);
    return;
  }
  watch_tls();
  sync_poll();
}

// Follows this attempt's TLS handshake: whether it completed, the ALPN
// protocol the broker selected, and a fatal alert it sent. libmosquitto
// creates the SSL object inside the connect call and frees it when the
// connection ends, often inside the same read that saw the broker hang up,
// so the handshake is observed as it happens rather than asked afterwards.
// The SSL's app data slot is ours: libmosquitto keeps its pointer in an ex
// data index of its own.
void MqttLink::watch_tls() {
  auto* ssl = static_cast<SSL*>(mosquitto_ssl_get(mosq_));
  if (ssl == nullptr) return;
  SSL_set_app_data(ssl, this);
  SSL_set_info_callback(ssl, [](const SSL* s, int where, int value) {
    auto* self = static_cast<MqttLink*>(SSL_get_app_data(s));
    if (self == nullptr) return;
    if ((where & SSL_CB_HANDSHAKE_DONE) != 0) self->note_tls_done(s);
    if ((where & SSL_CB_READ_ALERT) == SSL_CB_READ_ALERT && (value >> 8) == SSL3_AL_FATAL) {
      self->broker_alert_ = SSL_alert_desc_string_long(value);
    }
  });
  if (SSL_is_init_finished(ssl) != 0) note_tls_done(ssl);
}

void MqttLink::note_tls_done(const ssl_st* ssl) {
  tls_done_ = true;
  tcp_connected_ = true;
  const unsigned char* proto = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl, &proto, &len);
  alpn_selected_.assign(reinterpret_cast<const char*>(proto), proto == nullptr ? 0 : len);
}

// Watches the socket libmosquitto has now: a new poll for a new socket, none
// for no socket, writable interest only while it has bytes to send.
void MqttLink::sync_poll() {
  if (state_ == State::closed || mosq_ == nullptr) return;
  if (state_ != State::connecting && state_ != State::connected) {
    close_and_free(poll_);
    poll_fd_ = -1;
    return;
  }
  const int fd = mosquitto_socket(mosq_);
  if (fd != poll_fd_) {
    close_and_free(poll_);
    poll_fd_ = -1;
    poll_events_ = 0;
    if (fd < 0) return;
    poll_ = new uv_poll_t;
    if (uv_poll_init_socket(loop_, poll_, fd) != 0) {
      delete poll_;
      poll_ = nullptr;
      return;
    }
    poll_->data = this;
    poll_fd_ = fd;
  }
  if (poll_ == nullptr) return;
  note_tcp_progress();
  const bool want_write = mosquitto_want_write(mosq_) && !write_stalled_;
  const int events = UV_READABLE | UV_DISCONNECT | (want_write ? UV_WRITABLE : 0);
  if (events == poll_events_) return;
  poll_events_ = events;
  uv_poll_start(poll_, events, [](uv_poll_t* p, int status, int ev) {
    auto* self = static_cast<MqttLink*>(p->data);
    if (self != nullptr) self->on_poll(status, ev);
  });
}

void MqttLink::on_poll(int status, int events) {
  if (mosq_ == nullptr || state_ == State::closed) return;
  if (state_ == State::connecting && poll_fd_ >= 0) {
    // An event without hang-up or error means the TCP connection was made
    // (a refused connect shows up as EPOLLIN|EPOLLHUP|EPOLLERR at once).
    if (status == 0 && (events & UV_DISCONNECT) == 0) tcp_connected_ = true;
    // libmosquitto does not notice a refused non-blocking connect: it keeps
    // retrying its TLS handshake on the dead socket. Ask the socket.
    int err = 0;
    socklen_t len = sizeof err;
    note_tcp_progress();
    if (::getsockopt(poll_fd_, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err != 0) {
      note_connected_by_failure(MOSQ_ERR_ERRNO, err);
      last_lib_error_ = std::strerror(err);
      lost(MOSQ_ERR_ERRNO);
      return;
    }
    if ((events & UV_DISCONNECT) != 0 || status < 0) {
      lost(MOSQ_ERR_CONN_LOST);
      return;
    }
  }
  int rc = MOSQ_ERR_SUCCESS;
  if (status < 0 || (events & UV_READABLE) != 0) rc = mosquitto_loop_read(mosq_, 1);
  int err = errno;
  if ((events & UV_READABLE) != 0) write_stalled_ = false;
  if (rc == MOSQ_ERR_SUCCESS && (events & UV_WRITABLE) != 0 && mosquitto_socket(mosq_) >= 0) {
    rc = mosquitto_loop_write(mosq_, 1);
    err = errno;
    // Still connecting and still "wanting" to write after a write chance:
    // wait for the broker's bytes before asking again.
    if (state_ == State::connecting && mosquitto_want_write(mosq_)) write_stalled_ = true;
  }
  if (rc != MOSQ_ERR_SUCCESS) {
    if (state_ == State::connecting) note_connected_by_failure(rc, err);
    lost(rc);
  }
  sync_poll();
}

// A failed attempt that still proves the TCP connection was made: a TLS or
// MQTT protocol failure, or the broker resetting the connection (a reset or a
// broken pipe needs an established connection; typically the broker dropped
// a client certificate it does not accept). On a busy machine all of that can
// be over before the first poll event, so the socket alone cannot tell it.
// Only a refusal or no answer means nothing is listening.
void MqttLink::note_connected_by_failure(int rc, int err) {
  if (rc == MOSQ_ERR_TLS || rc == MOSQ_ERR_TLS_HANDSHAKE || rc == MOSQ_ERR_PROTOCOL ||
      (rc == MOSQ_ERR_ERRNO && (err == ECONNRESET || err == EPIPE || err == EPROTO))) {
    tcp_connected_ = true;
  }
}

// Tells "nothing listening" from "the TLS handshake failed" in messages.
void MqttLink::note_tcp_progress() {
  if (tcp_connected_ || state_ != State::connecting || poll_fd_ < 0) return;
  sockaddr_storage peer{};
  socklen_t len = sizeof peer;
  if (::getpeername(poll_fd_, reinterpret_cast<sockaddr*>(&peer), &len) == 0) {
    tcp_connected_ = true;
  }
}

std::string MqttLink::describe_failure(int rc, bool was_connected) const {
  std::string what;
  if (was_connected) {
    what = rc == MOSQ_ERR_KEEPALIVE ? "no answer to keepalive pings" : "connection lost";
  } else if (rc == MOSQ_ERR_TIMEOUT) {
    what = "timed out";
  } else if (rc == MOSQ_ERR_CONN_REFUSED) {
    what = "the broker refused the MQTT connection";
  } else if (!tcp_connected_) {
    what = "cannot reach the broker (connection refused or nothing listening there)";
  } else if (!broker_alert_.empty()) {
    what = "the broker ended the TLS connection with the alert \"" + broker_alert_ + "\"";
  } else if (tls_done_) {
    what = "the TLS handshake succeeded but the broker did not take the MQTT connect";
  } else {
    what = "the TLS handshake or the MQTT connect failed";
  }
  if (!last_lib_error_.empty()) what += " (" + last_lib_error_ + ")";
  if (!was_connected && tcp_connected_ && rc != MOSQ_ERR_CONN_REFUSED) {
    what += "; " + failure_hint();
  }
  return what;
}

// What to check after a failed attempt that reached the broker.
std::string MqttLink::failure_hint() const {
  std::string certificates =
      "check [notify] cert_file and key_file (the broker must accept this client "
      "certificate) and ca_file (it must have signed the broker's certificate)";
  // A broker that serves MQTT and HTTPS on one port (AWS IoT on 443) tells
  // them apart by ALPN, and hangs up on an MQTT client it took for HTTPS.
  if (!tls_done_ || !broker_alert_.empty()) return certificates;
  if (options_.alpn.empty()) {
    return "no ALPN protocol was offered, and a broker that serves MQTT on an HTTPS port "
           "(AWS IoT on 443) needs one: set [notify] alpn = \"x-amzn-mqtt-ca\"; or " +
           certificates;
  }
  if (alpn_selected_ != options_.alpn) {
    return "the broker did not select the ALPN protocol \"" + options_.alpn +
           "\" ([notify] alpn): check it and the broker's port; or " + certificates;
  }
  return certificates;
}

// The connection attempt failed or the connection ended: say why once and
// retry after the next backoff delay.
void MqttLink::lost(int rc) {
  if (state_ == State::closed || state_ == State::waiting) return;
  const bool was_connected = state_ == State::connected;
  state_ = State::waiting;
  // Stop watching the socket now: the next attempt closes it (if libmosquitto
  // has not already) and opens another.
  close_and_free(poll_);
  poll_fd_ = -1;
  poll_events_ = 0;
  last_error_ = describe_failure(rc, was_connected);
  schedule_retry();
  const auto delay = uv_timer_get_due_in(retry_timer_);
  if (was_connected) {
    log_->warn("notify: MQTT link to {}:{} down: {}; reconnecting in {} ms", options_.host,
               options_.port, last_error_, delay);
  } else {
    log_->error("notify: cannot connect to the MQTT broker {}:{}: {}; retrying in {} ms",
                options_.host, options_.port, last_error_, delay);
  }
}

void MqttLink::schedule_retry() {
  if (retry_timer_ == nullptr) return;
  uv_timer_start(
      retry_timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<MqttLink*>(t->data);
        if (self != nullptr && self->state_ == State::waiting) self->attempt();
      },
      backoff_.next_delay_ms(), 0);
}

void MqttLink::on_connect_cb(mosquitto* m, void* p, int rc) {
  auto* self = static_cast<MqttLink*>(p);
  if (self->state_ == State::closed) return;
  if (rc != 0) {
    self->last_lib_error_ = mosquitto_connack_string(rc);
    return;  // libmosquitto drops the connection; lost() follows
  }
  self->state_ = State::connected;
  self->tcp_connected_ = true;
  self->write_stalled_ = false;
  self->last_error_.clear();
  self->backoff_.reset();
  ++self->connects_;
  self->subscribed_ = false;
  const int sub = mosquitto_subscribe(m, nullptr, self->options_.topic.c_str(), 1);
  if (sub != MOSQ_ERR_SUCCESS) {
    self->last_error_ =
        "cannot subscribe to " + self->options_.topic + ": " + mosquitto_strerror(sub);
    self->log_->error("notify: {}", self->last_error_);
  }
}

// The link is up once the broker has granted the subscription: from then
// on a notification published for the thing reaches us.
void MqttLink::on_subscribe_cb(mosquitto*, void* p, int, int count, const int* granted) {
  auto* self = static_cast<MqttLink*>(p);
  if (self->state_ != State::connected) return;
  if (count < 1 || granted == nullptr || granted[0] > 2) {
    self->last_error_ = "the broker refused the subscription to " + self->options_.topic +
                        " (does the thing's policy allow it?)";
    self->log_->error("notify: {}", self->last_error_);
    return;
  }
  self->subscribed_ = true;
  self->log_->info("notify: MQTT link up to {}:{} as {}, subscribed to {}", self->options_.host,
                   self->options_.port, self->options_.client_id, self->options_.topic);
}

void MqttLink::on_disconnect_cb(mosquitto*, void* p, int rc) {
  auto* self = static_cast<MqttLink*>(p);
  if (self->state_ == State::closed) return;
  // rc 0: we asked for it (close()); otherwise an error or the broker hung up.
  self->lost(rc == 0 ? MOSQ_ERR_CONN_LOST : rc);
}

void MqttLink::on_message_cb(mosquitto*, void* p, const mosquitto_message* msg) {
  auto* self = static_cast<MqttLink*>(p);
  if (self->state_ == State::closed || msg == nullptr || msg->topic == nullptr) return;
  const std::string_view payload(static_cast<const char*>(msg->payload),
                                 msg->payload != nullptr && msg->payloadlen > 0
                                     ? static_cast<std::size_t>(msg->payloadlen)
                                     : 0);
  self->on_message_(msg->topic, payload);
}

void MqttLink::on_log_cb(mosquitto*, void* p, int level, const char* text) {
  auto* self = static_cast<MqttLink*>(p);
  if (text == nullptr) return;
  if ((level & (MOSQ_LOG_ERR | MOSQ_LOG_WARNING)) != 0) {
    self->last_lib_error_ = text;
    if (self->last_lib_error_.size() > 300) self->last_lib_error_.resize(300);
  }
  // libmosquitto's debug lines name packets (PUBLISH, PUBACK, sizes), never payloads.
  self->log_->trace("notify: libmosquitto: {}", text);
}

}  // namespace tunneld::notify
