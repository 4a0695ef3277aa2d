// libFuzzer target for the relay's admin API (relay/admin_api.h): the HTTP
// request head parser as the server uses it (whole buffer re-parsed as bytes
// arrive), then the routing with the body.
//  - parse_request_head: 0 only while the head is incomplete and within the
//    cap; a head length never beyond the data or the cap; errors only 400,
//    413, 431, 501, 505; a body length within the cap; a complete head
//    parses the same alone and with more bytes after it;
//  - what the parser accepts can be logged as it is: the method and target
//    are printable ASCII without spaces, and the head holds no bare CR/LF;
//  - check_access refuses only with 400, 401, 403 or 415, and with a token
//    configured it lets nothing through without `Authorization: Bearer`;
//  - AdminApi::handle never throws, answers a known status with a JSON body,
//    a tunnel it opened is then listed, and a 503 comes only from a full relay.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "admin_api.h"
#include "fuzz_check.h"

namespace {

// Small, so that a few requests reach the relay's "full" answer.
constexpr std::size_t kMaxOpen = 2;

class FakeControl : public relay::TunnelControl {
 public:
  std::optional<relay::OpenedTunnel> open_tunnel(std::vector<std::string> services,
                                                 std::chrono::seconds lifetime,
                                                 std::string& error) override {
    if (views.size() >= kMaxOpen) {
      error = "the fake relay is full";
      return std::nullopt;
    }
    FUZZ_CHECK(lifetime.count() >= 1 && lifetime.count() <= 43200);
    FUZZ_CHECK(services.size() <= 3);
    relay::TunnelView v;
    v.id = "t" + std::to_string(views.size() + 1);
    v.status = "OPEN";
    v.services = std::move(services);
    views.push_back(v);
    return relay::OpenedTunnel{v.id, "src-" + v.id, "dst-" + v.id};
  }
  bool close_tunnel(std::string_view id, std::string_view) override {
    for (auto& v : views) {
      if (v.id == id) {
        v.status = "CLOSED";
        return true;
      }
    }
    return false;
  }
  std::vector<relay::TunnelView> tunnels() const override { return views; }
  std::vector<relay::TunnelView> views;
};

constexpr std::size_t kMaxHead = 2048;
constexpr std::size_t kMaxBody = 4096;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  FakeControl control;
  relay::AdminApi api(control, std::chrono::seconds(600), std::chrono::seconds(43200));

  // As the server does: the buffer grows, the whole head is re-parsed.
  std::string_view rest = text;
  for (int request = 0; request < 4 && !rest.empty(); ++request) {
    relay::HttpRequest req;
    long r = 0;
    std::size_t have = 0;
    const std::size_t step = 1 + static_cast<std::uint8_t>(rest[0]) % 64;
    while (have < rest.size()) {
      have = std::min(rest.size(), have + step);
      req = relay::HttpRequest{};
      r = relay::parse_request_head(rest.substr(0, have), req, kMaxHead, kMaxBody);
      if (r != 0) break;
      FUZZ_CHECK(have <= kMaxHead);
    }
    if (r < 0) {
      FUZZ_CHECK(r == -400 || r == -413 || r == -431 || r == -501 || r == -505);
      return 0;
    }
    if (r == 0) return 0;
    const auto head = static_cast<std::size_t>(r);
    FUZZ_CHECK(head <= have && head <= kMaxHead && head >= 4);
    FUZZ_CHECK(rest.substr(head - 4, 4) == "\r\n\r\n");
    FUZZ_CHECK(req.content_length <= kMaxBody && !req.method.empty());
    relay::HttpRequest alone;
    FUZZ_CHECK(relay::parse_request_head(rest.substr(0, head), alone, kMaxHead, kMaxBody) == r);
    FUZZ_CHECK(alone.method == req.method && alone.target == req.target &&
               alone.content_length == req.content_length);
    for (const std::string* s : {&req.method, &req.target}) {
      FUZZ_CHECK(!s->empty() &&
                 std::all_of(s->begin(), s->end(), [](char c) { return c > 0x20 && c < 0x7f; }));
    }
    for (std::size_t i = 0; i + 1 < head; ++i) {
      FUZZ_CHECK((rest[i] == '\r') == (rest[i + 1] == '\n'));
      if (rest[i + 1] == '\n') ++i;
    }

    relay::AdminAccess access;
    access.bound_host = "127.0.0.1";
    access.names = {"relay.example"};
    if (const auto refused = relay::check_access(access, req)) {
      FUZZ_CHECK(refused->status == 400 || refused->status == 403 || refused->status == 415);
    }
    access.token = "fuzz-admin-token-0123456789";
    if (const auto refused = relay::check_access(access, req)) {
      FUZZ_CHECK(refused->status == 400 || refused->status == 401 || refused->status == 403 ||
                 refused->status == 415);
      FUZZ_CHECK(refused->body.find(access.token) == std::string::npos);
    } else {
      FUZZ_CHECK(req.authorization && req.authorization->find(access.token) != std::string::npos);
    }

    const std::string_view body = rest.substr(head, req.content_length);
    const std::size_t tunnels_before = control.views.size();
    relay::HttpResponse resp = api.handle(req.method, req.target, body);
    FUZZ_CHECK(resp.status >= 200 && resp.status < 600);
    FUZZ_CHECK(nlohmann::json::accept(resp.body));
    const std::string wire = relay::format_response(resp);
    FUZZ_CHECK(wire.rfind("HTTP/1.1 " + std::to_string(resp.status) + " ", 0) == 0);
    if (resp.status == 503) FUZZ_CHECK(tunnels_before >= kMaxOpen);
    if (control.views.size() > tunnels_before) {
      FUZZ_CHECK(resp.status == 200);
      const auto listed = api.handle("GET", "/tunnels/" + control.views.back().id, "");
      FUZZ_CHECK(listed.status == 200);
    }
    rest.remove_prefix(std::min(rest.size(), head + req.content_length));
  }
  return 0;
}
