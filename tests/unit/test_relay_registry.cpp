// tunnel-relay's pure parts: tunnel registry and admission rules, handshake
// decisions (docs/protocol.md section 2, service side), the record queue and
// splitter that forward whole records, and the records the relay reads and
// injects; the admin API's thingName notification.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "admin_api.h"
#include "handshake.h"
#include "notify_publisher.h"
#include "record_queue.h"
#include "record_splitter.h"
#include "relay_config.h"
#include "relay_records.h"
#include "tunnel_registry.h"

using relay::Admission;
using relay::ChunkPool;
using relay::HandshakeRequest;
using relay::RecordQueue;
using relay::RecordSplitter;
using relay::RecordVerdict;
using relay::Role;
using relay::TunnelRegistry;
using tunnel::Message;

namespace {

TunnelRegistry::TokenSource counting_tokens() {
  auto n = std::make_shared<int>(0);
  return [n] { return "tok" + std::to_string(++*n); };
}

const std::string kClientA(40, 'a');
const std::string kClientB(40, 'b');

std::string rec(const Message& m) {
  std::string out;
  tunnel::encode_record(m, out);
  return out;
}

Message data(std::int32_t stream, std::string payload) {
  Message m;
  m.set_type(Message::DATA);
  m.set_streamid(stream);
  m.set_payload(std::move(payload));
  return m;
}

Message control(Message::Type type, std::int32_t stream, std::string service = {}) {
  Message m;
  m.set_type(type);
  m.set_streamid(stream);
  if (!service.empty()) m.set_serviceid(service);
  return m;
}

std::span<const std::uint8_t> bytes(const std::string& s) { return relay::bytes_of(s); }

// Everything the consumer side of a queue hands out, message by message.
std::vector<std::string> drain(RecordQueue& q) {
  std::vector<std::string> out;
  while (q.has_committed()) {
    const auto m = q.front();
    REQUIRE(!m.empty());
    out.emplace_back(reinterpret_cast<const char*>(m.data()), m.size());
    q.pop_front(m.size());
  }
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
}

// Splits a byte stream of records back into bodies (checks framing).
std::vector<Message> parse_stream(const std::string& s) {
  std::vector<Message> out;
  std::size_t i = 0;
  while (i < s.size()) {
    REQUIRE(i + 2 <= s.size());
    const std::size_t n =
        (static_cast<unsigned char>(s[i]) << 8) | static_cast<unsigned char>(s[i + 1]);
    REQUIRE(i + 2 + n <= s.size());
    Message m;
    REQUIRE(m.ParseFromArray(s.data() + i + 2, static_cast<int>(n)));
    out.push_back(m);
    i += 2 + n;
  }
  return out;
}

}  // namespace

TEST_CASE("registry: ids, tokens and listing") {
  TunnelRegistry reg(counting_tokens());
  std::string error;
  const auto* t1 = reg.add("s1", "d1", {}, error);
  REQUIRE(t1 != nullptr);
  CHECK(t1->id == "t1");
  CHECK(reg.add("s1", "other", {}, error) == nullptr);  // token reuse across tunnels
  CHECK(reg.add("same", "same", {}, error) == nullptr);
  const auto& t2 = *reg.open({"SSH", "RDP"}, error);
  CHECK(t2.id == "t2");
  CHECK(t2.end(Role::source).access_token == "tok1");
  CHECK(t2.end(Role::destination).access_token == "tok2");
  const auto list = reg.list();
  REQUIRE(list.size() == 2);
  CHECK(list[0]->id == "t1");
  CHECK(list[1]->services == std::vector<std::string>{"SSH", "RDP"});
}

