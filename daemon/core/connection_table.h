// The local connections of one session, keyed by service, stream and
// connection id (docs/protocol.md sections 5 and 6), with what each one holds:
//
//  - tunnel-bound: one read chunk at most per connection ("one buffer in
//    flight per direction"). A connection with bytes waiting stops reading
//    its socket; the session takes chunks in round-robin order across the
//    connections (next_ready / consumed), so one busy connection cannot
//    starve the others of the WebSocket.
//  - local-bound: the LocalConnection's own write queue. The table sums them
//    so the session can bound its memory (docs/architecture.md, "Memory and
//    stuck connections").
//
// It owns no libuv handle: the LocalConnections close themselves. A null
// connection pointer is allowed (unit tests).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "session_machine.h"

namespace tunnel {

class LocalConnection;

struct ConnectionEntry {
  ConnRef ref;
  LocalConnection* conn = nullptr;
  std::string pending;  // tunnel-bound bytes not yet handed to the machine
  std::size_t pending_off = 0;
  bool queued = false;  // in the round-robin queue
  std::uint64_t bytes_to_tunnel = 0;
  std::uint64_t bytes_from_tunnel = 0;
  std::chrono::steady_clock::time_point started;
  std::string peer;
  // Local-bound flow control (stuck_connections): the smallest local-bound
  // backlog seen since the connection went over the limit, and when it last
  // shrank.
  std::size_t over_low = 0;
  std::chrono::steady_clock::time_point last_progress;

  std::size_t pending_bytes() const { return pending.size() - pending_off; }
};

class ConnectionTable {
 public:
  ConnectionTable() = default;
  ConnectionTable(const ConnectionTable&) = delete;
  ConnectionTable& operator=(const ConnectionTable&) = delete;

  // Replaces an entry with the same ref (the caller closed the old one).
  ConnectionEntry& add(
      const ConnRef& ref, LocalConnection* conn,
      std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now());
  ConnectionEntry* find(const ConnRef& ref);
  ConnectionEntry* find(const LocalConnection* conn);
  // Forgets the entry; returns its connection for the caller to close.
  LocalConnection* remove(const ConnRef& ref);
  // Forgets every entry; returns their connections.
  std::vector<LocalConnection*> take_all();

  // Tunnel-bound bytes read from e's socket: kept, and the socket paused
  // until they have been consumed.
  void stash(ConnectionEntry& e, std::string_view bytes);
  // The next connection with bytes waiting, in round-robin order; null if none.
  ConnectionEntry* next_ready();
  // True when no connection has bytes waiting: a connection that just read
  // may then hand its bytes on at once, without the stash copy, and still
  // not jump the round-robin queue.
  bool none_waiting() const { return ready_.empty(); }
  // n bytes of e's waiting bytes were sent. e goes to the back of the queue if
  // some remain; otherwise its socket reads again.
  void consumed(ConnectionEntry& e, std::size_t n);

  // Local-bound bytes queued in every connection's write queue.
  std::size_t local_bound_bytes() const;

  // How many local-bound bytes a connection holds (its write queue; unit
  // tests pass their own).
  using BacklogFn = std::function<std::size_t(const ConnectionEntry&)>;
  static std::size_t write_backlog(const ConnectionEntry& e);
  // Whether some connection holds more than `limit` local-bound bytes.
  bool any_over(std::size_t limit, const BacklogFn& backlog = write_backlog) const;
  // The connections over `limit` whose backlog has not shrunk for
  // `stuck_after` by `now` (call it periodically while any_over): their
  // local reader is stuck, not slow (docs/architecture.md, "Memory and
  // stuck connections"). Progress is tracked per connection from the first
  // call that sees it over the limit.
  std::vector<ConnRef> stuck_connections(std::size_t limit, std::chrono::milliseconds stuck_after,
                                         std::chrono::steady_clock::time_point now,
                                         const BacklogFn& backlog = write_backlog);
  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  const std::map<ConnRef, ConnectionEntry>& entries() const { return entries_; }

 private:
  std::map<ConnRef, ConnectionEntry> entries_;
  std::unordered_map<const LocalConnection*, ConnRef> by_conn_;
  std::deque<ConnRef> ready_;
};

}  // namespace tunnel
