#include "connection_table.h"

#include "local_connection.h"

namespace tunnel {

ConnectionEntry& ConnectionTable::add(const ConnRef& ref, LocalConnection* conn,
                                      std::chrono::steady_clock::time_point now) {
  remove(ref);
  ConnectionEntry& e = entries_[ref];
  e.ref = ref;
  e.conn = conn;
  e.started = now;
  if (conn) {
    by_conn_[conn] = ref;
    e.peer = conn->peer();
  }
  return e;
}

ConnectionEntry* ConnectionTable::find(const ConnRef& ref) {
  const auto it = entries_.find(ref);
  return it == entries_.end() ? nullptr : &it->second;
}

ConnectionEntry* ConnectionTable::find(const LocalConnection* conn) {
  const auto it = by_conn_.find(conn);
  return it == by_conn_.end() ? nullptr : find(it->second);
}

LocalConnection* ConnectionTable::remove(const ConnRef& ref) {
  const auto it = entries_.find(ref);
  if (it == entries_.end()) return nullptr;
  LocalConnection* c = it->second.conn;
  if (c) by_conn_.erase(c);
  entries_.erase(it);
  // A stale ref left in ready_ is skipped by next_ready().
  return c;
}

std::vector<LocalConnection*> ConnectionTable::take_all() {
  std::vector<LocalConnection*> out;
  for (auto& [ref, e] : entries_) {
    if (e.conn) out.push_back(e.conn);
  }
  entries_.clear();
  by_conn_.clear();
  ready_.clear();
  return out;
}

void ConnectionTable::stash(ConnectionEntry& e, std::string_view bytes) {
  if (bytes.empty()) return;
  if (e.pending_off == e.pending.size()) {
    e.pending.assign(bytes);
    e.pending_off = 0;
  } else {
    e.pending.append(bytes);
  }
  if (e.conn) e.conn->pause_reading();
  if (!e.queued) {
    e.queued = true;
    ready_.push_back(e.ref);
  }
}

ConnectionEntry* ConnectionTable::next_ready() {
  while (!ready_.empty()) {
    ConnectionEntry* e = find(ready_.front());
    if (e && e->queued && e->pending_bytes() > 0) return e;
    if (e) e->queued = false;
    ready_.pop_front();
  }
  return nullptr;
}

void ConnectionTable::consumed(ConnectionEntry& e, std::size_t n) {
  e.pending_off += std::min(n, e.pending_bytes());
  e.bytes_to_tunnel += n;
  if (!ready_.empty() && ready_.front() == e.ref) ready_.pop_front();
  if (e.pending_bytes() > 0) {
    ready_.push_back(e.ref);  // round robin: the others go first
    return;
  }
  e.queued = false;
  // Release the chunk: an idle connection holds no tunnel-bound memory.
  std::string().swap(e.pending);
  e.pending_off = 0;
  if (e.conn) e.conn->resume_reading();
}

std::size_t ConnectionTable::write_backlog(const ConnectionEntry& e) {
  return e.conn != nullptr ? e.conn->pending_write_bytes() : 0;
}

bool ConnectionTable::any_over(std::size_t limit, const BacklogFn& backlog) const {
  for (const auto& [ref, e] : entries_) {
    if (backlog(e) > limit) return true;
  }
  return false;
}

std::vector<ConnRef> ConnectionTable::stuck_connections(std::size_t limit,
                                                        std::chrono::milliseconds stuck_after,
                                                        std::chrono::steady_clock::time_point now,
                                                        const BacklogFn& backlog) {
  std::vector<ConnRef> stuck;
  for (auto& [ref, e] : entries_) {
    const std::size_t n = backlog(e);
    if (n <= limit) {
      e.over_low = 0;  // not over: forget the watch
      continue;
    }
    if (e.over_low == 0 || n < e.over_low) {
      // Newly over, or the reader took some: it is slow, not stuck.
      e.over_low = n;
      e.last_progress = now;
    } else if (now - e.last_progress >= stuck_after) {
      stuck.push_back(ref);
    }
  }
  return stuck;
}

std::size_t ConnectionTable::local_bound_bytes() const {
  std::size_t n = 0;
  for (const auto& [ref, e] : entries_) {
    if (e.conn) n += e.conn->pending_write_bytes();
  }
  return n;
}

}  // namespace tunnel
