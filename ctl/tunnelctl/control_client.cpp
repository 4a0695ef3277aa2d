#include "control_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace tunnel::tunnelctl {
namespace {

using tunneld::control::DecodeStatus;
using tunneld::control::FrameDecoder;
using tunneld::control::Request;
using tunneld::control::Response;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kSeeJournal = "see journalctl -u tunneld";

ControlError fail(ControlErrorKind kind, std::string message) { return {kind, std::move(message)}; }

// Milliseconds left until `deadline` for poll(), rounded up so that a
// sub-millisecond rest does not turn into a busy loop; 0 once it has passed.
int poll_timeout(Clock::time_point deadline) {
  const auto left = deadline - Clock::now();
  if (left <= Clock::duration::zero()) return 0;
  const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > 60'000 ? 60'000 : static_cast<int>(ms);
}

ControlError timed_out(std::string_view path) {
  return fail(ControlErrorKind::timeout,
              "tunneld did not answer on " + std::string(path) +
                  " in time: it may be overloaded or stuck; raise --timeout, or " +
                  std::string(kSeeJournal));
}

// Waits until `fd` is ready for `events`. false: the deadline passed.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const int ms = poll_timeout(deadline);
    if (ms == 0) return false;
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, ms);
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // let the following call report it
  }
}

// Sends all of `bytes`. nullopt on success or when the daemon closed its end
// (it may have answered before: the caller reads on).
std::optional<ControlError> send_all(int fd, std::string_view bytes, Clock::time_point deadline,
                                     std::string_view path) {
  while (!bytes.empty()) {
    if (!wait_for(fd, POLLOUT, deadline)) return timed_out(path);
    const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) {
      bytes.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
    if (errno == EPIPE || errno == ECONNRESET) return std::nullopt;
    return fail(ControlErrorKind::connection_lost,
                "cannot send to tunneld on " + std::string(path) + ": " + std::strerror(errno) +
                    "; " + std::string(kSeeJournal));
  }
  return std::nullopt;
}

std::optional<ControlError> check_response(const Request& request, const Response& response,
                                           std::string_view path) {
  const bool success = response.status() == Response::OK;
  if (response.request_id() != request.request_id() && (success || response.request_id() != 0)) {
    return fail(ControlErrorKind::protocol,
                "tunneld on " + std::string(path) + " answered request " +
                    std::to_string(request.request_id()) + " with the id " +
                    std::to_string(response.request_id()) + "; " + std::string(kSameRelease));
  }
  if (success && response.version() != tunneld::control::kProtocolVersion) {
    return fail(ControlErrorKind::protocol,
                "tunneld on " + std::string(path) + " speaks control protocol version " +
                    std::to_string(response.version()) + ", tunnelctl speaks version " +
                    std::to_string(tunneld::control::kProtocolVersion) + "; " +
                    std::string(kSameRelease));
  }
  return std::nullopt;
}

}  // namespace

std::string_view to_string(ControlErrorKind kind) {
  switch (kind) {
    case ControlErrorKind::unreachable:
      return "unreachable";
    case ControlErrorKind::permission_denied:
      return "permission denied";
    case ControlErrorKind::timeout:
      return "timeout";
    case ControlErrorKind::connection_lost:
      return "connection lost";
    case ControlErrorKind::protocol:
      return "protocol error";
  }
  return "unknown";
}

ControlError connect_error(int err, std::string_view socket_path) {
  const std::string path = std::string(socket_path);
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return fail(ControlErrorKind::unreachable,
                  "tunneld is not running (no socket at " + path + "): systemctl start tunneld");
    case ECONNREFUSED:
      return fail(ControlErrorKind::unreachable, "tunneld is not running (nothing listens on " +
                                                     path + "): systemctl start tunneld");
    case EACCES:
    case EPERM:
      return fail(ControlErrorKind::permission_denied,
                  "permission denied on " + path +
                      ": add yourself to group tunneld (usermod -aG tunneld $USER, then log in "
                      "again)");
    case EAGAIN:
    case ETIMEDOUT:
      // A blocking AF_UNIX connect waits while the listen backlog is full and
      // gives up with EAGAIN when SO_SNDTIMEO expires.
      return fail(ControlErrorKind::timeout,
                  "tunneld did not accept the connection on " + path +
                      " in time: it may be overloaded or stuck; try again, or " +
                      std::string(kSeeJournal));
    case ENAMETOOLONG:
      return fail(ControlErrorKind::unreachable,
                  "the socket path " + path + " is longer than a Unix socket address holds (" +
                      std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                      " bytes); use a shorter --socket path");
    default:
      return fail(ControlErrorKind::unreachable,
                  "cannot connect to tunneld on " + path + ": " + std::strerror(err) +
                      "; check systemctl status tunneld, --socket and TUNNELD_SOCKET");
  }
}

