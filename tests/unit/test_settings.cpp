#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "settings.h"

using tunnel::Settings;
using tunnel::settings_from_json;
using tunnel::settings_to_json;
using tunnel::SettingsError;
using tunnel::validate;

namespace {

// The message of the SettingsError that `f` throws, or "" if none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const SettingsError& e) {
    return e.what();
  }
  return "";
}

std::string proxy_json(const std::string& inner) {
  return R"({"tunneling":{"proxy":{)" + inner + "}}}";
}

}  // namespace

TEST_SUITE("settings") {
  TEST_CASE("export then import gives the defaults back") {
    const Settings defaults;
    CHECK(settings_from_json(settings_to_json(defaults)) == defaults);
    CHECK_NOTHROW(validate(defaults));
  }

  TEST_CASE("export then import round-trips non-default values") {
    Settings s;
    s.default_bind_address = "0.0.0.0";
    s.tcp_connection_retry_count = -1;
    s.ws_reconnect_on_data_error = false;
    s.ws_subprotocol = "aws.iot.securetunneling-3.0";
    s.ws_pong_timeout_ms = 1234;
    s.tcp_write_buffer_limit = 1 << 20;
    CHECK(settings_from_json(settings_to_json(s)) == s);
  }

  TEST_CASE("export has the reference shape, every value a string, plus our keys") {
    const auto j = nlohmann::json::parse(settings_to_json(Settings{}));
    REQUIRE(j.size() == 1);
    const auto& proxy = j.at("tunneling").at("proxy");
    CHECK(proxy.at("default_bind_address") == "localhost");
    CHECK(proxy.at("https_proxy") == "");
    CHECK(proxy.at("message").at("data_length_size") == "2");
    CHECK(proxy.at("message").at("max_payload_size") == "64512");
    CHECK(proxy.at("message").at("max_size") == "65536");
    CHECK(proxy.at("tcp").at("connection_retry_count") == "5");
    CHECK(proxy.at("tcp").at("connection_retry_delay_ms") == "1000");
    CHECK(proxy.at("tcp").at("read_buffer_size") == "131076");
    CHECK(proxy.at("tcp").at("write_buffer_limit") == "262144");
    CHECK(proxy.at("tcp").at("max_simultaneous_connections") == "128");
    const auto& ws = proxy.at("websocket");
    CHECK(ws.at("ping_period_ms") == "5000");
    CHECK(ws.at("retry_delay_ms") == "2500");
    CHECK(ws.at("connect_retry_count") == "-1");
    CHECK(ws.at("reconnect_on_data_error") == "true");
    CHECK(ws.at("subprotocol") == "aws.iot.securetunneling-1.0");
    CHECK(ws.at("max_frame_size") == "131076");
    CHECK(ws.at("write_buffer_size") == "131076");
    CHECK(ws.at("read_buffer_size") == "131076");
    CHECK(ws.at("pong_timeout_ms") == "10000");
    CHECK(ws.at("retry_max_delay_ms") == "30000");
    CHECK(ws.at("connect_timeout_ms") == "10000");
    int leaves = 0;
    for (const auto& group : proxy.items()) {
      if (group.value().is_object()) {
        for (const auto& leaf : group.value().items()) {
          CHECK_MESSAGE(leaf.value().is_string(), group.key() << "." << leaf.key());
          ++leaves;
        }
      } else {
        CHECK(group.value().is_string());
        ++leaves;
      }
    }
    CHECK(leaves ==
          21);  // the reference's keys + ours (https_proxy, max_simultaneous_connections, ...)
  }

  TEST_CASE("the reference's own export file is read") {
    const auto s = settings_from_json(R"({
    "tunneling": {
        "proxy": {
            "default_bind_address": "localhost",
            "message": {"data_length_size": "2", "max_payload_size": "64512", "max_size": "65536"},
            "tcp": {"connection_retry_count": "5", "connection_retry_delay_ms": "1000",
                    "read_buffer_size": "131076"},
            "websocket": {"ping_period_ms": "5000", "retry_delay_ms": "2500",
                "connect_retry_count": "-1", "reconnect_on_data_error": "true",
                "subprotocol": "aws.iot.securetunneling-1.0", "max_frame_size": "131076",
                "write_buffer_size": "131076", "read_buffer_size": "131076"}
        }
    }
})");
    CHECK(s == Settings{});
  }

  TEST_CASE("values may be strings or numbers") {
    const auto s = settings_from_json(proxy_json(
        R"("tcp":{"connection_retry_count":-1,"connection_retry_delay_ms":"1500"},
           "websocket":{"ping_period_ms":20000,"retry_delay_ms":"100"})"));
    CHECK(s.tcp_connection_retry_count == -1);
    CHECK(s.tcp_connection_retry_delay_ms == 1500);
    CHECK(s.ws_ping_period_ms == 20000);
    CHECK(s.ws_retry_delay_ms == 100);
    // Untouched keys keep the base's values.
    CHECK(s.tcp_read_buffer_size == Settings{}.tcp_read_buffer_size);
  }

  TEST_CASE("keys overlay the given base, not the defaults") {
    Settings base;
    base.ws_ping_period_ms = 777;
    base.default_bind_address = "::1";
    const auto s = settings_from_json(proxy_json(R"("tcp":{"read_buffer_size":"4096"})"), base);
    CHECK(s.ws_ping_period_ms == 777);
    CHECK(s.default_bind_address == "::1");
    CHECK(s.tcp_read_buffer_size == 4096);
  }

  TEST_CASE("booleans: true/false, \"true\"/\"false\", 0/1") {
    const auto read = [](const std::string& v) {
      return settings_from_json(proxy_json(R"("websocket":{"reconnect_on_data_error":)" + v + "}"))
          .ws_reconnect_on_data_error;
    };
    CHECK(read("true"));
    CHECK_FALSE(read("false"));
    CHECK(read(R"("true")"));
    CHECK_FALSE(read(R"("false")"));
    CHECK(read("1"));
    CHECK_FALSE(read("0"));
    CHECK(read(R"("1")"));
    CHECK_FALSE(read(R"("0")"));
    const auto e = error_of([&] { read(R"("yes")"); });
    CHECK(e.find("tunneling.proxy.websocket.reconnect_on_data_error") != std::string::npos);
    CHECK(e.find("\"yes\"") != std::string::npos);
    CHECK(error_of([&] { read("2"); }) != "");
  }

  TEST_CASE("unknown keys are ignored at every level") {
    const auto s = settings_from_json(R"({"other": 1, "tunneling": {"x": [], "proxy": {
        "future_key": "v", "message": {"new": 1}, "tcp": {"read_buffer_size": "8192", "y": {}},
        "websocket": {"z": null}, "newgroup": {"a": "b"}}}})");
    CHECK(s.tcp_read_buffer_size == 8192);
    CHECK(settings_from_json("{}") == Settings{});
    CHECK(settings_from_json(R"({"tunneling":{}})") == Settings{});
  }

  TEST_CASE("a bad value names the full dotted key") {
    const auto e =
        error_of([] { settings_from_json(proxy_json(R"("websocket":{"ping_period_ms":"abc"})")); });
    CHECK(e.find("tunneling.proxy.websocket.ping_period_ms") == 0);
    CHECK(e.find("\"abc\"") != std::string::npos);

    struct Case {
      const char* inner;
      const char* key;
    };
    const Case cases[] = {
        {R"("message":{"max_payload_size":"70000"})", "tunneling.proxy.message.max_payload_size"},
        {R"("message":{"max_payload_size":0})", "tunneling.proxy.message.max_payload_size"},
        {R"("message":{"data_length_size":"4"})", "tunneling.proxy.message.data_length_size"},
        {R"("tcp":{"connection_retry_count":-2})", "tunneling.proxy.tcp.connection_retry_count"},
        {R"("tcp":{"connection_retry_delay_ms":"1.5"})",
         "tunneling.proxy.tcp.connection_retry_delay_ms"},
        {R"("tcp":{"read_buffer_size":"99999999999"})", "tunneling.proxy.tcp.read_buffer_size"},
        {R"("tcp":{"write_buffer_limit":" 5"})", "tunneling.proxy.tcp.write_buffer_limit"},
        {R"("websocket":{"ping_period_ms":0})", "tunneling.proxy.websocket.ping_period_ms"},
        {R"("websocket":{"connect_retry_count":null})",
         "tunneling.proxy.websocket.connect_retry_count"},
        {R"("websocket":{"max_frame_size":"131077"})", "tunneling.proxy.websocket.max_frame_size"},
        {R"("websocket":{"subprotocol":"aws.iot.securetunneling-4.0"})",
         "tunneling.proxy.websocket.subprotocol"},
        {R"("websocket":{"subprotocol":3})", "tunneling.proxy.websocket.subprotocol"},
        {R"("websocket":{"pong_timeout_ms":[1]})", "tunneling.proxy.websocket.pong_timeout_ms"},
        {R"("default_bind_address":5)", "tunneling.proxy.default_bind_address"},
        {R"("default_bind_address":"")", "tunneling.proxy.default_bind_address"},
        {R"("tcp":"x")", "tunneling.proxy.tcp"},
    };
    for (const auto& c : cases) {
      const auto msg = error_of([&] { settings_from_json(proxy_json(c.inner)); });
      CHECK_MESSAGE(msg.find(c.key) == 0, c.inner << " -> " << msg);
    }
  }

  TEST_CASE("all three subprotocols are accepted") {
    for (const char* p : {"aws.iot.securetunneling-1.0", "aws.iot.securetunneling-2.0",
                          "aws.iot.securetunneling-3.0"}) {
      const auto s = settings_from_json(
          proxy_json(std::string(R"("websocket":{"subprotocol":")") + p + "\"}"));
      CHECK(s.ws_subprotocol == p);
      CHECK_NOTHROW(validate(s));
    }
  }

  TEST_CASE("invalid JSON reports where") {
    const auto e =
        error_of([] { settings_from_json("{\n  \"tunneling\": {\n    \"proxy\": ,\n}"); });
    CHECK(e.find("invalid JSON at line 3") == 0);
    CHECK(error_of([] { settings_from_json(""); }).find("invalid JSON") == 0);
    CHECK(error_of([] { settings_from_json("[1, 2]"); }).find("top level") != std::string::npos);
  }

  TEST_CASE("a number beyond a double's range is a SettingsError, not a crash") {
    // Found by fuzz-settings: nlohmann's out_of_range escaped and aborted
    // localproxy --settings-json, and tunneld on `tunnelctl open`.
    for (const char* text :
         {R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":1e999}}}})", "-1e400",
          R"({"x": 888888888888888888888888888888888888888888888888888888888888888888888888888)"
          R"(8888888888888888888888888888888888888888888888888888888888888888888888888888888)"
          R"(8888888888888888888888888888888888888888888888888888888888888888888888888888888)"
          R"(88888888888888888888888888888888888888888888888888888888888888888888888888888})"}) {
      const std::string e = error_of([text] { settings_from_json(text); });
      CHECK(e.find("invalid JSON") == 0);
      CHECK(e.find("number overflow") != std::string::npos);
    }
  }

  TEST_CASE("validate checks ranges and cross-field rules") {
    Settings s;
    s.ws_ping_period_ms = 0;
    CHECK(error_of([&] { validate(s); }).find("tunneling.proxy.websocket.ping_period_ms") == 0);

    s = Settings{};
    s.tcp_connection_retry_count = -2;
    CHECK(error_of([&] { validate(s); }).find("tunneling.proxy.tcp.connection_retry_count") == 0);

    s = Settings{};
    s.ws_subprotocol = "mqtt";
    CHECK(error_of([&] { validate(s); }).find("tunneling.proxy.websocket.subprotocol") == 0);

    s = Settings{};
    s.message_max_size = 1000;
    CHECK(error_of([&] { validate(s); }).find("tunneling.proxy.message.max_payload_size") == 0);

    s = Settings{};
    s.ws_retry_delay_ms = 60000;  // above the default 30 s cap
    CHECK(error_of([&] { validate(s); }).find("tunneling.proxy.websocket.retry_max_delay_ms") == 0);
  }
}

