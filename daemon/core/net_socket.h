// The operating system's socket calls the engine makes, behind one small
// interface: everything else (the WebSocket connection, the relay's
// listener, the HTTPS proxy step) calls these and never errno, close(2) or
// setsockopt directly, so another platform's sockets are one more file
// beside net_socket.cpp rather than #ifdefs through the engine.
//
// Error convention: a call that fails returns -1 (or kNoSocket) and leaves
// the reason for last_error() / last_error_text() right after it.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace tunnel::net {

using Socket = int;
inline constexpr Socket kNoSocket = -1;

// The last failed socket call's error code, and its text.
int last_error();
std::string error_text(int code);
std::string last_error_text();
// The last failure only means "not now" (would block, interrupted): try
// again when the socket is ready.
bool would_block();

// A non-blocking, close-on-exec stream socket of `family`; kNoSocket on error.
Socket open_stream(int family);
// Starts a non-blocking connect: true when it completed or is in progress.
bool start_connect(Socket s, const sockaddr* addr, std::size_t addr_len);
// Accepts one pending connection, non-blocking and close-on-exec.
// kNoSocket with last_error() set when there is none or it failed;
// `retry` is set when the failure concerns only that one connection.
Socket accept_one(Socket listener, sockaddr_storage& peer, bool& retry);
// A listening socket bound to `addr` (SO_REUSEADDR, v6-only for IPv6).
Socket listen_on(const sockaddr* addr, std::size_t addr_len, int backlog);
// The port a socket is bound to.
std::uint16_t local_port(Socket s);
void close_socket(Socket s);
// Sends FIN: no more bytes from us (the peer can still send).
void shutdown_write(Socket s);

// Records are small and latency matters; the engine batches writes itself.
void set_nodelay(Socket s);
// Keep at most `bytes` unsent in the kernel (TCP_NOTSENT_LOWAT, best effort;
// 0 leaves the kernel's default).
void set_notsent_lowat(Socket s, std::size_t bytes);
// The socket's pending error (SO_ERROR), 0 when none: what a failed
// non-blocking connect or a reset was.
int pending_error(Socket s);

// Plain I/O: > 0 bytes moved, 0 would block, -1 failed (last_error()); a
// read also returns -1 with last_error() == 0 at end of stream.
long send_some(Socket s, const void* data, std::size_t n);
long recv_some(Socket s, void* data, std::size_t n);
// Reads without consuming (the bytes stay for the next read).
long peek_some(Socket s, void* data, std::size_t n);

// "127.0.0.1:22" or "[::1]:22".
std::string address_text(const sockaddr* sa);

}  // namespace tunnel::net
