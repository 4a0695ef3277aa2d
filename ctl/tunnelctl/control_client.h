// The client side of tunneld's control socket: one blocking AF_UNIX stream
// connection per request. Connect, send one framed Request, read one framed
// Response (daemon/control/control_codec.h) before a deadline, close.
//
// Failures are values, never exceptions: a ControlError says which of the few
// things a user can act on went wrong (no daemon, no permission, no answer, an
// answer that is not tunneld's) and carries one line that says what to do.
// Messages name the socket path, never a request's content: an OpenRequest
// carries the access token.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "control/control_codec.h"

namespace tunnel::tunnelctl {

inline constexpr std::string_view kDefaultSocketPath = "/run/tunneld/control.sock";
// Whole exchange: connect, send, receive. The daemon answers from its loop
// without waiting for the network, so this is generous.
inline constexpr std::chrono::milliseconds kDefaultTimeout{10'000};
// The advice for an answer that this tunnelctl does not understand.
inline constexpr std::string_view kSameRelease = "use a tunnelctl of the same release as tunneld";

enum class ControlErrorKind {
  unreachable,        // no socket, nobody listening (ENOENT, ECONNREFUSED, ...)
  permission_denied,  // EACCES/EPERM on connect
  timeout,            // no complete response before the deadline
  connection_lost,    // the daemon closed the connection (or failed it) before answering
  protocol,           // the answer is not a valid response to this request
};

std::string_view to_string(ControlErrorKind kind);

struct ControlError {
  ControlErrorKind kind = ControlErrorKind::protocol;
  std::string message;  // one line without the "tunnelctl: " prefix
};

// Either a response (any status: a daemon-side error is still an answer) or
// the reason there is none.
struct ControlResult {
  std::optional<tunneld::control::Response> response;
  ControlError error;  // meaningful only when !response
  bool ok() const { return response.has_value(); }
};

// The error for connect() on `socket_path` failing with `err` (an errno).
ControlError connect_error(int err, std::string_view socket_path);

// Sends `request` on the connected stream socket `fd` and reads one response,
// giving up at `deadline`. Checks the answer: at most `max_response` bytes
// (checked on the header, before anything is allocated), a Response message,
// the request's id (or 0 on an error status: the daemon could not read the
// request), and our protocol version on a success. Leaves `fd` open; never
// raises SIGPIPE. `socket_path` only names the peer in messages.
ControlResult exchange(int fd, const tunneld::control::Request& request,
                       std::chrono::steady_clock::time_point deadline, std::string_view socket_path,
                       std::size_t max_response = tunneld::control::kMaxResponseSize);

class ControlClient {
 public:
  explicit ControlClient(std::string socket_path,
                         std::chrono::milliseconds timeout = kDefaultTimeout,
                         std::size_t max_response = tunneld::control::kMaxResponseSize);

  // One connection, one request, one response.
  ControlResult call(const tunneld::control::Request& request) const;

  const std::string& socket_path() const { return socket_path_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 private:
  std::string socket_path_;
  std::chrono::milliseconds timeout_;
  std::size_t max_response_;
};

}  // namespace tunnel::tunnelctl
