#include <doctest/doctest.h>

#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "control/control_codec.h"

using namespace tunneld::control;

// Counts what operator new is asked for while a test watches, to show that
// the decoder never allocates what a hostile header announces.
namespace {
thread_local bool g_watch_allocations = false;
thread_local std::size_t g_largest_allocation = 0;

struct AllocationWatch {
  AllocationWatch() {
    g_largest_allocation = 0;
    g_watch_allocations = true;
  }
  ~AllocationWatch() { g_watch_allocations = false; }
  std::size_t largest() const { return g_largest_allocation; }
};
}  // namespace

// GCC pairs the inlined replacement new with free() and warns of a mismatch
// that is not one: both sides of this replacement use malloc/free.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  if (g_watch_allocations && size > g_largest_allocation) g_largest_allocation = size;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

Request open_request(std::uint64_t id) {
  Request r = make_request(id);
  auto* open = r.mutable_open_request();
  open->set_name("ssh-db");
  open->set_mode(MODE_DESTINATION);
  open->set_target("localhost:22");
  open->set_region("us-east-1");
  open->set_access_token("AQGAAXiZ-secret-access-token");
  open->set_client_token("0b7c1b2e-8f6a-4c1e-9d3a-6e2f9a1c5b7d");
  open->set_settings_json(R"({"tunneling":{"proxy":{"tcp":{"read_buffer_size":"4096"}}}})");
  return r;
}

Request list_request(std::uint64_t id) {
  Request r = make_request(id);
  r.mutable_list_request();
  return r;
}

std::string frame_of(const google::protobuf::MessageLite& m, std::size_t max = kMaxRequestSize) {
  std::string out;
  REQUIRE(append_frame(out, m, max));
  return out;
}

std::string header(std::uint32_t length) {
  return {static_cast<char>(length >> 24), static_cast<char>(length >> 16),
          static_cast<char>(length >> 8), static_cast<char>(length)};
}

// Feeds `chunks` one after the other and collects every decoded request.
std::vector<Request> decode_all(FrameDecoder& d, const std::vector<std::string>& chunks,
                                DecodeStatus& last) {
  std::vector<Request> out;
  last = DecodeStatus::need_more;
  for (const auto& chunk : chunks) {
    std::string_view in(chunk);
    for (;;) {
      Request r;
      last = d.next_message(in, r);
      if (last != DecodeStatus::ok) break;
      out.push_back(std::move(r));
    }
    if (last == DecodeStatus::too_long || last == DecodeStatus::malformed) break;
    CHECK(in.empty());
  }
  return out;
}

}  // namespace

