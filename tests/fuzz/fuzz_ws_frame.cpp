// libFuzzer target for the WebSocket frame decoder and the upgrade response
// parser: arbitrary bytes, split at input-chosen points, in either role. The
// decoder must never crash, never hand out a span outside its input, never
// exceed the message limit, keep an error sticky, and give the same events
// whatever the split; the response head parser must stay within its bound.
//
// Build and run: docs/testing.md ("Fuzzing"), scripts/fuzz.sh ws_frame.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "fuzz_check.h"
#include "ws_frame.h"
#include "ws_handshake.h"

namespace {

// Decodes `wire` fed `step` bytes at a time; returns a transcript of events.
std::string run(tunnel::ws::Side role, std::size_t max_message, std::vector<std::uint8_t> wire,
                std::size_t step) {
  using Kind = tunnel::ws::FrameEvent::Kind;
  tunnel::ws::FrameDecoder d(role, max_message);
  std::string log;
  std::size_t message = 0;
  for (std::size_t off = 0; off < wire.size(); off += step) {
    std::span<std::uint8_t> in(wire.data() + off, std::min(step, wire.size() - off));
    for (;;) {
      const auto ev = d.next(in);
      FUZZ_CHECK(ev.consumed <= in.size());
      if (ev.kind == Kind::data) {
        FUZZ_CHECK(ev.payload.data() >= in.data() &&
                   ev.payload.data() + ev.payload.size() <= in.data() + ev.consumed);
        message += ev.payload.size();
        FUZZ_CHECK(message <= max_message);
        log.append(reinterpret_cast<const char*>(ev.payload.data()), ev.payload.size());
        if (ev.message_end) {
          log += "|end|";
          message = 0;
        }
      } else if (ev.kind == Kind::error) {
        FUZZ_CHECK(d.next(in).kind == Kind::error);  // sticky
        log += "|error " + std::to_string(static_cast<int>(ev.error)) + "|";
        return log;
      } else if (ev.kind != Kind::need_more) {
        FUZZ_CHECK(ev.payload.size() <= tunnel::ws::kMaxControlPayload);
        log += "|ctl " + std::to_string(static_cast<int>(ev.kind)) + " " +
               std::to_string(ev.close_code) + "|";
      }
      in = in.subspan(ev.consumed);
      if (ev.kind == Kind::need_more) {
        FUZZ_CHECK(in.empty());
        break;
      }
    }
  }
  return log;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const auto role = (data[0] & 1) ? tunnel::ws::Side::server : tunnel::ws::Side::client;
  const std::size_t max_message = (data[0] & 2) ? 131076 : 16 + data[0];
  const std::size_t step = 1 + data[1];
  const std::vector<std::uint8_t> wire(data + 2, data + size);
  // The same events whatever the split.
  FUZZ_CHECK(run(role, max_message, wire, step) == run(role, max_message, wire, wire.size() + 1));

  tunnel::ws::HttpResponseHead head(512);
  const std::string_view text(reinterpret_cast<const char*>(data + 2), size - 2);
  std::size_t off = 0;
  for (;;) {
    std::size_t used = 0;
    const auto r = head.feed(text.substr(off, step), used);
    FUZZ_CHECK(used <= step);
    off += used;
    if (r != tunnel::ws::HttpResponseHead::Result::need_more) {
      if (r == tunnel::ws::HttpResponseHead::Result::done) {
        tunnel::ws::UpgradeRequest req;
        req.key = "dGhlIHNhbXBsZSBub25jZQ==";
        req.subprotocols = {"aws.iot.securetunneling-1.0"};
        const auto up = tunnel::ws::check_upgrade_response(head, req);
        FUZZ_CHECK(up.ok == (head.status() == 101 && !up.subprotocol.empty()));
      }
      break;
    }
    if (off >= text.size()) break;
    FUZZ_CHECK(off <= 512);
  }
  return 0;
}
