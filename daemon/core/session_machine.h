// The V1 local-proxy state machine (protocol.md section 4), pure: records and
// local events in, effects out. No sockets, no clocks, no libuv: the proxy
// loop (proxy_session.h) feeds it and carries out its effects.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "record_codec.h"

namespace tunnel {

enum class Mode { source, destination };
std::string_view to_string(Mode m);

// What the machine asks the outside world to do. Implemented by the proxy loop
// and by recording fakes in tests.
class SessionEffects {
 public:
  virtual ~SessionEffects() = default;
  // Send a control record (STREAM_START, STREAM_RESET) to the service.
  virtual void send_record(const Message& m) = 0;
  // Send one DATA record; chunk.size() <= the machine's max payload.
  virtual void send_data(std::int32_t stream_id, std::string_view chunk) = 0;
  // Destination: connect to the local service for this stream.
  virtual void open_local(std::int32_t stream_id) = 0;
  // Write bytes to the local connection of this stream. May be called while
  // open_local is still in progress: the connection queues them.
  virtual void write_local(std::int32_t stream_id, std::string&& bytes) = 0;
  // Close the local connection of this stream. flush = write what is queued
  // first (peer closed gracefully); otherwise abort (reset, link lost).
  virtual void close_local(std::int32_t stream_id, bool flush) = 0;
  // A protocol violation by the service: the WebSocket must be dropped.
  // `reason` is one line for the log.
  virtual void protocol_error(std::string reason) = 0;
  // A non-fatal oddity worth a log line (ignored record and why).
  virtual void note(std::string_view what) { (void)what; }
  // Source: call SessionMachine::on_nudge_due(stream_id) once, after
  // delay_ms. At most one is pending; a new call replaces it.
  virtual void schedule_nudge(std::int32_t stream_id, std::uint32_t delay_ms) = 0;
};

struct SessionCounters {
  std::uint64_t records_in = 0;
  std::uint64_t records_out = 0;
  std::uint64_t streams_started = 0;
  std::uint64_t stale_records_ignored = 0;
};

class SessionMachine {
 public:
  SessionMachine(Mode mode, SessionEffects& effects, std::size_t max_payload = kMaxPayloadSize);

  Mode mode() const { return mode_; }

  // --- the WebSocket link ---
  void on_link_up();
  // Link lost: the active stream is dead; its local connection is aborted.
  void on_link_down();
  // One record from the service. Violations end in effects.protocol_error().
  void on_record(Message& m);

  // --- the local side ---
  // Source: a local client was accepted. Picks a fresh stream id (never reused,
  // never 0), sends STREAM_START and returns the id. An active stream, if any,
  // is reset first (V1 carries one stream).
  std::int32_t on_local_accepted();
  // Destination: the local connect for stream_id finished.
  void on_local_connected(std::int32_t stream_id);
  void on_local_connect_failed(std::int32_t stream_id);
  // Bytes read from the local connection: sent as DATA records of at most
  // max_payload bytes. Ignored when stream_id is not the active stream.
  void on_local_data(std::int32_t stream_id, std::string_view bytes);
  // The local connection closed (EOF or error): STREAM_RESET if still active.
  void on_local_closed(std::int32_t stream_id);
  // Source: the delay asked for by schedule_nudge() has passed.
  void on_nudge_due(std::int32_t stream_id);

  // After STREAM_START, a source follows its first DATA with empty DATA
  // records ("nudges") at these delays, measured from that first DATA. The
  // reference localproxy as destination leaves records that share a
  // WebSocket read with STREAM_START unprocessed until its next read
  // completes, i.e. until some later message arrives; a nudge is that later
  // message (docs/interop.md).
  static constexpr std::uint32_t kNudgeDelaysMs[] = {20, 200, 2000};

  // --- observation ---
  // The active stream (destination: also while its local connect runs).
  std::optional<std::int32_t> active_stream() const;
  bool link_up() const { return link_up_; }
  const SessionCounters& counters() const { return counters_; }
  // Service id announced by SERVICE_IDS (V1 accepts at most one), else empty.
  const std::string& service_id() const { return service_id_; }

 private:
  Mode mode_;
  SessionEffects& fx_;
  std::size_t max_payload_;
  bool link_up_ = false;
  std::int32_t active_ = 0;  // 0 = none
  bool connecting_ = false;  // destination: open_local issued, not finished
  std::int32_t last_stream_id_ = 0;
  // Source: the stream whose nudges are armed (0: none), and how many of
  // them were sent.
  std::int32_t nudge_stream_ = 0;
  std::size_t nudges_sent_ = 0;
  std::string service_id_;
  SessionCounters counters_;

  void on_data(Message& m);
  void on_stream_start(std::int32_t id);
  void on_stream_reset(std::int32_t id);
  void on_service_ids(const Message& m);
  // State is updated before effects run, so an effect that calls back into
  // the machine (e.g. close_local -> on_local_closed) sees the new state.
  void forget_active();
  void ignore_stale(std::string_view what, std::int32_t id);
  void send_control(Message::Type type, std::int32_t stream_id);
};

}  // namespace tunnel