TEST_CASE("registry: admission statuses") {
  TunnelRegistry reg(counting_tokens());
  std::string error;
  REQUIRE(reg.add("s1", "d1", {}, error) != nullptr);

  CHECK(reg.admit("nope", Role::source, "").http_status == 401);
  const Admission wrong_mode = reg.admit("s1", Role::destination, "");
  CHECK(wrong_mode.http_status == 403);
  CHECK(wrong_mode.reason.find("s1") == std::string::npos);  // never a token in a reason

  const Admission first = reg.admit("s1", Role::source, "");
  REQUIRE(first.admitted());
  CHECK(first.tunnel_id == "t1");
  CHECK(first.role == Role::source);
  CHECK_FALSE(first.replaces_connected);
  reg.attach("t1", Role::source, "");
  CHECK(reg.find("t1")->end(Role::source).connected);

  SUBCASE("single use without a client token") {
    CHECK(reg.admit("s1", Role::source, "").http_status == 401);
    CHECK(reg.admit("s1", Role::source, kClientA).http_status == 401);
    reg.detach("t1", Role::source);
    CHECK(reg.admit("s1", Role::source, "").http_status == 401);
  }
  SUBCASE("the other end is independent") {
    CHECK(reg.admit("d1", Role::destination, "").admitted());
  }
  SUBCASE("closed tunnel") {
    CHECK(reg.close("t1"));
    CHECK(reg.admit("d1", Role::destination, "").http_status == 410);
    CHECK(reg.admit("s1", Role::source, "").http_status == 410);
    CHECK_FALSE(reg.find("t1")->end(Role::source).connected);
    CHECK_FALSE(reg.close("t9"));
  }
}

TEST_CASE("registry: open tunnels are capped, closed ones remembered up to a bound") {
  TunnelRegistry reg(counting_tokens(), relay::RegistryLimits{2, 2});
  std::string error;
  REQUIRE(reg.add("s1", "d1", {}, error) != nullptr);
  REQUIRE(reg.open({}, error) != nullptr);
  CHECK(reg.open_count() == 2);

  // Full: neither the admin API nor --tunnel get a third, and the reason
  // names the limit.
  CHECK(reg.open({}, error) == nullptr);
  CHECK(error.find("--max-open-tunnels") != std::string::npos);
  CHECK(reg.add("s3", "d3", {}, error) == nullptr);
  CHECK(reg.list().size() == 2);

  // Closing makes room; closing twice counts once.
  CHECK(reg.close("t1"));
  CHECK(reg.close("t1"));
  CHECK(reg.open_count() == 1);
  const relay::Tunnel* t3 = reg.open({}, error);
  REQUIRE(t3 != nullptr);
  CHECK(t3->id == "t3");  // ids are never reused
  const std::string t3_source = t3->end(Role::source).access_token;

  // Two closed tunnels are remembered: their tokens get 410 (gone).
  CHECK(reg.close("t2"));
  CHECK(reg.admit("s1", Role::source, "").http_status == 410);
  CHECK(reg.list().size() == 3);
  // A third closed one makes the registry forget the oldest (t1): its
  // tokens are unknown now, it is no longer listed, and closing it again
  // is a close of an unknown id.
  CHECK(reg.close("t3"));
  CHECK(reg.open_count() == 0);
  CHECK(reg.find("t1") == nullptr);
  const Admission forgotten = reg.admit("s1", Role::source, "");
  CHECK(forgotten.http_status == 401);
  CHECK(forgotten.reason == "unknown access token");
  CHECK(reg.admit("d1", Role::destination, "").http_status == 401);
  CHECK_FALSE(reg.close("t1"));
  CHECK(reg.admit(t3_source, Role::source, "").http_status == 410);
  const auto list = reg.list();
  REQUIRE(list.size() == 2);
  CHECK(list[0]->id == "t2");
  CHECK(list[1]->id == "t3");

  // The forgotten tunnel's tokens may be given to a new --tunnel again.
  REQUIRE(reg.add("s1", "d1", {}, error) != nullptr);
  CHECK(reg.admit("s1", Role::source, "").admitted());
}

