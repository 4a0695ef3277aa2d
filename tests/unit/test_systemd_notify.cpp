#include <doctest/doctest.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>

#include "systemd_notify.h"
#include "unix_datagram_receiver.h"

using tunneld::platform::SystemdNotifier;
using tunneld::test::UnixDatagramReceiver;

namespace {

std::string next(UnixDatagramReceiver& manager) {
  auto datagram = manager.receive();
  REQUIRE(datagram.has_value());
  return datagram->data;
}

// Sets the sd_notify environment for one test case and clears it afterwards.
struct NotifyEnvironment {
  NotifyEnvironment(const std::string& socket, const char* watchdog_usec,
                    const char* watchdog_pid) {
    ::setenv("NOTIFY_SOCKET", socket.c_str(), 1);
    set("WATCHDOG_USEC", watchdog_usec);
    set("WATCHDOG_PID", watchdog_pid);
  }
  ~NotifyEnvironment() {
    ::unsetenv("NOTIFY_SOCKET");
    ::unsetenv("WATCHDOG_USEC");
    ::unsetenv("WATCHDOG_PID");
  }
  static void set(const char* name, const char* value) {
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
};

}  // namespace

TEST_CASE("the service manager sees the daemon's life cycle as sd_notify datagrams") {
  UnixDatagramReceiver manager("notify");
  SystemdNotifier notifier(manager.path());
  REQUIRE(notifier.enabled());

  CHECK_FALSE(notifier.status("restoring 3 sessions"));
  CHECK(next(manager) == "STATUS=restoring 3 sessions");
  CHECK_FALSE(notifier.ready());
  CHECK(next(manager) == "READY=1");
  CHECK_FALSE(notifier.watchdog_ping());
  CHECK(next(manager) == "WATCHDOG=1");
  CHECK_FALSE(notifier.stopping());
  CHECK(next(manager) == "STOPPING=1");
}

TEST_CASE("a newline in the status text cannot inject another assignment") {
  UnixDatagramReceiver manager("notify");
  SystemdNotifier notifier(manager.path());
  CHECK_FALSE(notifier.status("2 sessions\nREADY=1"));
  CHECK(next(manager) == "STATUS=2 sessions READY=1");
}

TEST_CASE("a reload is announced with a monotonic time stamp") {
  UnixDatagramReceiver manager("notify");
  SystemdNotifier notifier(manager.path());
  CHECK_FALSE(notifier.reloading());
  std::string datagram = next(manager);
  const std::string prefix = "RELOADING=1\nMONOTONIC_USEC=";
  REQUIRE(datagram.rfind(prefix, 0) == 0);
  std::string usec = datagram.substr(prefix.size());
  CHECK_FALSE(usec.empty());
  CHECK(usec.find_first_not_of("0123456789") == std::string::npos);
}

TEST_CASE("NOTIFY_SOCKET in the abstract namespace is reached") {
  UnixDatagramReceiver manager("tunneld-notify", /*abstract=*/true);
  SystemdNotifier notifier(manager.path());
  CHECK_FALSE(notifier.ready());
  CHECK(next(manager) == "READY=1");
}

TEST_CASE("a vanished service manager is reported, not fatal") {
  std::string path;
  {
    UnixDatagramReceiver manager("notify");
    path = manager.path();
  }
  SystemdNotifier notifier(path);
  CHECK(notifier.watchdog_ping());
  CHECK(SystemdNotifier("relative/path").ready() == std::errc::invalid_argument);
}

TEST_CASE("an inert notifier sends nothing and never fails") {
  SystemdNotifier notifier;
  CHECK_FALSE(notifier.enabled());
  CHECK_FALSE(notifier.ready());
  CHECK_FALSE(notifier.status("x"));
  CHECK_FALSE(notifier.watchdog_interval().has_value());
}

#if TUNNELD_WITH_SYSTEMD
TEST_CASE("from_environment follows NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID") {
  UnixDatagramReceiver manager("notify");
  const std::string self = std::to_string(::getpid());

  SUBCASE("watchdog meant for this process") {
    NotifyEnvironment env(manager.path(), "30000000", self.c_str());
    auto notifier = SystemdNotifier::from_environment();
    REQUIRE(notifier.enabled());
    REQUIRE(notifier.watchdog_interval().has_value());
    CHECK(*notifier.watchdog_interval() == std::chrono::seconds(30));
    CHECK_FALSE(notifier.ready());
    CHECK(next(manager) == "READY=1");
  }
  SUBCASE("watchdog without WATCHDOG_PID") {
    NotifyEnvironment env(manager.path(), "5000000", nullptr);
    CHECK(SystemdNotifier::from_environment().watchdog_interval() == std::chrono::seconds(5));
  }
  SUBCASE("watchdog inherited from a parent") {
    NotifyEnvironment env(manager.path(), "30000000", "1");
    CHECK_FALSE(SystemdNotifier::from_environment().watchdog_interval().has_value());
  }
  SUBCASE("watchdog off or garbled") {
    NotifyEnvironment env(manager.path(), "0", nullptr);
    CHECK_FALSE(SystemdNotifier::from_environment().watchdog_interval().has_value());
    ::setenv("WATCHDOG_USEC", "30s", 1);
    CHECK_FALSE(SystemdNotifier::from_environment().watchdog_interval().has_value());
  }
  SUBCASE("not started by systemd") {
    ::unsetenv("NOTIFY_SOCKET");
    auto notifier = SystemdNotifier::from_environment();
    CHECK_FALSE(notifier.enabled());
    CHECK_FALSE(notifier.ready());
    CHECK_FALSE(manager.receive(50).has_value());
  }
}
#endif
