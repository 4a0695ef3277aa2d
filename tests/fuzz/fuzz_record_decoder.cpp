// libFuzzer target for RecordDecoder: arbitrary bytes, split into feeds at
// input-chosen points, must never crash, never buffer more than one record,
// and every record it delivers must re-encode to a record it decodes again;
// for DATA, encode_data_record and DataRecordFraming (the hot paths) must
// write the same bytes as encode_record.
//
// Build and run: docs/testing.md ("Fuzzing"); in short, the sanitizer build
// of scripts/run-tests.sh has every target, and scripts/fuzz.sh record_decoder
// runs this one for longer.
// The seeds are V2/V3 records (SERVICE_IDS, STREAM_START with connectionId,
// CONNECTION_START/RESET, DATA with serviceId and connectionId), each after
// the two selector bytes this target reads first.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "fuzz_check.h"
#include "record_codec.h"

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  // Protobuf logs every string field that is not UTF-8 before failing the
  // parse; that is an expected malformed_message here, not news.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  // First byte: a small record limit or the default; second: the feed size.
  const std::size_t max_record = (data[0] & 1) ? tunnel::kMaxRecordSize : 64 + data[0];
  const std::size_t max_payload = (data[0] & 2) ? tunnel::kMaxPayloadSize : 32 + data[0] / 2;
  const std::size_t step = 1 + data[1];
  std::span<const std::uint8_t> rest(data + 2, size - 2);

  tunnel::RecordDecoder dec(max_record, max_payload);
  std::size_t delivered = 0;
  const tunnel::RecordDecoder::Sink sink = [&](tunnel::Message& m) {
    FUZZ_CHECK(m.payload().size() <= max_payload);
    std::string again;
    FUZZ_CHECK(tunnel::encode_record(m, again));
    tunnel::RecordDecoder redo;
    std::size_t n = 0;
    FUZZ_CHECK(redo.feed(again, [&](tunnel::Message& back) {
      FUZZ_CHECK(back.SerializeAsString() == m.SerializeAsString());
      ++n;
      return true;
    }) == tunnel::CodecError::none);
    FUZZ_CHECK(n == 1 && redo.buffered() == 0);
    // The hot-path DATA encoder writes what encode_record writes.
    if (m.type() == tunnel::Message::DATA && m.serviceid().size() <= tunnel::kMaxServiceIdSize) {
      tunnel::Message clean;
      clean.set_type(tunnel::Message::DATA);
      clean.set_streamid(m.streamid());
      clean.set_payload(m.payload());
      clean.set_serviceid(m.serviceid());
      clean.set_connectionid(m.connectionid());
      std::string slow;
      std::string fast;
      FUZZ_CHECK(tunnel::encode_record(clean, slow));
      tunnel::encode_data_record(m.streamid(), m.payload(), fast, m.serviceid(), m.connectionid());
      FUZZ_CHECK(fast == slow);
      const tunnel::DataRecordFraming framing(m.streamid(), m.payload().size(), m.serviceid(),
                                              m.connectionid());
      FUZZ_CHECK(framing.record_size() == slow.size());
      FUZZ_CHECK(std::string(framing.head()) + m.payload() + std::string(framing.tail()) == slow);
    }
    // Stop now and then to exercise resuming from consumed().
    return (++delivered % 7) != 0;
  };

  while (!rest.empty()) {
    const auto chunk = rest.first(std::min(step, rest.size()));
    const auto e = dec.feed(chunk, sink);
    FUZZ_CHECK(dec.buffered() <= tunnel::kLengthPrefixSize + max_record);
    if (e != tunnel::CodecError::none) {
      FUZZ_CHECK(dec.feed(chunk, sink) == e);  // sticky
      break;
    }
    FUZZ_CHECK(dec.consumed() <= chunk.size());
    FUZZ_CHECK(dec.stopped() || dec.consumed() == chunk.size());
    rest = rest.subspan(dec.consumed());
  }
  return 0;
}
