// Record framing (docs/protocol.md section 3): incremental decoding at any split
// point, limits enforced before allocating, and the hand-written DATA encoder
// agreeing byte for byte with protobuf.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <google/protobuf/stubs/logging.h>

#include "record_codec.h"

using tunnel::CodecError;
using tunnel::Message;
using tunnel::RecordDecoder;

namespace {

std::string pattern(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    s[i] = static_cast<char>((i * 131 + std::size_t{seed} * 7 + (i >> 8)) & 0xFF);
  }
  return s;
}

Message data_message(std::int32_t stream, std::string payload) {
  Message m;
  m.set_type(Message::DATA);
  m.set_streamid(stream);
  m.set_payload(std::move(payload));
  return m;
}

Message control_message(Message::Type type, std::int32_t stream) {
  Message m;
  m.set_type(type);
  m.set_streamid(stream);
  return m;
}

std::string encode_all(const std::vector<Message>& ms) {
  std::string out;
  for (const auto& m : ms) {
    REQUIRE(tunnel::encode_record(m, out));
  }
  return out;
}

// The records a stream of bytes is made of, in the order under test.
std::vector<Message> sample_records() {
  std::vector<Message> ms;
  ms.push_back(control_message(Message::STREAM_START, 1));
  ms.push_back(data_message(1, pattern(tunnel::kMaxPayloadSize, 1)));
  ms.push_back(data_message(1, ""));  // empty payload
  ms.push_back(Message());            // zero-length record body
  ms.push_back(data_message(1, pattern(300, 2)));
  Message ids;
  ids.set_type(Message::SERVICE_IDS);
  ids.add_availableserviceids("ssh");
  ms.push_back(ids);
  ms.push_back(data_message(1, pattern(1, 3)));
  ms.push_back(control_message(Message::STREAM_RESET, 1));
  return ms;
}

// Collects serialized copies of what the decoder delivers.
struct Collector {
  std::vector<std::string> got;
  RecordDecoder::Sink sink() {
    return [this](Message& m) {
      got.push_back(m.SerializeAsString());
      return true;
    };
  }
};

std::vector<std::string> serialized(const std::vector<Message>& ms) {
  std::vector<std::string> out;
  out.reserve(ms.size());
  for (const auto& m : ms) out.push_back(m.SerializeAsString());
  return out;
}

}  // namespace

TEST_CASE("codec: to_string names every error") {
  CHECK(tunnel::to_string(CodecError::none) == "no error");
  CHECK(tunnel::to_string(CodecError::record_too_large).find("length") != std::string_view::npos);
  CHECK(tunnel::to_string(CodecError::malformed_message).find("protobuf") !=
        std::string_view::npos);
  CHECK(tunnel::to_string(CodecError::payload_too_large).find("payload") != std::string_view::npos);
}

TEST_CASE("codec: several records in one buffer decode in order") {
  const auto ms = sample_records();
  const std::string wire = encode_all(ms);
  RecordDecoder dec;
  Collector c;
  CHECK(dec.feed(wire, c.sink()) == CodecError::none);
  CHECK(c.got == serialized(ms));
  CHECK(dec.buffered() == 0);
  CHECK(dec.consumed() == wire.size());
  CHECK_FALSE(dec.stopped());
}

TEST_CASE("codec: every two-part split point yields the same records") {
  const auto ms = sample_records();
  const auto want = serialized(ms);
  const std::string wire = encode_all(ms);
  const std::string_view all(wire);
  RecordDecoder dec;
  Collector c;
  const auto sink = c.sink();
  std::size_t bad_splits = 0;
  for (std::size_t split = 0; split <= wire.size(); ++split) {
    dec.reset();
    c.got.clear();
    const CodecError e1 = dec.feed(all.substr(0, split), sink);
    const CodecError e2 = dec.feed(all.substr(split), sink);
    if (e1 != CodecError::none || e2 != CodecError::none || c.got != want || dec.buffered() != 0) {
      if (++bad_splits <= 5) {
        FAIL_CHECK("split at " << split << " decoded differently");
      }
    }
  }
  CHECK(bad_splits == 0);
}

TEST_CASE("codec: byte-by-byte feeding yields the same records") {
  const auto ms = sample_records();
  const std::string wire = encode_all(ms);
  RecordDecoder dec;
  Collector c;
  const auto sink = c.sink();
  std::size_t max_buffered = 0;
  for (std::size_t i = 0; i < wire.size(); ++i) {
    REQUIRE(dec.feed(std::string_view(wire).substr(i, 1), sink) == CodecError::none);
    max_buffered = std::max(max_buffered, dec.buffered());
  }
  CHECK(c.got == serialized(ms));
  CHECK(dec.buffered() == 0);
  // The largest record is held back whole just before it completes, never more.
  CHECK(max_buffered < tunnel::kLengthPrefixSize + tunnel::kMaxRecordSize);
}

