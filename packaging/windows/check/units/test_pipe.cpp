#include <doctest/doctest.h>
#include <uv.h>

#include <aclapi.h>
#include <io.h>
#include <sddl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pipe_client.h"
#include "pipe_listener.h"
#include "pipe_peer.h"
#include "win_text.h"
#include "wine.h"

namespace win = tunneld::platform::win;
using namespace std::chrono_literals;

namespace {

std::wstring test_pipe_name() {
  static int n = 0;
  return L"\\\\.\\pipe\\tunneld-test-" + std::to_wstring(::GetCurrentProcessId()) + L"-" +
         std::to_wstring(++n);
}

auto deadline(std::chrono::milliseconds d) { return std::chrono::steady_clock::now() + d; }

// Runs the loop until it has nothing left to do, or for at most `limit`:
// then every handle is closed so that a broken test fails instead of hanging.
// Returns false on the time-out.
bool run_loop(uv_loop_t* loop, std::chrono::milliseconds limit = 30s) {
  uv_timer_t watchdog;
  uv_timer_init(loop, &watchdog);
  bool fired = false;
  watchdog.data = &fired;
  uv_timer_start(
      &watchdog,
      [](uv_timer_t* t) {
        *static_cast<bool*>(t->data) = true;
        uv_stop(t->loop);
      },
      static_cast<std::uint64_t>(limit.count()), 0);
  uv_unref(reinterpret_cast<uv_handle_t*>(&watchdog));
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return !fired;
}

// One connection on the server side: reads, answers "echo:" + what it read
// once it saw a '\n', and closes. Deletes itself when its handle is closed.
struct EchoClient {
  uv_pipe_t pipe{};
  std::string got;
  win::PipePeer peer;
  std::string identify_error;
  struct Server* server = nullptr;
};

struct Server {
  uv_loop_t* loop = nullptr;
  std::unique_ptr<win::ControlPipeListener> listener;
  std::atomic<int> served{0};
  std::vector<win::PipePeer> peers;
  std::vector<std::string> errors;
  int want = 1;

  void on_client(win::ConnectedPipe c) {
    auto* client = new EchoClient;
    client->server = this;
    client->peer = win::identify_pipe_client(c.handle(), &client->identify_error);
    uv_pipe_init(loop, &client->pipe, 0);
    client->pipe.data = client;
    if (const int rc = c.open(&client->pipe); rc != 0) {
      errors.push_back(std::string("open: ") + uv_strerror(rc));
      uv_close(reinterpret_cast<uv_handle_t*>(&client->pipe),
               [](uv_handle_t* h) { delete static_cast<EchoClient*>(h->data); });
      return;
    }
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&client->pipe),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
          static char storage[4096];
          *buf = uv_buf_init(storage, sizeof storage);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* cl = static_cast<EchoClient*>(s->data);
          if (n < 0) {
            uv_close(reinterpret_cast<uv_handle_t*>(s),
                     [](uv_handle_t* h) { delete static_cast<EchoClient*>(h->data); });
            return;
          }
          cl->got.append(buf->base, static_cast<size_t>(n));
          if (cl->got.find('\n') == std::string::npos) return;
          uv_read_stop(s);
          auto* req = new uv_write_t;
          auto* answer = new std::string("echo:" + cl->got);
          req->data = answer;
          uv_buf_t out = uv_buf_init(answer->data(), static_cast<unsigned>(answer->size()));
          uv_write(req, s, &out, 1, [](uv_write_t* r, int) {
            delete static_cast<std::string*>(r->data);
            auto* c2 = static_cast<EchoClient*>(r->handle->data);
            Server* srv = c2->server;
            srv->peers.push_back(c2->peer);
            if (!c2->identify_error.empty()) srv->errors.push_back(c2->identify_error);
            uv_close(reinterpret_cast<uv_handle_t*>(r->handle),
                     [](uv_handle_t* h) { delete static_cast<EchoClient*>(h->data); });
            delete r;
            if (++srv->served == srv->want) srv->listener->close();
          });
        });
  }
};

// The client side of one exchange, blocking, as tunnelctl does.
std::string ask(const std::wstring& name, const std::string& line, win::PipeError* error) {
  auto c = win::PipeConnection::connect(name, deadline(10s), error);
  if (!c) return {};
  std::string out = line + "\n";
  if (!c->write_all(std::as_bytes(std::span(out)), deadline(10s), error)) return {};
  std::string answer;
  std::byte buf[256];
  for (;;) {
    auto n = c->read_some(buf, deadline(10s), error);
    if (!n) return {};
    if (*n == 0) break;
    answer.append(reinterpret_cast<const char*>(buf), *n);
  }
  return answer;
}

}  // namespace

