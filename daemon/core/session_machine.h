// The local-proxy state machine for protocol V1, V2 and V3 (docs/protocol.md
// sections 4-6), pure: records and local events in, effects out. No sockets,
// no clocks, no libuv: the proxy loop (proxy_session.h) feeds it and carries
// out its effects; the connection table (connection_table.h) holds the local connections.
//
// Versions. The link reports the subprotocol the service chose
// (on_link_up(version)). What the *peer* speaks is not negotiated, so the
// machine learns it from the peer's records:
//  - a destination sees it in the first STREAM_START: no connectionId means a
//    V1/V2 source (one connection per service); it then answers without
//    connectionId too;
//  - a source speaking V3 starts the first connection of a service with
//    STREAM_START(connectionId 1) and holds further local clients (can_accept
//    is false) until the destination proves it is V3 (a record carrying a
//    connectionId: the answer DATA, a CONNECTION_RESET). A record without one
//    proves a V1/V2 destination: the session then carries one connection per
//    service at a time, as V1 does. `assume_v3_peer` (-y V3) skips the wait.
// Service ids: a V2/V3 link carries serviceId on every stream record when the
// session has named services (or the service announced one); a V1 link never
// does. SERVICE_IDS must name exactly the configured services.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "record_codec.h"

namespace tunnel {

enum class Mode { source, destination };
std::string_view to_string(Mode m);

// One local connection as the machine knows it. `service` is the configured
// service id ("" for the single unnamed service of a plain -s PORT / -d PORT
// session); connection_id is 1 for the first (or only) connection of a stream.
struct ConnRef {
  std::string service;
  std::int32_t stream_id = 0;
  std::uint32_t connection_id = 0;
  bool operator==(const ConnRef&) const = default;
  bool operator<(const ConnRef& o) const {
    return std::tie(service, stream_id, connection_id) <
           std::tie(o.service, o.stream_id, o.connection_id);
  }
};

// Where a DATA record goes on the wire. Empty service_id / connection_id 0 are
// not encoded (docs/protocol.md section 3).
struct WireAddress {
  std::string_view service_id;
  std::int32_t stream_id = 0;
  std::uint32_t connection_id = 0;
};

// What the machine asks the outside world to do. Implemented by the proxy loop
// and by recording fakes in tests.
class SessionEffects {
 public:
  virtual ~SessionEffects() = default;
  // Send a control record (STREAM_START, STREAM_RESET, CONNECTION_*).
  virtual void send_record(const Message& m) = 0;
  // Send one DATA record; chunk.size() <= the machine's max payload.
  virtual void send_data(const WireAddress& to, std::string_view chunk) = 0;
  // Destination: connect to the local target of c.service.
  virtual void open_local(const ConnRef& c) = 0;
  // Write bytes to this local connection. May be called while open_local is
  // still in progress: the connection queues them.
  virtual void write_local(const ConnRef& c, std::string_view bytes) = 0;
  // Close this local connection. flush = write what is queued first (peer
  // closed gracefully); otherwise abort (reset, link lost).
  virtual void close_local(const ConnRef& c, bool flush) = 0;
  // A protocol violation by the service: the WebSocket must be dropped.
  // `reason` is one line for the log.
  virtual void protocol_error(std::string reason) = 0;
  // The session cannot work with this tunnel whatever the retries (service
  // set mismatch, several services on a V1 link): end it, failed, with this
  // one-line reason.
  virtual void session_error(std::string reason) = 0;
  // Source: a local client that had to wait may now be accepted (a stream
  // ended, the peer proved it is V3). The loop retries its pending accepts.
  virtual void accept_ready() {}
  // A non-fatal oddity worth a log line (ignored record and why).
  virtual void note(std::string_view what) { (void)what; }
  // Source: call SessionMachine::on_nudge_due(c) once, after delay_ms. At
  // most one is pending; a new call replaces it.
  virtual void schedule_nudge(const ConnRef& c, std::uint32_t delay_ms) {
    (void)c;
    (void)delay_ms;
  }
};

struct SessionCounters {
  std::uint64_t records_in = 0;
  std::uint64_t records_out = 0;
  std::uint64_t streams_started = 0;
  std::uint64_t connections_started = 0;
  std::uint64_t connections_refused = 0;
  std::uint64_t stale_records_ignored = 0;
};

// What the peer is known to speak about connections.
enum class PeerConnections { unknown, single, multiple };

struct MachineOptions {
  // Configured service ids; empty = one unnamed service.
  std::vector<std::string> services;
  std::size_t max_payload = kMaxPayloadSize;
  // Simultaneous connections per service (V3); the next one is refused.
  std::size_t max_connections = 128;
  // Source: the destination is known to speak V3 (-y V3): no waiting.
  bool assume_v3_peer = false;
};

class SessionMachine {
 public:
  SessionMachine(Mode mode, SessionEffects& effects, MachineOptions options);
  SessionMachine(Mode mode, SessionEffects& effects, std::size_t max_payload = kMaxPayloadSize);

  Mode mode() const { return mode_; }