TEST_CASE("registry: keeping no closed tunnel forgets each one as it closes") {
  TunnelRegistry reg(counting_tokens(), relay::RegistryLimits{10, 0});
  std::string error;
  for (int i = 0; i < 1000; ++i) {
    const relay::Tunnel* t = reg.open({"SSH"}, error);
    REQUIRE(t != nullptr);
    const std::string id = t->id;
    const std::string token = t->end(Role::destination).access_token;
    CHECK(reg.close(id));
    CHECK(reg.find(id) == nullptr);
    CHECK(reg.admit(token, Role::destination, "").http_status == 401);
  }
  CHECK(reg.list().empty());
  CHECK(reg.open_count() == 0);
}

TEST_CASE("registry: reconnect with the client token replaces") {
  TunnelRegistry reg(counting_tokens());
  std::string error;
  const auto& t = *reg.open({}, error);
  const std::string src = t.end(Role::source).access_token;
  REQUIRE(reg.admit(src, Role::source, kClientA).admitted());
  reg.attach(t.id, Role::source, kClientA);

  const Admission again = reg.admit(src, Role::source, kClientA);
  REQUIRE(again.admitted());
  CHECK(again.replaces_connected);
  CHECK(reg.admit(src, Role::source, kClientB).http_status == 401);
  CHECK(reg.admit(src, Role::source, "").http_status == 401);

  reg.detach(t.id, Role::source);
  const Admission after_drop = reg.admit(src, Role::source, kClientA);
  REQUIRE(after_drop.admitted());
  CHECK_FALSE(after_drop.replaces_connected);
  // The client token of the first connection stays the one to match.
  reg.attach(t.id, Role::source, kClientA);
  CHECK(reg.find(t.id)->end(Role::source).client_token == kClientA);
}

TEST_CASE("handshake helpers") {
  CHECK(relay::valid_client_token(std::string(32, 'x')));
  CHECK(relay::valid_client_token(std::string(128, '-')));
  CHECK_FALSE(relay::valid_client_token(std::string(31, 'x')));
  CHECK_FALSE(relay::valid_client_token(std::string(129, 'x')));
  CHECK_FALSE(relay::valid_client_token(std::string(40, 'x') + "_"));

  CHECK(relay::cookie_values("a=1; awsiot-tunnel-token=T; b=2", "awsiot-tunnel-token") ==
        std::vector<std::string>{"T"});
  CHECK(relay::cookie_values("awsiot-tunnel-token=A awsiot-tunnel-token=B", "awsiot-tunnel-token")
            .size() == 2);  // two Cookie headers, joined into one value
  CHECK(relay::cookie_values("x-awsiot-tunnel-token=A", "awsiot-tunnel-token").empty());
  CHECK(relay::cookie_values("awsiot-tunnel-token=\"Q\"", "awsiot-tunnel-token") ==
        std::vector<std::string>{"Q"});

  const std::vector<std::string> accepted{"aws.iot.securetunneling-2.0",
                                          "aws.iot.securetunneling-3.0"};
  CHECK(relay::choose_subprotocol("foo, aws.iot.securetunneling-3.0,aws.iot.securetunneling-2.0",
                                  accepted) == "aws.iot.securetunneling-3.0");
  CHECK(relay::choose_subprotocol("aws.iot.securetunneling-1.0", accepted).empty());
  CHECK(relay::choose_subprotocol("", accepted).empty());
}

