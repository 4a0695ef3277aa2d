// The server end of tunneld's control pipe (\\.\pipe\tunneld) on the event
// loop: the Windows counterpart of the control socket's uv_pipe_bind() and
// uv_listen().
//
// libuv's pipe server cannot be used for this pipe: uv_pipe_bind() creates
// it with the default DACL (Everyone may read), without
// PIPE_REJECT_REMOTE_CLIENTS, and takes no security descriptor. So the
// listener creates every instance itself with the control pipe's DACL
// (packaging/windows-service/win_pipe.h: SYSTEM and Administrators only, no
// remote clients, the first instance flagged so that a name somebody else
// holds fails start-up), waits for a client with an overlapped
// ConnectNamedPipe whose event a thread-pool wait turns into a uv_async
// wake-up, and hands each connected instance to the loop as a ConnectedPipe.
// The consumer opens that into its own uv_pipe_t and from then on reads and
// writes it as any libuv stream, exactly as the Unix socket's clients.
//
// One instance is always waiting: the next is created before a connected
// one is handed over. Windows only.
#pragma once

#include <uv.h>
#include <windows.h>

#include <functional>
#include <memory>
#include <string>

namespace tunneld::platform::win {

// A connected pipe instance, not yet given to libuv. Move-only; closes the
// instance if never opened.
class ConnectedPipe {
 public:
  explicit ConnectedPipe(HANDLE handle) : handle_(handle) {}
  ~ConnectedPipe();
  ConnectedPipe(ConnectedPipe&& other) noexcept;
  ConnectedPipe& operator=(ConnectedPipe&& other) noexcept;
  ConnectedPipe(const ConnectedPipe&) = delete;
  ConnectedPipe& operator=(const ConnectedPipe&) = delete;

  // The instance, for identify_pipe_client(); valid until open() succeeded
  // (afterwards uv_fileno() on the uv_pipe_t gives it).
  HANDLE handle() const { return handle_; }

  // Hands the instance to `pipe`, initialised with uv_pipe_init(loop, pipe,
  // 0) on the listener's loop. libuv owns the handle afterwards and closes it
  // with the uv_pipe_t. Returns 0 or a libuv error (the instance is closed
  // then).
  int open(uv_pipe_t* pipe);

 private:
  HANDLE handle_;
};

class ControlPipeListener {
 public:
  using OnClient = std::function<void(ConnectedPipe client)>;
  // Called for errors after listen() succeeded (the listener keeps going
  // when it can); a line for the log.
  using OnError = std::function<void(const std::string& problem)>;

  ControlPipeListener(uv_loop_t* loop, std::wstring path, OnClient on_client, OnError on_error);
  ~ControlPipeListener();
  ControlPipeListener(const ControlPipeListener&) = delete;
  ControlPipeListener& operator=(const ControlPipeListener&) = delete;

  // Creates the first instance and starts waiting for clients. Throws
  // std::runtime_error with a user-facing message, e.g. when another
  // process already owns the name.
  void listen();
  // Stops waiting and closes the waiting instance; connections handed out
  // are not affected. Safe to call twice; runs on the loop's thread.
  void close();

  const std::wstring& path() const { return path_; }

 private:
  struct Waiter;
  void arm();
  void on_signalled();
  bool create_instance(bool first, std::string* problem);

  uv_loop_t* loop_;
  std::wstring path_;
  OnClient on_client_;
  OnError on_error_;
  std::unique_ptr<Waiter> waiter_;
  bool listening_ = false;
};

}  // namespace tunneld::platform::win
