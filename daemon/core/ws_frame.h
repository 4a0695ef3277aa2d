// RFC 6455 WebSocket framing, pure: bytes in, frame events out; headers out.
//
// The decoder never runs a per-byte state machine over payload bytes: a data
// frame's payload is handed on as spans of the caller's buffer (unmasked in
// place, a machine word at a time, when the peer masks: the server role). It
// holds at most one frame header (14 bytes) and one control frame payload
// (125 bytes) between calls, so its memory is fixed whatever the input.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace tunnel::ws {

enum class Opcode : std::uint8_t {
  continuation = 0x0,
  text = 0x1,
  binary = 0x2,
  close = 0x8,
  ping = 0x9,
  pong = 0xA,
};

// Which end of the connection decodes: a client receives unmasked frames, a
// server masked ones (RFC 6455 section 5.1: anything else fails the link).
enum class Side { client, server };

enum class FrameError {
  none,
  reserved_bits,          // RSV1-3 set (no extension was negotiated)
  reserved_opcode,        // 0x3-0x7, 0xB-0xF
  text_frame,             // the tunnel protocol carries binary messages only
  bad_masking,            // masked frame to a client, unmasked frame to a server
  control_too_long,       // control frame payload over 125 bytes
  control_fragmented,     // control frame without FIN
  bad_continuation,       // continuation with no message open
  expected_continuation,  // new data frame while a fragmented message is open
  message_too_large,      // message payload over the configured limit
  bad_length,             // 64-bit length with the top bit set
  bad_close_payload,      // close payload of 1 byte, or a code that may not be sent
};

// One line, for logs and protocol errors.
std::string_view to_string(FrameError e);

// Largest payload a control frame may carry (RFC 6455 section 5.5).
inline constexpr std::size_t kMaxControlPayload = 125;
// Largest frame header: 2 + 8 (64-bit length) + 4 (mask key).
inline constexpr std::size_t kMaxHeaderSize = 14;

struct FrameEvent {
  enum class Kind {
    need_more,  // every input byte was consumed; feed more
    data,       // a piece of a binary message's payload (may be empty)
    ping,
    pong,
    close,
    error,
  };
  Kind kind = Kind::need_more;
  std::size_t consumed = 0;  // input bytes this event used up
  // data: points into the input; ping/pong/close: into the decoder (valid
  // until the next call).
  std::span<const std::uint8_t> payload;
  bool message_end = false;  // data: the last piece of its message
  int close_code = 0;        // close: 1005 when the frame carried no code
  std::string_view close_reason;
  FrameError error = FrameError::none;
};

class FrameDecoder {
 public:
  explicit FrameDecoder(Side side, std::size_t max_message_size);

  // Decodes from `in` up to the next event. Call again with
  // in.subspan(event.consumed) until the event is need_more. Data payload
  // spans point into `in` (which the server role unmasks in place). After an
  // error every call returns the same error and consumes nothing.
  FrameEvent next(std::span<std::uint8_t> in);

  // Forget everything (new connection).
  void reset();
  bool in_message() const { return in_message_; }

 private:
  FrameEvent fail(FrameError e);
  // Gathers the header's bytes from in[pos..]; false: it needs more.
  bool collect_header(std::span<const std::uint8_t> in, std::size_t& pos);
  FrameError parse_header();
  // The next piece of a data frame's payload, unmasked in place; false when
  // there is none to report (an empty non-final fragment).
  bool data_piece(std::span<std::uint8_t> in, std::size_t& pos, FrameEvent& ev);
  // Gathers a control frame's payload; false: it needs more.
  bool collect_control(std::span<const std::uint8_t> in, std::size_t& pos);
  FrameEvent control_event(std::size_t consumed);

  Side side_;
  std::size_t max_message_;
  FrameError error_ = FrameError::none;
  // header being collected
  std::array<std::uint8_t, kMaxHeaderSize> hdr_{};
  std::size_t hdr_len_ = 0;
  std::size_t hdr_need_ = 2;
  bool in_frame_ = false;  // header complete, payload pending
  // current frame
  Opcode opcode_ = Opcode::continuation;
  bool fin_ = false;
  bool masked_ = false;
  std::array<std::uint8_t, 4> mask_{};
  std::uint64_t remaining_ = 0;  // payload bytes of the frame still to come
  std::uint64_t mask_phase_ = 0;
  // message state
  bool in_message_ = false;
  std::size_t message_bytes_ = 0;
  // control payload being collected
  std::array<std::uint8_t, kMaxControlPayload> ctl_{};
  std::size_t ctl_len_ = 0;
};

// XORs `n` bytes at `p` with the 4-byte key, starting at key phase `phase`
// (byte offset within the masked payload). Works a machine word at a time.
void apply_mask(std::uint8_t* p, std::size_t n, const std::array<std::uint8_t, 4>& key,
                std::uint64_t phase = 0);
// dst[i] = src[i] ^ key[(phase + i) % 4]: copy and mask in one pass (dst may
// equal src).
void copy_masked(std::uint8_t* dst, const std::uint8_t* src, std::size_t n,
                 const std::array<std::uint8_t, 4>& key, std::uint64_t phase = 0);

// Writes a frame header for a final frame with `payload_len` bytes; `mask`
// null for an unmasked (server) frame. Returns its size (2..14).
std::size_t write_frame_header(std::uint8_t* out, Opcode op, std::uint64_t payload_len,
                               const std::array<std::uint8_t, 4>* mask, bool fin = true);
// Size write_frame_header will use.
constexpr std::size_t frame_header_size(std::uint64_t payload_len, bool masked) {
  return (payload_len < 126 ? 2 : payload_len <= 0xFFFF ? 4 : 10) + (masked ? 4 : 0);
}

// Whether a peer may send this close code (RFC 6455 section 7.4).
bool is_valid_close_code(int code);

// The mask keys of the frames a client sends (RFC 6455 5.3: unpredictable
// to the network): drawn from OpenSSL's CSPRNG, 64 keys per draw.
class MaskKeys {
 public:
  std::array<std::uint8_t, 4> next();

 private:
  std::array<std::uint8_t, 256> pool_{};
  std::size_t pos_ = sizeof pool_;
};

}  // namespace tunnel::ws