TEST_CASE("handshake decisions") {
  TunnelRegistry reg(counting_tokens());
  std::string error;
  REQUIRE(reg.add("s1", "d1", {"SSH"}, error) != nullptr);
  const auto accepted = relay::default_subprotocols();

  HandshakeRequest ok;
  ok.path = "/tunnel";
  ok.query_args = {"local-proxy-mode=source"};
  ok.access_token_header = "s1";
  ok.subprotocol_offer = "aws.iot.securetunneling-2.0";
  ok.request_bytes = 300;
  const auto decide = [&](const HandshakeRequest& r) {
    return relay::evaluate_handshake(r, reg, accepted, 4096);
  };

  const auto good = decide(ok);
  REQUIRE(good.admitted());
  CHECK(good.version == 2);
  CHECK(good.subprotocol == "aws.iot.securetunneling-2.0");
  CHECK(good.admission.tunnel_id == "t1");

  auto r = ok;
  r.path = "/tunnels";
  CHECK(decide(r).http_status == 400);
  r = ok;
  r.request_bytes = 5000;
  CHECK(decide(r).http_status == 431);
  r = ok;
  r.query_args.clear();
  CHECK(decide(r).http_status == 400);
  r = ok;
  r.query_args = {"local-proxy-mode=source", "local-proxy-mode=source"};
  CHECK(decide(r).http_status == 400);
  r = ok;
  r.query_args = {"local-proxy-mode=both"};
  CHECK(decide(r).http_status == 400);
  r = ok;
  r.access_token_header.reset();
  CHECK(decide(r).http_status == 401);
  r.cookie_header = "awsiot-tunnel-token=s1";
  CHECK(decide(r).admitted());  // the cookie alone is enough
  r.access_token_header = "s1";
  CHECK(decide(r).http_status == 400);  // header and cookie
  r = ok;
  r.access_token_header = "s1, d1";
  CHECK(decide(r).http_status == 400);
  r = ok;
  r.access_token_header = "";
  CHECK(decide(r).http_status == 401);
  r = ok;
  r.client_token = "short";
  CHECK(decide(r).http_status == 400);
  r = ok;
  r.subprotocol_offer = "chat";
  CHECK(decide(r).http_status == 400);
  r = ok;
  r.query_args = {"local-proxy-mode=destination"};
  CHECK(decide(r).http_status == 403);
  r = ok;
  r.access_token_header = "unknown";
  CHECK(decide(r).http_status == 401);
}

namespace {

// The admin API's view of a relay with no tunnels.
class NoTunnels : public relay::TunnelControl {
 public:
  std::optional<relay::OpenedTunnel> open_tunnel(std::vector<std::string> /*services*/,
                                                 std::chrono::seconds /*lifetime*/,
                                                 std::string& /*error*/) override {
    return relay::OpenedTunnel{"t1", "src", "dst"};
  }
  bool close_tunnel(std::string_view /*id*/, std::string_view /*why*/) override { return false; }
  std::vector<relay::TunnelView> tunnels() const override { return {}; }
};

}  // namespace

TEST_CASE("admin API: an id that is not UTF-8 gets a 404 with a JSON body") {
  // Found by fuzz-relay-requests: the error body quoted the id and dump()
  // threw, so the server answered 500 instead of 404.
  NoTunnels control;
  relay::AdminApi api(control, std::chrono::seconds(60), std::chrono::seconds(600));
  for (const char* method : {"GET", "DELETE"}) {
    const relay::HttpResponse r = api.handle(method, "/tunnels/t\xff\xfe", "");
    CHECK(r.status == 404);
    REQUIRE(nlohmann::json::accept(r.body));
    CHECK(nlohmann::json::parse(r.body).at("error").get<std::string>().find("no tunnel") == 0);
  }
}

TEST_CASE("record queue: whole records, one chunk per message") {
  ChunkPool pool(16, 100, 4);
  RecordQueue q(pool);
  CHECK(q.front().empty());

  // A record arrives in pieces: nothing is visible before it is complete.
  q.open_record(10);
  q.fill(bytes(std::string("01234")));
  CHECK_FALSE(q.has_committed());
  CHECK(q.size() == 10);
  q.fill(bytes(std::string("56789")));
  q.commit_record();
  CHECK(q.has_committed());

  // 10 + 60 bytes use 70 of the 100: a 40-byte record starts a new chunk.
  q.open_record(60);
  q.fill(bytes(std::string(60, 'a')));
  q.commit_record();
  q.open_record(40);
  q.fill(bytes(std::string(40, 'b')));
  q.commit_record();
  CHECK(q.size() == 110);
  const auto msgs = drain(q);
  REQUIRE(msgs.size() == 2);
  CHECK(msgs[0] == "0123456789" + std::string(60, 'a'));
  CHECK(msgs[1] == std::string(40, 'b'));
  CHECK(q.size() == 0);
  CHECK(pool.free_chunks() == 2);  // chunks went back to the pool
}