TEST_SUITE("control_codec") {
  TEST_CASE("a frame is a big-endian length followed by the message") {
    const Request r = list_request(7);
    const std::string f = frame_of(r);
    const std::string body = r.SerializeAsString();
    REQUIRE(f.size() == kFrameHeaderSize + body.size());
    CHECK(f.substr(0, 4) == header(static_cast<std::uint32_t>(body.size())));
    CHECK(f.substr(4) == body);
  }

  TEST_CASE("two requests survive every split point") {
    const Request a = open_request(1);
    const Request b = list_request(2);
    const std::string stream = frame_of(a) + frame_of(b);
    for (std::size_t split = 0; split <= stream.size(); ++split) {
      CAPTURE(split);
      FrameDecoder d(kMaxRequestSize);
      DecodeStatus last{};
      const auto got = decode_all(d, {stream.substr(0, split), stream.substr(split)}, last);
      CHECK(last == DecodeStatus::need_more);
      REQUIRE(got.size() == 2);
      CHECK(got[0].SerializeAsString() == a.SerializeAsString());
      CHECK(got[1].SerializeAsString() == b.SerializeAsString());
      CHECK(d.buffered() == 0);
    }
  }

  TEST_CASE("byte by byte: need_more until the last byte of each frame") {
    const Request a = open_request(3);
    const std::string f = frame_of(a);
    FrameDecoder d(kMaxRequestSize);
    for (std::size_t i = 0; i < f.size(); ++i) {
      std::string_view in(f.data() + i, 1);
      Request r;
      const DecodeStatus s = d.next_message(in, r);
      CHECK(in.empty());
      if (i + 1 < f.size()) {
        REQUIRE(s == DecodeStatus::need_more);
        CHECK(d.buffered() == i + 1);
      } else {
        REQUIRE(s == DecodeStatus::ok);
        CHECK(r.open_request().access_token() == "AQGAAXiZ-secret-access-token");
        CHECK(r.request_id() == 3);
      }
    }
  }

  TEST_CASE("an empty input is need_more and changes nothing") {
    FrameDecoder d(kMaxRequestSize);
    std::string_view in;
    std::string body;
    CHECK(d.next_frame(in, body) == DecodeStatus::need_more);
    CHECK(d.buffered() == 0);
  }

  TEST_CASE("a zero-length frame is an empty request, rejected for its version") {
    FrameDecoder d(kMaxRequestSize);
    const std::string f = header(0);
    std::string_view in(f);
    Request r;
    REQUIRE(d.next_message(in, r) == DecodeStatus::ok);
    CHECK(r.version() == 0);
    const auto reply = check_version(r);
    REQUIRE(reply.has_value());
    CHECK(reply->status() == Response::BAD_VERSION);
  }

  TEST_CASE("a length over the cap is too_long as soon as the header is in, without allocating") {
    for (std::uint32_t announced :
         {static_cast<std::uint32_t>(kMaxRequestSize + 1), 0x7FFFFFFFU, 0xFFFFFFFFU}) {
      CAPTURE(announced);
      FrameDecoder d(kMaxRequestSize);
      const std::string h = header(announced);
      std::string body;
      AllocationWatch watch;
      std::string_view in(h.data(), 3);
      CHECK(d.next_frame(in, body) == DecodeStatus::need_more);
      in = std::string_view(h.data() + 3, 1);
      CHECK(d.next_frame(in, body) == DecodeStatus::too_long);
      CHECK(watch.largest() < 1024);
      CHECK(d.failed());
      CHECK(d.announced_length() == announced);
      // The decoder stays failed: the stream can no longer be trusted.
      const std::string more(100, 'x');
      std::string_view rest(more);
      CHECK(d.next_frame(rest, body) == DecodeStatus::too_long);
      CHECK(d.buffered() <= kFrameHeaderSize);
    }
  }

  TEST_CASE("a frame of exactly the cap is accepted") {
    FrameDecoder d(16);
    const std::string f = header(16) + std::string(16, 'a');
    std::string_view in(f);
    std::string body;
    CHECK(d.next_frame(in, body) == DecodeStatus::ok);
    CHECK(body == std::string(16, 'a'));
  }

  TEST_CASE("an HTTP request on the control socket is too long, answered with BAD_LENGTH") {
    FrameDecoder d(kMaxRequestSize);
    const std::string garbage = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    std::string_view in(garbage);
    Request r;
    const DecodeStatus s = d.next_message(in, r);
    REQUIRE(s == DecodeStatus::too_long);
    const Response reply = make_decode_error(s, d.announced_length(), kMaxRequestSize);
    CHECK(reply.status() == Response::BAD_LENGTH);
    CHECK(reply.version() == kProtocolVersion);
    CHECK(reply.request_id() == 0);
    CHECK(reply.error().find("65536") != std::string::npos);
  }

  TEST_CASE("a body that is not a protobuf message is malformed; the stream stays in sync") {
    // 0xFF...: a varint tag that never ends; 0x0F: field 1 with wire type 7.
    for (const std::string& bad :
         {std::string(6, '\xff'), std::string("\x0f\x01", 2), std::string("\x0a\x10short", 7)}) {
      FrameDecoder d(kMaxRequestSize);
      const Request good = list_request(9);
      const std::string stream =
          header(static_cast<std::uint32_t>(bad.size())) + bad + frame_of(good);
      std::string_view in(stream);
      Request r;
      const DecodeStatus s = d.next_message(in, r);
      REQUIRE(s == DecodeStatus::malformed);
      CHECK_FALSE(d.failed());
      const Response reply = make_decode_error(s, d.announced_length(), kMaxRequestSize);
      CHECK(reply.status() == Response::MALFORMED);
      REQUIRE(d.next_message(in, r) == DecodeStatus::ok);
      CHECK(r.request_id() == 9);
      CHECK(r.has_list_request());
    }
  }

  TEST_CASE("version check: the current version passes, others get BAD_VERSION with the id") {
    Request r = list_request(42);
    CHECK_FALSE(check_version(r).has_value());
    for (std::uint32_t v : {0U, 2U, 1000U}) {
      r.set_version(v);
      const auto reply = check_version(r);
      REQUIRE(reply.has_value());
      CHECK(reply->status() == Response::BAD_VERSION);
      CHECK(reply->request_id() == 42);
      CHECK(reply->version() == kProtocolVersion);
      CHECK(reply->error().find("version " + std::to_string(v)) != std::string::npos);
    }
  }

  TEST_CASE("a request without a body is MALFORMED") {
    const Request r = make_request(5);
    const auto reply = check_body(r);
    REQUIRE(reply.has_value());
    CHECK(reply->status() == Response::MALFORMED);
    CHECK(reply->request_id() == 5);
    CHECK_FALSE(check_body(list_request(6)).has_value());
  }

  TEST_CASE("append_frame refuses a message over the cap and leaves the output alone") {
    Request r = open_request(1);
    r.mutable_open_request()->set_settings_json(std::string(kMaxRequestSize, ' '));
    std::string out = "prefix";
    CHECK_FALSE(append_frame(out, r, kMaxRequestSize));
    CHECK(out == "prefix");
  }

  TEST_CASE("a list of 1000 sessions fits a response frame but not a request frame") {
    Response resp = make_response(1, Response::OK);
    for (int i = 0; i < 1000; ++i) {
      SessionInfo* s = resp.mutable_list_response()->add_sessions();
      s->set_id("s" + std::to_string(i));
      s->set_name("session-number-" + std::to_string(i));
      s->set_mode(MODE_SOURCE);
      s->set_state(SessionInfo::CONNECTED);
      s->set_endpoint("data.tunneling.iot.eu-west-1.amazonaws.com:443");
      s->set_protocol("aws.iot.securetunneling-3.0");
      s->set_local_address("127.0.0.1:50000");
      s->set_bytes_in(1ULL << 40);
      s->set_bytes_out(1ULL << 40);
      s->set_channel_id("0123456789abcdef0123456789abcdef");
    }
    std::string out;
    CHECK_FALSE(append_frame(out, resp, kMaxRequestSize));
    REQUIRE(append_frame(out, resp, kMaxResponseSize));
    FrameDecoder d(kMaxResponseSize);
    std::string_view in(out);
    Response back;
    REQUIRE(d.next_message(in, back) == DecodeStatus::ok);
    CHECK(back.list_response().sessions_size() == 1000);
  }

  TEST_CASE("error responses carry version, id, status and message") {
    const Response r = make_error(77, Response::NOT_FOUND, "no session named db");
    CHECK(r.version() == kProtocolVersion);
    CHECK(r.request_id() == 77);
    CHECK(r.status() == Response::NOT_FOUND);
    CHECK(r.error() == "no session named db");
    CHECK(status_name(Response::UNAUTHORIZED) == "UNAUTHORIZED");
    CHECK(status_name(static_cast<Response::Status>(99)) == "STATUS_99");
  }

  TEST_CASE("an unknown status from a newer daemon is kept, not mistaken for OK") {
    Response r = make_response(1, Response::OK);
    std::string wire = r.SerializeAsString();
    // Field 3 (status), varint 50: a value this build does not know.
    wire += std::string("\x18\x32", 2);
    Response back;
    REQUIRE(back.ParseFromString(wire));
    CHECK(back.status() != Response::OK);
  }
}
