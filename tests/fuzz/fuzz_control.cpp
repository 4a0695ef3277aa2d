// libFuzzer target for the control protocol (daemon/control/control_codec.h)
// as both ends read it: tunneld reading requests and tunnelctl reading
// responses, from a byte stream split at input-chosen points.
//  - FrameDecoder: never buffers more than one frame (header + cap), "too
//    long" is sticky and allocates nothing, a body never exceeds the cap, the
//    frames are the same whatever the split, and a frame re-encodes to bytes
//    that decode to the same body;
//  - requests (daemon side): check_version/check_body answer with the right
//    statuses, an OpenRequest either becomes a session configuration or an
//    InvalidRequest (nothing else is thrown) whose text never holds a token;
//  - responses (tunnelctl side): render_response gives an exit status of the
//    documented set, "tunnelctl: "-prefixed stderr lines, and valid JSON for
//    --json.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/stubs/logging.h>
#include <nlohmann/json.hpp>

#include "control/control_codec.h"
#include "fuzz_check.h"
#include "session_request.h"
#include "tunnelctl/cli.h"

namespace pb = tunneld::control;

namespace {

// Token must not appear in `text` unless the input itself put it elsewhere.
bool holds_secret(std::string_view text, const std::string& secret, std::string_view body) {
  if (secret.size() < 8) return false;
  const auto first = body.find(secret);
  if (first != std::string_view::npos && body.find(secret, first + 1) != std::string_view::npos) {
    return false;  // the input repeats it: it may be a name as well
  }
  return text.find(secret) != std::string_view::npos;
}

void on_request(const std::string& body) {
  pb::Request r;
  if (!r.ParseFromString(body)) return;
  // Lite round trip: what parsed serialises to bytes that parse to the same.
  pb::Request again;
  FUZZ_CHECK(again.ParseFromString(r.SerializeAsString()));
  FUZZ_CHECK(again.SerializeAsString() == r.SerializeAsString());

  if (auto bad = pb::check_version(r)) {
    FUZZ_CHECK(r.version() != pb::kProtocolVersion);
    FUZZ_CHECK(bad->status() == pb::Response::BAD_VERSION);
    return;
  }
  if (auto bad = pb::check_body(r)) {
    FUZZ_CHECK(bad->status() == pb::Response::MALFORMED);
    return;
  }
  FUZZ_CHECK(r.body_case() != pb::Request::BODY_NOT_SET);
  if (!r.has_open_request()) return;
  const auto& open = r.open_request();
  try {
    const auto cfg = tunneld::proxy_config_from(open, tunnel::Settings{});
    FUZZ_CHECK(cfg.services.size() <= 3);
    FUZZ_CHECK(cfg.protocol_version >= 0 && cfg.protocol_version <= 3);
    tunnel::validate(cfg.settings);  // what was accepted stays valid
  } catch (const tunneld::InvalidRequest& e) {
    const std::string_view what = e.what();
    FUZZ_CHECK(!what.empty());
    FUZZ_CHECK(!holds_secret(what, open.access_token(), body));
    FUZZ_CHECK(!holds_secret(what, open.client_token(), body));
  }
}

void on_response(const std::string& body, std::uint8_t sel) {
  pb::Response r;
  if (!r.ParseFromString(body)) return;
  using tunnel::tunnelctl::Command;
  static constexpr Command kCommands[] = {Command::open,          Command::list,  Command::status,
                                          Command::notify_status, Command::close, Command::version};
  tunnel::tunnelctl::Invocation inv;
  inv.command = kCommands[sel % std::size(kCommands)];
  inv.json = (sel & 0x10) != 0;
  inv.session = "s1";
  const auto o = tunnel::tunnelctl::render_response(inv, r);
  FUZZ_CHECK(o.exit_code >= 0 && o.exit_code <= 6);
  if (r.status() != pb::Response::OK) FUZZ_CHECK(o.exit_code != 0);
  if (!o.err.empty()) {
    FUZZ_CHECK(o.err.rfind("tunnelctl: ", 0) == 0 && o.err.back() == '\n');
  }
  if (inv.json && o.exit_code == 0 && !o.out.empty()) {
    FUZZ_CHECK(nlohmann::json::accept(o.out));
  }
}

// Decodes `wire` in pieces of `step` bytes; returns the frame bodies, with
// an "!" entry for too_long and "?" for a malformed message.
std::vector<std::string> decode(std::string_view wire, std::size_t step, std::size_t max_body,
                                bool requests, std::uint8_t sel) {
  pb::FrameDecoder dec(max_body);
  std::vector<std::string> frames;
  for (std::size_t off = 0; off < wire.size(); off += step) {
    std::string_view input = wire.substr(off, step);
    for (;;) {
      std::string body;
      const std::size_t before = input.size();
      const auto st = dec.next_frame(input, body);
      FUZZ_CHECK(input.size() <= before);
      FUZZ_CHECK(dec.buffered() <= pb::kFrameHeaderSize + max_body);
      if (st == pb::DecodeStatus::need_more) {
        FUZZ_CHECK(input.empty());
        break;
      }
      if (st == pb::DecodeStatus::too_long) {
        FUZZ_CHECK(dec.failed() && dec.announced_length() > max_body);
        std::string_view again = "\0\0\0\0";
        FUZZ_CHECK(dec.next_frame(again, body) == pb::DecodeStatus::too_long);  // sticky
        const auto err = pb::make_decode_error(st, dec.announced_length(), max_body);
        FUZZ_CHECK(err.status() == pb::Response::BAD_LENGTH);
        frames.push_back("!");
        return frames;
      }
      FUZZ_CHECK(st == pb::DecodeStatus::ok);
      FUZZ_CHECK(body.size() <= max_body);
      // Re-framed, the body decodes to itself.
      std::string out;
      pb::Response holder;
      std::string reframed;
      reframed.push_back(static_cast<char>(body.size() >> 24));
      reframed.push_back(static_cast<char>(body.size() >> 16));
      reframed.push_back(static_cast<char>(body.size() >> 8));
      reframed.push_back(static_cast<char>(body.size()));
      reframed += body;
      pb::FrameDecoder redo(max_body);
      std::string_view rin = reframed;
      FUZZ_CHECK(redo.next_frame(rin, out) == pb::DecodeStatus::ok && out == body && rin.empty());
      if (requests) {
        on_request(body);
      } else {
        on_response(body, sel);
      }
      frames.push_back(std::move(body));
    }
  }
  return frames;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const bool requests = (data[0] & 1) == 0;
  // The real caps, or a small one so that too_long is reached cheaply.
  const std::size_t max_body =
      (data[0] & 2) ? (requests ? pb::kMaxRequestSize : 4096) : 8 + (data[0] >> 2);
  const std::size_t step = 1 + data[1];
  const std::string_view wire(reinterpret_cast<const char*>(data + 2), size - 2);
  const auto frames = decode(wire, step, max_body, requests, data[0] >> 2);
  // The same frames whatever the split.
  FUZZ_CHECK(decode(wire, wire.size() + 1, max_body, requests, data[0] >> 2) == frames);

  // A message built by the encoder round-trips through the decoder.
  pb::Request r = pb::make_request(7);
  r.mutable_status_request()->set_session(std::string(wire.substr(0, 64)));
  std::string framed;
  if (pb::append_frame(framed, r, max_body)) {
    pb::FrameDecoder dec(max_body);
    std::string_view in = framed;
    pb::Request back;
    const auto st = dec.next_message(in, back);
    // A session name that is not UTF-8 does not parse (proto3 strings).
    FUZZ_CHECK(st == pb::DecodeStatus::ok || st == pb::DecodeStatus::malformed);
    if (st == pb::DecodeStatus::ok) FUZZ_CHECK(back.SerializeAsString() == r.SerializeAsString());
  } else {
    FUZZ_CHECK(framed.empty() && r.ByteSizeLong() > max_body);
  }
  return 0;
}