TEST_CASE("record queue: headroom before every message is writable") {
  ChunkPool pool(16, 100, 4);
  RecordQueue q(pool);
  q.push_back_record(bytes(std::string(30, 'x')));
  q.open_record(10);
  q.fill(bytes(std::string(5, 'y')));
  auto m = q.front();
  REQUIRE(m.size() == 30);
  m.data()[-16] = 1;  // the relay writes the frame header in the bytes before
  q.pop_front(m.size());
  // The chunk stays (it holds the open record); the next message starts
  // after the sent one, whose bytes are now the headroom.
  q.fill(bytes(std::string(5, 'z')));
  q.commit_record();
  m = q.front();
  std::memset(m.data() - 16, 0, 16);
  CHECK(std::string(reinterpret_cast<char*>(m.data()), m.size()) == "yyyyyzzzzz");
}

TEST_CASE("record queue: injected records land on record boundaries") {
  ChunkPool pool(16, 100, 4);
  RecordQueue q(pool);
  q.push_back_record(bytes(std::string("AA")));
  q.open_record(6);
  q.fill(bytes(std::string("xyz")));

  SUBCASE("push_back keeps the open record open, after the injected one") {
    q.push_back_record(bytes(std::string("II")));
    CHECK(q.has_open_record());
    CHECK(q.open_remaining() == 3);
    q.fill(bytes(std::string("XYZ")));
    q.commit_record();
    CHECK(join(drain(q)) == "AAIIxyzXYZ");
  }
  SUBCASE("push_front goes before everything") {
    q.push_front_record(bytes(std::string("SV")));
    q.fill(bytes(std::string("XYZ")));
    q.commit_record();
    CHECK(join(drain(q)) == "SVAAxyzXYZ");
  }
  SUBCASE("drop_committed keeps the open record") {
    q.drop_committed();
    CHECK_FALSE(q.has_committed());
    CHECK(q.size() == 6);
    q.fill(bytes(std::string("XYZ")));
    q.commit_record();
    CHECK(join(drain(q)) == "xyzXYZ");
  }
  SUBCASE("abort forgets the open record") {
    q.abort_record();
    CHECK(q.size() == 2);
    CHECK(join(drain(q)) == "AA");
  }
}

TEST_CASE("record splitter: any split gives the same whole records") {
  std::string stream;
  stream += rec(control(Message::STREAM_START, 1));
  for (int i = 0; i < 5; ++i) stream += rec(data(1, std::string(1000 + i * 300, char('a' + i))));
  stream += rec(control(Message::STREAM_RESET, 1));

  for (std::size_t piece : {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7},
                            std::size_t{1000}, stream.size()}) {
    CAPTURE(piece);
    ChunkPool pool(16, tunnel::kMaxFrameSize, 8);
    RecordQueue q(pool);
    RecordSplitter splitter;
    int inspected = 0;
    const RecordSplitter::Inspector count = [&](std::span<const std::uint8_t>) {
      ++inspected;
      return RecordVerdict::forward;
    };
    std::string out;
    for (std::size_t i = 0; i < stream.size(); i += piece) {
      const std::string part = stream.substr(i, piece);
      REQUIRE(splitter.feed(bytes(part), q, count));
      // Only whole records are ever visible to the consumer.
      const std::string visible = join(drain(q));
      if (!visible.empty()) CHECK(parse_stream(visible).size() >= 1);
      out += visible;
    }
    CHECK_FALSE(splitter.mid_record());
    CHECK(out == stream);
    CHECK(inspected == 2);  // STREAM_START and STREAM_RESET; DATA is not parsed
  }
}

