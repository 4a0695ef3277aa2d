// RFC 6455 framing and the upgrade handshake (our own WebSocket client):
// decoding at every split point, every header length form, masking in both
// directions, fragmentation with control frames between fragments, close
// frames, and every way a frame can be invalid.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "ws_frame.h"
#include "ws_handshake.h"

namespace ws = tunnel::ws;
using Kind = ws::FrameEvent::Kind;

namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes pattern(std::size_t n, unsigned seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i)
    b[i] = static_cast<std::uint8_t>((i * 131 + std::size_t{seed} * 7) & 0xFF);
  return b;
}

// A frame as a server (unmasked) or a client (masked) would send it.
Bytes frame(ws::Opcode op, const Bytes& payload, bool masked, bool fin = true,
            std::array<std::uint8_t, 4> key = {0x37, 0xfa, 0x21, 0x3d}) {
  Bytes out(ws::kMaxHeaderSize + payload.size());
  const std::size_t h =
      ws::write_frame_header(out.data(), op, payload.size(), masked ? &key : nullptr, fin);
  if (masked) {
    ws::copy_masked(out.data() + h, payload.data(), payload.size(), key);
  } else {
    std::copy(payload.begin(), payload.end(), out.begin() + static_cast<std::ptrdiff_t>(h));
  }
  out.resize(h + payload.size());
  return out;
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

struct Collected {
  Bytes data;                 // every data payload, concatenated
  int messages = 0;           // message ends seen
  std::vector<Kind> control;  // ping/pong/close in order
  Bytes last_ping;
  int close_code = 0;
  std::string close_reason;
  ws::FrameError error = ws::FrameError::none;
};

// Feeds `wire` in pieces of `chunk` bytes (the input buffer is a copy, as the
// server role unmasks in place).
Collected decode(ws::Side role, const Bytes& wire, std::size_t chunk,
                 std::size_t max_message = 131076) {
  ws::FrameDecoder d(role, max_message);
  Collected c;
  Bytes buf = wire;
  for (std::size_t off = 0; off < buf.size() && c.error == ws::FrameError::none; off += chunk) {
    std::span<std::uint8_t> in(buf.data() + off, std::min(chunk, buf.size() - off));
    for (;;) {
      const auto ev = d.next(in);
      REQUIRE(ev.consumed <= in.size());
      in = in.subspan(ev.consumed);
      if (ev.kind == Kind::need_more) {
        REQUIRE(in.empty());
        break;
      }
      if (ev.kind == Kind::error) {
        c.error = ev.error;
        break;
      }
      if (ev.kind == Kind::data) {
        c.data.insert(c.data.end(), ev.payload.begin(), ev.payload.end());
        if (ev.message_end) ++c.messages;
        continue;
      }
      c.control.push_back(ev.kind);
      if (ev.kind == Kind::ping) c.last_ping.assign(ev.payload.begin(), ev.payload.end());
      if (ev.kind == Kind::close) {
        c.close_code = ev.close_code;
        c.close_reason = std::string(ev.close_reason);
      }
    }
  }
  return c;
}

}  // namespace

TEST_CASE("frame header: every length form, minimal encoding") {
  std::uint8_t h[ws::kMaxHeaderSize];
  CHECK(ws::write_frame_header(h, ws::Opcode::binary, 125, nullptr) == 2);
  CHECK(h[0] == 0x82);
  CHECK(h[1] == 125);
  CHECK(ws::write_frame_header(h, ws::Opcode::binary, 126, nullptr) == 4);
  CHECK(h[1] == 126);
  CHECK(h[2] == 0);
  CHECK(h[3] == 126);
  CHECK(ws::write_frame_header(h, ws::Opcode::binary, 65535, nullptr) == 4);
  CHECK(ws::write_frame_header(h, ws::Opcode::binary, 65536, nullptr) == 10);
  CHECK(h[1] == 127);
  CHECK(h[7] == 1);  // 0x0000000000010000
  const std::array<std::uint8_t, 4> key{1, 2, 3, 4};
  CHECK(ws::write_frame_header(h, ws::Opcode::ping, 0, &key) == 6);
  CHECK(h[0] == 0x89);
  CHECK(h[1] == 0x80);
  CHECK(h[5] == 4);
  CHECK(ws::write_frame_header(h, ws::Opcode::binary, 70000, &key, false) == 14);
  CHECK(h[0] == 0x02);  // no FIN
  for (std::uint64_t n : {0ULL, 125ULL, 126ULL, 65535ULL, 65536ULL}) {
    CHECK(ws::frame_header_size(n, false) ==
          ws::write_frame_header(h, ws::Opcode::binary, n, nullptr));
    CHECK(ws::frame_header_size(n, true) == ws::write_frame_header(h, ws::Opcode::binary, n, &key));
  }
}

