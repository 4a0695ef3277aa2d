// RelayServer: the tunnel pairs, and the records forwarded between their two
// ends (relay_server.h describes the bounds).
#include <spdlog/spdlog.h>

#include "client_connection.h"
#include "relay_server.h"

namespace relay {
namespace {

const auto& log = server_log;

}  // namespace

// ---------------------------------------------------------------- receiving

void RelayServer::on_data(ClientConnection& c, std::span<const std::uint8_t> payload) {
  if (c.ws->close_sent() || c.pair == nullptr) return;  // closing: what it sends is dropped
  TunnelPair& pair = *c.pair;
  const Role receiver = peer_of(c.role);
  RecordQueue& out = pair.queues[index_of(receiver)];
  std::string why;
  int code = 1008;
  const bool ok = c.splitter.feed(payload, out, [&](std::span<const std::uint8_t> body) {
    return inspect_control_record(c.role, body, pair.streams, why, code);
  });
  wake_writer(pair, receiver);
  if (!ok) {
    log()->warn("tunnel {} {} channel {}: protocol error, closing ({}): {}", c.tunnel_id,
                to_string(c.role), c.channel_id, code, why);
    fail_client(c, code, why);
    return;
  }
  if (!c.ws->reading_paused() && out.size() >= queue_limit(pair, receiver))
    c.ws->pause_reading(true);
}

void RelayServer::on_frame_error(ClientConnection& c, tunnel::ws::FrameError e) {
  using tunnel::ws::FrameError;
  const int code = e == FrameError::text_frame          ? 1003
                   : e == FrameError::message_too_large ? 1009
                                                        : 1002;
  const std::string why = e == FrameError::text_frame          ? "text frames are not allowed"
                          : e == FrameError::message_too_large ? "message too big"
                                                               : std::string(to_string(e));
  if (c.ws->open())
    log()->warn("tunnel {} {} channel {}: {}, closing ({})", c.tunnel_id, to_string(c.role),
                c.channel_id, why, code);
  fail_client(c, code, why);
}

void RelayServer::ClientConnection::on_peer_close(int code) {
  log()->debug("channel {}: peer sent close {}", channel_id, code);
  if (ws->close_sent()) return;
  // The connection echoes the code (RFC 6455 section 5.5.1); the end leaves
  // its tunnel now.
  log()->debug("channel {}: closing with {} ()", channel_id, code);
  server.detach(*this);
}

// ---------------------------------------------------------------- sending

std::span<const std::uint8_t> RelayServer::ClientConnection::next_frame(
    tunnel::WsConnection& /*conn*/) {
  if (pair == nullptr) return {};
  const std::span<std::uint8_t> msg = pair->queues[index_of(role)].front();
  if (msg.empty()) return {};
  // One unmasked frame per chunk, its header in the chunk's headroom.
  const std::size_t hs = tunnel::ws::frame_header_size(msg.size(), false);
  std::uint8_t* start = msg.data() - hs;
  tunnel::ws::write_frame_header(start, tunnel::ws::Opcode::binary, msg.size(), nullptr);
  frame_payload = msg.size();
  return {start, hs + msg.size()};
}

void RelayServer::ClientConnection::frame_written() {
  // A frame in flight implies a pair: detach() copies it out first.
  pair->queues[index_of(role)].pop_front(frame_payload);
  server.maybe_resume(*pair, role);
}

void RelayServer::wake_writer(TunnelPair& p, Role receiver) {
  ClientConnection* c = p.ends[index_of(receiver)];
  if (c != nullptr && p.queues[index_of(receiver)].has_committed()) c->ws->flush();
}

std::size_t RelayServer::queue_limit(const TunnelPair& p, Role receiver) const {
  return p.ends[index_of(receiver)] != nullptr ? config_.queue_limit_connected
                                               : config_.queue_limit_absent;
}

void RelayServer::maybe_resume(TunnelPair& p, Role receiver) {
  ClientConnection* sender = p.ends[index_of(peer_of(receiver))];
  if (sender != nullptr && sender->ws->reading_paused() &&
      p.queues[index_of(receiver)].size() <= queue_limit(p, receiver) / 2) {
    // From the loop: what was kept and what OpenSSL holds, then the socket.
    sender->ws->pause_reading(false);
  }
}

// ---------------------------------------------------------------- closing

void RelayServer::close_client(ClientConnection& c, int code, const std::string& reason) {
  if (!c.ws->open()) return;
  log()->debug("channel {}: closing with {} ({})", c.channel_id, code, reason);
  c.ws->close(code, reason);
  // Read on: the client's close frame is what we wait for.
  c.ws->pause_reading(false);
}

void RelayServer::fail_client(ClientConnection& c, int code, const std::string& reason) {
  detach(c);
  c.splitter.reset();
  if (c.ws->open()) log()->debug("channel {}: closing with {} ({})", c.channel_id, code, reason);
  c.ws->fail(code, reason);
  c.ws->pause_reading(false);
}

// ---------------------------------------------------------------- pairs

void RelayServer::attach(ClientConnection& c, TunnelPair& pair, Role role) {
  const std::size_t i = index_of(role);
  c.role = role;
  pair.ends[i] = &c;
  c.pair = &pair;
  const Tunnel* t = registry_.find(pair.id);
  if (t != nullptr && !t->services.empty()) {
    if (c.version >= 2)
      pair.queues[i].push_front_record(bytes_of(service_ids_record(t->services)));
    else
      log()->warn("tunnel {} has services but channel {} speaks V1: no SERVICE_IDS sent", pair.id,
                  c.channel_id);
  }
  c.ws->set_source(&c);
  wake_writer(pair, role);
  maybe_resume(pair, role);
}

void RelayServer::release_from_pair(ClientConnection& c) {
  c.ws->detach_source();
  c.pair = nullptr;
  c.splitter.reset();
}

void RelayServer::detach(ClientConnection& c) {
  TunnelPair* p = c.pair;
  if (p == nullptr) return;
  const Role role = c.role;
  const Role peer = peer_of(role);
  c.ws->detach_source();
  c.pair = nullptr;
  p->ends[index_of(role)] = nullptr;
  registry_.detach(p->id, role);
  // A record the gone connection was half-way through sending is discarded.
  if (c.splitter.mid_record()) p->queues[index_of(peer)].abort_record();
  c.splitter.reset();
  // Records queued for the gone connection belong to its streams: dropped.
  p->queues[index_of(role)].drop_committed();
  // Its streams are dead: tell the peer (docs/protocol.md section 4, last rule).
  for (const std::string& rec : p->streams.take_resets())
    p->queues[index_of(peer)].push_back_record(bytes_of(rec));
  wake_writer(*p, peer);
  maybe_resume(*p, role);
}

RelayServer::TunnelPair* RelayServer::create_pair(const std::string& id,
                                                  std::chrono::seconds lifetime) {
  auto pair = std::make_unique<TunnelPair>(pool_);
  pair->id = id;
  pair->owner = this;
  if (lifetime.count() > 0) {
    pair->expiry = new uv_timer_t;
    uv_timer_init(loop_, pair->expiry);
    pair->expiry->data = pair.get();
    uv_timer_start(pair->expiry, &RelayServer::on_expiry,
                   static_cast<std::uint64_t>(lifetime.count()) * 1000, 0);
  }
  TunnelPair* raw = pair.get();
  pairs_[id] = std::move(pair);
  return raw;
}

void RelayServer::destroy_pair(const std::string& id) {
  const auto it = pairs_.find(id);
  if (it == pairs_.end()) return;
  if (it->second->expiry != nullptr)
    uv_close(reinterpret_cast<uv_handle_t*>(it->second->expiry),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  pairs_.erase(it);
}

void RelayServer::on_expiry(uv_timer_t* t) {
  auto* pair = static_cast<TunnelPair*>(t->data);
  const std::string id = pair->id;  // close_tunnel destroys the pair
  pair->owner->close_tunnel(id, "lifetime expired");
}

}  // namespace relay