TEST_CASE("control pipe: clients in turn and at once get answers; the peer is identified") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  Server server;
  server.loop = &loop;
  server.want = 5;
  const std::wstring name = test_pipe_name();
  server.listener = std::make_unique<win::ControlPipeListener>(
      &loop, name, [&](win::ConnectedPipe c) { server.on_client(std::move(c)); },
      [&](const std::string& e) { server.errors.push_back(e); });
  server.listener->listen();

  std::vector<std::string> answers(5);
  std::vector<win::PipeError> errors(5);
  std::thread clients([&] {
    // Two in turn, then three at once.
    answers[0] = ask(name, "one", &errors[0]);
    answers[1] = ask(name, "two", &errors[1]);
    std::thread a([&] { answers[2] = ask(name, "three", &errors[2]); });
    std::thread b([&] { answers[3] = ask(name, "four", &errors[3]); });
    answers[4] = ask(name, "five", &errors[4]);
    a.join();
    b.join();
  });
  CHECK(run_loop(&loop));
  if (server.listener) server.listener->close();
  clients.join();
  const char* expected[] = {"one", "two", "three", "four", "five"};
  for (int i = 0; i < 5; ++i) {
    INFO("client " << i << ": " << errors[i].message);
    CHECK(answers[i] == std::string("echo:") + expected[i] + "\n");
  }
  CHECK(server.errors.empty());
  REQUIRE(server.peers.size() == 5);
  for (const auto& p : server.peers) {
    CHECK(p.identified);
    CHECK(p.pid == ::GetCurrentProcessId());
    CHECK(p.user_sid.rfind("S-1-5-", 0) == 0);
  }
  MESSAGE("pipe peer: sid " << server.peers[0].user_sid << ", system " << server.peers[0].system
                            << ", administrators enabled "
                            << server.peers[0].administrators_enabled);
  server.listener.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("control pipe: a name already taken fails start-up") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  const std::wstring name = test_pipe_name();
  win::ControlPipeListener first(&loop, name, [](win::ConnectedPipe) {}, {});
  first.listen();
  win::ControlPipeListener second(&loop, name, [](win::ConnectedPipe) {}, {});
  bool refused = false;
  try {
    second.listen();
  } catch (const std::runtime_error& e) {
    refused = true;
    CHECK(std::string(e.what()).find("already in use") != std::string::npos);
  }
  if (running_on_wine() && !refused) {
    // Wine 8 creates another instance despite FILE_FLAG_FIRST_PIPE_INSTANCE;
    // Windows refuses it with ERROR_ACCESS_DENIED.
    MESSAGE("Wine does not enforce FILE_FLAG_FIRST_PIPE_INSTANCE: not checked here");
  } else {
    CHECK(refused);
  }
  first.close();
  second.close();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("control pipe: its DACL admits SYSTEM and Administrators only") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  const std::wstring name = test_pipe_name();
  win::ControlPipeListener listener(&loop, name, [](win::ConnectedPipe) {}, {});
  listener.listen();
  // The security descriptor as a client sees it.
  HANDLE h = ::CreateFileW(name.c_str(), READ_CONTROL, 0, nullptr, OPEN_EXISTING, 0, nullptr);
  REQUIRE(h != INVALID_HANDLE_VALUE);
  PSECURITY_DESCRIPTOR sd = nullptr;
  PACL dacl = nullptr;
  const DWORD rc = ::GetSecurityInfo(h, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, nullptr,
                                     nullptr, &dacl, nullptr, &sd);
  ::CloseHandle(h);
  REQUIRE(rc == ERROR_SUCCESS);
  wchar_t* sddl = nullptr;
  REQUIRE(::ConvertSecurityDescriptorToStringSecurityDescriptorW(
      sd, SDDL_REVISION_1, DACL_SECURITY_INFORMATION, &sddl, nullptr));
  const std::string text = win::to_utf8(sddl);
  ::LocalFree(sddl);
  ::LocalFree(sd);
  MESSAGE("control pipe DACL: " << text);
  CHECK(text.rfind("D:P", 0) == 0);
  CHECK(text.find(";;;SY)") != std::string::npos);
  CHECK(text.find(";;;BA)") != std::string::npos);
  CHECK(text.find(";;;WD)") == std::string::npos);  // not Everyone
  CHECK(text.find(";;;AN)") == std::string::npos);  // not anonymous
  listener.close();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("control pipe client: no daemon is a clear error") {
  win::PipeError error;
  auto c = win::PipeConnection::connect(test_pipe_name(), deadline(2s), &error);
  CHECK_FALSE(c);
  CHECK(error.kind == win::PipeErrorKind::unreachable);
  CHECK(error.message.find("sc.exe query tunneld") != std::string::npos);
  const auto denied = win::pipe_connect_error(ERROR_ACCESS_DENIED, "\\\\.\\pipe\\tunneld");
  CHECK(denied.kind == win::PipeErrorKind::permission_denied);
  CHECK(denied.message.find("elevated") != std::string::npos);
}

