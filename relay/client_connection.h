// One accepted client of tunnel-relay (internal to relay_server.cpp and
// relay_forwarding.cpp): its WebSocket connection, the upgrade request being
// read, and once admitted the tunnel end it is. It turns the connection's
// events into RelayServer calls and feeds the connection from its end's
// record queue.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>

#include "relay_server.h"

namespace relay {

// The "relay" logger. A reference, not a copy: no shared_ptr temporary per
// log call (clang's use-after-scope check reported those temporaries inside
// switch statements).
inline const std::shared_ptr<spdlog::logger>& server_log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::get("relay");
    return l ? l : spdlog::default_logger();
  }();
  return logger;
}

struct RelayServer::ClientConnection final : tunnel::WsConnectionEvents, tunnel::FrameSource {
  ClientConnection(RelayServer& s, std::uint64_t client_id, std::string from);
  ~ClientConnection() override;
  ClientConnection(const ClientConnection&) = delete;
  ClientConnection& operator=(const ClientConnection&) = delete;

  // WsConnectionEvents
  std::size_t on_http_bytes(std::span<const std::uint8_t> bytes) override {
    return server.on_head_bytes(*this, bytes);
  }
  void on_message_data(std::span<const std::uint8_t> payload) override {
    server.on_data(*this, payload);
  }
  void on_peer_close(int code) override;
  void on_frame_error(tunnel::ws::FrameError e) override { server.on_frame_error(*this, e); }
  void on_closed(const tunnel::WsConnectionEnd& end) override {
    server.on_client_closed(*this, end);  // destroys *this
  }
  // FrameSource: the front chunk of this end's queue as one frame.
  std::span<const std::uint8_t> next_frame(tunnel::WsConnection& conn) override;
  void frame_written() override;

  void stop_handshake_deadline();

  RelayServer& server;
  std::uint64_t id;
  std::string peer;  // address, for logs
  std::unique_ptr<tunnel::WsConnection> ws;
  uv_timer_t* handshake_deadline = nullptr;  // until the upgrade; freed from its close callback
  std::unique_ptr<tunnel::ws::HttpRequestHead> head;  // while the request is read

  // Once upgraded
  bool upgraded = false;
  std::string channel_id;
  std::string tunnel_id;
  Role role = Role::source;
  int version = 1;
  TunnelPair* pair = nullptr;  // null once detached (replaced, tunnel closed, closing)
  RecordSplitter splitter;
  std::size_t frame_payload = 0;  // payload of the frame in flight from the queue
};

}  // namespace relay