TEST_CASE("RFC 6455 section 5.7 examples") {
  // A masked "Hello" is a text frame: the tunnel protocol refuses it.
  const Bytes masked_hello{0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  CHECK(decode(ws::Side::server, masked_hello, 64).error == ws::FrameError::text_frame);
  // The same as binary: unmasked by the server role.
  Bytes bin = masked_hello;
  bin[0] = 0x82;
  const auto c = decode(ws::Side::server, bin, 64);
  CHECK(c.error == ws::FrameError::none);
  CHECK(std::string(c.data.begin(), c.data.end()) == "Hello");
  // Unmasked ping with a body, as a server sends it to a client.
  const Bytes ping{0x89, 0x05, 'H', 'e', 'l', 'l', 'o'};
  const auto p = decode(ws::Side::client, ping, 64);
  REQUIRE(p.control.size() == 1);
  CHECK(p.control[0] == Kind::ping);
  CHECK(std::string(p.last_ping.begin(), p.last_ping.end()) == "Hello");
  // 256 bytes and 64 KiB binary messages in the 16- and 64-bit forms.
  Bytes b256{0x82, 0x7E, 0x01, 0x00};
  const Bytes body256 = pattern(256, 1);
  b256.insert(b256.end(), body256.begin(), body256.end());
  CHECK(decode(ws::Side::client, b256, 7).data == body256);
  Bytes b64k{0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0};
  const Bytes body64k = pattern(65536, 2);
  b64k.insert(b64k.end(), body64k.begin(), body64k.end());
  CHECK(decode(ws::Side::client, b64k, 4096).data == body64k);
}

TEST_CASE("decoding at every split point gives the same events") {
  const Bytes big = pattern(70000, 3);
  const Bytes mid = pattern(300, 4);
  const Bytes small = pattern(10, 5);
  for (bool masked : {false, true}) {
    const ws::Side role = masked ? ws::Side::server : ws::Side::client;
    const Bytes wire = cat({
        frame(ws::Opcode::binary, small, masked),
        frame(ws::Opcode::binary, mid, masked, false),     // first fragment
        frame(ws::Opcode::ping, Bytes{'p', 'i'}, masked),  // control between fragments
        frame(ws::Opcode::continuation, big, masked, false),
        frame(ws::Opcode::pong, Bytes{}, masked),
        frame(ws::Opcode::continuation, Bytes{}, masked, false),  // empty fragment
        frame(ws::Opcode::continuation, small, masked, true),     // last fragment
        frame(ws::Opcode::binary, Bytes{}, masked),               // empty message
        frame(ws::Opcode::close, Bytes{0x03, 0xE8, 'b', 'y', 'e'}, masked),
    });
    Bytes want = cat({small, mid, big, small});
    for (std::size_t chunk : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{13},
                              std::size_t{127}, std::size_t{4096}, wire.size()}) {
      CAPTURE(masked);
      CAPTURE(chunk);
      const auto c = decode(role, wire, chunk);
      CHECK(c.error == ws::FrameError::none);
      CHECK(c.data == want);
      CHECK(c.messages == 3);
      REQUIRE(c.control.size() == 3);
      CHECK(c.control[0] == Kind::ping);
      CHECK(c.control[1] == Kind::pong);
      CHECK(c.control[2] == Kind::close);
      CHECK(c.close_code == 1000);
      CHECK(c.close_reason == "bye");
      CHECK(c.last_ping == Bytes{'p', 'i'});
    }
  }
}

TEST_CASE("close frames: no code, a code without reason, invalid forms") {
  auto c = decode(ws::Side::client, frame(ws::Opcode::close, Bytes{}, false), 1);
  CHECK(c.close_code == 1005);
  c = decode(ws::Side::client, frame(ws::Opcode::close, Bytes{0x0F, 0xA0}, false), 1);
  CHECK(c.close_code == 4000);
  CHECK(c.close_reason.empty());
  CHECK(decode(ws::Side::client, frame(ws::Opcode::close, Bytes{0x03}, false), 1).error ==
        ws::FrameError::bad_close_payload);
  for (int code : {0, 999, 1004, 1005, 1006, 1015, 2999, 5000}) {
    CAPTURE(code);
    const Bytes payload{static_cast<std::uint8_t>(code >> 8), static_cast<std::uint8_t>(code)};
    CHECK(decode(ws::Side::client, frame(ws::Opcode::close, payload, false), 64).error ==
          ws::FrameError::bad_close_payload);
  }
  for (int code : {1000, 1001, 1002, 1011, 1012, 1014, 3000, 4999})
    CHECK(ws::is_valid_close_code(code));
}

