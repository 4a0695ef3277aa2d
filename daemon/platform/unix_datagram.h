// Sending datagrams to AF_UNIX sockets named by a path, shared by the
// sd_notify and journald protocols. Internal to tunneld_platform.
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <optional>
#include <span>
#include <string_view>
#include <system_error>

namespace tunneld::platform {

struct UnixAddress {
  sockaddr_un addr{};
  socklen_t length = 0;
};

// A filesystem path ("/run/...") or, with a leading '@', a name in the Linux
// abstract namespace (as systemd writes NOTIFY_SOCKET). nullopt when the name
// is empty, relative or longer than sun_path.
std::optional<UnixAddress> make_unix_address(std::string_view name);

// Opens an unconnected, close-on-exec AF_UNIX datagram socket; -errno on
// failure.
int open_unix_datagram_socket();

// Sends one datagram made of `parts` to `to`, passing `pass_fd` along with
// SCM_RIGHTS when it is not -1. Never blocks (MSG_DONTWAIT) and never raises
// SIGPIPE.
std::error_code send_unix_datagram(int fd, const UnixAddress& to, std::span<const iovec> parts,
                                   int pass_fd = -1);

}  // namespace tunneld::platform
