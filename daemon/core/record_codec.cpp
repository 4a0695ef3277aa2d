#include "record_codec.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "text.h"

namespace tunnel {

namespace {

std::size_t read_length_prefix(const std::uint8_t* p) {
  return (static_cast<std::size_t>(p[0]) << 8) | static_cast<std::size_t>(p[1]);
}

char* put_varint(char* p, std::uint64_t v) {
  while (v >= 0x80) {
    *p++ = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  *p++ = static_cast<char>(v);
  return p;
}

// Protobuf wire tags: (field number << 3) | wire type (0 varint, 2 length-delimited).
constexpr char kTagType = (1 << 3) | 0;
constexpr char kTagStreamId = (2 << 3) | 0;
constexpr char kTagPayload = (4 << 3) | 2;
constexpr char kTagServiceId = (5 << 3) | 2;
constexpr char kTagConnectionId = (7 << 3) | 0;

// An int32 field is encoded as the varint of its 64-bit sign extension, so a
// negative value takes ten bytes (protobuf encoding rules).
std::uint64_t int32_wire_value(std::int32_t v) {
  return static_cast<std::uint64_t>(static_cast<std::int64_t>(v));
}

}  // namespace

std::string_view to_string(CodecError e) {
  static constexpr std::string_view kNames[] = {
      "no error",
      "record length prefix exceeds the record size limit",
      "record body is not a valid protobuf Message",
      "record payload exceeds the payload size limit",
  };
  static_assert(std::size(kNames) == static_cast<std::size_t>(CodecError::payload_too_large) + 1);
  return text::enum_name(e, kNames);
}

RecordDecoder::RecordDecoder(std::size_t max_record_size, std::size_t max_payload_size)
    : max_record_(std::min(max_record_size, kMaxRecordSize)), max_payload_(max_payload_size) {}

void RecordDecoder::reset() {
  partial_.clear();
  error_ = CodecError::none;
  stopped_ = false;
  consumed_ = 0;
}

CodecError RecordDecoder::fail(CodecError e) {
  error_ = e;
  // The stream position is lost for good: release the partial record.
  std::string().swap(partial_);
  return e;
}

CodecError RecordDecoder::parse_record(const std::uint8_t* body, std::size_t size, Message& msg,
                                       const Sink& sink) {
  if (!msg.ParseFromArray(body, static_cast<int>(size))) {
    return fail(CodecError::malformed_message);
  }
  if (msg.payload().size() > max_payload_) {
    return fail(CodecError::payload_too_large);
  }
  if (!sink(msg)) {
    stopped_ = true;
  }
  return CodecError::none;
}

CodecError RecordDecoder::feed(std::span<const std::uint8_t> bytes, const Sink& sink) {
  consumed_ = 0;
  stopped_ = false;
  if (error_ != CodecError::none) {
    return error_;
  }
  // One Message per call, reused for every record the call completes.
  Message msg;
  const std::uint8_t* p = bytes.data();
  std::size_t left = bytes.size();

  // Finish the record held back from an earlier call first.
  if (!partial_.empty()) {
    if (partial_.size() < kLengthPrefixSize) {
      const std::size_t take = std::min(kLengthPrefixSize - partial_.size(), left);
      partial_.append(reinterpret_cast<const char*>(p), take);
      p += take;
      left -= take;
      consumed_ += take;
      if (partial_.size() < kLengthPrefixSize) {
        return CodecError::none;
      }
    }
    const std::size_t body =
        read_length_prefix(reinterpret_cast<const std::uint8_t*>(partial_.data()));
    if (body > max_record_) {
      return fail(CodecError::record_too_large);
    }
    const std::size_t want = kLengthPrefixSize + body;
    partial_.reserve(want);  // validated above: at most 2 + max_record_
    const std::size_t take = std::min(want - partial_.size(), left);
    partial_.append(reinterpret_cast<const char*>(p), take);
    p += take;
    left -= take;
    consumed_ += take;
    if (partial_.size() < want) {
      return CodecError::none;
    }
    const CodecError e =
        parse_record(reinterpret_cast<const std::uint8_t*>(partial_.data()) + kLengthPrefixSize,
                     body, msg, sink);
    partial_.clear();  // keeps its capacity for the next split record
    if (e != CodecError::none || stopped_) {
      return e;
    }
  }

  // Fast path: whole records are parsed straight from the caller's buffer.
  while (left >= kLengthPrefixSize) {
    const std::size_t body = read_length_prefix(p);
    if (body > max_record_) {
      return fail(CodecError::record_too_large);
    }
    if (left < kLengthPrefixSize + body) {
      break;
    }
    const CodecError e = parse_record(p + kLengthPrefixSize, body, msg, sink);
    p += kLengthPrefixSize + body;
    left -= kLengthPrefixSize + body;
    consumed_ += kLengthPrefixSize + body;
    if (e != CodecError::none || stopped_) {
      return e;
    }
  }

  // Keep the incomplete tail (its length, if known, is already validated).
  if (left > 0) {
    if (left >= kLengthPrefixSize) {
      partial_.reserve(kLengthPrefixSize + read_length_prefix(p));
    }
    partial_.append(reinterpret_cast<const char*>(p), left);
    consumed_ += left;
  }
  return CodecError::none;
}

bool encode_record(const Message& m, std::string& out) {
  const std::size_t size = m.ByteSizeLong();
  if (size > kMaxRecordSize) {
    return false;
  }
  const std::size_t at = out.size();
  out.resize(at + kLengthPrefixSize + size);
  auto* p = reinterpret_cast<std::uint8_t*>(out.data() + at);
  p[0] = static_cast<std::uint8_t>(size >> 8);
  p[1] = static_cast<std::uint8_t>(size & 0xFF);
  m.SerializeWithCachedSizesToArray(p + kLengthPrefixSize);
  return true;
}

DataRecordFraming::DataRecordFraming(std::int32_t stream_id, std::size_t payload_size,
                                     std::string_view service_id, std::uint32_t connection_id)
    : payload_size_(payload_size) {
  assert(payload_size <= kMaxPayloadSize);
  assert(service_id.size() <= kMaxServiceIdSize);
  // Fields in field-number order and proto3 defaults omitted, exactly as
  // protobuf's own serializer writes them, so the bytes match a Message's.
  char* t = tail_;
  if (!service_id.empty()) {
    *t++ = kTagServiceId;
    t = put_varint(t, service_id.size());
    std::memcpy(t, service_id.data(), service_id.size());
    t += service_id.size();
  }
  if (connection_id != 0) {
    *t++ = kTagConnectionId;
    t = put_varint(t, connection_id);
  }
  tail_size_ = static_cast<std::size_t>(t - tail_);

  char fields[sizeof head_ - kLengthPrefixSize];
  char* f = fields;
  *f++ = kTagType;
  *f++ = static_cast<char>(Message::DATA);
  if (stream_id != 0) {
    *f++ = kTagStreamId;
    f = put_varint(f, int32_wire_value(stream_id));
  }
  if (payload_size != 0) {
    *f++ = kTagPayload;
    f = put_varint(f, payload_size);
  }
  const auto fields_size = static_cast<std::size_t>(f - fields);
  const std::size_t body = fields_size + payload_size + tail_size_;
  head_[0] = static_cast<char>(body >> 8);
  head_[1] = static_cast<char>(body & 0xFF);
  std::memcpy(head_ + kLengthPrefixSize, fields, fields_size);
  head_size_ = kLengthPrefixSize + fields_size;
}

void encode_data_record(std::int32_t stream_id, std::string_view payload, std::string& out,
                        std::string_view service_id, std::uint32_t connection_id) {
  const DataRecordFraming f(stream_id, payload.size(), service_id, connection_id);
  // Built with appends, not resize-then-write: the payload is copied once
  // and never zero-filled first.
  const std::size_t at = out.size();
  if (out.capacity() < at + f.record_size()) {
    out.reserve(std::max(at + f.record_size(), 2 * out.capacity()));
  }
  out.append(f.head());
  out.append(payload);
  out.append(f.tail());
}

}  // namespace tunnel
