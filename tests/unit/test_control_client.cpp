// tunnelctl's control client against a scripted daemon on a real socket
// (a socketpair, or an AF_UNIX listener in a temp directory): what goes on
// the wire, and what the user is told when the other end misbehaves.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "temp_dir.h"
#include "tunnelctl/control_client.h"

using namespace std::chrono_literals;
using tunnel::tunnelctl::connect_error;
using tunnel::tunnelctl::ControlClient;
using tunnel::tunnelctl::ControlErrorKind;
using tunnel::tunnelctl::ControlResult;
using tunnel::tunnelctl::exchange;
using tunneld::control::kMaxResponseSize;
using tunneld::control::kProtocolVersion;
using tunneld::control::make_error;
using tunneld::control::make_request;
using tunneld::control::make_response;
using tunneld::control::Request;
using tunneld::control::Response;
using Clock = std::chrono::steady_clock;

namespace {

// A stuck test must fail, not hang: every server-side read gives up after this.
void limit_blocking(int fd) {
  timeval tv{5, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

struct SocketPair {
  int client = -1;
  int server = -1;
  SocketPair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    client = fds[0];
    server = fds[1];
    limit_blocking(server);
  }
  ~SocketPair() {
    close_client();
    close_server();
  }
  void close_client() {
    if (client >= 0) ::close(client);
    client = -1;
  }
  void close_server() {
    if (server >= 0) ::close(server);
    server = -1;
  }
};

bool read_exactly(int fd, char* out, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, out, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    out += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

void write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

// What the fake daemon saw: the raw header and the parsed request.
struct Received {
  std::uint32_t announced = 0;
  std::string body;
  std::optional<Request> request;
};

// Reads one frame by hand (not with the codec under test's decoder).
Received read_request(int fd) {
  Received got;
  unsigned char header[4];
  if (!read_exactly(fd, reinterpret_cast<char*>(header), 4)) return got;
  got.announced = (std::uint32_t{header[0]} << 24) | (std::uint32_t{header[1]} << 16) |
                  (std::uint32_t{header[2]} << 8) | std::uint32_t{header[3]};
  if (got.announced > tunneld::control::kMaxRequestSize) return got;
  got.body.resize(got.announced);
  if (!read_exactly(fd, got.body.data(), got.body.size())) return got;
  Request r;
  if (r.ParseFromString(got.body)) got.request = std::move(r);
  return got;
}

std::string header_of(std::uint32_t length) {
  return {static_cast<char>(length >> 24), static_cast<char>(length >> 16),
          static_cast<char>(length >> 8), static_cast<char>(length)};
}

std::string frame_of(const Response& r) {
  const std::string body = r.SerializeAsString();
  return header_of(static_cast<std::uint32_t>(body.size())) + body;
}

// Waits until the client closes its end (the "stuck daemon" of timeouts).
void wait_for_close(int fd) {
  char c;
  while (::read(fd, &c, 1) > 0) {
  }
}

Request list_request(std::uint64_t id) {
  Request r = make_request(id);
  r.mutable_list_request();
  return r;
}

ControlResult run_exchange(SocketPair& sp, const Request& request,
                           std::function<void(const Received&)> daemon,
                           std::chrono::milliseconds timeout = 3000ms) {
  std::thread server([&] {
    const Received got = read_request(sp.server);
    daemon(got);
  });
  ControlResult result = exchange(sp.client, request, Clock::now() + timeout, "/test/control.sock");
  sp.close_client();
  server.join();
  return result;
}

// An AF_UNIX listener in a temp directory, serving one connection.
struct Listener {
  test_support::TempDir dir;
  std::string path = dir / "control.sock";
  int fd = -1;
  Listener() {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, path.data(), path.size());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 4) == 0);
  }
  ~Listener() {
    if (fd >= 0) ::close(fd);
  }
  int accept_one() {
    const int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c >= 0) limit_blocking(c);
    return c;
  }
};

}  // namespace

