// Record framing of the tunnel byte stream (docs/protocol.md section 3):
//   [u16 big-endian length N][N bytes: protobuf Message]
// Records are not aligned with WebSocket frames, so decoding is incremental.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "tunnel.pb.h"
#include "wire_limits.h"

namespace tunnel {

using Message = com::amazonaws::iot::securedtunneling::Message;

enum class CodecError {
  none,
  record_too_large,   // the length prefix exceeds the configured record limit
  malformed_message,  // the record body is not a valid protobuf Message
  payload_too_large,  // payload field larger than the configured payload limit
};

// Human readable, one line, no secrets (records carry none).
std::string_view to_string(CodecError e);

// Incremental decoder. Holds at most one partial record (bounded by the record
// limit); never allocates from a length it has not validated.
class RecordDecoder {
 public:
  // Called once per complete, parsed record. Return false to stop decoding
  // (the remaining bytes stay unconsumed and feed() returns CodecError::none).
  // The decoder is then at a record boundary: feeding
  // bytes.subspan(consumed()) later resumes exactly where it stopped.
  using Sink = std::function<bool(Message&)>;

  explicit RecordDecoder(std::size_t max_record_size = kMaxRecordSize,
                         std::size_t max_payload_size = kMaxPayloadSize);

  // Decodes as many records as `bytes` completes. On error the decoder stays
  // failed: every later feed() returns the same error without reading.
  CodecError feed(std::span<const std::uint8_t> bytes, const Sink& sink);
  CodecError feed(std::string_view bytes, const Sink& sink) {
    return feed(std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()), sink);
  }

  // Bytes of an incomplete record held back (0 at a record boundary).
  std::size_t buffered() const { return partial_.size(); }
  CodecError error() const { return error_; }
  // Whether the last feed() ended early because the sink returned false.
  bool stopped() const { return stopped_; }
  // Bytes of the last feed() input that were consumed (decoded or held back).
  std::size_t consumed() const { return consumed_; }
  // Forget buffered bytes and any error (new WebSocket connection).
  void reset();

 private:
  std::size_t max_record_;
  std::size_t max_payload_;
  std::string partial_;
  CodecError error_ = CodecError::none;
  bool stopped_ = false;
  std::size_t consumed_ = 0;

  CodecError fail(CodecError e);
  // Parses one record body and hands it to the sink.
  CodecError parse_record(const std::uint8_t* body, std::size_t size, Message& msg,
                          const Sink& sink);
};

// Appends one record for `m` to `out`. Returns false (appending nothing) when
// the serialized message would not fit a record.
bool encode_record(const Message& m, std::string& out);

// The bytes of a DATA record around its payload: record = head() + payload +
// tail(). Lets a writer put the payload bytes straight where they go (e.g.
// masked into a WebSocket frame) without building the record first.
// `payload_size` must not exceed kMaxPayloadSize, `service_id`
// kMaxServiceIdSize. Empty service_id / connection_id 0 mean "absent" and
// are not encoded (docs/protocol.md section 3).
class DataRecordFraming {
 public:
  DataRecordFraming(std::int32_t stream_id, std::size_t payload_size,
                    std::string_view service_id = {}, std::uint32_t connection_id = 0);
  std::string_view head() const { return {head_, head_size_}; }
  std::string_view tail() const { return {tail_, tail_size_}; }
  // The whole record: head, payload and tail.
  std::size_t record_size() const { return head_size_ + payload_size_ + tail_size_; }

 private:
  // prefix, type tag and value, streamId tag and varint, payload tag and length
  char head_[2 + 2 + 1 + 10 + 1 + 10];
  // serviceId tag, length and bytes; connectionId tag and varint
  char tail_[1 + 10 + kMaxServiceIdSize + 1 + 10];
  std::size_t head_size_ = 0;
  std::size_t tail_size_ = 0;
  std::size_t payload_size_ = 0;
};

// Appends a DATA record without building a Message (hot path: TCP -> tunnel).
// `payload` must not exceed kMaxPayloadSize, `service_id` kMaxServiceIdSize.
// The bytes equal what encode_record() writes for the same Message. Empty service_id /
// connection_id 0 mean "absent" and are not encoded (docs/protocol.md section 3).
void encode_data_record(std::int32_t stream_id, std::string_view payload, std::string& out,
                        std::string_view service_id = {}, std::uint32_t connection_id = 0);

// Upper bound of what encode_data_record appends beyond the payload bytes:
// length prefix, type (tag + 1), streamId (tag + up to 10 varint bytes when
// negative), payload (tag + 3-byte length), serviceId (tag + 2-byte length +
// kMaxServiceIdSize), connectionId (tag + 5).
constexpr std::size_t data_record_overhead() {
  return kLengthPrefixSize + (1 + 1) + (1 + 10) + (1 + 3) + (1 + 2 + kMaxServiceIdSize) + (1 + 5);
}

}  // namespace tunnel
