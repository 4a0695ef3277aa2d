#include "unix_datagram.h"

#include <cerrno>
#include <cstddef>
#include <cstring>

namespace tunneld::platform {

std::optional<UnixAddress> make_unix_address(std::string_view name) {
  UnixAddress result;
  result.addr.sun_family = AF_UNIX;
  if (name.size() < 2 || (name.front() != '/' && name.front() != '@') ||
      name.size() >= sizeof(result.addr.sun_path)) {
    return std::nullopt;
  }
  std::memcpy(result.addr.sun_path, name.data(), name.size());
  if (name.front() == '@') {
    // Abstract names are not NUL-terminated: the length says where they end.
    result.addr.sun_path[0] = '\0';
    result.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  } else {
    result.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
  }
  return result;
}

int open_unix_datagram_socket() {
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

std::error_code send_unix_datagram(int fd, const UnixAddress& to, std::span<const iovec> parts,
                                   int pass_fd) {
  msghdr msg{};
  msg.msg_name = const_cast<sockaddr_un*>(&to.addr);
  msg.msg_namelen = to.length;
  msg.msg_iov = const_cast<iovec*>(parts.data());
  msg.msg_iovlen = parts.size();

  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (pass_fd >= 0) {
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &pass_fd, sizeof(int));
  }

  ssize_t sent;
  do {
    sent = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return {errno, std::system_category()};
  return {};
}

}  // namespace tunneld::platform