TEST_CASE("codec: pseudo-random multi-part splits yield the same records") {
  const auto ms = sample_records();
  const auto want = serialized(ms);
  const std::string wire = encode_all(ms);
  const std::string_view all(wire);
  std::uint32_t rng = 12345;
  const auto next = [&rng] {
    rng = rng * 1664525u + 1013904223u;  // a fixed LCG: the same splits every run
    return rng >> 8;
  };
  std::size_t bad = 0;
  for (const std::size_t max_chunk : {3u, 17u, 300u, 5000u, 70000u}) {
    for (int round = 0; round < 40; ++round) {
      RecordDecoder dec;
      Collector c;
      const auto sink = c.sink();
      bool ok = true;
      for (std::size_t at = 0; at < all.size() && ok;) {
        const std::size_t n = 1 + next() % max_chunk;
        ok = dec.feed(all.substr(at, n), sink) == CodecError::none;
        at += n;
      }
      if (!ok || c.got != want || dec.buffered() != 0) ++bad;
    }
  }
  CHECK(bad == 0);
}

TEST_CASE("codec: an empty feed is harmless") {
  RecordDecoder dec;
  Collector c;
  CHECK(dec.feed(std::string_view(), c.sink()) == CodecError::none);
  CHECK(c.got.empty());
  CHECK(dec.buffered() == 0);
}

TEST_CASE("codec: garbage bytes are a malformed message") {
  Collector c;
  SUBCASE("truncated varint") {
    RecordDecoder dec;
    const std::string wire("\x00\x03\xff\xff\xff", 5);
    CHECK(dec.feed(wire, c.sink()) == CodecError::malformed_message);
  }
  SUBCASE("invalid wire type") {
    RecordDecoder dec;
    const std::string wire("\x00\x01\x0f", 3);
    CHECK(dec.feed(wire, c.sink()) == CodecError::malformed_message);
  }
  SUBCASE("length-delimited field longer than the record") {
    RecordDecoder dec;
    const std::string wire("\x00\x03\x22\x10\x41", 5);  // payload claims 16 bytes, has 1
    CHECK(dec.feed(wire, c.sink()) == CodecError::malformed_message);
  }
  SUBCASE("garbage split across feeds") {
    RecordDecoder dec;
    const std::string wire("\x00\x04\xff\xff\xff\xff", 6);
    CHECK(dec.feed(std::string_view(wire).substr(0, 3), c.sink()) == CodecError::none);
    CHECK(dec.feed(std::string_view(wire).substr(3), c.sink()) == CodecError::malformed_message);
  }
  CHECK(c.got.empty());
}

TEST_CASE("codec: a string field that is not UTF-8 is a malformed message") {
  // serviceId and availableServiceIds are proto3 `string`: protobuf rejects
  // invalid UTF-8 (and logs a line of its own while doing so).
  google::protobuf::LogHandler* previous = google::protobuf::SetLogHandler(nullptr);
  RecordDecoder dec;
  Collector c;
  // type=DATA, streamId=1, serviceId = "\xff".
  const std::string wire("\x00\x07\x08\x01\x10\x01\x2a\x01\xff", 9);
  CHECK(dec.feed(wire, c.sink()) == CodecError::malformed_message);
  CHECK(c.got.empty());
  google::protobuf::SetLogHandler(previous);
}

TEST_CASE("codec: an oversized length prefix fails without buffering the record") {
  RecordDecoder dec(1000);
  Collector c;
  SUBCASE("prefix and body in one feed") {
    std::string wire("\xff\xff", 2);
    wire += pattern(5000, 4);
    CHECK(dec.feed(wire, c.sink()) == CodecError::record_too_large);
    CHECK(dec.buffered() <= 1000 + tunnel::kLengthPrefixSize);
    CHECK(dec.buffered() == 0);
  }
  SUBCASE("prefix split across feeds, body trickling in") {
    CHECK(dec.feed(std::string_view("\xff", 1), c.sink()) == CodecError::none);
    CHECK(dec.buffered() == 1);
    CHECK(dec.feed(std::string_view("\xff", 1), c.sink()) == CodecError::record_too_large);
    for (int i = 0; i < 100; ++i) {
      CHECK(dec.feed(pattern(100, i), c.sink()) == CodecError::record_too_large);
      CHECK(dec.buffered() <= 1000 + tunnel::kLengthPrefixSize);
    }
  }
  SUBCASE("after a good record") {
    std::string wire;
    REQUIRE(tunnel::encode_record(control_message(Message::STREAM_START, 3), wire));
    wire.append("\x03\xe9", 2);  // 1001 > 1000
    CHECK(dec.feed(wire, c.sink()) == CodecError::record_too_large);
    CHECK(c.got.size() == 1);
  }
  CHECK(dec.error() == CodecError::record_too_large);
}

