#include "ws_context.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cstdlib>

#include <stdexcept>

#include "logging.h"
#include "record_codec.h"

namespace tunnel {
namespace {}  // namespace

lws_protocols* WsContext::protocols() {
  // rx_buffer_size: a whole maximal message per callback where possible.
  static lws_protocols list[2] = {
      {"tunnel-client", &WsContext::callback, 0, kMaxFrameSize, 0, nullptr,
       kMaxFrameSize + LWS_PRE},
      {nullptr, nullptr, 0, 0, 0, nullptr, 0},
  };
  return list;
}

const char* WsContext::protocol_name() { return "tunnel-client"; }

int WsContext::callback(lws* wsi, lws_callback_reasons reason, void* user, void* in,
                        std::size_t len) {
  if (reason == LWS_CALLBACK_OPENSSL_LOAD_EXTRA_CLIENT_VERIFY_CERTS) {
    // `user` is the SSL_CTX of the client vhost being created. The system
    // trust store is used as a hashed directory (SSL_CERT_DIR or OpenSSL's
    // default, /etc/ssl/certs on Debian), read lazily: parsing the whole
    // bundle file up front costs ~20 ms of start-up and ~1 MiB per process.
    // Then the configured anchors; TLS 1.2 at least.
    auto* ctx = static_cast<SSL_CTX*>(user);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    const char* env_dir = std::getenv(X509_get_default_cert_dir_env());
    const char* sys_dir = env_dir && *env_dir ? env_dir : X509_get_default_cert_dir();
    if (SSL_CTX_load_verify_locations(ctx, nullptr, sys_dir) != 1) {
      logging::get("ws")->warn("cannot use the system CA directory {}", sys_dir);
    }
    lws_vhost* vh = wsi ? lws_get_vhost(wsi) : nullptr;
    auto* entry = vh ? static_cast<VhostEntry*>(lws_vhost_user(vh)) : nullptr;
    if (entry && (!entry->trust.cafile.empty() || !entry->trust.capath.empty())) {
      const char* file = entry->trust.cafile.empty() ? nullptr : entry->trust.cafile.c_str();
      const char* dir = entry->trust.capath.empty() ? nullptr : entry->trust.capath.c_str();
      if (SSL_CTX_load_verify_locations(ctx, file, dir) != 1) {
        logging::get("ws")->error("cannot load CA {}{}{}: check the path and permissions",
                                  file ? file : "", file && dir ? " / " : "", dir ? dir : "");
        return 1;
      }
    }
    return 0;
  }
  auto* handler = wsi ? static_cast<WsLinkHandler*>(lws_get_opaque_user_data(wsi)) : nullptr;
  if (handler) return handler->on_ws_event(wsi, reason, user, in, len);
  return lws_callback_http_dummy(wsi, reason, user, in, len);
}

WsContext::WsContext(uv_loop_t* loop) : loop_(loop) {
  logging::route_lws_logs();
  lws_context_creation_info info{};
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.protocols = protocols();
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT |
                 LWS_SERVER_OPTION_EXPLICIT_VHOSTS;
  // lws reads the socket (SSL_read) into this per-thread buffer: the 4 KiB
  // default means a syscall and a callback per 4 KiB of tunnel traffic.
  info.pt_serv_buf_size = kMaxFrameSize + LWS_PRE;
  void* foreign_loops[1] = {loop};
  info.foreign_loops = foreign_loops;
  info.gid = -1;
  info.uid = -1;
  ctx_ = lws_create_context(&info);
  if (!ctx_) {
    throw std::runtime_error(
        "cannot create the libwebsockets context (is the package libwebsockets-evlib-uv "
        "installed?)");
  }
}

lws_vhost* WsContext::client_vhost(const TlsTrust& trust) {
  for (auto& e : vhosts_) {
    if (e.trust == trust) return e.vhost;
  }
  auto& e = vhosts_.emplace_back();
  e.trust = trust;
  e.name = "client" + std::to_string(vhosts_.size());
  lws_context_creation_info info{};
  info.port = CONTEXT_PORT_NO_LISTEN;
  info.vhost_name = e.name.c_str();
  info.protocols = protocols();
  // DO_SSL_GLOBAL_INIT is needed on every vhost, else SSL_new fails
  // (stack-notes). The OS CA bundle is loaded lazily by us, see above.
  info.options = LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT | LWS_SERVER_OPTION_DISABLE_OS_CA_CERTS;
  info.user = &e;
  e.vhost = lws_create_vhost(ctx_, &info);
  if (!e.vhost) {
    vhosts_.pop_back();
    throw std::runtime_error(
        "cannot set up TLS for the service connection (bad CA file or "
        "directory?)");
  }
  return e.vhost;
}

void WsContext::begin_shutdown() {
  if (shutting_down_ || !ctx_) return;
  shutting_down_ = true;
  lws_context_destroy(ctx_);
}

WsContext::~WsContext() {
  if (ctx_) {
    if (!shutting_down_) lws_context_destroy(ctx_);
    // The second call frees the context once the loop has drained (stack-notes).
    lws_context_destroy(ctx_);
    ctx_ = nullptr;
  }
}

}  // namespace tunnel
