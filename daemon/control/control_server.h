// The daemon's end of the control socket: a Unix stream socket on the libuv
// loop (default /run/tunneld/control.sock, mode 0660, group tunneld).
// Framing and statuses are in control_codec.h; permission comes from the
// transport (socket mode and group) and from the peer's credentials
// (SO_PEERCRED): anyone who can connect may read, only root, the daemon's own
// user or members of the socket's group may change anything.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <list>
#include <memory>
#include <string>

#include "control.pb.h"
#include "control_codec.h"

namespace tunneld::control {

struct PeerCredentials {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
};

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Version and body were checked; `may_modify` tells whether the peer may
  // open or close sessions. Returns the response (request_id is set by the
  // server).
  virtual Response handle(const Request& request, const PeerCredentials& peer, bool may_modify) = 0;
};

// What one client can make the daemon hold is bounded (docs/tunneld-config.md,
// "Control socket bounds"): at most one partial request (kMaxRequestSize) plus
// the rest of one read, and answers the client has not taken up to
// `max_unsent_output`, plus the one answer that crossed it.
struct ControlServerOptions {
  std::string path;
  unsigned mode = 0660;
  std::string group;             // empty = keep the creating user's group
  std::size_t max_clients = 64;  // more are accepted and closed at once
  // A client is closed when it has sent nothing, or has left earlier answers
  // unread, for this long: a request read while the client has not taken its
  // previous answers does not count as activity.
  std::uint64_t idle_timeout_ms = 30000;
  // Reading a client's requests stops while more than this many bytes of its
  // answers wait in the daemon (the kernel's socket buffer is full), and
  // resumes once they are down to half.
  std::size_t max_unsent_output = std::size_t{64} * 1024;
  // A client paused that way for this long without taking a byte is closed.
  std::uint64_t stalled_timeout_ms = 5000;
};

// True when the peer may change state: root, the daemon's effective user, or a
// member (primary or supplementary, read from /proc/PID/status) of `group`.
bool peer_may_modify(const PeerCredentials& peer, gid_t group);

class ControlServer {
 public:
  ControlServer(uv_loop_t* loop, ControlServerOptions options, RequestHandler& handler);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Creates the socket's directory if missing (0755 for the parent chain,
  // 0750 for the directory itself), removes a stale socket, binds, sets mode and group,
  // listens. Throws std::runtime_error with a user-facing message (e.g.
  // another tunneld is already listening there).
  void listen();
  // Stops accepting, closes every client and removes the socket file.
  void close();
  std::size_t clients() const { return clients_.size(); }

 private:
  struct Client;
  void on_connection();
  void start_timer(Client& c, std::uint64_t timeout_ms);
  void start_reading(Client& c);
  void on_read(Client& c, ssize_t nread, const uv_buf_t* buf);
  // Answers the requests in `input` until it is used up or the client's
  // unsent answers pass the bound; then the rest waits in the client.
  void serve(Client& c, std::string_view input);
  void on_written(Client& c);
  void send(Client& c, const Response& r);
  void drop(Client& c);

  uv_loop_t* loop_;
  ControlServerOptions options_;
  RequestHandler& handler_;
  gid_t group_id_ = static_cast<gid_t>(-1);
  uv_pipe_t* server_ = nullptr;
  std::list<Client*> clients_;  // each deletes itself once its handles are closed
  bool refusing_ = false;       // at max_clients: the refusal was logged once
  bool closed_ = false;
};

}  // namespace tunneld::control
