// The local TCP side of one stream: an accepted client (source) or a
// connection to the local service (destination), on libuv.
//
// Lifetime: created through accept()/connect(), owned by its creator until
// close(); after close() it delivers no more events and deletes itself once
// every libuv handle and request it holds has completed.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "endpoint.h"

namespace tunnel {

class LocalConnection;

class LocalConnectionEvents {
 public:
  virtual ~LocalConnectionEvents() = default;
  virtual void on_local_connected(LocalConnection& c) = 0;
  virtual void on_local_connect_failed(LocalConnection& c, const std::string& reason) = 0;
  virtual void on_local_read(LocalConnection& c, std::string_view bytes) = 0;
  // EOF or a read/write error: the stream is over from the local side.
  virtual void on_local_closed(LocalConnection& c, const std::string& reason) = 0;
  // Queued writes dropped below the low watermark (resume the tunnel).
  virtual void on_local_drained(LocalConnection& c) = 0;
};

struct ConnectOptions {
  HostPort target;
  std::string bind_address;  // empty = any
  int retry_count = 5;       // further attempts after the first; -1 = forever
  int retry_delay_ms = 1000;
};

class LocalConnection {
 public:
  // Source: accept the pending connection of `server`. Null on failure.
  static LocalConnection* accept(uv_stream_t* server, std::int32_t stream_id,
                                 LocalConnectionEvents& events, std::size_t read_buffer_size);
  // Destination: resolve and connect (with retries); reports connected or
  // connect_failed. Writes issued meanwhile are queued.
  static LocalConnection* connect(uv_loop_t* loop, const ConnectOptions& options,
                                  std::int32_t stream_id, LocalConnectionEvents& events,
                                  std::size_t read_buffer_size);

  LocalConnection(const LocalConnection&) = delete;
  LocalConnection& operator=(const LocalConnection&) = delete;

  std::int32_t stream_id() const { return stream_id_; }
  void set_stream_id(std::int32_t id) { stream_id_ = id; }
  bool connected() const { return connected_; }
  const std::string& peer() const { return peer_; }

  void write(std::string&& bytes);
  // As write(), trying the socket first: only what it does not take at once
  // is copied and queued.
  void write(std::string_view bytes);
  std::size_t pending_write_bytes() const { return pending_bytes_; }
  void set_low_watermark(std::size_t bytes) { low_watermark_ = bytes; }

  void pause_reading();
  void resume_reading();

  // flush: write what is queued first, then close (FIN); bounded by a linger
  // timeout. Otherwise reset at once (RST). Events stop immediately.
  void close(bool flush);

 private:
  LocalConnection(uv_loop_t* loop, std::int32_t stream_id, LocalConnectionEvents& events,
                  std::size_t read_buffer_size);
  ~LocalConnection() = default;

  struct WriteReq;
  void start_resolve();
  void try_next_address();
  void attempt_failed(int status);
  void on_connected();
  void start_reading();
  void flush_queue();
  void submit(std::string&& bytes, std::size_t offset);
  void write_done(std::size_t bytes, int status);
  void close_tcp(bool reset);
  void release();  // one handle/request fewer; deletes when closing and none left
  void fail_local(const std::string& reason);
  void defer_failure(std::string reason);

  uv_loop_t* loop_;
  std::int32_t stream_id_;
  LocalConnectionEvents* events_;  // null once closed
  std::size_t read_size_;          // bytes per read, from the loop's shared buffer
  ConnectOptions options_;
  int attempts_ = 0;
  addrinfo* addrs_ = nullptr;
  addrinfo* next_addr_ = nullptr;
  std::string last_error_;
  std::string deferred_error_;

  uv_tcp_t* tcp_ = nullptr;  // heap: replaced per connect attempt
  uv_timer_t timer_{};       // retry delay, then linger on flush-close
  uv_connect_t connect_req_{};
  bool connected_ = false;
  bool reading_ = false;
  bool read_paused_ = false;
  bool closing_ = false;
  bool flush_close_ = false;
  bool lingering_ = false;  // closed with flush while connecting
  std::string peer_;

  std::deque<std::string> queued_;  // writes before connect completes
  std::size_t pending_bytes_ = 0;
  std::size_t low_watermark_ = 65536;
  int outstanding_ = 0;  // open handles + in-flight requests
};

}  // namespace tunnel