TEST_CASE("record splitter: a rejected record is not forwarded") {
  ChunkPool pool(16, 1000, 2);
  RecordQueue q(pool);
  RecordSplitter splitter;
  const std::string good = rec(data(1, "ok"));
  const std::string bad = rec(control(Message::SESSION_RESET, 0));
  const RecordSplitter::Inspector reject_all = [](std::span<const std::uint8_t>) {
    return RecordVerdict::reject;
  };
  CHECK_FALSE(splitter.feed(bytes(good + bad), q, reject_all));
  CHECK(join(drain(q)) == good);
  CHECK_FALSE(q.has_open_record());
}

TEST_CASE("control records: rules and active streams") {
  relay::StreamTracker streams;
  std::string why;
  int code = 0;
  const auto inspect = [&](Role from, const Message& m) {
    const std::string s = m.SerializeAsString();
    return relay::inspect_control_record(from, bytes(s), streams, why, code);
  };

  CHECK(inspect(Role::source, control(Message::STREAM_START, 4, "SSH")) == RecordVerdict::forward);
  CHECK(inspect(Role::source, control(Message::STREAM_START, 7, "RDP")) == RecordVerdict::forward);
  CHECK(streams.active().size() == 2);
  // A stale reset changes nothing; a matching one ends the stream.
  CHECK(inspect(Role::destination, control(Message::STREAM_RESET, 3, "SSH")) ==
        RecordVerdict::forward);
  CHECK(streams.active().at("SSH") == 4);
  CHECK(inspect(Role::destination, control(Message::STREAM_RESET, 4, "SSH")) ==
        RecordVerdict::forward);
  CHECK(streams.active().count("SSH") == 0);

  CHECK(inspect(Role::destination, control(Message::STREAM_START, 9)) == RecordVerdict::reject);
  CHECK(code == 1008);
  CHECK(inspect(Role::source, control(Message::SESSION_RESET, 0)) == RecordVerdict::reject);
  CHECK(inspect(Role::source, control(Message::SERVICE_IDS, 0)) == RecordVerdict::reject);
  CHECK(inspect(Role::source, control(Message::CONNECTION_START, 0)) == RecordVerdict::reject);
  CHECK(inspect(Role::source, Message()) == RecordVerdict::reject);  // no type
  Message ignorable;
  ignorable.set_ignorable(true);
  CHECK(inspect(Role::source, ignorable) == RecordVerdict::forward);
  Message future;
  future.set_type(static_cast<Message::Type>(42));
  CHECK(inspect(Role::source, future) == RecordVerdict::forward);

  const std::uint8_t garbage[] = {0xff, 0xff, 0xff};
  CHECK(relay::inspect_control_record(Role::source, garbage, streams, why, code) ==
        RecordVerdict::reject);
  CHECK(code == 1007);

  // The relay's own records: one STREAM_RESET per active stream, then none.
  const auto resets = streams.take_resets();
  REQUIRE(resets.size() == 1);
  const auto parsed = parse_stream(resets[0]);
  REQUIRE(parsed.size() == 1);
  CHECK(parsed[0].type() == Message::STREAM_RESET);
  CHECK(parsed[0].streamid() == 7);
  CHECK(parsed[0].serviceid() == "RDP");
  CHECK(streams.empty());

  const auto ids = parse_stream(relay::service_ids_record({"SSH", "RDP"}));
  REQUIRE(ids.size() == 1);
  CHECK(ids[0].type() == Message::SERVICE_IDS);
  CHECK(ids[0].availableserviceids_size() == 2);
}

