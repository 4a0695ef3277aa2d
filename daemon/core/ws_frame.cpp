#include "ws_frame.h"

#include <openssl/err.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cstring>

#include "text.h"

namespace tunnel::ws {

std::string_view to_string(FrameError e) {
  static constexpr std::string_view kNames[] = {
      "no error",
      "WebSocket frame with reserved bits set",
      "WebSocket frame with a reserved opcode",
      "text frame received (the protocol allows binary frames only)",
      "WebSocket frame masked the wrong way for its direction",
      "WebSocket control frame longer than 125 bytes",
      "fragmented WebSocket control frame",
      "WebSocket continuation frame with no message open",
      "new WebSocket message while a fragmented one is open",
      "WebSocket message larger than the limit",
      "WebSocket frame length out of range",
      "invalid WebSocket close frame",
  };
  static_assert(std::size(kNames) == static_cast<std::size_t>(FrameError::bad_close_payload) + 1);
  return text::enum_name(e, kNames);
}

bool is_valid_close_code(int code) {
  if (code >= 3000 && code <= 4999) return true;
  if (code < 1000 || code > 1014) return false;
  return code != 1004 && code != 1005 && code != 1006;
}

namespace {

std::uint64_t key_word(const std::array<std::uint8_t, 4>& key, std::uint64_t phase) {
  std::uint8_t k[8];
  for (std::size_t j = 0; j < 8; ++j) k[j] = key[(phase + j) & 3];
  std::uint64_t w = 0;
  std::memcpy(&w, k, sizeof w);
  return w;
}

}  // namespace

void apply_mask(std::uint8_t* p, std::size_t n, const std::array<std::uint8_t, 4>& key,
                std::uint64_t phase) {
  // Byte by byte up to 8-byte alignment, then the word loop in place.
  std::size_t i = 0;
  while (i < n && (reinterpret_cast<std::uintptr_t>(p + i) & 7) != 0) {
    p[i] ^= key[(phase + i) & 3];
    ++i;
  }
  copy_masked(p + i, p + i, n - i, key, phase + i);
}

void copy_masked(std::uint8_t* dst, const std::uint8_t* src, std::size_t n,
                 const std::array<std::uint8_t, 4>& key, std::uint64_t phase) {
  // Each word goes through a local copy, so dst may equal src.
  const std::uint64_t w = key_word(key, phase);
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    std::uint64_t v[4];
    std::memcpy(v, src + i, sizeof v);
    v[0] ^= w;
    v[1] ^= w;
    v[2] ^= w;
    v[3] ^= w;
    std::memcpy(dst + i, v, sizeof v);
  }
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v = 0;
    std::memcpy(&v, src + i, sizeof v);
    v ^= w;
    std::memcpy(dst + i, &v, sizeof v);
  }
  for (; i < n; ++i) dst[i] = src[i] ^ key[(phase + i) & 3];
}

std::size_t write_frame_header(std::uint8_t* out, Opcode op, std::uint64_t payload_len,
                               const std::array<std::uint8_t, 4>* mask, bool fin) {
  std::size_t n = 0;
  out[n++] = static_cast<std::uint8_t>((fin ? 0x80 : 0) | static_cast<std::uint8_t>(op));
  const std::uint8_t mbit = mask ? 0x80 : 0;
  if (payload_len < 126) {
    out[n++] = static_cast<std::uint8_t>(mbit | payload_len);
  } else if (payload_len <= 0xFFFF) {
    out[n++] = static_cast<std::uint8_t>(mbit | 126);
    out[n++] = static_cast<std::uint8_t>(payload_len >> 8);
    out[n++] = static_cast<std::uint8_t>(payload_len);
  } else {
    out[n++] = static_cast<std::uint8_t>(mbit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) {
      out[n++] = static_cast<std::uint8_t>(payload_len >> shift);
    }
  }
  if (mask) {
    std::memcpy(out + n, mask->data(), 4);
    n += 4;
  }
  return n;
}

FrameDecoder::FrameDecoder(Side side, std::size_t max_message_size)
    : side_(side), max_message_(max_message_size) {}

void FrameDecoder::reset() {
  error_ = FrameError::none;
  hdr_len_ = 0;
  hdr_need_ = 2;
  in_frame_ = false;
  remaining_ = 0;
  mask_phase_ = 0;
  in_message_ = false;
  message_bytes_ = 0;
  ctl_len_ = 0;
}

FrameEvent FrameDecoder::fail(FrameError e) {
  error_ = e;
  FrameEvent ev;
  ev.kind = FrameEvent::Kind::error;
  ev.error = e;
  return ev;
}

FrameError FrameDecoder::parse_header() {
  const std::uint8_t b0 = hdr_[0];
  const std::uint8_t b1 = hdr_[1];
  if ((b0 & 0x70) != 0) return FrameError::reserved_bits;
  fin_ = (b0 & 0x80) != 0;
  masked_ = (b1 & 0x80) != 0;
  if (masked_ != (side_ == Side::server)) return FrameError::bad_masking;
  std::size_t idx = 2;
  std::uint64_t len = b1 & 0x7F;
  if (len == 126) {
    len = (std::uint64_t{hdr_[2]} << 8) | hdr_[3];
    idx = 4;
  } else if (len == 127) {
    len = 0;
    for (std::size_t i = 0; i < 8; ++i) len = (len << 8) | hdr_[2 + i];
    if (len >> 63) return FrameError::bad_length;
    idx = 10;
  }
  if (masked_) std::memcpy(mask_.data(), hdr_.data() + idx, 4);
  const std::uint8_t op = b0 & 0x0F;
  switch (op) {
    case 0x0:
      if (!in_message_) return FrameError::bad_continuation;
      break;
    case 0x1:
      return in_message_ ? FrameError::expected_continuation : FrameError::text_frame;
    case 0x2:
      if (in_message_) return FrameError::expected_continuation;
      break;
    case 0x8:
    case 0x9:
    case 0xA:
      if (!fin_) return FrameError::control_fragmented;
      if (len > kMaxControlPayload) return FrameError::control_too_long;
      break;
    default:
      return FrameError::reserved_opcode;
  }
  opcode_ = static_cast<Opcode>(op);
  if (op == 0x0 || op == 0x2) {
    if (len > max_message_ - message_bytes_) return FrameError::message_too_large;
    message_bytes_ += static_cast<std::size_t>(len);
    in_message_ = true;
  } else {
    ctl_len_ = 0;
  }
  remaining_ = len;
  mask_phase_ = 0;
  return FrameError::none;
}

