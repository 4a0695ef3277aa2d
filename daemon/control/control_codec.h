// Framing of the control protocol (proto/control.proto), pure: bytes in,
// messages out, no sockets. A frame is
//
//   [u32 big-endian body length][body: one serialized Request or Response]
//
// The length is checked against a cap as soon as its 4 bytes are in, before
// any memory is reserved for the body, so a peer cannot make the daemon
// allocate more than the cap. The decoder tells "need more bytes" from "too
// long" (the stream cannot be trusted any more: reply BAD_LENGTH and close)
// and from "malformed" (the frame was delimited but its body is not a
// message: reply MALFORMED; the stream is still in sync).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "control.pb.h"

namespace tunneld::control {

// Version carried in every Request and Response. Bump only for a change old
// peers would misread; additive field changes keep the version.
inline constexpr std::uint32_t kProtocolVersion = 1;

inline constexpr std::size_t kFrameHeaderSize = 4;
// Cap on a request body: an OpenRequest with tokens and settings JSON is a
// few KiB, so 64 KiB is generous and bounds what the daemon buffers per client.
inline constexpr std::size_t kMaxRequestSize = std::size_t{64} * 1024;
// Cap on a response body, as enforced by clients. A ListResponse grows with
// the session count (about 200 bytes per session), so it gets more room:
// 4 MiB holds well over 10 000 sessions.
inline constexpr std::size_t kMaxResponseSize = std::size_t{4} * 1024 * 1024;

enum class DecodeStatus {
  ok,         // a frame (or message) was produced
  need_more,  // all input consumed, the frame is incomplete
  too_long,   // the header announced more than the cap; the decoder stays failed
  malformed,  // the body is not a valid message (the stream is still in sync)
};
std::string_view to_string(DecodeStatus s);

// Appends the frame of `message` to `out`. Returns false and leaves `out`
// unchanged when the serialized message is larger than `max_body`.
bool append_frame(std::string& out, const google::protobuf::MessageLite& message,
                  std::size_t max_body);

// Incremental frame decoder. Feed it whatever the socket delivered, in pieces
// of any size; it keeps at most one partial frame (<= header + max_body).
class FrameDecoder {
 public:
  explicit FrameDecoder(std::size_t max_body) : max_body_(max_body) {}

  // Consumes bytes from the front of `input` up to the end of one frame.
  //   ok:        `body` holds the frame's body; `input` starts after it and
  //              may hold further frames: call again.
  //   need_more: `input` was consumed entirely; call again with more bytes.
  //   too_long:  the announced length exceeds max_body. Nothing was
  //              allocated for it; every later call returns too_long.
  DecodeStatus next_frame(std::string_view& input, std::string& body);

  // next_frame, then parses the body as `Message` (Request or Response).
  // malformed: the body did not parse; the frame was consumed.
  template <class Message>
  DecodeStatus next_message(std::string_view& input, Message& out) {
    std::string body;
    const DecodeStatus s = next_frame(input, body);
    if (s != DecodeStatus::ok) return s;
    out.Clear();
    return out.ParseFromString(body) ? DecodeStatus::ok : DecodeStatus::malformed;
  }

  bool failed() const { return failed_; }
  // Bytes of the current partial frame held by the decoder.
  std::size_t buffered() const { return header_have_ + body_.size(); }
  // Length announced by the last header seen (for error messages).
  std::uint32_t announced_length() const { return length_; }

 private:
  std::size_t max_body_;
  unsigned char header_[kFrameHeaderSize] = {};
  std::size_t header_have_ = 0;
  std::uint32_t length_ = 0;
  std::string body_;
  bool failed_ = false;
};

// --- building responses ---

// A response to `request_id` with the current version and `status`.
Response make_response(std::uint64_t request_id, Response::Status status);
// An error response; `message` is one line for a human (no secrets).
Response make_error(std::uint64_t request_id, Response::Status status, std::string message);
// The error response for a frame the decoder rejected (too_long: BAD_LENGTH,
// malformed: MALFORMED); request_id is 0 since the request was not read.
// `max_body` names the cap in the message.
Response make_decode_error(DecodeStatus status, std::uint32_t announced_length,
                           std::size_t max_body);

// The BAD_VERSION response for a request whose version this daemon does not
// speak, or nullopt when the version is fine.
std::optional<Response> check_version(const Request& request);
// MALFORMED for a request that carries no body (or one this daemon does not
// know yet, which a newer client sent under the same version), else nullopt.
std::optional<Response> check_body(const Request& request);

// A request with the current version and the given id; the caller sets the body.
Request make_request(std::uint64_t request_id);

// "OK", "BAD_VERSION", ...; "STATUS_<n>" for a value this build does not know.
std::string status_name(Response::Status status);

}  // namespace tunneld::control
