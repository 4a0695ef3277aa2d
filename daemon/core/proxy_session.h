// One tunnel session: the V1/V2/V3 machine, its WebSocket link to the
// service and its local TCP side (the stream table: every local connection
// of every service), running on a libuv loop. localproxy hosts one; tunneld
// hosts many on the same loop and LoopContext.
//
// Flow control (bounded memory, both directions; docs/architecture.md):
//  - tunnel-bound: each connection holds at most one read chunk; chunks are
//    turned into records in round-robin order across connections while fewer
//    than ws_write_buffer_size bytes wait for the WebSocket.
//  - local-bound: one connection (V1/V2 peer): the WebSocket is paused while
//    more than tcp.write_buffer_limit bytes wait for the local connection.
//    Several (V3 peer): a connection holding more than 4x that limit is
//    reset alone; the WebSocket is paused only while all of them together
//    hold more than 16x the limit.
#pragma once

#include <uv.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "backoff.h"
#include "connection_table.h"
#include "local_connection.h"
#include "loop_context.h"
#include "proxy_config.h"
#include "record_codec.h"
#include "service_link.h"
#include "session_machine.h"

namespace spdlog {
class logger;
}

namespace tunnel {

enum class SessionState { idle, connecting, connected, backing_off, stopping, ended };
std::string_view to_string(SessionState s);

struct SessionOutcome {
  bool ok = true;       // closed by the service or stopped on request
  std::string reason;   // one line, no secrets
  int http_status = 0;  // of a rejected handshake, else 0
};

struct SessionStats {
  std::uint64_t bytes_to_service = 0;    // payload bytes read locally and sent
  std::uint64_t bytes_from_service = 0;  // payload bytes received and written locally
  std::uint64_t reconnects = 0;
  std::uint64_t connects = 0;
  std::int64_t last_rtt_us = -1;
  std::string channel_id;
  std::string subprotocol;
  std::string last_error;
  std::string local_address;  // source: listening address; destination: last target
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point connected_since;
};

class ProxySession final : public ServiceLinkEvents,
                           public SessionEffects,
                           public LocalConnectionEvents {
 public:
  // Called once, from a libuv callback (never inside a link callback), when the session has
  // ended and released every handle: the owner may destroy it there.
  using DoneFn = std::function<void(const SessionOutcome&)>;
  // Source: called once the listener is bound, with the real port.
  using ListeningFn = std::function<void(std::uint16_t port)>;
  // Called on every connection to the service, before anything is logged
  // about it, with the channel-id the service gave it (empty when none).
  using ChannelFn = std::function<void(const std::string& channel_id)>;

  ProxySession(LoopContext& ctx, ProxyConfig config, DoneFn done);
  ~ProxySession() override;
  ProxySession(const ProxySession&) = delete;
  ProxySession& operator=(const ProxySession&) = delete;

  void set_on_listening(ListeningFn fn) { on_listening_ = std::move(fn); }
  void set_on_channel(ChannelFn fn) { on_channel_ = std::move(fn); }
  // Sets the logger (tunneld passes one carrying the session's fields).
  void set_logger(std::shared_ptr<spdlog::logger> log) { log_ = std::move(log); }

  void start();
  // Graceful stop: reset the active stream, close the WebSocket with 1000.
  void stop();

  SessionState state() const { return state_; }
  // Meaningful once the session is ending (state stopping or ended).
  const SessionOutcome& outcome() const { return outcome_; }
  bool finished() const { return finished_; }
  const SessionStats& stats() const { return stats_; }
  const ProxyConfig& config() const { return config_; }
  // Source: the port of the first service's listener (0 until bound).
  std::uint16_t listen_port() const;
  // Source: (service id, bound port) of every listener, once listening.
  std::vector<std::pair<std::string, std::uint16_t>> listen_ports() const;
  const ConnectionTable& connections() const { return connections_; }
  const SessionMachine& machine() const { return machine_; }
  std::optional<std::int32_t> active_stream() const { return machine_.active_stream(); }

 private:
  // ServiceLinkEvents
  void on_link_open(const std::string& subprotocol, const std::string& channel_id) override;
  void on_link_data(std::span<const std::uint8_t> bytes) override;
  void on_link_drained() override;
  void on_link_rtt(std::int64_t rtt_us) override;
  void on_link_closed(const LinkEnd& end) override;
  // SessionEffects
  void send_record(const Message& m) override;
  void send_data(const WireAddress& to, std::string_view chunk) override;
  void open_local(const ConnRef& c) override;
  void write_local(const ConnRef& c, std::string_view bytes) override;
  void close_local(const ConnRef& c, bool flush) override;
  void protocol_error(std::string reason) override;
  void session_error(std::string reason) override;
  void accept_ready() override;
  void note(std::string_view what) override;
  void schedule_nudge(const ConnRef& c, std::uint32_t delay_ms) override;
  // LocalConnectionEvents
  void on_local_connected(LocalConnection& c) override;
  void on_local_connect_failed(LocalConnection& c, const std::string& reason) override;
  void on_local_read(LocalConnection& c, std::string_view bytes) override;
  void on_local_closed(LocalConnection& c, const std::string& reason) override;
  void on_local_drained(LocalConnection& c) override;

  void connect_ws();
  void schedule_reconnect();
  void kill_link(const std::string& why);
  struct Listener;
  void listen_attempt();
  bool bind_listener(Listener& l, std::string& error);
  void try_accept(Listener& l);
  void try_accept_all();
  void pump_local();
  // Several connections share the link (a V3 peer): local-bound flow control
  // per connection (check_local_bound).
  bool several_connections() const;
  void check_stuck_readers();
  static constexpr int kStuckReaderMs = 3000;
  static constexpr std::uint64_t kStuckCheckMs = 250;
  // Payload bytes per DATA record (the setting, within the protocol's limit).
  std::size_t data_chunk_size() const;
  void check_local_bound(ConnectionEntry& e);
  void maybe_resume_rx();
  void abort_all_local();
  void finish(SessionOutcome outcome);
  void close_handles();
  void release_handle();
  void set_rx_paused(bool paused);
  void schedule_accept();

  LoopContext& ctx_;
  ProxyConfig config_;
  DoneFn done_;
  ListeningFn on_listening_;
  ChannelFn on_channel_;
  std::shared_ptr<spdlog::logger> log_;
  SessionMachine machine_;
  RecordDecoder decoder_;
  Backoff backoff_;
  SessionState state_ = SessionState::idle;
  SessionStats stats_;
  SessionOutcome outcome_;

  // link to the service
  ServiceLink link_;
  bool established_ = false;
  bool in_receive_ = false;
  int consecutive_failures_ = 0;
  bool rx_paused_ = false;

  // local side
  struct Listener {
    ProxySession* owner = nullptr;
    std::string service;
    HostPort address;
    uv_tcp_t* tcp = nullptr;  // heap: re-created per bind attempt
    bool pending = false;     // a client waits in the backlog
    std::uint16_t port = 0;
  };
  ConnectionTable connections_;
  std::vector<std::unique_ptr<Listener>> listeners_;  // source: one per service
  bool listening_ = false;                            // every listener is bound
  int listen_attempts_ = 0;

  uv_timer_t retry_timer_{};   // reconnect backoff, listen retry
  uv_timer_t accept_timer_{};  // deferred accept (never re-enter the machine)
  uv_timer_t nudge_timer_{};   // SessionMachine::on_nudge_due
  uv_timer_t stuck_timer_{};   // check_stuck_readers, while a connection is over its share
  ConnRef nudge_conn_;
  int open_handles_ = 0;
  bool handles_closing_ = false;
  bool finished_ = false;
};

}  // namespace tunnel