TEST_CASE("invalid frames are errors, and the decoder stays failed") {
  auto err = [](const Bytes& wire, ws::Side role = ws::Side::client, std::size_t max = 131076) {
    return decode(role, wire, 1, max).error;
  };
  Bytes rsv = frame(ws::Opcode::binary, Bytes{1}, false);
  rsv[0] |= 0x40;
  CHECK(err(rsv) == ws::FrameError::reserved_bits);
  for (std::uint8_t op : {0x3, 0x7, 0xB, 0xF}) {
    CHECK(err(Bytes{static_cast<std::uint8_t>(0x80 | op), 0x00}) ==
          ws::FrameError::reserved_opcode);
  }
  CHECK(err(frame(ws::Opcode::text, Bytes{'a'}, false)) == ws::FrameError::text_frame);
  CHECK(err(frame(ws::Opcode::binary, Bytes{1}, true)) == ws::FrameError::bad_masking);
  CHECK(err(frame(ws::Opcode::binary, Bytes{1}, false), ws::Side::server) ==
        ws::FrameError::bad_masking);
  CHECK(err(frame(ws::Opcode::ping, pattern(126, 1), false)) == ws::FrameError::control_too_long);
  CHECK(err(frame(ws::Opcode::ping, Bytes{1}, false, false)) == ws::FrameError::control_fragmented);
  CHECK(err(frame(ws::Opcode::continuation, Bytes{1}, false)) == ws::FrameError::bad_continuation);
  CHECK(err(cat({frame(ws::Opcode::binary, Bytes{1}, false, false),
                 frame(ws::Opcode::binary, Bytes{2}, false)})) ==
        ws::FrameError::expected_continuation);
  CHECK(err(cat({frame(ws::Opcode::binary, Bytes{1}, false, false),
                 frame(ws::Opcode::text, Bytes{2}, false)})) ==
        ws::FrameError::expected_continuation);
  // 64-bit length with the top bit set: refused before anything is read.
  CHECK(err(Bytes{0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1}) == ws::FrameError::bad_length);
  // Message limit: one frame over it, and fragments adding up over it.
  CHECK(err(frame(ws::Opcode::binary, pattern(101, 1), false), ws::Side::client, 100) ==
        ws::FrameError::message_too_large);
  CHECK(err(cat({frame(ws::Opcode::binary, pattern(60, 1), false, false),
                 frame(ws::Opcode::continuation, pattern(41, 1), false)}),
            ws::Side::client, 100) == ws::FrameError::message_too_large);
  CHECK(err(frame(ws::Opcode::binary, pattern(100, 1), false), ws::Side::client, 100) ==
        ws::FrameError::none);
  // A huge declared length is refused at the header: nothing is buffered.
  CHECK(err(Bytes{0x82, 0x7F, 0, 0, 0, 1, 0, 0, 0, 0}) == ws::FrameError::message_too_large);

  ws::FrameDecoder d(ws::Side::client, 131076);
  Bytes text = frame(ws::Opcode::text, Bytes{'x'}, false);
  CHECK(d.next(text).kind == Kind::error);
  Bytes good = frame(ws::Opcode::binary, Bytes{1}, false);
  const auto again = d.next(good);
  CHECK(again.kind == Kind::error);
  CHECK(again.consumed == 0);
  d.reset();
  CHECK(d.next(good).kind == Kind::data);
}

TEST_CASE("masking a word at a time equals the byte-wise definition at any phase and alignment") {
  const std::array<std::uint8_t, 4> key{0xA1, 0x5C, 0x03, 0xFE};
  const Bytes src = pattern(300, 9);
  for (std::size_t offset = 0; offset < 9; ++offset) {
    for (std::uint64_t phase = 0; phase < 4; ++phase) {
      for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8},
                            std::size_t{33}, std::size_t{64}, std::size_t{291}}) {
        Bytes buf(src.begin(), src.end());
        ws::apply_mask(buf.data() + offset, n, key, phase);
        for (std::size_t i = 0; i < buf.size(); ++i) {
          const bool inside = i >= offset && i < offset + n;
          const std::uint8_t want =
              inside ? static_cast<std::uint8_t>(src[i] ^ key[(phase + (i - offset)) & 3]) : src[i];
          REQUIRE(buf[i] == want);
        }
      }
    }
  }
  Bytes dst(src.size());
  ws::copy_masked(dst.data(), src.data() + 1, src.size() - 1, key);
  for (std::size_t i = 0; i + 1 < src.size(); ++i) {
    REQUIRE(dst[i] == static_cast<std::uint8_t>(src[i + 1] ^ key[i & 3]));
  }
}

