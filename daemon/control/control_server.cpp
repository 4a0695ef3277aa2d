#include "control_server.h"

#include <grp.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "logging.h"

namespace tunneld::control {
namespace {

auto log() { return tunnel::logging::get("control"); }

// One read buffer for every client: libuv reads into it and the data is
// consumed before the callback returns.
char g_read_buffer[64 * 1024];

std::string errno_text(int e) { return std::strerror(e); }

void make_parent_dirs(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return;
  const std::string dir = path.substr(0, slash);
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) return;
  make_parent_dirs(dir);
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
    throw std::runtime_error("cannot create " + dir + ": " + errno_text(errno));
  }
}

// A live daemon answers a connect; a leftover file from a crash does not.
bool socket_is_live(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
  ::close(fd);
  return live;
}

}  // namespace

bool peer_may_modify(const PeerCredentials& peer, gid_t group) {
  if (peer.uid == 0 || peer.uid == ::geteuid()) return true;
  if (group == static_cast<gid_t>(-1)) return false;
  if (peer.gid == group) return true;
  if (peer.pid <= 0) return false;
  std::ifstream status("/proc/" + std::to_string(peer.pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Groups:", 0) != 0) continue;
    std::istringstream in(line.substr(7));
    long g = 0;
    while (in >> g) {
      if (static_cast<gid_t>(g) == group) return true;
    }
  }
  return false;
}

struct ControlServer::Client {
  ControlServer* server = nullptr;
  uv_pipe_t pipe{};
  uv_timer_t timer{};  // idle timeout; the stalled timeout while paused
  FrameDecoder decoder{kMaxRequestSize};
  // Requests read but not yet served because the client's answers were over
  // the bound: at most the rest of one read (sizeof g_read_buffer).
  std::string held_input;
  PeerCredentials peer;
  bool may_modify = false;
  bool paused = false;  // not reading: too many of its answers wait in the daemon
  bool closing = false;
  bool close_after_write = false;
  int open_handles = 0;
  int pending_writes = 0;

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&pipe); }
  std::size_t unsent() const {
    return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&pipe));
  }
  // True when every earlier answer has been read by the client: nothing
  // waits in the daemon, nothing in the socket (SIOCOUTQ on a Unix stream
  // socket counts the bytes the peer has not read yet).
  bool caught_up() {
    if (unsent() != 0) return false;
    uv_os_fd_t fd = -1;
    int queued = 0;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(&pipe), &fd) != 0) return true;
    return ::ioctl(fd, SIOCOUTQ, &queued) != 0 || queued == 0;
  }
  void maybe_delete() {
    if (closing && open_handles == 0 && pending_writes == 0) delete this;
  }
};

namespace {
struct WriteReq {
  uv_write_t req{};
  std::string data;
};
}  // namespace

ControlServer::ControlServer(uv_loop_t* loop, ControlServerOptions options, RequestHandler& handler)
    : loop_(loop), options_(std::move(options)), handler_(handler) {}

ControlServer::~ControlServer() { close(); }

void ControlServer::listen() {
  const std::string& path = options_.path;
  if (path.empty()) throw std::runtime_error("control socket: empty path");
  if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
    throw std::runtime_error("control socket path too long: " + path);
  }
  make_parent_dirs(path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      throw std::runtime_error(path +
                               " exists and is not a socket; remove it or choose another "
                               "--socket");
    }
    if (socket_is_live(path)) {
      throw std::runtime_error("another tunneld is already listening on " + path);
    }
    ::unlink(path.c_str());  // stale, from a crash
  }
  if (!options_.group.empty()) {
    if (const group* g = ::getgrnam(options_.group.c_str())) {
      group_id_ = g->gr_gid;
    } else {
      log()->warn(
          "group '{}' does not exist: only root and uid {} may open or close sessions "
          "(create it with systemd-sysusers or groupadd)",
          options_.group, ::geteuid());
    }
  }
  server_ = new uv_pipe_t;
  uv_pipe_init(loop_, server_, 0);
  server_->data = this;
  // Bind with a restrictive umask so the socket is never briefly world-usable.
  const mode_t old_umask = ::umask(0177);
  int rc = uv_pipe_bind(server_, path.c_str());
  ::umask(old_umask);
  if (rc == 0 && group_id_ != static_cast<gid_t>(-1) && ::chown(path.c_str(), -1, group_id_) != 0) {
    log()->warn("cannot give {} to group {}: {}", path, options_.group, errno_text(errno));
  }
  if (rc == 0 && ::chmod(path.c_str(), options_.mode) != 0) rc = -errno;
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_), 16, [](uv_stream_t* s, int status) {
      if (status == 0) static_cast<ControlServer*>(s->data)->on_connection();
    });
  }
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(server_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    server_ = nullptr;
    throw std::runtime_error("cannot listen on " + path + ": " + uv_strerror(rc));
  }
  log()->info("control socket {} (mode {:04o}{}{})", path, options_.mode,
              options_.group.empty() ? "" : ", group ", options_.group);
}

