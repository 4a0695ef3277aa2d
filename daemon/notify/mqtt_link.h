// The MQTT client of tunneld's notify feature, on the daemon's libuv loop.
//
// libmosquitto runs in its non-threaded mode: its socket is watched by a
// uv_poll_t (readable always, writable while it has bytes queued), and a
// uv_timer_t calls mosquitto_loop_misc once a second for keepalive pings and
// their timeout. No thread is started. The connection is MQTT 3.1.1 over TLS
// with an X.509 client certificate; on connect the link subscribes with QoS 1
// to one topic. On request the TLS handshake offers one ALPN protocol (AWS IoT
// serves MQTT on port 443 to clients that offer "x-amzn-mqtt-ca"). A lost or
// refused connection is retried with exponential
// backoff and jitter (core/backoff.h); a session on the broker (clean session
// off) lets notifications published during a short outage arrive afterwards.
//
// Handles: MqttLink owns one misc timer, one retry timer and the poll of the
// current socket. Each is heap-allocated, closed through close() and freed
// from its close callback, so the link may be destroyed right after close().
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "backoff.h"

struct mosquitto;
struct mosquitto_message;
struct ssl_st;

namespace spdlog {
class logger;
}

namespace tunneld::notify {

struct MqttLinkOptions {
  std::string host;
  std::uint16_t port = 8883;
  std::string client_id;
  std::string cafile;    // the broker's CA (PEM)
  std::string certfile;  // this client's certificate (PEM)
  std::string keyfile;   // this client's key (PEM, mode 0600)
  std::string alpn;      // ALPN protocol offered in the TLS handshake; empty = none
  std::uint32_t keepalive_s = 60;
  std::string topic;  // subscribed with QoS 1
  std::uint32_t retry_initial_ms = 1000;
  std::uint32_t retry_max_ms = 60000;
  bool operator==(const MqttLinkOptions&) const = default;
};

class MqttLink {
 public:
  using OnMessage = std::function<void(std::string_view topic, std::string_view payload)>;

  MqttLink(uv_loop_t* loop, MqttLinkOptions options, OnMessage on_message,
           std::shared_ptr<spdlog::logger> logger);
  ~MqttLink();
  MqttLink(const MqttLink&) = delete;
  MqttLink& operator=(const MqttLink&) = delete;

  // Starts connecting; failures are logged and retried, never thrown.
  void start();
  // Disconnects and closes every handle. Safe to call twice.
  void close();

  const MqttLinkOptions& options() const { return options_; }
  // Connected and subscribed (the broker granted the subscription).
  bool connected() const { return state_ == State::connected && subscribed_; }
  // Why the last attempt failed or the link was lost; empty once connected.
  const std::string& last_error() const { return last_error_; }
  std::uint64_t connects() const { return connects_; }

 private:
  enum class State { idle, connecting, connected, waiting, closed };

  void attempt();
  void sync_poll();
  void on_poll(int status, int events);
  void lost(int rc);
  void note_tcp_progress();
  void note_connected_by_failure(int rc, int err);
  void schedule_retry();
  std::string describe_failure(int rc, bool was_connected) const;

  static void on_connect_cb(mosquitto* m, void* self, int rc);
  static void on_disconnect_cb(mosquitto* m, void* self, int rc);
  static void on_message_cb(mosquitto* m, void* self, const mosquitto_message* msg);
  static void on_subscribe_cb(mosquitto* m, void* self, int mid, int count, const int* granted);
  static void on_log_cb(mosquitto* m, void* self, int level, const char* text);
  void watch_tls();
  void note_tls_done(const ssl_st* ssl);
  std::string failure_hint() const;

  uv_loop_t* loop_;
  MqttLinkOptions options_;
  OnMessage on_message_;
  std::shared_ptr<spdlog::logger> log_;
  mosquitto* mosq_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  int poll_fd_ = -1;
  int poll_events_ = 0;
  uv_timer_t* misc_timer_ = nullptr;
  uv_timer_t* retry_timer_ = nullptr;
  tunnel::Backoff backoff_;
  State state_ = State::idle;
  bool ever_attempted_ = false;
  bool subscribed_ = false;  // this connection's subscription was granted
  // While the TLS handshake runs, libmosquitto reports bytes to write (its
  // queued CONNECT) that it will only send after the handshake, which reads
  // advance: writable interest then would wake the loop in a busy spin.
  bool write_stalled_ = false;
  std::uint64_t connect_started_ms_ = 0;
  bool tcp_connected_ = false;  // this attempt's TCP connection was established
  // This attempt's TLS handshake completed, and what came of it: the ALPN
  // protocol the broker selected (empty: none) and the last TLS alert it sent.
  bool tls_done_ = false;
  std::string alpn_selected_;
  std::string broker_alert_;
  std::string last_error_;
  std::string last_lib_error_;  // last error line libmosquitto logged
  std::uint64_t connects_ = 0;
};

}  // namespace tunneld::notify
