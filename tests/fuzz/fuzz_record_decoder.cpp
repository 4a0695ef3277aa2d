// libFuzzer target for RecordDecoder: arbitrary bytes, split into feeds at
// input-chosen points, must never crash, never buffer more than one record,
// and every record it delivers must re-encode to a record it decodes again.
//
// Build (clang, from the repo root):
//   CXX=clang++ meson setup build-fuzz -Dfuzz=true -Db_lundef=false \
//       -Db_sanitize=address,undefined -Dcpp_args=-fsanitize=fuzzer-no-link
//   meson compile -C build-fuzz tests/fuzz-record-decoder
// The fuzz executable links with -fsanitize=fuzzer (tests/fuzz/meson.build);
// -fsanitize=fuzzer-no-link in cpp_args is optional and lets coverage reach
// the codec library too (without it only this file is instrumented).
// Run:
//   mkdir -p /tmp/fuzz-corpus
//   build-fuzz/tests/fuzz/fuzz-record-decoder -max_total_time=60 -max_len=140000 \
//       /tmp/fuzz-corpus tests/fuzz/seeds/record_decoder
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

#include "record_codec.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

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
    check(m.payload().size() <= max_payload);
    std::string again;
    check(tunnel::encode_record(m, again));
    tunnel::RecordDecoder redo;
    std::size_t n = 0;
    check(redo.feed(again, [&](tunnel::Message& back) {
      check(back.SerializeAsString() == m.SerializeAsString());
      ++n;
      return true;
    }) == tunnel::CodecError::none);
    check(n == 1 && redo.buffered() == 0);
    // Stop now and then to exercise resuming from consumed().
    return (++delivered % 7) != 0;
  };

  while (!rest.empty()) {
    const auto chunk = rest.first(std::min(step, rest.size()));
    const auto e = dec.feed(chunk, sink);
    check(dec.buffered() <= tunnel::kLengthPrefixSize + max_record);
    if (e != tunnel::CodecError::none) {
      check(dec.feed(chunk, sink) == e);  // sticky
      break;
    }
    check(dec.consumed() <= chunk.size());
    check(dec.stopped() || dec.consumed() == chunk.size());
    rest = rest.subspan(dec.consumed());
  }
  return 0;
}