TEST_CASE("codec: a record exactly at the record limit is accepted") {
  RecordDecoder dec(1000);
  Collector c;
  // DATA: type (2) + streamId (2) + payload tag (1) + 2-byte length + 993 = 1000.
  std::string wire;
  REQUIRE(tunnel::encode_record(data_message(1, pattern(993, 5)), wire));
  REQUIRE(wire.size() == 1002);
  CHECK(dec.feed(std::string_view(wire).substr(0, 500), c.sink()) == CodecError::none);
  CHECK(dec.feed(std::string_view(wire).substr(500), c.sink()) == CodecError::none);
  CHECK(c.got.size() == 1);
}

TEST_CASE("codec: a payload over the payload limit is rejected") {
  RecordDecoder dec(tunnel::kMaxRecordSize, 100);
  Collector c;
  std::string wire;
  REQUIRE(tunnel::encode_record(data_message(1, pattern(100, 6)), wire));
  CHECK(dec.feed(wire, c.sink()) == CodecError::none);
  CHECK(c.got.size() == 1);
  wire.clear();
  REQUIRE(tunnel::encode_record(data_message(1, pattern(101, 7)), wire));
  CHECK(dec.feed(wire, c.sink()) == CodecError::payload_too_large);
  CHECK(c.got.size() == 1);

  SUBCASE("the default limit is 64512") {
    RecordDecoder def;
    wire.clear();
    REQUIRE(tunnel::encode_record(data_message(1, pattern(tunnel::kMaxPayloadSize + 1, 8)), wire));
    CHECK(def.feed(wire, c.sink()) == CodecError::payload_too_large);
  }
}

TEST_CASE("codec: errors are sticky until reset") {
  RecordDecoder dec;
  Collector c;
  const std::string good = encode_all({control_message(Message::STREAM_START, 9)});
  CHECK(dec.feed(std::string_view("\x00\x01\x0f", 3), c.sink()) == CodecError::malformed_message);
  CHECK(dec.feed(good, c.sink()) == CodecError::malformed_message);
  CHECK(dec.feed(good, c.sink()) == CodecError::malformed_message);
  CHECK(dec.error() == CodecError::malformed_message);
  CHECK(c.got.empty());

  dec.reset();
  CHECK(dec.error() == CodecError::none);
  CHECK(dec.feed(good, c.sink()) == CodecError::none);
  CHECK(c.got.size() == 1);
}

TEST_CASE("codec: reset drops a partial record") {
  RecordDecoder dec;
  Collector c;
  const std::string wire = encode_all({data_message(1, pattern(50, 9))});
  CHECK(dec.feed(std::string_view(wire).substr(0, 20), c.sink()) == CodecError::none);
  CHECK(dec.buffered() == 20);
  dec.reset();
  CHECK(dec.buffered() == 0);
  CHECK(dec.feed(wire, c.sink()) == CodecError::none);
  CHECK(c.got.size() == 1);
}

TEST_CASE("codec: a sink returning false stops decoding") {
  const std::vector<Message> ms = {control_message(Message::STREAM_START, 1),
                                   data_message(1, pattern(40, 10)),
                                   control_message(Message::STREAM_RESET, 1)};
  const auto want = serialized(ms);
  const std::string wire = encode_all(ms);
  const std::string_view all(wire);
  std::string first_two;
  REQUIRE(tunnel::encode_record(ms[0], first_two));
  REQUIRE(tunnel::encode_record(ms[1], first_two));

  std::vector<std::string> got;
  std::size_t stop_after = 2;
  const RecordDecoder::Sink sink = [&](Message& m) {
    got.push_back(m.SerializeAsString());
    return got.size() != stop_after;
  };

  SUBCASE("from the caller's buffer") {
    RecordDecoder dec;
    CHECK(dec.feed(all, sink) == CodecError::none);
    CHECK(got.size() == 2);
    CHECK(dec.stopped());
    CHECK(dec.consumed() == first_two.size());
    CHECK(dec.buffered() == 0);
    // The rest resumes exactly at the record boundary.
    CHECK(dec.feed(all.substr(dec.consumed()), sink) == CodecError::none);
    CHECK_FALSE(dec.stopped());
    CHECK(got == want);
  }
  SUBCASE("when a held-back record completes") {
    RecordDecoder dec;
    stop_after = 1;
    const std::size_t split = 3;  // inside the first record
    CHECK(dec.feed(all.substr(0, split), sink) == CodecError::none);
    CHECK(got.empty());
    const auto rest = all.substr(split);
    CHECK(dec.feed(rest, sink) == CodecError::none);
    CHECK(got.size() == 1);
    CHECK(dec.stopped());
    CHECK(dec.buffered() == 0);
    CHECK(dec.feed(rest.substr(dec.consumed()), sink) == CodecError::none);
    CHECK(got == want);
  }
}