TEST_CASE("relay config parsing") {
  std::string error;
  auto hp = relay::parse_host_port("127.0.0.1:0", error);
  REQUIRE(hp);
  CHECK(hp->is_loopback());
  CHECK(hp->to_string() == "127.0.0.1:0");
  hp = relay::parse_host_port("[::1]:443", error);
  REQUIRE(hp);
  CHECK(hp->is_loopback());
  CHECK(hp->to_string() == "[::1]:443");
  hp = relay::parse_host_port("localhost:8443", error);
  REQUIRE(hp);
  CHECK(hp->host == "127.0.0.1");
  CHECK_FALSE(relay::parse_host_port("0.0.0.0:1", error)->is_loopback());
  CHECK_FALSE(relay::parse_host_port("example.com:443", error));
  CHECK_FALSE(relay::parse_host_port("127.0.0.1:65536", error));
  CHECK_FALSE(relay::parse_host_port("127.0.0.1", error));

  auto spec = relay::parse_tunnel_spec("S:D:SSH,RDP", error);
  REQUIRE(spec);
  CHECK(spec->services == std::vector<std::string>{"SSH", "RDP"});
  CHECK(relay::parse_tunnel_spec("S:D", error)->services.empty());
  CHECK_FALSE(relay::parse_tunnel_spec("S", error));
  CHECK_FALSE(relay::parse_tunnel_spec("S:S", error));
  CHECK_FALSE(relay::parse_tunnel_spec("S:D:A,B,C,D", error));
  CHECK_FALSE(relay::parse_tunnel_spec("S:D:A,A", error));

  auto subs = relay::parse_subprotocols("3.0, aws.iot.securetunneling-1.0,3.0", error);
  REQUIRE(subs);
  CHECK(*subs ==
        std::vector<std::string>{"aws.iot.securetunneling-3.0", "aws.iot.securetunneling-1.0"});
  CHECK_FALSE(relay::parse_subprotocols("4.0", error));

  relay::RelayConfig c;
  c.listen = *relay::parse_host_port("0.0.0.0:0", error);
  CHECK_FALSE(c.validate(error));  // plain ws off loopback
  c.tls_cert = "cert.pem";
  CHECK_FALSE(c.validate(error));  // key missing
  c.tls_key = "key.pem";
  CHECK(c.validate(error));
  // --tunnel beyond --max-open-tunnels is a usage error at start, not a
  // relay that starts without some of them.
  c.tunnels.resize(2, relay::TunnelSpec{"s", "d", {}});
  c.registry_limits.max_open = 1;
  CHECK_FALSE(c.validate(error));
  CHECK(error.find("--max-open-tunnels 1") != std::string::npos);
  c.registry_limits.max_open = 0;
  CHECK_FALSE(c.validate(error));
  CHECK(error == "--max-open-tunnels must be at least 1");
  c.registry_limits.max_open = 2;
  CHECK(c.validate(error));
}

namespace {

// A TunnelControl and TunnelNotifier that only record what they are asked.
struct FakeRelay final : relay::TunnelControl, relay::TunnelNotifier {
  std::vector<std::string> opened_services;
  std::vector<std::string> closed;
  std::string notified_thing, notified_token;
  bool notify_ok = true;
  bool full = false;
  std::optional<relay::OpenedTunnel> open_tunnel(std::vector<std::string> services,
                                                 std::chrono::seconds,
                                                 std::string& error) override {
    if (full) {
      error = "3 tunnels are open, the relay's limit (--max-open-tunnels)";
      return std::nullopt;
    }
    opened_services = services;
    return relay::OpenedTunnel{"t1", "src-token", "dst-token"};
  }
  bool close_tunnel(std::string_view id, std::string_view) override {
    closed.emplace_back(id);
    return true;
  }
  std::vector<relay::TunnelView> tunnels() const override { return {}; }
  bool notify(const std::string& thing, const std::string& token, const std::vector<std::string>&,
              std::string& error) override {
    notified_thing = thing;
    notified_token = token;
    if (!notify_ok) error = "the notify broker is not connected";
    return notify_ok;
  }
};

}  // namespace