  // --- the WebSocket link ---
  // version: 1, 2 or 3, from the subprotocol the service chose.
  void on_link_up(int version = 1);
  // Link lost: every stream is dead; local connections are aborted.
  void on_link_down();
  // One record from the service. Violations end in effects.protocol_error().
  void on_record(Message& m);

  // --- the local side ---
  // Source: whether a local client of `service` may be accepted now (false:
  // leave it pending; accept_ready() says when to ask again).
  bool can_accept(std::string_view service) const;
  // Source: a local client of `service` was accepted. Starts it on the wire
  // (STREAM_START or CONNECTION_START) and returns its ref; nullopt = refused
  // (link down, connection limit, ids exhausted): close the client.
  std::optional<ConnRef> on_local_accepted(std::string_view service = {});
  // Destination: the local connect finished.
  void on_local_connected(const ConnRef& c);
  void on_local_connect_failed(const ConnRef& c);
  // Bytes read from the local connection: sent as DATA records of at most
  // max_payload bytes. Ignored when c is not a live connection.
  void on_local_data(const ConnRef& c, std::string_view bytes);
  // The local connection closed (EOF or error): CONNECTION_RESET (V3 peer) or
  // STREAM_RESET (V1/V2 peer) if still live.
  void on_local_closed(const ConnRef& c);
  // Source: the delay asked for by schedule_nudge() has passed.
  void on_nudge_due(const ConnRef& c);

  // A source follows a connection's first DATA with empty DATA records
  // ("nudges") at these delays, measured from that first DATA. The reference
  // localproxy as destination leaves records that share a WebSocket read with
  // STREAM_START unprocessed until its next read completes, i.e. until some
  // later message arrives; a nudge is that later message (docs/interop.md).
  // Each connection arms the schedule once, with its first DATA; a newer
  // connection's first DATA replaces a pending schedule (its nudges come
  // later, which releases whatever the peer holds of either).
  static constexpr std::uint32_t kNudgeDelaysMs[] = {20, 200, 2000};

  // --- observation ---
  // The active stream of the first service (destination: also while its
  // local connect runs).
  std::optional<std::int32_t> active_stream() const;
  std::optional<std::int32_t> active_stream(std::string_view service) const;
  bool live(const ConnRef& c) const;
  std::size_t connection_count() const;
  bool link_up() const { return link_up_; }
  int version() const { return version_; }
  PeerConnections peer_connections() const { return peer_; }
  const SessionCounters& counters() const { return counters_; }
  // Service id of the first service on the wire (announced by SERVICE_IDS or
  // configured), else empty.
  const std::string& service_id() const;
  // The serviceId the wire uses for a configured service ("" = none).
  std::string_view wire_service_id(std::string_view service) const;
  const std::vector<std::string>& services() const { return service_names_; }

 private:
  struct Service {
    std::string id;       // configured
    std::string wire_id;  // on the wire ("" = no serviceId)
    std::int32_t stream = 0;
    struct Conn {
      bool connecting = false;  // destination: the local connect is pending
      bool sent_data = false;   // source: its first DATA went out (nudges armed)
    };
    std::map<std::uint32_t, Conn> conns;  // by connection id
    std::uint32_t next_conn = 1;
  };

  Mode mode_;
  SessionEffects& effects_;
  MachineOptions options_;
  std::vector<std::string> service_names_;
  std::vector<Service> services_;
  bool link_up_ = false;
  int version_ = 1;
  PeerConnections peer_ = PeerConnections::unknown;
  std::int32_t last_stream_id_ = 0;
  SessionCounters counters_;
  // Source: the connection whose nudges are pending (the one that sent the
  // newest first DATA), and how many of them were sent.
  std::optional<ConnRef> nudge_;
  std::size_t nudges_sent_ = 0;

  Service* find(std::string_view configured);
  const Service* find(std::string_view configured) const;
  Service* resolve_incoming(const Message& m);
  // Whether stream records we send carry a connectionId: a source speaking V3
  // does unless the peer proved V1/V2; a destination only for a V3 peer.
  bool send_conn_ids() const {
    return version_ >= 3 && (mode_ == Mode::source ? peer_ != PeerConnections::single
                                                   : peer_ == PeerConnections::multiple);
  }
  void learn_peer(bool has_connection_id);
  void on_data(Service& s, Message& m);
  void on_stream_start(Service& s, const Message& m);
  void on_connection_start(Service& s, const Message& m);
  void on_stream_reset(Service& s, std::int32_t id);
  void on_connection_reset(Service& s, const Message& m);
  void on_service_ids(const Message& m);
  // State is updated before effects run, so an effect that calls back into
  // the machine (e.g. close_local -> on_local_closed) sees the new state.
  void end_stream(Service& s, bool flush);
  void end_connection(Service& s, std::uint32_t conn, bool flush);
  void ignore_stale(std::string_view what, const Service& s, std::int32_t id);
  void send_control(Message::Type type, const Service& s, std::int32_t stream_id,
                    std::uint32_t connection_id = 0);
  ConnRef ref(const Service& s, std::uint32_t conn) const { return {s.id, s.stream, conn}; }
};

}  // namespace tunnel