// ---------------------------------------------------------------- handshake

TEST_CASE("Sec-WebSocket-Accept of RFC 6455 section 1.3") {
  CHECK(ws::websocket_accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  const std::string k1 = ws::make_websocket_key();
  CHECK(k1.size() == 24);
  CHECK(k1 != ws::make_websocket_key());
}

namespace {

ws::UpgradeRequest sample_request() {
  ws::UpgradeRequest r;
  r.host = "relay.example:8443";
  r.path = "/tunnel?local-proxy-mode=source";
  r.key = "dGhlIHNhbXBsZSBub25jZQ==";
  r.subprotocols = {"aws.iot.securetunneling-3.0", "aws.iot.securetunneling-1.0"};
  r.headers = {{"access-token", "SECRET"}};
  return r;
}

std::string good_response(std::string_view protocol = "aws.iot.securetunneling-1.0") {
  return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n"
         "Connection: keep-alive, Upgrade\r\n"
         "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
         "Sec-WebSocket-Protocol: " +
         std::string(protocol) + "\r\nchannel-id: 0a1b2c\r\n\r\n";
}

}  // namespace

TEST_CASE("the upgrade request carries what the service needs") {
  const std::string req = ws::build_upgrade_request(sample_request());
  CHECK(req.rfind("GET /tunnel?local-proxy-mode=source HTTP/1.1\r\n", 0) == 0);
  CHECK(req.find("\r\nHost: relay.example:8443\r\n") != std::string::npos);
  CHECK(req.find("\r\nSec-WebSocket-Version: 13\r\n") != std::string::npos);
  CHECK(req.find("\r\nSec-WebSocket-Protocol: aws.iot.securetunneling-3.0, "
                 "aws.iot.securetunneling-1.0\r\n") != std::string::npos);
  CHECK(req.find("\r\naccess-token: SECRET\r\n") != std::string::npos);
  CHECK(req.size() >= 4);
  CHECK(req.substr(req.size() - 4) == "\r\n\r\n");
}

TEST_CASE("response head: parsed at every split point; bytes after it are left alone") {
  const std::string wire = good_response() + "\x82\x01Z";
  for (std::size_t chunk = 1; chunk <= wire.size(); chunk += (chunk < 8 ? 1 : 17)) {
    CAPTURE(chunk);
    ws::HttpResponseHead head;
    std::size_t off = 0;
    ws::HttpResponseHead::Result r = ws::HttpResponseHead::Result::need_more;
    std::size_t used = 0;
    while (r == ws::HttpResponseHead::Result::need_more) {
      REQUIRE(off < wire.size());
      const std::string_view piece = std::string_view(wire).substr(off, chunk);
      r = head.feed(piece, used);
      off += used;
      if (r == ws::HttpResponseHead::Result::need_more) REQUIRE(used == piece.size());
    }
    REQUIRE(r == ws::HttpResponseHead::Result::done);
    CHECK(wire.substr(off) == "\x82\x01Z");
    CHECK(head.status() == 101);
    CHECK(head.header("UPGRADE") == "WebSocket");
    const auto up = ws::check_upgrade_response(head, sample_request());
    CHECK(up.ok);
    CHECK(up.subprotocol == "aws.iot.securetunneling-1.0");
    CHECK(up.channel_id == "0a1b2c");
  }
}

TEST_CASE("upgrade responses that must be refused") {
  auto check = [](const std::string& wire) {
    ws::HttpResponseHead head;
    std::size_t used = 0;
    REQUIRE(head.feed(wire, used) == ws::HttpResponseHead::Result::done);
    return ws::check_upgrade_response(head, sample_request());
  };
  auto r = check("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
  CHECK_FALSE(r.ok);
  CHECK(r.http_status == 401);
  CHECK(r.error.find("HTTP 401") != std::string::npos);
  r = check("HTTP/1.1 500 Internal Server Error\r\n\r\n");
  CHECK(r.http_status == 500);
  r = check(good_response("aws.iot.securetunneling-2.0"));  // not offered
  CHECK_FALSE(r.ok);
  CHECK(r.http_status == 0);
  CHECK(r.error.find("subprotocol 'aws.iot.securetunneling-2.0'") != std::string::npos);
  std::string no_protocol = good_response();
  no_protocol.erase(no_protocol.find("Sec-WebSocket-Protocol"),
                    std::string("Sec-WebSocket-Protocol: aws.iot.securetunneling-1.0\r\n").size());
  CHECK_FALSE(check(no_protocol).ok);
  std::string bad_accept = good_response();
  bad_accept.replace(bad_accept.find("s3pP"), 4, "AAAA");
  r = check(bad_accept);
  CHECK_FALSE(r.ok);
  CHECK(r.error.find("Sec-WebSocket-Accept") != std::string::npos);
  std::string no_upgrade = good_response();
  no_upgrade.replace(no_upgrade.find("Upgrade: WebSocket"), 18, "Upgrade: h2c     ");
  CHECK_FALSE(check(no_upgrade).ok);
}

TEST_CASE("malformed or oversized response heads") {
  for (const std::string& wire :
       {std::string("SSH-2.0-OpenSSH\r\n\r\n"), std::string("HTTP/1.1 1x1 Oops\r\n\r\n"),
        std::string("HTTP/1.1 101 OK\r\nno colon here\r\n\r\n"),
        std::string("HTTP/1.1 101 OK\r\n folded: header\r\n\r\n")}) {
    CAPTURE(wire);
    ws::HttpResponseHead head;
    std::size_t used = 0;
    CHECK(head.feed(wire, used) == ws::HttpResponseHead::Result::malformed);
    CHECK_FALSE(head.error().empty());
  }
  ws::HttpResponseHead head(1024);
  std::size_t used = 0;
  const std::string endless = "HTTP/1.1 101 OK\r\nX: " + std::string(2000, 'a');
  CHECK(head.feed(endless, used) == ws::HttpResponseHead::Result::malformed);
  CHECK(used <= 1024);
}

// ---------------------------------------------------------------- server side (tunnel-relay)

namespace {

const std::string kRequest =
    "GET /tunnel?local-proxy-mode=source&x=%41%2fb HTTP/1.1\r\n"
    "Host: relay.example:8443\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: aws.iot.securetunneling-3.0\r\n"
    "sec-websocket-protocol: aws.iot.securetunneling-2.0\r\n"
    "access-token:   tok  \r\n"
    "\r\n";

}  // namespace

TEST_CASE("request head: parsed at every split point; frames after it are left alone") {
  const std::string wire = kRequest + "\x82\x81";
  for (std::size_t chunk = 1; chunk <= wire.size(); ++chunk) {
    CAPTURE(chunk);
    ws::HttpRequestHead head;
    std::size_t off = 0;
    auto r = ws::HttpRequestHead::Result::need_more;
    while (r == ws::HttpRequestHead::Result::need_more) {
      REQUIRE(off < wire.size());
      const std::string_view piece = std::string_view(wire).substr(off, chunk);
      std::size_t used = 0;
      r = head.feed(piece, used);
      off += used;
      if (r == ws::HttpRequestHead::Result::need_more) REQUIRE(used == piece.size());
    }
    REQUIRE(r == ws::HttpRequestHead::Result::done);
    CHECK(wire.substr(off) == "\x82\x81");
    CHECK(head.size() == kRequest.size());
    CHECK(head.method() == "GET");
    CHECK(head.target() == "/tunnel?local-proxy-mode=source&x=%41%2fb");
    CHECK(head.joined("UPGRADE") == "websocket");
    CHECK(head.joined("access-token") == "tok");
    // Repeated lines stay separate, and join with ", " in order.
    CHECK(head.header_values("Sec-WebSocket-Protocol").size() == 2);
    CHECK(head.joined("sec-websocket-protocol") ==
          "aws.iot.securetunneling-3.0, aws.iot.securetunneling-2.0");
    CHECK_FALSE(head.has_header("cookie"));
    CHECK(head.joined("cookie").empty());
  }
}

TEST_CASE("request head: the size bound is exact and answered before the head ends") {
  const std::string at_limit = kRequest;
  {
    ws::HttpRequestHead head(at_limit.size());
    std::size_t used = 0;
    CHECK(head.feed(at_limit, used) == ws::HttpRequestHead::Result::done);
    CHECK(used == at_limit.size());
  }
  {
    ws::HttpRequestHead head(at_limit.size() - 1);
    std::size_t used = 0;
    CHECK(head.feed(at_limit, used) == ws::HttpRequestHead::Result::too_large);
    CHECK(used <= at_limit.size());
  }
  {
    // Byte by byte: too_large as soon as the limit is passed, never later,
    // and nothing is buffered beyond it.
    ws::HttpRequestHead head(1024);
    const std::string endless = "GET / HTTP/1.1\r\nX: " + std::string(4000, 'a');
    std::size_t fed = 0;
    auto r = ws::HttpRequestHead::Result::need_more;
    while (r == ws::HttpRequestHead::Result::need_more && fed < endless.size()) {
      std::size_t used = 0;
      r = head.feed(std::string_view(endless).substr(fed, 1), used);
      fed += used;
    }
    CHECK(r == ws::HttpRequestHead::Result::too_large);
    CHECK(fed == 1025);
    std::size_t used = 0;
    CHECK(head.feed("\r\n\r\n", used) == ws::HttpRequestHead::Result::too_large);
    CHECK(used == 0);
  }
}

TEST_CASE("request head: malformed request lines and headers") {
  for (const std::string& wire :
       {std::string("SSH-2.0-OpenSSH\r\n\r\n"), std::string("GET /tunnel\r\n\r\n"),
        std::string("GET  /tunnel HTTP/1.1\r\n\r\n"), std::string("GET /tunnel HTTP/2.0\r\n\r\n"),
        std::string("GET /tunnel HTTP/1.1 extra\r\n\r\n"),
        std::string("GET /tunnel HTTP/1.1\r\nno colon here\r\n\r\n"),
        std::string("GET /tunnel HTTP/1.1\r\n folded: header\r\n\r\n"),
        std::string("GET /tunnel HTTP/1.1\r\nName : space before colon\r\n\r\n"),
        std::string("GET /tun\x01nel HTTP/1.1\r\n\r\n")}) {
    CAPTURE(wire);
    ws::HttpRequestHead head;
    std::size_t used = 0;
    CHECK(head.feed(wire, used) == ws::HttpRequestHead::Result::malformed);
    CHECK_FALSE(head.error().empty());
    CHECK(head.feed("more", used) == ws::HttpRequestHead::Result::malformed);
  }
}

TEST_CASE("percent decoding of the request target") {
  std::string out;
  CHECK(ws::percent_decode("local-proxy-mode=source", out));
  CHECK(out == "local-proxy-mode=source");
  CHECK(ws::percent_decode("%2Ftunnel%3f%41+b", out));
  CHECK(out == "/tunnel?A+b");
  CHECK_FALSE(ws::percent_decode("%", out));
  CHECK_FALSE(ws::percent_decode("abc%4", out));
  CHECK_FALSE(ws::percent_decode("%zz", out));
}

TEST_CASE("the 101 response satisfies our own client's checks") {
  ws::UpgradeRequest req;
  req.host = "relay";
  req.path = "/tunnel?local-proxy-mode=source";
  req.key = ws::make_websocket_key();
  req.subprotocols = {"aws.iot.securetunneling-3.0", "aws.iot.securetunneling-1.0"};
  const std::string wire =
      ws::build_upgrade_response(req.key, "aws.iot.securetunneling-1.0", {{"channel-id", "00ff"}});
  ws::HttpResponseHead head;
  std::size_t used = 0;
  REQUIRE(head.feed(wire, used) == ws::HttpResponseHead::Result::done);
  CHECK(used == wire.size());
  const auto up = ws::check_upgrade_response(head, req);
  CHECK(up.ok);
  CHECK(up.subprotocol == "aws.iot.securetunneling-1.0");
  CHECK(up.channel_id == "00ff");
}

TEST_CASE("mask keys vary from frame to frame and across pool refills") {
  // 64 keys per CSPRNG draw: 200 keys span four draws. A repeated key is
  // possible by chance (about 5 in 10^6 for 200 keys) but 200 keys with
  // fewer than 190 distinct ones means a pool that is not refilled.
  ws::MaskKeys keys;
  std::set<std::array<std::uint8_t, 4>> seen;
  for (int i = 0; i < 200; ++i) seen.insert(keys.next());
  CHECK(seen.size() >= 190);
  ws::MaskKeys other;
  CHECK(other.next() != keys.next());  // two links never share a stream
}
