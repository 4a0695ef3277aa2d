// tunneld's control server on a real Unix socket and a real libuv loop, with
// short timeouts: what a client that does not read its answers can make the
// daemon hold, and that pausing such a client loses no request.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "control/control_codec.h"
#include "control/control_server.h"
#include "temp_dir.h"

using namespace std::chrono_literals;
using tunneld::control::append_frame;
using tunneld::control::ControlServer;
using tunneld::control::ControlServerOptions;
using tunneld::control::DecodeStatus;
using tunneld::control::FrameDecoder;
using tunneld::control::kMaxResponseSize;
using tunneld::control::make_request;
using tunneld::control::make_response;
using tunneld::control::PeerCredentials;
using tunneld::control::Request;
using tunneld::control::RequestHandler;
using tunneld::control::Response;
using Clock = std::chrono::steady_clock;

namespace {

// Answers every request with a version; counts what it served.
class VersionHandler : public RequestHandler {
 public:
  Response handle(const Request&, const PeerCredentials&, bool) override {
    ++served;
    Response r = make_response(0, Response::OK);
    r.mutable_version_response()->set_daemon_version("0.0.0-test");
    r.mutable_version_response()->set_protocol_version(1);
    return r;
  }
  std::size_t served = 0;
};

struct Loop {
  uv_loop_t loop{};
  Loop() { uv_loop_init(&loop); }
  ~Loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&loop) == 0);
  }
  // Runs the loop until `done` or `limit`; true when `done` became true.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    const auto deadline = Clock::now() + limit;
    while (!done()) {
      if (Clock::now() > deadline) return false;
      uv_run(&loop, UV_RUN_NOWAIT);
      std::this_thread::yield();
    }
    return true;
  }
};