namespace {

FrameEvent need_more(std::size_t consumed) {
  FrameEvent ev;
  ev.consumed = consumed;
  return ev;
}

}  // namespace

bool FrameDecoder::collect_header(std::span<const std::uint8_t> in, std::size_t& pos) {
  while (hdr_len_ < hdr_need_) {
    if (pos == in.size()) return false;
    const std::size_t n = std::min(hdr_need_ - hdr_len_, in.size() - pos);
    std::memcpy(hdr_.data() + hdr_len_, in.data() + pos, n);
    hdr_len_ += n;
    pos += n;
    if (hdr_need_ == 2 && hdr_len_ == 2) {
      // The second byte says how long the header is.
      const std::uint8_t len7 = hdr_[1] & 0x7F;
      hdr_need_ = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((hdr_[1] & 0x80) ? 4 : 0);
    }
  }
  return true;
}

bool FrameDecoder::data_piece(std::span<std::uint8_t> in, std::size_t& pos, FrameEvent& ev) {
  const std::size_t n =
      static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size() - pos));
  if (n == 0 && remaining_ > 0) {
    ev = need_more(pos);
    return true;
  }
  std::uint8_t* p = in.data() + pos;
  if (masked_) apply_mask(p, n, mask_, mask_phase_);
  mask_phase_ += n;
  remaining_ -= n;
  pos += n;
  const bool frame_done = remaining_ == 0;
  if (frame_done) in_frame_ = false;
  const bool end = frame_done && fin_;
  if (end) {
    in_message_ = false;
    message_bytes_ = 0;
  }
  if (n == 0 && !end) return false;  // an empty non-final fragment
  ev.kind = FrameEvent::Kind::data;
  ev.consumed = pos;
  ev.payload = std::span<const std::uint8_t>(p, n);
  ev.message_end = end;
  return true;
}

bool FrameDecoder::collect_control(std::span<const std::uint8_t> in, std::size_t& pos) {
  const std::size_t n =
      static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size() - pos));
  std::memcpy(ctl_.data() + ctl_len_, in.data() + pos, n);
  ctl_len_ += n;
  remaining_ -= n;
  pos += n;
  return remaining_ == 0;
}

FrameEvent FrameDecoder::control_event(std::size_t consumed) {
  in_frame_ = false;
  if (masked_) apply_mask(ctl_.data(), ctl_len_, mask_, 0);
  FrameEvent ev;
  ev.consumed = consumed;
  ev.payload = std::span<const std::uint8_t>(ctl_.data(), ctl_len_);
  if (opcode_ == Opcode::ping) {
    ev.kind = FrameEvent::Kind::ping;
  } else if (opcode_ == Opcode::pong) {
    ev.kind = FrameEvent::Kind::pong;
  } else {
    ev.kind = FrameEvent::Kind::close;
    if (ctl_len_ == 0) {
      ev.close_code = 1005;
    } else if (ctl_len_ == 1) {
      return fail(FrameError::bad_close_payload);
    } else {
      ev.close_code = (ctl_[0] << 8) | ctl_[1];
      if (!is_valid_close_code(ev.close_code)) return fail(FrameError::bad_close_payload);
      ev.close_reason =
          std::string_view(reinterpret_cast<const char*>(ctl_.data()) + 2, ctl_len_ - 2);
    }
  }
  return ev;
}

FrameEvent FrameDecoder::next(std::span<std::uint8_t> in) {
  if (error_ != FrameError::none) return fail(error_);
  std::size_t pos = 0;
  for (;;) {
    if (!in_frame_) {
      if (!collect_header(in, pos)) return need_more(pos);
      const FrameError err = parse_header();
      hdr_len_ = 0;
      hdr_need_ = 2;
      if (err != FrameError::none) return fail(err);
      in_frame_ = true;
    }
    if (opcode_ == Opcode::continuation || opcode_ == Opcode::binary) {
      FrameEvent ev;
      if (data_piece(in, pos, ev)) return ev;
      continue;
    }
    if (!collect_control(in, pos)) return need_more(pos);
    return control_event(pos);
  }
}

std::array<std::uint8_t, 4> MaskKeys::next() {
  if (pos_ + 4 > pool_.size()) {
    // RAND_bytes fails only if the CSPRNG cannot be seeded; the pool then
    // keeps its previous keys, which still mask the bytes correctly.
    if (RAND_bytes(pool_.data(), static_cast<int>(pool_.size())) != 1) ERR_clear_error();
    pos_ = 0;
  }
  std::array<std::uint8_t, 4> m{};
  std::memcpy(m.data(), pool_.data() + pos_, 4);
  pos_ += 4;
  return m;
}

}  // namespace tunnel::ws
