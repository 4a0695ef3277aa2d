// WsConnection on a real socket pair and a real libuv loop: the two roles
// talking to each other, and the output bound against a peer that sends
// pings and never reads.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include "loop_context.h"
#include "ws_connection.h"

using tunnel::LoopContext;
using tunnel::WsConnection;
using tunnel::WsConnectionEnd;
using tunnel::WsConnectionEvents;
using tunnel::WsConnectionOptions;
namespace ws = tunnel::ws;

namespace {

struct Recorder : WsConnectionEvents {
  WsConnection* conn = nullptr;
  bool open_on_connect = false;
  bool connected = false;
  std::string received;
  int peer_close = 0;
  bool closed = false;
  WsConnectionEnd end;

  void on_connected() override {
    connected = true;
    if (open_on_connect) {
      conn->read_http();
      conn->open_websocket();
    }
  }
  std::size_t on_http_bytes(std::span<const std::uint8_t> bytes) override { return bytes.size(); }
  void on_message_data(std::span<const std::uint8_t> payload) override {
    received.append(reinterpret_cast<const char*>(payload.data()), payload.size());
  }
  void on_peer_close(int code) override { peer_close = code; }
  void on_closed(const WsConnectionEnd& e) override {
    closed = true;
    end = e;
  }
};

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  // Runs until `done` or `ms` pass.
  template <typename F>
  void run_until(F done, int ms = 5000) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (!done() && std::chrono::steady_clock::now() < until) uv_run(&loop, UV_RUN_NOWAIT);
  }
};

std::array<int, 2> socket_pair() {
  std::array<int, 2> fds{-1, -1};
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds.data()) == 0);
  return fds;
}

// A masked client frame (RFC 6455 5.3) carrying `payload`.
std::vector<std::uint8_t> client_frame(ws::Opcode op, std::string_view payload) {
  std::vector<std::uint8_t> out(ws::kMaxHeaderSize + payload.size());
  const std::array<std::uint8_t, 4> mask{1, 2, 3, 4};
  const std::size_t n = ws::write_frame_header(out.data(), op, payload.size(), &mask);
  ws::copy_masked(out.data() + n, reinterpret_cast<const std::uint8_t*>(payload.data()),
                  payload.size(), mask);
  out.resize(n + payload.size());
  return out;
}

}  // namespace

TEST_CASE("WsConnection: a client and a server exchange messages and close with the code") {
  Loop l;
  const auto fds = socket_pair();
  {
    LoopContext ctx(&l.loop);
    Recorder client_events;
    Recorder server_events;
    WsConnectionOptions co;
    co.side = ws::Side::client;
    WsConnectionOptions so;
    so.side = ws::Side::server;
    WsConnection client(ctx, client_events, co);
    WsConnection server(ctx, server_events, so);
    client_events.conn = &client;
    client_events.open_on_connect = true;
    server.accept(fds[1]);
    server.open_websocket();
    client.connect(fds[0]);

    l.run_until([&] { return client_events.connected; });
    REQUIRE(client_events.connected);
    client.send_message({"hello", ", ", "relay"});
    client.flush();
    l.run_until([&] { return server_events.received.size() == 12; });
    CHECK(server_events.received == "hello, relay");

    server.send_message({"and back"});
    server.close(1000, "bye");
    l.run_until([&] { return client_events.closed && server_events.closed; });
    CHECK(client_events.received == "and back");
    CHECK(client_events.peer_close == 1000);
    CHECK(client_events.end.cause == WsConnectionEnd::Cause::closed);
    CHECK(server_events.peer_close == 1000);  // the client's echo
    CHECK(server_events.end.cause == WsConnectionEnd::Cause::closed);
  }
}

TEST_CASE("WsConnection: a peer that pings and never reads is paused at the output bound") {
  Loop l;
  const auto fds = socket_pair();
  const int peer = fds[0];
  {
    LoopContext ctx(&l.loop);
    Recorder events;
    WsConnectionOptions o;
    o.side = ws::Side::server;
    o.max_pending_output = std::size_t{64} * 1024;
    WsConnection server(ctx, events, o);
    server.accept(fds[1]);
    server.open_websocket();

    const std::vector<std::uint8_t> ping = client_frame(ws::Opcode::ping, std::string(125, 'p'));
    std::size_t ping_off = 0;
    // Pings as fast as the socket takes them, never reading the pongs:
    // returns once the server stopped taking them for `quiet_ms` (or after
    // 3 s, when it never stops: the checks below then fail).
    const auto flood = [&](int quiet_ms) {
      const auto start = std::chrono::steady_clock::now();
      auto last_progress = start;
      std::size_t sent = 0;
      while (std::chrono::steady_clock::now() - last_progress <
                 std::chrono::milliseconds(quiet_ms) &&
             std::chrono::steady_clock::now() - start < std::chrono::seconds(3)) {
        const ssize_t n = ::send(peer, ping.data() + ping_off, ping.size() - ping_off, 0);
        if (n > 0) {
          sent += static_cast<std::size_t>(n);
          ping_off = (ping_off + static_cast<std::size_t>(n)) % ping.size();
          last_progress = std::chrono::steady_clock::now();
        }
        uv_run(&l.loop, UV_RUN_NOWAIT);
      }
      return sent;
    };
    CHECK(flood(300) > 0);
    // Stopped: the pongs it owes are bounded by the limit plus what one
    // read's worth of pings asks for.
    CHECK(server.pending_output() > o.max_pending_output / 2);
    CHECK(server.pending_output() <= o.max_pending_output + tunnel::kSharedReadBufferSize);
    CHECK(!events.closed);

    // The peer reads again: the server writes, resumes reading, and takes
    // pings again.
    std::vector<std::uint8_t> sink(1 << 16);
    std::size_t drained = 0;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (server.pending_output() != 0 && std::chrono::steady_clock::now() < until) {
      const ssize_t n = ::recv(peer, sink.data(), sink.size(), 0);
      if (n > 0) drained += static_cast<std::size_t>(n);
      uv_run(&l.loop, UV_RUN_NOWAIT);
    }
    CHECK(drained > 0);
    CHECK(flood(100) > 0);
  }
  ::close(peer);
}