TEST_SUITE("control_client") {
  TEST_CASE("a request goes out as one frame: big-endian length, then the Request") {
    SocketPair sp;
    Received seen;
    Request req = make_request(0x1122334455667788ULL);
    req.mutable_status_request()->set_session("web");
    const auto result = run_exchange(sp, req, [&](const Received& got) {
      seen = got;
      Response r = make_response(got.request ? got.request->request_id() : 0, Response::OK);
      r.mutable_status_response()->mutable_session()->set_id("s-1");
      write_all(sp.server, frame_of(r));
    });
    REQUIRE(seen.request.has_value());
    CHECK(seen.announced == seen.body.size());
    CHECK(seen.body == req.SerializeAsString());
    CHECK(seen.request->version() == kProtocolVersion);
    CHECK(seen.request->request_id() == 0x1122334455667788ULL);
    CHECK(seen.request->status_request().session() == "web");

    REQUIRE(result.ok());
    CHECK(result.response->status() == Response::OK);
    CHECK(result.response->request_id() == 0x1122334455667788ULL);
    CHECK(result.response->status_response().session().id() == "s-1");
  }

  TEST_CASE("a response that arrives a byte at a time is put together") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(7), [&](const Received& got) {
      Response r = make_response(7, Response::OK);
      for (int i = 0; i < 3; ++i) r.mutable_list_response()->add_sessions()->set_name("n");
      for (const char c : frame_of(r)) {
        write_all(sp.server, std::string(1, c));
        std::this_thread::sleep_for(1ms);
      }
    });
    REQUIRE(result.ok());
    CHECK(result.response->list_response().sessions_size() == 3);
  }

  TEST_CASE("a response larger than one read buffer arrives whole") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(8), [&](const Received&) {
      Response r = make_response(8, Response::OK);
      for (int i = 0; i < 5000; ++i) {
        auto* s = r.mutable_list_response()->add_sessions();
        s->set_id("session-" + std::to_string(i));
        s->set_endpoint("data.tunneling.iot.eu-west-1.amazonaws.com:443");
      }
      CHECK(r.ByteSizeLong() > 200 * 1024);
      write_all(sp.server, frame_of(r));
    });
    REQUIRE(result.ok());
    CHECK(result.response->list_response().sessions_size() == 5000);
    CHECK(result.response->list_response().sessions(4999).id() == "session-4999");
  }

  TEST_CASE("ControlClient connects to a Unix socket path and gets the answer") {
    Listener daemon;
    std::optional<Request> seen;
    std::thread server([&] {
      const int c = daemon.accept_one();
      if (c < 0) return;  // the client then fails the test with a timeout
      seen = read_request(c).request;
      Response r = make_response(seen ? seen->request_id() : 0, Response::OK);
      r.mutable_version_response()->set_daemon_version("9.8.7");
      r.mutable_version_response()->set_protocol_version(kProtocolVersion);
      write_all(c, frame_of(r));
      ::close(c);
    });
    Request req = make_request(5);
    req.mutable_version_request();
    const ControlClient client(daemon.path, 3000ms);
    const auto result = client.call(req);
    server.join();
    REQUIRE(seen.has_value());
    CHECK(seen->has_version_request());
    REQUIRE(result.ok());
    CHECK(result.response->version_response().daemon_version() == "9.8.7");
  }

  TEST_CASE("a daemon error is an answer, not a client failure") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(9), [&](const Received&) {
      write_all(sp.server, frame_of(make_error(9, Response::NOT_FOUND, "no session 'x'")));
    });
    REQUIRE(result.ok());
    CHECK(result.response->status() == Response::NOT_FOUND);
    CHECK(result.response->error() == "no session 'x'");
  }

  TEST_CASE("an error reply with request id 0 (request unreadable) is accepted") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(10), [&](const Received&) {
      write_all(sp.server, frame_of(make_error(0, Response::MALFORMED, "frame body is not...")));
    });
    REQUIRE(result.ok());
    CHECK(result.response->status() == Response::MALFORMED);
  }

  TEST_CASE("BAD_VERSION from a daemon of another protocol version comes through") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(11), [&](const Received&) {
      Response r = make_error(11, Response::BAD_VERSION, "version 1 is not supported");
      r.set_version(kProtocolVersion + 1);
      write_all(sp.server, frame_of(r));
    });
    REQUIRE(result.ok());
    CHECK(result.response->status() == Response::BAD_VERSION);
  }

  TEST_CASE("no answer before the deadline is a timeout") {
    SocketPair sp;
    const auto start = Clock::now();
    const auto result = run_exchange(
        sp, list_request(12), [&](const Received&) { wait_for_close(sp.server); }, 150ms);
    const auto elapsed = Clock::now() - start;
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::timeout);
    CHECK(result.error.message.find("/test/control.sock") != std::string::npos);
    CHECK(result.error.message.find("--timeout") != std::string::npos);
    CHECK(elapsed >= 150ms);
    CHECK(elapsed < 3s);
  }

  TEST_CASE("half an answer, then silence, is a timeout too") {
    SocketPair sp;
    const auto result = run_exchange(
        sp, list_request(13),
        [&](const Received&) {
          write_all(sp.server, frame_of(make_response(13, Response::OK)).substr(0, 3));
          wait_for_close(sp.server);
        },
        150ms);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::timeout);
  }

  TEST_CASE("an oversized response is refused from its header, before it is read") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(14), [&](const Received&) {
      write_all(sp.server, header_of(0xFFFFFFFFu));
      wait_for_close(sp.server);
    });
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::protocol);
    CHECK(result.error.message.find("4294967295") != std::string::npos);
    CHECK(result.error.message.find(std::to_string(kMaxResponseSize)) != std::string::npos);
  }

  TEST_CASE("the response cap is the client's to choose") {
    SocketPair sp;
    Response big = make_response(15, Response::OK);
    for (int i = 0; i < 100; ++i) big.mutable_list_response()->add_sessions()->set_id("abcdef");
    std::thread server([&] {
      read_request(sp.server);
      write_all(sp.server, frame_of(big));
    });
    const auto result = exchange(sp.client, list_request(15), Clock::now() + 3s, "s", 64);
    server.join();
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::protocol);
  }

  TEST_CASE("a body that is not a Response is a protocol error") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(16), [&](const Received&) {
      write_all(sp.server, header_of(3) + "\xff\xff\xff");
    });
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::protocol);
    CHECK(result.error.message.find("not a tunneld control response") != std::string::npos);
  }

  TEST_CASE("an answer to another request is a protocol error") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(17), [&](const Received&) {
      write_all(sp.server, frame_of(make_response(18, Response::OK)));
    });
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::protocol);
  }

  TEST_CASE("a success in another protocol version is a protocol error") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(19), [&](const Received&) {
      Response r = make_response(19, Response::OK);
      r.set_version(kProtocolVersion + 1);
      write_all(sp.server, frame_of(r));
    });
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::protocol);
    CHECK(result.error.message.find("same release") != std::string::npos);
  }

  TEST_CASE("the daemon closing without an answer is a lost connection") {
    SocketPair sp;
    const auto result =
        run_exchange(sp, list_request(20), [&](const Received&) { sp.close_server(); });
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::connection_lost);
    CHECK(result.error.message.find("without answering") != std::string::npos);
  }

  TEST_CASE("the daemon closing in mid-answer is a lost connection") {
    SocketPair sp;
    const auto result = run_exchange(sp, list_request(21), [&](const Received&) {
      write_all(sp.server, header_of(100) + "abc");
      sp.close_server();
    });
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::connection_lost);
  }

  TEST_CASE("a peer gone before the request is sent raises no SIGPIPE") {
    SocketPair sp;
    sp.close_server();
    const auto result = exchange(sp.client, list_request(22), Clock::now() + 1s, "s");
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::connection_lost);
  }

  TEST_CASE("no socket at the path: tunneld is not running") {
    test_support::TempDir dir;
    const std::string path = dir / "control.sock";
    const auto result = ControlClient(path, 1000ms).call(list_request(23));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::unreachable);
    CHECK(result.error.message ==
          "tunneld is not running (no socket at " + path + "): systemctl start tunneld");
  }

  TEST_CASE("a socket file nobody listens on: tunneld is not running") {
    std::string path;
    test_support::TempDir dir;
    path = dir / "stale.sock";
    {
      const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path, path.data(), path.size());
      REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
      ::close(fd);  // the file stays, like after a daemon crash
    }
    const auto result = ControlClient(path, 1000ms).call(list_request(24));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::unreachable);
    CHECK(result.error.message.find("tunneld is not running") == 0);
    CHECK(result.error.message.find("systemctl start tunneld") != std::string::npos);
  }

  TEST_CASE("a path too long for a socket address says so") {
    const std::string path = "/tmp/" + std::string(200, 'x') + ".sock";
    const auto result = ControlClient(path, 1000ms).call(list_request(25));
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::unreachable);
    CHECK(result.error.message.find("shorter --socket") != std::string::npos);
  }

  TEST_CASE("connect errors map to what the user can act on") {
    const std::string path = "/run/tunneld/control.sock";
    CHECK(connect_error(ENOENT, path).kind == ControlErrorKind::unreachable);
    CHECK(connect_error(ENOTDIR, path).kind == ControlErrorKind::unreachable);
    CHECK(connect_error(ECONNREFUSED, path).kind == ControlErrorKind::unreachable);
    CHECK(connect_error(EACCES, path).kind == ControlErrorKind::permission_denied);
    CHECK(connect_error(EPERM, path).kind == ControlErrorKind::permission_denied);
    CHECK(connect_error(EAGAIN, path).kind == ControlErrorKind::timeout);
    CHECK(connect_error(EIO, path).kind == ControlErrorKind::unreachable);
    CHECK(connect_error(ENOENT, path).message ==
          "tunneld is not running (no socket at /run/tunneld/control.sock): systemctl start "
          "tunneld");
    CHECK(connect_error(EACCES, path).message ==
          "permission denied on /run/tunneld/control.sock: add yourself to group tunneld "
          "(usermod -aG tunneld $USER, then log in again)");
    CHECK(connect_error(EIO, path).message.find(std::strerror(EIO)) != std::string::npos);
  }

  TEST_CASE("a socket in a directory the user may not enter: permission denied") {
    if (::geteuid() == 0) {
      MESSAGE("running as root: directory permissions do not apply, skipped");
      return;
    }
    Listener daemon;
    REQUIRE(::chmod(daemon.dir.path().c_str(), 0) == 0);
    const auto result = ControlClient(daemon.path, 1000ms).call(list_request(26));
    ::chmod(daemon.dir.path().c_str(), 0700);
    REQUIRE_FALSE(result.ok());
    CHECK(result.error.kind == ControlErrorKind::permission_denied);
  }

  TEST_CASE("error kinds have names") {
    CHECK(tunnel::tunnelctl::to_string(ControlErrorKind::unreachable) == "unreachable");
    CHECK(tunnel::tunnelctl::to_string(ControlErrorKind::protocol) == "protocol error");
  }
}