TEST_CASE("codec: encode_record refuses a message that does not fit a record") {
  std::string out = "keep";
  CHECK_FALSE(tunnel::encode_record(data_message(1, pattern(65536, 11)), out));
  CHECK(out == "keep");
  // type (2) + streamId (2) + payload tag and 3-byte length (4) + 65528 = 65536.
  CHECK_FALSE(tunnel::encode_record(data_message(1, pattern(65528, 12)), out));
  CHECK(out == "keep");
  // One byte less is exactly 65535: the largest record there is.
  CHECK(tunnel::encode_record(data_message(1, pattern(65527, 13)), out));
  CHECK(out.size() == 4 + 2 + 65535);
  CHECK(static_cast<unsigned char>(out[4]) == 0xff);
  CHECK(static_cast<unsigned char>(out[5]) == 0xff);
}

TEST_CASE("codec: encode_data_record matches protobuf's encoding") {
  const std::vector<std::int32_t> streams = {1, 127, 128, 16384, 2147483647, -1};
  const std::vector<std::size_t> sizes = {0, 1, 127, 128, 16383, 16384, tunnel::kMaxPayloadSize};
  const std::vector<std::string> services = {"", "ssh",
                                             std::string(tunnel::kMaxServiceIdSize, 'S')};
  const std::vector<std::uint32_t> connections = {0, 1, 300, 4294967295u};
  int cases = 0;
  for (auto stream : streams) {
    for (auto size : sizes) {
      for (const auto& service : services) {
        for (auto connection : connections) {
          CAPTURE(stream);
          CAPTURE(size);
          CAPTURE(service.size());
          CAPTURE(connection);
          const std::string payload = pattern(size, static_cast<unsigned>(size));
          Message m = data_message(stream, payload);
          m.set_serviceid(service);
          m.set_connectionid(connection);
          std::string expected = "prefix";
          REQUIRE(tunnel::encode_record(m, expected));

          std::string out = "prefix";
          tunnel::encode_data_record(stream, payload, out, service, connection);
          REQUIRE(out == expected);
          CHECK(out.size() - 6 - size <= tunnel::data_record_overhead());

          const std::size_t len =
              (static_cast<unsigned char>(out[6]) << 8) | static_cast<unsigned char>(out[7]);
          REQUIRE(len == out.size() - 8);
          Message back;
          REQUIRE(back.ParseFromArray(out.data() + 8, static_cast<int>(len)));
          CHECK(back.type() == Message::DATA);
          CHECK(back.streamid() == stream);
          CHECK(back.payload() == payload);
          CHECK(back.serviceid() == service);
          CHECK(back.connectionid() == connection);
          CHECK_FALSE(back.ignorable());
          CHECK(back.availableserviceids_size() == 0);
          ++cases;
        }
      }
    }
  }
  CHECK(cases == 6 * 7 * 3 * 4);
}

TEST_CASE("codec: encode_data_record output decodes through RecordDecoder") {
  std::string wire;
  tunnel::encode_data_record(5, pattern(tunnel::kMaxPayloadSize, 14), wire);
  tunnel::encode_data_record(5, "", wire, "rdp", 2);
  RecordDecoder dec;
  std::vector<std::pair<std::string, std::string>> got;
  CHECK(dec.feed(wire, [&](Message& m) {
    got.emplace_back(m.payload(), m.serviceid());
    return true;
  }) == CodecError::none);
  REQUIRE(got.size() == 2);
  CHECK(got[0].first == pattern(tunnel::kMaxPayloadSize, 14));
  CHECK(got[1].first.empty());
  CHECK(got[1].second == "rdp");
}

TEST_CASE("codec: the DATA overhead bound fits two full records in a frame") {
  // The proxy packs whole records into WebSocket frames of kMaxFrameSize.
  CHECK(2 * (tunnel::kMaxPayloadSize + tunnel::data_record_overhead()) <= tunnel::kMaxFrameSize);
  CHECK(tunnel::kMaxPayloadSize + tunnel::data_record_overhead() - tunnel::kLengthPrefixSize <=
        tunnel::kMaxRecordSize);
}