TEST_SUITE("settings https_proxy") {
  TEST_CASE("https_proxy: empty by default, read, validated without echo, exported bare") {
    CHECK(Settings{}.https_proxy.empty());
    const auto j = nlohmann::json::parse(settings_to_json(Settings{}));
    CHECK(j["tunneling"]["proxy"]["https_proxy"] == "");
    Settings s = settings_from_json(proxy_json(R"("https_proxy":"http://u:pw-s3cret-1@p:3128")"));
    CHECK(s.https_proxy == "http://u:pw-s3cret-1@p:3128");
    CHECK_NOTHROW(validate(s));
    const std::string exported = settings_to_json(s);
    CHECK(exported.find("s3cret") == std::string::npos);
    CHECK(exported.find("\"http://p:3128\"") != std::string::npos);
    s.https_proxy = "direct";
    CHECK(settings_from_json(settings_to_json(s)) == s);
    s.https_proxy = "DIRECT";  // the keyword, not a host named DIRECT
    CHECK(settings_from_json(settings_to_json(s)) == s);
    const std::string e = error_of(
        [] { settings_from_json(proxy_json(R"("https_proxy":"ftp://u:pw-s3cret-1@p")")); });
    CHECK(e.find("tunneling.proxy.https_proxy: ") == 0);
    CHECK(e.find("s3cret") == std::string::npos);
    CHECK(error_of([] { settings_from_json(proxy_json(R"("https_proxy":3128)")); }) != "");
  }
}
