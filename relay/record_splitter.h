// Cuts one sender's byte stream into whole records (docs/protocol.md section 3:
// [u16 BE length][body]) and copies them into the receiving end's queue as
// they arrive. Only the length prefixes are looked at; bodies are copied once,
// in bulk. A record's bytes become visible to the receiver only when the whole
// record has arrived, so the relay can inject records between any two.
//
// Records other than DATA (a handful per stream) are shown to an inspector
// before they are committed; DATA records, recognised from their first two
// bytes, never are.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

#include "record_queue.h"

namespace relay {

enum class RecordVerdict {
  forward,  // commit the record for the receiver
  reject,   // protocol violation: stop; the caller closes the sender
};

class RecordSplitter {
 public:
  // Sees the body (length prefix excluded) of every record that is not a
  // recognisable DATA record.
  using Inspector = std::function<RecordVerdict(std::span<const std::uint8_t> body)>;

  // Feeds bytes that arrived from the sender. Returns false when the inspector
  // rejected a record (that record is discarded, later bytes are not read).
  bool feed(std::span<const std::uint8_t> bytes, RecordQueue& out, const Inspector& inspect);

  // True between the first byte of a record and its last one.
  bool mid_record() const { return prefix_have_ != 0 || body_left_ != 0; }
  // Forgets a partial record (the sender went away); the caller aborts the
  // queue's open record.
  void reset() {
    prefix_have_ = 0;
    body_left_ = 0;
  }

  // A DATA record's body starts with the type field: tag 1 varint, value 1.
  // protobuf serialises fields in field-number order, so every encoder in
  // practice emits these bytes first; anything else is inspected.
  static bool looks_like_data(std::span<const std::uint8_t> body) {
    return body.size() >= 2 && body[0] == 0x08 && body[1] == 0x01;
  }

 private:
  std::uint8_t prefix_[2] = {0, 0};
  std::size_t prefix_have_ = 0;
  std::size_t body_left_ = 0;
};

}  // namespace relay