TEST_CASE("control pipe client: a daemon that does not answer times out") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  const std::wstring name = test_pipe_name();
  std::vector<win::ConnectedPipe> held;  // accepted, never read or answered
  win::ControlPipeListener listener(
      &loop, name, [&](win::ConnectedPipe c) { held.push_back(std::move(c)); }, {});
  listener.listen();
  win::PipeError error;
  std::optional<std::size_t> got;
  std::thread client([&] {
    auto c = win::PipeConnection::connect(name, deadline(5s), &error);
    if (!c) return;
    std::byte buf[16];
    got = c->read_some(buf, deadline(300ms), &error);
  });
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (held.empty() && std::chrono::steady_clock::now() < until) uv_run(&loop, UV_RUN_NOWAIT);
  client.join();
  CHECK_FALSE(got);
  CHECK(error.kind == win::PipeErrorKind::timeout);
  listener.close();
  held.clear();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("control pipe: a client that leaves at once does not stop the next one") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  Server server;
  server.loop = &loop;
  server.want = 1;
  const std::wstring name = test_pipe_name();
  int connections = 0;
  server.listener = std::make_unique<win::ControlPipeListener>(
      &loop, name,
      [&](win::ConnectedPipe c) {
        // A client that left is either handed over (its read ends at once)
        // or, when it left before the listener looked, recycled unseen.
        ++connections;
        server.on_client(std::move(c));
      },
      [&](const std::string& e) { server.errors.push_back(e); });
  server.listener->listen();
  std::string answer;
  win::PipeError error;
  int left = 0;
  std::thread client([&] {
    for (int i = 0; i < 3; ++i) {
      win::PipeError ignored;
      // Closed right away, before the daemon read anything.
      if (win::PipeConnection::connect(name, deadline(5s), &ignored)) ++left;
    }
    answer = ask(name, "after", &error);
  });
  CHECK(run_loop(&loop));
  if (server.listener) server.listener->close();
  client.join();
  INFO(error.message);
  CHECK(answer == "echo:after\n");
  CHECK(left == 3);
  CHECK(connections >= 1);
  CHECK(connections <= 4);
  CHECK(server.errors.empty());
  server.listener.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("control pipe: works in a process without standard descriptors, as a service") {
  // A service has no console: C runtime descriptors 0-2 are free, and the
  // connected instance gets descriptor 0, which libuv treats specially.
  const int saved = ::_dup(0);
  REQUIRE(saved >= 0);
  ::_close(0);
  uv_loop_t loop;
  uv_loop_init(&loop);
  Server server;
  server.loop = &loop;
  server.want = 2;
  const std::wstring name = test_pipe_name();
  server.listener = std::make_unique<win::ControlPipeListener>(
      &loop, name, [&](win::ConnectedPipe c) { server.on_client(std::move(c)); },
      [&](const std::string& e) { server.errors.push_back(e); });
  server.listener->listen();
  std::string first;
  std::string second;
  win::PipeError error;
  std::thread client([&] {
    first = ask(name, "one", &error);
    second = ask(name, "two", &error);
  });
  CHECK(run_loop(&loop));
  if (server.listener) server.listener->close();
  client.join();
  ::_dup2(saved, 0);
  ::_close(saved);
  INFO(error.message);
  CHECK(first == "echo:one\n");
  CHECK(second == "echo:two\n");
  CHECK(server.errors.empty());
  server.listener.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}
