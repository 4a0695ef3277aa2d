#include <doctest/doctest.h>
#include <uv.h>

#include <thread>
#include <vector>

#include "service_events.h"
#include "service_host.h"

namespace win = tunneld::platform::win;

TEST_CASE("service status: pending states count checkpoints, final states reset them") {
  win::ServiceStatusTracker t;
  auto s = t.starting();
  CHECK(s.dwCurrentState == SERVICE_START_PENDING);
  CHECK(s.dwCheckPoint == 1);
  CHECK(s.dwWaitHint == win::kStartWaitHintMs);
  CHECK(s.dwControlsAccepted == 0);
  CHECK(t.progress());
  CHECK(t.status().dwCheckPoint == 2);

  s = t.running();
  CHECK(s.dwCurrentState == SERVICE_RUNNING);
  CHECK(s.dwCheckPoint == 0);
  CHECK(s.dwWaitHint == 0);
  CHECK(s.dwControlsAccepted ==
        (SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN | SERVICE_ACCEPT_PARAMCHANGE));
  CHECK_FALSE(t.progress());  // nothing pending

  s = t.stopping();
  CHECK(s.dwCurrentState == SERVICE_STOP_PENDING);
  CHECK(s.dwCheckPoint == 1);  // a new pending state starts over
  CHECK(s.dwWaitHint == win::kStopWaitHintMs);
  CHECK(s.dwControlsAccepted == 0);
  CHECK(t.progress());
  CHECK(t.status().dwCheckPoint == 2);

  s = t.stopped(0);
  CHECK(s.dwCurrentState == SERVICE_STOPPED);
  CHECK(s.dwCheckPoint == 0);
  CHECK(s.dwWin32ExitCode == NO_ERROR);
}

TEST_CASE("service status: a failing exit code is a service-specific error") {
  win::ServiceStatusTracker t;
  t.starting();
  const auto s = t.stopped(3);
  CHECK(s.dwWin32ExitCode == ERROR_SERVICE_SPECIFIC_ERROR);
  CHECK(s.dwServiceSpecificExitCode == 3);
  // Starting again clears it.
  CHECK(t.starting().dwWin32ExitCode == NO_ERROR);
}

TEST_CASE("run_service from a console says so instead of hanging") {
  const int rc = win::run_service(L"tunneld-test", {[](win::ServiceReporter&) { return 0; }, {}});
  CHECK(rc == win::kNotStartedByServiceManager);
}

TEST_CASE("loop events: posts from other threads reach the loop, coalesced, stop first") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  std::vector<win::ServiceEvent> seen;
  win::LoopEvents events(&loop, [&](win::ServiceEvent e) {
    seen.push_back(e);
    if (e == win::ServiceEvent::stop) uv_stop(&loop);
  });
  const auto post = events.poster();
  std::thread scm([post] {
    post(win::ServiceEvent::reload);
    post(win::ServiceEvent::reload);
    post(win::ServiceEvent::stop);
  });
  scm.join();
  uv_run(&loop, UV_RUN_DEFAULT);
  // The three posts may arrive in one wake-up or two; stop is never lost and
  // reload comes at most twice.
  REQUIRE_FALSE(seen.empty());
  int stops = 0;
  int reloads = 0;
  for (auto e : seen) (e == win::ServiceEvent::stop ? stops : reloads)++;
  CHECK(stops == 1);
  CHECK(reloads >= 1);
  CHECK(reloads <= 2);
  events.close();
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop events: a poster outliving the loop events does nothing") {
  uv_loop_t loop;
  uv_loop_init(&loop);
  win::LoopEvents::Poster post;
  int calls = 0;
  {
    win::LoopEvents events(&loop, [&](win::ServiceEvent) { ++calls; });
    post = events.poster();
  }                               // closed by the destructor
  post(win::ServiceEvent::stop);  // as the SCM may do after the daemon is gone
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK(calls == 0);
  CHECK(uv_loop_close(&loop) == 0);
}
