// tunnel-relay's side of the notify flow (docs/notify.md): when the admin API
// opens a tunnel for a thing, the destination's access token is published on
// $aws/things/<thing>/tunnels/notify, as the IoT service does.
//
// A test and self-hosting tool, so kept simple: libmosquitto's own network
// thread (mosquitto_loop_start) with its built-in reconnect; publish() is
// called from the relay's loop and only queues. Bounded: at most
// kMaxInflight QoS 1 messages in flight; publish() fails instead of queueing
// without limit while the broker is away.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "admin_api.h"

struct mosquitto;

namespace relay {

struct NotifyPublisherConfig {
  std::string host;
  int port = 8883;
  std::string cafile;    // the broker's CA
  std::string certfile;  // the relay's client certificate
  std::string keyfile;
  std::string client_id = "tunnel-relay";
  std::string region = "us-east-1";  // written into the notification
};

class NotifyPublisher final : public TunnelNotifier {
 public:
  static constexpr int kMaxInflight = 32;
  // Starts connecting in libmosquitto's thread. Throws std::runtime_error when
  // the settings are unusable (unreadable files).
  explicit NotifyPublisher(NotifyPublisherConfig config);
  ~NotifyPublisher();
  NotifyPublisher(const NotifyPublisher&) = delete;
  NotifyPublisher& operator=(const NotifyPublisher&) = delete;

  // Waits up to `ms` for the first connection; false if it did not come.
  bool wait_connected(int ms);
  // Publishes the notification (QoS 1). False with `error` set (no token in
  // it) when not connected or too many messages are in flight.
  bool publish(const std::string& thing, const std::string& destination_token,
               const std::vector<std::string>& services, std::string& error);
  bool notify(const std::string& thing, const std::string& destination_token,
              const std::vector<std::string>& services, std::string& error) override {
    return publish(thing, destination_token, services, error);
  }
  const NotifyPublisherConfig& config() const { return config_; }

 private:
  static void on_connect(mosquitto*, void* self, int rc);
  static void on_disconnect(mosquitto*, void* self, int rc);
  static void on_publish(mosquitto*, void* self, int mid);

  NotifyPublisherConfig config_;
  mosquitto* mosq_ = nullptr;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool connected_ = false;
  int inflight_ = 0;
};

// The notification's JSON (pure; the token is in it, so never log it).
std::string notification_payload(const std::string& destination_token, const std::string& region,
                                 const std::vector<std::string>& services);

}  // namespace relay
