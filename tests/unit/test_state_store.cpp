#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "state_store.h"
#include "temp_dir.h"

using test_support::mode_of;
using test_support::TempDir;
using tunneld::StateStore;
using tunneld::StateStoreError;
using tunneld::control::OpenRequest;

namespace {

OpenRequest sample(std::string_view name) {
  OpenRequest r;
  r.set_name(std::string(name));
  r.set_mode(tunneld::control::MODE_SOURCE);
  r.set_listen("127.0.0.1:0");
  r.set_bind_address("127.0.0.1");
  r.set_endpoint("wss://relay.example:8443");
  r.set_access_token("access-" + std::string(name));
  r.set_client_token("0b7c1b2e-8f6a-4c1e-9d3a-6e2f9a1c5b7d");
  r.set_capath("/etc/ssl/certs");
  r.set_cafile("/etc/tunneld/ca.pem");
  r.set_no_ssl_host_verify(true);
  r.set_settings_json(R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"100"}}}})");
  return r;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    names.push_back(e.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

// Restores the umask when a test changed it.
struct UmaskGuard {
  mode_t old;
  explicit UmaskGuard(mode_t m) : old(::umask(m)) {}
  ~UmaskGuard() { ::umask(old); }
};

}  // namespace

TEST_SUITE("state_store") {
  TEST_CASE("sessions round-trip through a new store, tokens included") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    {
      StateStore store(dir);
      CHECK(store.dir() == dir);
      REQUIRE_FALSE(store.save("b2", sample("beta")));
      REQUIRE_FALSE(store.save("a1", sample("alpha")));
    }
    StateStore store(dir);
    const auto loaded = store.load_all();
    CHECK(loaded.errors.empty());
    REQUIRE(loaded.sessions.size() == 2);
    CHECK(loaded.sessions[0].id == "a1");
    CHECK(loaded.sessions[1].id == "b2");
    CHECK(loaded.sessions[0].request.SerializeAsString() == sample("alpha").SerializeAsString());
    CHECK(loaded.sessions[1].request.access_token() == "access-beta");
    CHECK(loaded.sessions[1].request.client_token() == "0b7c1b2e-8f6a-4c1e-9d3a-6e2f9a1c5b7d");
    CHECK(loaded.sessions[1].request.no_ssl_host_verify());
  }

  TEST_CASE("the directory is 0700 and session files 0600 whatever the umask") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    UmaskGuard umask(0);
    StateStore store(dir);
    CHECK(mode_of(dir) == 0700);
    REQUIRE_FALSE(store.save("s1", sample("one")));
    CHECK(store.path_of("s1") == dir + "/s1.session");
    CHECK(mode_of(store.path_of("s1")) == 0600);
    struct stat st {};
    REQUIRE(::stat(store.path_of("s1").c_str(), &st) == 0);
    CHECK(st.st_uid == ::geteuid());
  }

  TEST_CASE("an existing directory readable by others is tightened to 0700") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::chmod(dir.c_str(), 0755) == 0);
    StateStore store(dir);
    CHECK(mode_of(dir) == 0700);
  }

  TEST_CASE("a directory writable by group or others is refused") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    for (mode_t mode : {0777, 0720, 0702, 01777}) {
      CAPTURE(mode);
      REQUIRE(::chmod(dir.c_str(), mode) == 0);
      try {
        StateStore store(dir);
        FAIL("expected StateStoreError");
      } catch (const StateStoreError& e) {
        const std::string msg = e.what();
        CHECK(msg.find("state directory " + dir + ": writable by group or others") == 0);
        CHECK(msg.find("chmod 700 " + dir) != std::string::npos);
      }
      CHECK(mode_of(dir) == mode);  // not "fixed" behind the admin's back
    }
  }

  TEST_CASE("a directory owned by another user is refused") {
    if (::geteuid() != 0) {
      MESSAGE("needs root to chown; skipped");
      return;
    }
    TempDir tmp;
    const std::string dir = tmp / "state";
    REQUIRE(::mkdir(dir.c_str(), 0700) == 0);
    REQUIRE(::chown(dir.c_str(), 65534, 65534) == 0);
    CHECK_THROWS_WITH_AS(StateStore{dir},
                         doctest::Contains("owned by uid 65534, not by the user tunneld runs as"),
                         StateStoreError);
  }

  TEST_CASE("a path that is not a directory, or whose parent is missing, is refused") {
    TempDir tmp;
    tmp.write("file", "x");
    CHECK_THROWS_AS(StateStore{tmp / "file"}, StateStoreError);
    CHECK_THROWS_WITH_AS(StateStore{tmp / "missing/state"},
                         doctest::Contains("cannot create state directory"), StateStoreError);
  }

  TEST_CASE("corrupt files are skipped with a message naming them; the rest loads") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    StateStore store(dir);
    REQUIRE_FALSE(store.save("good", sample("good")));
    REQUIRE_FALSE(store.save("flipped", sample("flipped")));
    REQUIRE_FALSE(store.save("cut", sample("cut")));
    REQUIRE_FALSE(store.save("open", sample("open")));

    std::string bytes = slurp(store.path_of("flipped"));
    bytes[bytes.size() / 2] ^= 0x20;
    std::ofstream(store.path_of("flipped"), std::ios::binary | std::ios::trunc) << bytes;
    bytes = slurp(store.path_of("cut"));
    std::ofstream(store.path_of("cut"), std::ios::binary | std::ios::trunc)
        << bytes.substr(0, bytes.size() - 3);
    REQUIRE(::chmod(store.path_of("open").c_str(), 0644) == 0);
    tmp.write("state/text.session", "name = \"not ours\"\n");
    tmp.write("state/empty.session", "");
    tmp.write("state/bad id!.session", "x");
    tmp.write("state/README", "not a session file: ignored silently");

    const auto loaded = store.load_all();
    REQUIRE(loaded.sessions.size() == 1);
    CHECK(loaded.sessions[0].id == "good");
    const std::vector<std::string> expected = {
        dir + "/bad id!.session: not a valid session id; skipped",
        dir + "/cut.session: truncated or padded (header says " +
            std::to_string(sample("cut").ByteSizeLong()) + " bytes, found " +
            std::to_string(sample("cut").ByteSizeLong() - 3) + "); skipped",
        dir + "/empty.session: truncated (0 bytes); skipped",
        dir + "/flipped.session: checksum mismatch (file corrupt); skipped",
        dir +
            "/open.session: mode 0644 lets others read its tokens (expected 0600); check who "
            "changed it; skipped",
        dir + "/text.session: not a tunneld session file (bad magic); skipped",
    };
    CHECK(loaded.errors == expected);
  }

  TEST_CASE("random garbage never crashes the loader") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    StateStore store(dir);
    REQUIRE_FALSE(store.save("base", sample("base")));
    const std::string valid = slurp(store.path_of("base"));
    std::mt19937 rng(12345);
    for (int i = 0; i < 200; ++i) {
      std::string bytes = valid;
      if (i % 2 == 0) {
        // Random bytes of random length, sometimes after a valid magic.
        bytes.assign(rng() % 200, '\0');
        for (auto& b : bytes) b = static_cast<char>(rng());
        if (i % 4 == 0) bytes = valid.substr(0, 8) + bytes;
      } else {
        bytes[rng() % bytes.size()] = static_cast<char>(rng());
      }
      tmp.write("state/g" + std::to_string(i) + ".session", bytes, 0600);
    }
    const auto loaded = store.load_all();
    CHECK(loaded.sessions.size() + loaded.errors.size() == 201);
    CHECK(loaded.errors.size() >= 190);  // a few single-byte rewrites may change nothing
  }

  TEST_CASE("saving again replaces the file atomically, by rename") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    StateStore store(dir);
    OpenRequest first = sample("s");
    REQUIRE_FALSE(store.save("s", first));
    const std::string old_bytes = slurp(store.path_of("s"));
    // A second name for the old inode: an in-place rewrite would change it too.
    REQUIRE(::link(store.path_of("s").c_str(), (dir + "/old.link").c_str()) == 0);
    // A temporary left by a crash during an earlier save does not block this one.
    tmp.write("state/.s.session.tmp", "half written", 0600);

    OpenRequest second = sample("s");
    second.set_access_token("rotated-access-token");
    REQUIRE_FALSE(store.save("s", second));
    CHECK(slurp(dir + "/old.link") == old_bytes);
    CHECK(slurp(store.path_of("s")) != old_bytes);
    CHECK(mode_of(store.path_of("s")) == 0600);
    CHECK(list_dir(dir) == std::vector<std::string>{"old.link", "s.session"});

    const auto loaded = store.load_all();
    REQUIRE(loaded.sessions.size() == 1);
    CHECK(loaded.sessions[0].request.access_token() == "rotated-access-token");
  }

  TEST_CASE("load_all deletes temporaries of an interrupted save") {
    TempDir tmp;
    const std::string dir = tmp / "state";
    StateStore store(dir);
    tmp.write("state/.x.session.tmp", "half written", 0600);
    const auto loaded = store.load_all();
    CHECK(loaded.sessions.empty());
    CHECK(loaded.errors.empty());
    CHECK(list_dir(dir).empty());
  }

  TEST_CASE("remove deletes the session; a missing one is reported") {
    TempDir tmp;
    StateStore store(tmp / "state");
    REQUIRE_FALSE(store.save("gone", sample("gone")));
    CHECK_FALSE(store.remove("gone"));
    CHECK(store.load_all().sessions.empty());
    CHECK(store.remove("gone") == std::errc::no_such_file_or_directory);
  }

  TEST_CASE("ids that are not plain names are refused") {
    TempDir tmp;
    StateStore store(tmp / "state");
    const std::string too_long(65, 'a');
    for (std::string_view id : {std::string_view(), std::string_view("../escape"),
                                std::string_view("a/b"), std::string_view(".hidden"),
                                std::string_view("with space"), std::string_view(too_long)}) {
      CAPTURE(id);
      CHECK(store.save(id, sample("x")) == std::errc::invalid_argument);
      CHECK(store.remove(id) == std::errc::invalid_argument);
    }
    CHECK(list_dir(tmp.path()) == std::vector<std::string>{"state"});
    CHECK(StateStore::is_valid_id(std::string(64, 'a')));
  }

  TEST_CASE("a moved store keeps working") {
    TempDir tmp;
    StateStore a(tmp / "state");
    StateStore b(std::move(a));
    CHECK_FALSE(b.save("m", sample("m")));
    CHECK(b.load_all().sessions.size() == 1);
  }
}
