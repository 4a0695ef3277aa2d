// The connection table's round robin and bookkeeping (no sockets: entries
// without a LocalConnection).
#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "connection_table.h"

using tunnel::ConnectionEntry;
using tunnel::ConnectionTable;
using tunnel::ConnRef;

namespace {

// Drains the table as the session does: one chunk of at most `chunk` bytes
// per turn; returns "service/conn:bytes" per turn.
std::vector<std::string> drain(ConnectionTable& t, std::size_t chunk, int max_turns = 100) {
  std::vector<std::string> turns;
  while (max_turns-- > 0) {
    ConnectionEntry* e = t.next_ready();
    if (!e) break;
    const std::size_t n = std::min(chunk, e->pending_bytes());
    turns.push_back(e->ref.service + "/" + std::to_string(e->ref.connection_id) + ":" +
                    e->pending.substr(e->pending_off, n));
    t.consumed(*e, n);
  }
  return turns;
}

}  // namespace

TEST_CASE("stream table: round robin across connections, one chunk per turn") {
  ConnectionTable t;
  auto& a = t.add(ConnRef{"A", 1, 1}, nullptr);
  auto& b = t.add(ConnRef{"A", 1, 2}, nullptr);
  auto& c = t.add(ConnRef{"B", 2, 1}, nullptr);
  t.stash(a, "aaaaaa");  // a heavy connection
  t.stash(b, "bb");
  t.stash(c, "cc");
  CHECK(drain(t, 2) == std::vector<std::string>{"A/1:aa", "A/2:bb", "B/1:cc", "A/1:aa", "A/1:aa"});
  CHECK(t.next_ready() == nullptr);
  CHECK(a.bytes_to_tunnel == 6);
  CHECK(a.pending_bytes() == 0);
}

TEST_CASE("stream table: removed entries leave the queue; refs are replaced") {
  ConnectionTable t;
  auto& a = t.add(ConnRef{"", 1, 1}, nullptr);
  auto& b = t.add(ConnRef{"", 1, 2}, nullptr);
  t.stash(a, "x");
  t.stash(b, "y");
  CHECK(t.remove(ConnRef{"", 1, 1}) == nullptr);  // no connection object
  CHECK(t.size() == 1);
  CHECK(drain(t, 10) == std::vector<std::string>{"/2:y"});
  CHECK(t.find(ConnRef{"", 1, 1}) == nullptr);
  // A new entry with the same ref starts empty.
  auto& again = t.add(ConnRef{"", 1, 2}, nullptr);
  CHECK(again.pending_bytes() == 0);
  CHECK(t.size() == 1);
  CHECK(t.take_all().empty());
  CHECK(t.empty());
}

TEST_CASE("stream table: bytes stashed while queued are appended in order") {
  ConnectionTable t;
  auto& a = t.add(ConnRef{"S", 3, 1}, nullptr);
  t.stash(a, "he");
  t.stash(a, "llo");
  CHECK(drain(t, 64) == std::vector<std::string>{"S/1:hello"});
  CHECK(t.local_bound_bytes() == 0);
}

TEST_CASE(
    "stream table: a connection over the limit is stuck only when its backlog stops shrinking") {
  using namespace std::chrono_literals;
  ConnectionTable t;
  const ConnRef slow{"A", 1, 1};
  const ConnRef stuck{"A", 1, 2};
  const ConnRef light{"A", 1, 3};
  t.add(slow, nullptr);
  t.add(stuck, nullptr);
  t.add(light, nullptr);
  std::map<ConnRef, std::size_t> backlog{{slow, 5000}, {stuck, 5000}, {light, 10}};
  const auto of = [&](const ConnectionEntry& e) { return backlog.at(e.ref); };
  const auto t0 = std::chrono::steady_clock::time_point{} + 1h;

  CHECK(t.any_over(4096, of));
  CHECK_FALSE(t.any_over(6000, of));
  CHECK(t.stuck_connections(4096, 3s, t0, of).empty());  // the watch starts
  backlog[slow] = 4500;                                  // the slow reader took some
  CHECK(t.stuck_connections(4096, 3s, t0 + 2s, of).empty());
  backlog[slow] = 4400;
  // 3 s after the watch began: `stuck` took nothing, `slow` took some 1 s ago.
  CHECK(t.stuck_connections(4096, 3s, t0 + 3s, of) == std::vector<ConnRef>{stuck});
  // `slow` last took some at 3 s (4500 -> 4400): stuck 3 s after that.
  CHECK(t.stuck_connections(4096, 3s, t0 + 5s, of) == std::vector<ConnRef>{stuck});
  CHECK(t.stuck_connections(4096, 3s, t0 + 6s, of) == std::vector<ConnRef>{slow, stuck});
  // Below the limit the watch is forgotten; over it again, it starts afresh.
  backlog[slow] = 100;
  CHECK(t.stuck_connections(4096, 3s, t0 + 6500ms, of) == std::vector<ConnRef>{stuck});
  backlog[slow] = 8000;
  CHECK(t.stuck_connections(4096, 3s, t0 + 7s, of) == std::vector<ConnRef>{stuck});
  CHECK(t.stuck_connections(4096, 3s, t0 + 10s, of) == std::vector<ConnRef>{slow, stuck});
}