TEST_CASE("admin API: thingName publishes the destination token") {
  FakeRelay fake;
  relay::AdminApi api(fake, std::chrono::seconds(60), std::chrono::seconds(3600));
  const std::string body = R"({"services":["SSH"],"thingName":"dev-1"})";
  // Without a notifier the request is refused before any tunnel is opened.
  CHECK(api.handle("POST", "/tunnels", body).status == 400);
  CHECK(fake.opened_services.empty());
  api.set_notifier(&fake);
  const auto ok = api.handle("POST", "/tunnels", body);
  CHECK(ok.status == 200);
  CHECK(fake.notified_thing == "dev-1");
  CHECK(fake.notified_token == "dst-token");
  CHECK(ok.body.find("\"notified\":true") != std::string::npos);
  CHECK(api.handle("POST", "/tunnels", R"({"thingName":"dev-1"})").status == 400);
  CHECK(api.handle("POST", "/tunnels", R"({"services":["SSH"],"thingName":"a/b"})").status == 400);
  fake.notify_ok = false;
  const auto down = api.handle("POST", "/tunnels", body);
  CHECK(down.status == 502);
  CHECK(fake.closed == std::vector<std::string>{"t1"});
  CHECK(down.body.find("dst-token") == std::string::npos);
  CHECK(
      relay::notification_payload("tok", "us-east-1", {"SSH"}) ==
      R"({"clientAccessToken":"tok","clientMode":"destination","region":"us-east-1","services":["SSH"]})");
}

TEST_CASE("admin API: a full relay answers 503 with the reason, and notifies nobody") {
  FakeRelay fake;
  fake.full = true;
  relay::AdminApi api(fake, std::chrono::seconds(60), std::chrono::seconds(3600));
  api.set_notifier(&fake);
  const auto r = api.handle("POST", "/tunnels", R"({"services":["SSH"],"thingName":"dev-1"})");
  CHECK(r.status == 503);
  CHECK(r.body.find("--max-open-tunnels") != std::string::npos);
  CHECK(nlohmann::json::parse(r.body).contains("error"));
  CHECK(fake.notified_thing.empty());
  CHECK(relay::format_response(r).rfind("HTTP/1.1 503 Service Unavailable\r\n", 0) == 0);
}

TEST_CASE("admin API request head: complete, incomplete, refused") {
  relay::HttpRequest r;
  const std::string post =
      "POST /tunnels HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n{}";
  CHECK(relay::parse_request_head(post, r, 1024, 64) == static_cast<long>(post.size() - 2));
  CHECK(r.method == "POST");
  CHECK(r.target == "/tunnels");
  CHECK(r.content_length == 2);
  CHECK(r.expect_continue);

  relay::HttpRequest partial;
  CHECK(relay::parse_request_head("GET /tunnels HTTP/1.1\r\nHost: x\r\n", partial, 1024, 64) == 0);
  CHECK(relay::parse_request_head(std::string(2000, 'a'), partial, 1024, 64) == -431);
  CHECK(relay::parse_request_head("POST /t HTTP/1.1\r\nContent-Length: 65\r\n\r\n", partial, 1024,
                                  64) == -413);
  CHECK(relay::parse_request_head("POST /t HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", partial,
                                  1024, 64) == -501);
  CHECK(relay::parse_request_head("GET /t HTTP/2\r\n\r\n", partial, 1024, 64) == -505);
}

TEST_CASE("admin API request head: an empty method or target is malformed") {
  // Found by fuzzing (tests/fuzz/fuzz_admin_api.cpp): " /tunnels HTTP/1.1"
  // and "GET  HTTP/1.1" were read as method "" and target "".
  relay::HttpRequest r;
  CHECK(relay::parse_request_head(" /tunnels HTTP/1.1\r\n\r\n", r, 1024, 64) == -400);
  CHECK(relay::parse_request_head("GET  HTTP/1.1\r\n\r\n", r, 1024, 64) == -400);
  CHECK(relay::parse_request_head("  HTTP/1.1\r\n\r\n", r, 1024, 64) == -400);
  CHECK(relay::parse_request_head("GET / HTTP/1.1\r\n\r\n", r, 1024, 64) == 18);
}