int connect_nonblocking(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  REQUIRE(fd >= 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

std::string version_request(std::uint64_t id) {
  Request r = make_request(id);
  r.mutable_version_request();
  std::string out;
  REQUIRE(append_frame(out, r, 1024));
  return out;
}

struct World {
  test_support::TempDir dir;
  Loop loop;
  VersionHandler handler;
  ControlServer server;
  explicit World(ControlServerOptions o)
      : server(&loop.loop, with_path(std::move(o), dir / "control.sock"), handler) {
    server.listen();
  }
  ~World() { server.close(); }
  static ControlServerOptions with_path(ControlServerOptions o, std::string path) {
    o.path = std::move(path);
    return o;
  }
  std::string path() const { return dir / "control.sock"; }
};

}  // namespace

TEST_SUITE("control server") {
  TEST_CASE("a client that keeps writing but never reads its answers is closed when idle") {
    ControlServerOptions o;
    o.idle_timeout_ms = 300;
    World w(o);
    const int fd = connect_nonblocking(w.path());
    REQUIRE(w.loop.run_until([&] { return w.server.clients() == 1; }, 2s));
    // A request every 50 ms, never reading an answer: the answers stay in the
    // socket, so the requests after the first do not count as activity.
    const auto start = Clock::now();
    bool closed = false;
    std::uint64_t id = 1;
    while (!closed && Clock::now() - start < 3s) {
      const std::string req = version_request(id++);
      if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) < 0 && errno != EAGAIN) closed = true;
      w.loop.run_until([&] { return w.server.clients() == 0; }, 50ms);
      closed = closed || w.server.clients() == 0;
    }
    const auto took = Clock::now() - start;
    CHECK(closed);
    CHECK(took < 1500ms);  // idle timeout 300 ms; an old server never closes it
    CHECK(w.handler.served >= 1);
    ::close(fd);
  }

  TEST_CASE("a client that reads its answers stays while it keeps asking") {
    ControlServerOptions o;
    o.idle_timeout_ms = 300;
    World w(o);
    const int fd = connect_nonblocking(w.path());
    FrameDecoder decoder(kMaxResponseSize);
    std::size_t answers = 0;
    const auto start = Clock::now();
    for (std::uint64_t id = 1; Clock::now() - start < 900ms; ++id) {
      const std::string req = version_request(id);
      REQUIRE(::send(fd, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
      REQUIRE(w.loop.run_until(
          [&] {
            char buf[256];
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) return false;
            std::string_view in(buf, static_cast<std::size_t>(n));
            Response r;
            while (decoder.next_message(in, r) == DecodeStatus::ok) ++answers;
            return answers == id;
          },
          2s));
      w.loop.run_until([] { return false; }, 100ms);
    }
    CHECK(w.server.clients() == 1);
    ::close(fd);
  }

  TEST_CASE("a flood is paused at the bound and loses nothing once the client reads") {
    ControlServerOptions o;
    o.max_unsent_output = std::size_t{16} * 1024;
    World w(o);

    // 60,000 requests (about 600 KB), as fast as the socket takes them,
    // reading nothing.
    constexpr std::uint64_t kRequests = 60000;
    std::string all;
    for (std::uint64_t id = 1; id <= kRequests; ++id) all += version_request(id);
    const int fd = connect_nonblocking(w.path());
    std::size_t sent = 0;
    const auto pump_send = [&] {
      while (sent < all.size()) {
        const ssize_t n = ::send(fd, all.data() + sent, all.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return;
        sent += static_cast<std::size_t>(n);
      }
    };
    w.loop.run_until(
        [&] {
          pump_send();
          return false;
        },
        200ms);
    // The server stopped reading: far from everything was accepted.
    INFO("sent " << sent << " of " << all.size() << ", served " << w.handler.served);
    CHECK(sent < all.size());
    CHECK(w.handler.served < kRequests / 4);

    // Now read: every request is answered, in order, none twice.
    FrameDecoder decoder(kMaxResponseSize);
    std::uint64_t next = 1;
    bool in_order = true;
    CHECK(w.loop.run_until(
        [&] {
          pump_send();
          char buf[16384];
          for (;;) {
            const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0) break;
            std::string_view in(buf, static_cast<std::size_t>(n));
            Response r;
            while (decoder.next_message(in, r) == DecodeStatus::ok) {
              in_order = in_order && r.request_id() == next && r.status() == Response::OK;
              ++next;
            }
          }
          return next > kRequests;
        },
        30s));
    CHECK(in_order);
    CHECK(next == kRequests + 1);
    CHECK(w.handler.served == kRequests);
    CHECK(w.server.clients() == 1);
    ::close(fd);
  }

  TEST_CASE("a client paused at the bound that takes nothing is closed") {
    ControlServerOptions o;
    o.max_unsent_output = std::size_t{16} * 1024;
    o.stalled_timeout_ms = 300;
    World w(o);
    std::string all;
    for (std::uint64_t id = 1; id <= 60000; ++id) all += version_request(id);
    const int fd = connect_nonblocking(w.path());
    REQUIRE(w.loop.run_until([&] { return w.server.clients() == 1; }, 2s));
    std::size_t sent = 0;
    const auto start = Clock::now();
    CHECK(w.loop.run_until(
        [&] {
          while (sent < all.size()) {
            const ssize_t n = ::send(fd, all.data() + sent, all.size() - sent, MSG_NOSIGNAL);
            if (n <= 0) break;
            sent += static_cast<std::size_t>(n);
          }
          return w.server.clients() == 0;
        },
        5s));
    CHECK(Clock::now() - start >= 250ms);  // the loop's clock is in whole ms
    CHECK(sent < all.size());
    ::close(fd);
  }

  TEST_CASE("clients over the cap are refused at once, the others keep being served") {
    ControlServerOptions o;
    o.max_clients = 4;
    World w(o);
    std::vector<int> fds(10);
    for (int& fd : fds) fd = connect_nonblocking(w.path());
    w.loop.run_until([] { return false; }, 100ms);
    CHECK(w.server.clients() == 4);
    int refused = 0;
    for (const int fd : fds) {
      char b = 0;
      const ssize_t n = ::recv(fd, &b, 1, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) ++refused;
    }
    CHECK(refused == 6);
    for (const int fd : fds) ::close(fd);
    CHECK(w.loop.run_until([&] { return w.server.clients() == 0; }, 2s));
  }
}