ControlResult exchange(int fd, const Request& request, Clock::time_point deadline,
                       std::string_view socket_path, std::size_t max_response) {
  ControlResult result;
  std::string frame;
  if (!tunneld::control::append_frame(frame, request, tunneld::control::kMaxRequestSize)) {
    result.error = fail(ControlErrorKind::protocol,
                        "the request is " + std::to_string(request.ByteSizeLong()) +
                            " bytes, over the control protocol's limit of " +
                            std::to_string(tunneld::control::kMaxRequestSize) +
                            " bytes; use a smaller --settings-json file");
    return result;
  }
  if (auto e = send_all(fd, frame, deadline, socket_path)) {
    result.error = std::move(*e);
    return result;
  }

  FrameDecoder decoder(max_response);
  std::array<char, std::size_t{16} * 1024> buffer;
  std::size_t received = 0;
  for (;;) {
    if (!wait_for(fd, POLLIN, deadline)) {
      result.error = timed_out(socket_path);
      return result;
    }
    const ssize_t n = ::recv(fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      const int err = errno;
      result.error = fail(ControlErrorKind::connection_lost,
                          "lost the connection to tunneld on " + std::string(socket_path) + ": " +
                              std::strerror(err) + "; " + std::string(kSeeJournal));
      return result;
    }
    if (n == 0) {
      result.error = fail(ControlErrorKind::connection_lost,
                          "tunneld closed the connection on " + std::string(socket_path) +
                              (received == 0 ? " without answering; " : " in mid-answer; ") +
                              std::string(kSeeJournal));
      return result;
    }
    received += static_cast<std::size_t>(n);
    std::string_view input(buffer.data(), static_cast<std::size_t>(n));
    Response response;
    switch (decoder.next_message(input, response)) {
      case DecodeStatus::need_more:
        continue;
      case DecodeStatus::too_long:
        result.error = fail(ControlErrorKind::protocol,
                            "the answer on " + std::string(socket_path) + " announces " +
                                std::to_string(decoder.announced_length()) +
                                " bytes, over tunnelctl's limit of " +
                                std::to_string(max_response) + "; is " + std::string(socket_path) +
                                " tunneld's control socket? If so, " + std::string(kSameRelease));
        return result;
      case DecodeStatus::malformed:
        result.error = fail(ControlErrorKind::protocol,
                            "the answer on " + std::string(socket_path) +
                                " is not a tunneld control response; is it tunneld's control "
                                "socket? If so, " +
                                std::string(kSameRelease));
        return result;
      case DecodeStatus::ok:
        break;
    }
    if (auto e = check_response(request, response, socket_path)) {
      result.error = std::move(*e);
      return result;
    }
    result.response = std::move(response);
    return result;
  }
}

ControlClient::ControlClient(std::string socket_path, std::chrono::milliseconds timeout,
                             std::size_t max_response)
    : socket_path_(std::move(socket_path)), timeout_(timeout), max_response_(max_response) {}

ControlResult ControlClient::call(const Request& request) const {
  const auto deadline = Clock::now() + timeout_;
  ControlResult result;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.empty() || socket_path_.size() >= sizeof(addr.sun_path)) {
    result.error = connect_error(socket_path_.empty() ? ENOENT : ENAMETOOLONG, socket_path_);
    return result;
  }
  std::memcpy(addr.sun_path, socket_path_.data(), socket_path_.size());

  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    result.error = fail(ControlErrorKind::unreachable,
                        std::string("cannot create a Unix socket: ") + std::strerror(errno));
    return result;
  }
  // Bounds a connect that waits for room in a full listen backlog.
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(timeout_).count();
  timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    result.error = connect_error(errno, socket_path_);
  } else {
    result = exchange(fd, request, deadline, socket_path_, max_response_);
  }
  ::close(fd);
  return result;
}

}  // namespace tunnel::tunnelctl