void ControlServer::close() {
  if (closed_) return;
  closed_ = true;
  if (server_) {
    uv_close(reinterpret_cast<uv_handle_t*>(server_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    server_ = nullptr;
    ::unlink(options_.path.c_str());
  }
  while (!clients_.empty()) drop(*clients_.front());
}

void ControlServer::on_connection() {
  auto* c = new Client;
  c->server = this;
  uv_pipe_init(loop_, &c->pipe, 0);
  c->pipe.data = c;
  ++c->open_handles;
  uv_timer_init(loop_, &c->timer);
  c->timer.data = c;
  ++c->open_handles;
  clients_.push_back(c);
  if (uv_accept(reinterpret_cast<uv_stream_t*>(server_), c->stream()) != 0) {
    drop(*c);
    return;
  }
  if (clients_.size() > options_.max_clients) {
    // Once per episode: a client reconnecting in a loop must not flood the log.
    if (!refusing_) {
      log()->warn("more than {} control clients: refusing new ones until one leaves",
                  options_.max_clients);
    }
    refusing_ = true;
    drop(*c);
    return;
  }
  refusing_ = false;
  uv_os_fd_t fd = -1;
  uv_fileno(reinterpret_cast<uv_handle_t*>(&c->pipe), &fd);
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    c->peer = {cred.pid, cred.uid, cred.gid};
  }
  c->may_modify = peer_may_modify(c->peer, group_id_);
  start_timer(*c, options_.idle_timeout_ms);
  start_reading(*c);
}

void ControlServer::start_timer(Client& c, std::uint64_t timeout_ms) {
  uv_timer_start(
      &c.timer,
      [](uv_timer_t* t) {
        auto* c = static_cast<Client*>(t->data);
        if (c->paused) {
          log()->warn("control client pid {} does not read its answers ({} bytes waiting): closing",
                      c->peer.pid, c->unsent());
        } else {
          log()->debug("control client pid {} idle: closing", c->peer.pid);
        }
        c->server->drop(*c);
      },
      timeout_ms, 0);
}

void ControlServer::start_reading(Client& c) {
  uv_read_start(
      c.stream(),
      [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
        buf->base = g_read_buffer;
        buf->len = sizeof g_read_buffer;
      },
      [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
        auto* c = static_cast<Client*>(s->data);
        c->server->on_read(*c, nread, buf);
      });
}

void ControlServer::on_read(Client& c, ssize_t nread, const uv_buf_t* buf) {
  if (c.closing) return;
  if (nread < 0) {
    drop(c);
    return;
  }
  if (nread == 0) return;
  // Activity is a request from a client that has read its earlier answers;
  // one that keeps writing without reading keeps no connection alive.
  if (c.caught_up()) start_timer(c, options_.idle_timeout_ms);
  serve(c, std::string_view(buf->base, static_cast<std::size_t>(nread)));
}

void ControlServer::serve(Client& c, std::string_view input) {
  while (!c.closing && !c.close_after_write) {
    if (c.unsent() > options_.max_unsent_output) {
      // The client does not read: neither read nor answer more until it
      // does, and give up on it if it never does.
      c.held_input.assign(input);
      if (!c.paused) {
        c.paused = true;
        uv_read_stop(c.stream());
        log()->debug("control client pid {}: {} bytes of answers unread, pausing", c.peer.pid,
                     c.unsent());
        start_timer(c, options_.stalled_timeout_ms);
      }
      return;
    }
    Request request;
    const DecodeStatus st = c.decoder.next_message(input, request);
    if (st == DecodeStatus::need_more) return;
    if (st == DecodeStatus::too_long || st == DecodeStatus::malformed) {
      log()->warn("control client pid {}: {} request, answering with an error", c.peer.pid,
                  to_string(st));
      send(c, make_decode_error(st, c.decoder.announced_length(), kMaxRequestSize));
      if (st == DecodeStatus::too_long) {
        // The stream is out of sync: answer, then hang up.
        c.close_after_write = true;
        uv_read_stop(c.stream());
        if (c.pending_writes == 0) drop(c);
        return;
      }
      continue;
    }
    Response response;
    if (auto bad = check_version(request)) {
      response = std::move(*bad);
    } else if (auto bad_body = check_body(request)) {
      response = std::move(*bad_body);
    } else {
      response = handler_.handle(request, c.peer, c.may_modify);
    }
    response.set_version(kProtocolVersion);
    response.set_request_id(request.request_id());
    send(c, response);
  }
}

void ControlServer::on_written(Client& c) {
  if (c.closing || !c.paused) return;
  // The client took bytes: it is slow, not gone.
  start_timer(c, options_.stalled_timeout_ms);
  if (c.unsent() > options_.max_unsent_output / 2) return;
  c.paused = false;
  start_timer(c, options_.idle_timeout_ms);
  const std::string held = std::move(c.held_input);
  c.held_input.clear();
  serve(c, held);
  if (!c.paused && !c.closing && !c.close_after_write) start_reading(c);
}

void ControlServer::send(Client& c, const Response& r) {
  auto* w = new WriteReq;
  if (!append_frame(w->data, r, kMaxResponseSize)) {
    append_frame(w->data,
                 make_error(r.request_id(), Response::INTERNAL, "response too large to send"),
                 kMaxResponseSize);
  }
  w->req.data = &c;
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  // The request pointer is recovered from the uv_write_t (first member).
  const int rc = uv_write(&w->req, c.stream(), &buf, 1, [](uv_write_t* req, int status) {
    auto* w = reinterpret_cast<WriteReq*>(req);
    auto* c = static_cast<Client*>(req->data);
    delete w;
    --c->pending_writes;
    if (status < 0 || (c->close_after_write && c->pending_writes == 0)) {
      c->server->drop(*c);
    } else {
      c->server->on_written(*c);
    }
    c->maybe_delete();
  });
  if (rc != 0) {
    delete w;
    drop(c);
    return;
  }
  ++c.pending_writes;
}

void ControlServer::drop(Client& c) {
  if (c.closing) return;
  c.closing = true;
  clients_.remove(&c);
  auto on_closed = [](uv_handle_t* h) {
    auto* c = static_cast<Client*>(h->data);
    --c->open_handles;
    c->maybe_delete();
  };
  uv_close(reinterpret_cast<uv_handle_t*>(&c.pipe), on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&c.timer), on_closed);
}

}  // namespace tunneld::control
