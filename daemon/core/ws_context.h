// One libwebsockets context running on the host's libuv loop (foreign loop),
// shared by every tunnel session of the process. Sessions create client
// connections in it; lws events for a connection go to the WsLinkHandler set as
// the connection's opaque user data.
#pragma once

#include <libwebsockets.h>
#include <uv.h>  // must precede libwebsockets.h

#include <list>
#include <memory>
#include <string>

namespace tunnel {

// Receives the lws callbacks of one client connection. Returning non-zero from
// on_ws_event closes the connection (lws semantics).
class WsLinkHandler {
 public:
  virtual ~WsLinkHandler() = default;
  virtual int on_ws_event(lws* wsi, lws_callback_reasons reason, void* user, void* in,
                          std::size_t len) = 0;
};

struct TlsTrust {
  std::string capath;  // extra hashed CA directory (openssl rehash)
  std::string cafile;  // extra CA bundle
  bool operator==(const TlsTrust&) const = default;
};

class WsContext {
 public:
  // Throws std::runtime_error with a user-facing message (e.g. the libuv event
  // plugin is missing) when the context cannot be created.
  explicit WsContext(uv_loop_t* loop);
  ~WsContext();
  WsContext(const WsContext&) = delete;
  WsContext& operator=(const WsContext&) = delete;

  lws_context* context() const { return ctx_; }
  uv_loop_t* loop() const { return loop_; }

  // The client vhost for a trust configuration, created once and cached (one
  // SSL_CTX per distinct trust set). Never null; throws on failure.
  lws_vhost* client_vhost(const TlsTrust& trust);

  // The name of the protocol entry client connections must use.
  static const char* protocol_name();

  // Starts tearing lws down; call from a libuv callback (never from inside an
  // lws callback). The loop then drains; the destructor finishes the job.
  void begin_shutdown();

 private:
  static lws_protocols* protocols();
  static int callback(lws* wsi, lws_callback_reasons reason, void* user, void* in, std::size_t len);

  uv_loop_t* loop_;
  lws_context* ctx_ = nullptr;
  bool shutting_down_ = false;
  struct VhostEntry {
    TlsTrust trust;
    std::string name;
    lws_vhost* vhost = nullptr;
  };
  std::list<VhostEntry> vhosts_;  // stable addresses: the vhost user pointer
};

}  // namespace tunnel
