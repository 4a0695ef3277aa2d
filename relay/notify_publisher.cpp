#include "notify_publisher.h"

#include <mosquitto.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace relay {
namespace {

std::shared_ptr<spdlog::logger> log() {
  auto l = spdlog::get("admin");
  return l ? l : spdlog::default_logger();
}

}  // namespace

std::string notification_payload(const std::string& destination_token, const std::string& region,
                                 const std::vector<std::string>& services) {
  return nlohmann::json{{"clientAccessToken", destination_token},
                        {"clientMode", "destination"},
                        {"region", region},
                        {"services", services}}
      .dump();
}

NotifyPublisher::NotifyPublisher(NotifyPublisherConfig config) : config_(std::move(config)) {
  mosquitto_lib_init();
  mosq_ = mosquitto_new(config_.client_id.c_str(), /*clean_session=*/true, this);
  if (mosq_ == nullptr) throw std::runtime_error("--notify-broker: cannot create the MQTT client");
  mosquitto_int_option(mosq_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
  mosquitto_connect_callback_set(mosq_, &NotifyPublisher::on_connect);
  mosquitto_disconnect_callback_set(mosq_, &NotifyPublisher::on_disconnect);
  mosquitto_publish_callback_set(mosq_, &NotifyPublisher::on_publish);
  mosquitto_max_inflight_messages_set(mosq_, kMaxInflight);
  mosquitto_reconnect_delay_set(mosq_, 1, 30, true);
  int rc = mosquitto_tls_set(mosq_, config_.cafile.c_str(), nullptr, config_.certfile.c_str(),
                             config_.keyfile.c_str(), nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    mosquitto_destroy(mosq_);
    throw std::runtime_error(
        "--notify-cafile/--notify-cert/--notify-key: cannot use these files: " +
        std::string(mosquitto_strerror(rc)));
  }
  rc = mosquitto_connect_async(mosq_, config_.host.c_str(), config_.port, 30);
  if (rc != MOSQ_ERR_SUCCESS) {
    log()->warn("notify broker {}:{}: {} (retrying)", config_.host, config_.port,
                mosquitto_strerror(rc));
  }
  rc = mosquitto_loop_start(mosq_);
  if (rc != MOSQ_ERR_SUCCESS) {
    mosquitto_destroy(mosq_);
    throw std::runtime_error("--notify-broker: cannot start the MQTT thread: " +
                             std::string(mosquitto_strerror(rc)));
  }
}

NotifyPublisher::~NotifyPublisher() {
  mosquitto_disconnect(mosq_);
  mosquitto_loop_stop(mosq_, /*force=*/false);
  mosquitto_destroy(mosq_);
}

bool NotifyPublisher::wait_connected(int ms) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return connected_; });
}

bool NotifyPublisher::publish(const std::string& thing, const std::string& destination_token,
                              const std::vector<std::string>& services, std::string& error) {
  {
    std::lock_guard lock(mutex_);
    if (!connected_) {
      error = "the notify broker " + config_.host + ":" + std::to_string(config_.port) +
              " is not connected";
      return false;
    }
    if (inflight_ >= kMaxInflight) {
      error = "too many notifications waiting for the broker's acknowledgement";
      return false;
    }
    ++inflight_;
  }
  const std::string topic = "$aws/things/" + thing + "/tunnels/notify";
  const std::string payload = notification_payload(destination_token, config_.region, services);
  const int rc = mosquitto_publish(mosq_, nullptr, topic.c_str(), static_cast<int>(payload.size()),
                                   payload.data(), 1, false);
  if (rc != MOSQ_ERR_SUCCESS) {
    std::lock_guard lock(mutex_);
    --inflight_;
    error = std::string("publishing the notification failed: ") + mosquitto_strerror(rc);
    return false;
  }
  log()->info("notification published on {}", topic);
  return true;
}

void NotifyPublisher::on_connect(mosquitto*, void* p, int rc) {
  auto* self = static_cast<NotifyPublisher*>(p);
  if (rc != 0) {
    log()->warn("notify broker refused the connection: {}", mosquitto_connack_string(rc));
    return;
  }
  log()->info("notify broker {}:{} connected", self->config_.host, self->config_.port);
  std::lock_guard lock(self->mutex_);
  self->connected_ = true;
  self->cv_.notify_all();
}

void NotifyPublisher::on_disconnect(mosquitto*, void* p, int rc) {
  auto* self = static_cast<NotifyPublisher*>(p);
  if (rc != 0) log()->warn("notify broker connection lost: {}", mosquitto_strerror(rc));
  std::lock_guard lock(self->mutex_);
  self->connected_ = false;
  self->inflight_ = 0;  // unacknowledged messages are resent by libmosquitto or lost with it
}

void NotifyPublisher::on_publish(mosquitto*, void* p, int) {
  auto* self = static_cast<NotifyPublisher*>(p);
  std::lock_guard lock(self->mutex_);
  if (self->inflight_ > 0) --self->inflight_;
}

}  // namespace relay
