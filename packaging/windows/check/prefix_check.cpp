// prefix-check: every library of the Windows dependency prefix links into one
// static program and does its basic job there. Prints each library's version
// and one PASS/FAIL line per library; exits 0 only if all passed. Builds
// natively too.
#include <mosquitto.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <toml++/toml.h>
#include <uv.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <sstream>
#include <string>

#include "control.pb.h"

namespace {

int g_failures = 0;

void report(bool ok, const char* what, const std::string& detail) {
  std::printf("%s prefix-check %s: %s\n", ok ? "PASS" : "FAIL", what, detail.c_str());
  if (!ok) ++g_failures;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"prefix-check"};
  std::string name = "probe";
  app.add_option("--name", name, "a session name");
  CLI11_PARSE(app, argc, argv);
  report(name == "probe", "CLI11", "parsed the command line");

  uv_loop_t loop;
  int ticks = 0;
  uv_loop_init(&loop);
  uv_timer_t timer;
  uv_timer_init(&loop, &timer);
  timer.data = &ticks;
  uv_timer_start(
      &timer, [](uv_timer_t* t) { ++*static_cast<int*>(t->data); }, 1, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  report(ticks == 1 && uv_loop_close(&loop) == 0, "libuv", uv_version_string());

  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned md_len = 0;
  const bool sha = EVP_Digest("abc", 3, md, &md_len, EVP_sha256(), nullptr) == 1 && md_len == 32 &&
                   md[0] == 0xba && md[31] == 0xad;
  report(sha, "OpenSSL", OpenSSL_version(OPENSSL_VERSION));

  tunneld::control::Request request;
  request.set_version(1);
  request.set_request_id(42);
  request.mutable_list_request();
  std::string wire;
  tunneld::control::Request back;
  const bool pb = request.SerializeToString(&wire) && back.ParseFromString(wire) &&
                  back.request_id() == 42 && back.has_list_request();
  report(pb, "protobuf-lite",
         std::to_string(GOOGLE_PROTOBUF_VERSION) + ", " + std::to_string(wire.size()) + " bytes");

  std::ostringstream log_text;
  auto logger = std::make_shared<spdlog::logger>(
      "check", std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text));
  logger->set_pattern("[%n] %v");
  logger->info("session {} {}", name, fmt::format("{:04x}", 0xbeef));
  report(log_text.str().find("[check] session probe beef") != std::string::npos, "spdlog/fmt",
         "spdlog " + std::to_string(SPDLOG_VER_MAJOR) + "." + std::to_string(SPDLOG_VER_MINOR) +
             "." + std::to_string(SPDLOG_VER_PATCH) + ", fmt " + std::to_string(FMT_VERSION));

  bool toml_ok = false;
  try {
    const toml::table t = toml::parse("[[session]]\nname = \"web\"\nport = 8080\n");
    toml_ok = t["session"][0]["name"].value_or(std::string()) == "web" &&
              t["session"][0]["port"].value_or(0) == 8080;
  } catch (const toml::parse_error&) {
  }
  report(toml_ok, "toml++",
         std::to_string(TOML_LIB_MAJOR) + "." + std::to_string(TOML_LIB_MINOR) + "." +
             std::to_string(TOML_LIB_PATCH));

  const auto j = nlohmann::json::parse(R"({"services":["SSH"],"region":"x"})");
  report(j["services"][0] == "SSH", "nlohmann-json",
         std::to_string(NLOHMANN_JSON_VERSION_MAJOR) + "." +
             std::to_string(NLOHMANN_JSON_VERSION_MINOR) + "." +
             std::to_string(NLOHMANN_JSON_VERSION_PATCH));

  int major = 0;
  int minor = 0;
  int revision = 0;
  mosquitto_lib_init();
  mosquitto_lib_version(&major, &minor, &revision);
  mosquitto* m = mosquitto_new("prefix-check", true, nullptr);
  report(m != nullptr && major == 2, "libmosquitto",
         std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(revision));
  mosquitto_destroy(m);
  mosquitto_lib_cleanup();

  std::printf("prefix-check: %d failed\n", g_failures);
  return g_failures == 0 ? 0 : 1;
}
