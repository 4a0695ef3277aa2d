#include "loop_context.h"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <utility>

#include "logging.h"
#include "ws_connection.h"

namespace tunnel {

std::span<std::uint8_t> shared_read_buffer(std::size_t size) {
  thread_local std::vector<std::uint8_t> buf;
  // Not value-initialised after the first growth: every byte is written
  // before it is read.
  if (buf.size() < size) buf.resize(std::max(size, kSharedReadBufferSize));
  return {buf.data(), buf.size()};
}

void configure_tls_io(SSL_CTX* ctx) {
  SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, std::size_t{64} * 1024);
}

struct LoopContext::Handles {
  LoopContext* owner = nullptr;
  uv_check_t write_check{};
  uv_idle_t write_idle{};  // keeps the poll phase from blocking before write_check runs
  uv_idle_t next_idle{};
  int open = 0;

  static LoopContext* owner_of(const void* handle) {
    return static_cast<Handles*>(reinterpret_cast<const uv_handle_t*>(handle)->data)->owner;
  }
  static void closed(uv_handle_t* h) {
    auto* self = static_cast<Handles*>(h->data);
    if (--self->open == 0) delete self;
  }
};

LoopContext::LoopContext(uv_loop_t* loop) : loop_(loop), h_(new Handles) {
  logging::route_library_logs();
  // A write to a socket the peer has reset must be an error to handle, not
  // a signal that kills the process (OpenSSL writes with write(2)).
  std::signal(SIGPIPE, SIG_IGN);
  h_->owner = this;
  uv_check_init(loop, &h_->write_check);
  uv_idle_init(loop, &h_->write_idle);
  uv_idle_init(loop, &h_->next_idle);
  for (auto* hd : {reinterpret_cast<uv_handle_t*>(&h_->write_check),
                   reinterpret_cast<uv_handle_t*>(&h_->write_idle),
                   reinterpret_cast<uv_handle_t*>(&h_->next_idle)}) {
    hd->data = h_;
    ++h_->open;
  }
}

LoopContext::~LoopContext() {
  for (auto& e : contexts_) SSL_CTX_free(e.ctx);
  h_->owner = nullptr;
  for (auto* hd : {reinterpret_cast<uv_handle_t*>(&h_->write_check),
                   reinterpret_cast<uv_handle_t*>(&h_->write_idle),
                   reinterpret_cast<uv_handle_t*>(&h_->next_idle)}) {
    uv_close(hd, &Handles::closed);
  }
}

void LoopContext::defer_write(WsConnection& c) {
  if (!c.in_write_list_) {
    c.in_write_list_ = true;
    write_list_.push_back(&c);
  }
  // The check phase follows this iteration's I/O phase: whatever the I/O
  // callbacks queue meanwhile leaves in the same batch. The idle handle makes
  // the poll return at once when asked from outside the I/O phase (a timer,
  // an idle callback), instead of waiting for the next event.
  uv_check_start(&h_->write_check, [](uv_check_t* ch) {
    if (LoopContext* self = Handles::owner_of(ch)) self->run_writes();
  });
  uv_idle_start(&h_->write_idle, [](uv_idle_t*) {});
}

void LoopContext::defer_next(WsConnection& c) {
  if (!c.in_next_list_) {
    c.in_next_list_ = true;
    next_list_.push_back(&c);
  }
  uv_idle_start(&h_->next_idle, [](uv_idle_t* i) {
    if (LoopContext* self = Handles::owner_of(i)) self->run_next();
  });
}

void LoopContext::forget(WsConnection& c) {
  // A connection may go away while a list is being run (an owner destroys
  // another connection from an event): its entry is cleared, not erased.
  const auto clear = [&c](std::vector<WsConnection*>& list) {
    std::replace(list.begin(), list.end(), &c, static_cast<WsConnection*>(nullptr));
  };
  if (c.in_write_list_) {
    clear(write_list_);
    clear(running_writes_);
  }
  if (c.in_next_list_) {
    clear(next_list_);
    clear(running_next_);
  }
  c.in_write_list_ = c.in_next_list_ = false;
}

void LoopContext::run_writes() {
  uv_check_stop(&h_->write_check);
  uv_idle_stop(&h_->write_idle);
  running_writes_.swap(write_list_);
  for (WsConnection*& entry : running_writes_) {
    WsConnection* c = std::exchange(entry, nullptr);
    if (c == nullptr) continue;
    c->in_write_list_ = false;
    c->on_write_due();
  }
  running_writes_.clear();
}

void LoopContext::run_next() {
  uv_idle_stop(&h_->next_idle);
  running_next_.swap(next_list_);
  for (std::size_t i = 0; i < running_next_.size(); ++i) {
    WsConnection* c = std::exchange(running_next_[i], nullptr);
    if (c == nullptr) continue;
    c->in_next_list_ = false;
    c->on_next_due();  // may destroy c (its end is delivered here)
  }
  running_next_.clear();
}

SSL_CTX* LoopContext::client_tls(const TlsTrust& trust) {
  for (auto& e : contexts_) {
    if (e.trust == trust) return e.ctx;
  }
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) throw std::runtime_error("cannot create a TLS context (OpenSSL)");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  configure_tls_io(ctx);
  // The system trust store as a hashed directory (SSL_CERT_DIR or OpenSSL's
  // default, /etc/ssl/certs on Debian), read lazily: parsing the whole
  // bundle file up front costs ~20 ms of start-up and ~1 MiB per process.
  const char* env_dir = std::getenv(X509_get_default_cert_dir_env());
  const char* sys_dir = env_dir && *env_dir ? env_dir : X509_get_default_cert_dir();
  if (SSL_CTX_load_verify_locations(ctx, nullptr, sys_dir) != 1) {
    logging::get("ws")->warn("cannot use the system CA directory {}", sys_dir);
    ERR_clear_error();
  }
  if (!trust.cafile.empty() || !trust.capath.empty()) {
    const char* file = trust.cafile.empty() ? nullptr : trust.cafile.c_str();
    const char* dir = trust.capath.empty() ? nullptr : trust.capath.c_str();
    if (SSL_CTX_load_verify_locations(ctx, file, dir) != 1) {
      ERR_clear_error();
      SSL_CTX_free(ctx);
      std::string what = file ? trust.cafile : "";
      if (file && dir) what += " / ";
      if (dir) what += trust.capath;
      throw std::runtime_error("cannot load CA " + what + ": check the path and permissions");
    }
  }
  contexts_.push_back(Entry{trust, ctx});
  return ctx;
}

}  // namespace tunnel
