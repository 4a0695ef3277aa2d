// A fake service-manager or journald socket for tests: an AF_UNIX datagram
// socket bound in a fresh temporary directory, unprivileged.
#pragma once

#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace tunneld::test {

struct Datagram {
  std::string data;
  int fd = -1;  // passed with SCM_RIGHTS, owned by the receiver of the Datagram
};

class UnixDatagramReceiver {
 public:
  // Binds <tmpdir>/<name>, or the abstract name "@<name>-<pid>" when abstract.
  explicit UnixDatagramReceiver(const std::string& name = "socket", bool abstract = false) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket() failed");
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    socklen_t length;
    if (abstract) {
      path_ = "@" + name + "-" + std::to_string(::getpid());
      std::memcpy(addr.sun_path + 1, path_.data() + 1, path_.size() - 1);
      length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
    } else {
      std::string dir_template =
          (std::filesystem::temp_directory_path() / "tunneld-test-XXXXXX").string();
      if (::mkdtemp(dir_template.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
      dir_ = dir_template;
      path_ = dir_ + "/" + name;
      std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
      length = sizeof(addr);
    }
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), length) != 0) {
      throw std::runtime_error("bind() failed");
    }
  }
  ~UnixDatagramReceiver() {
    ::close(fd_);
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  UnixDatagramReceiver(const UnixDatagramReceiver&) = delete;
  UnixDatagramReceiver& operator=(const UnixDatagramReceiver&) = delete;

  const std::string& path() const { return path_; }

  // The next datagram, or nullopt when none arrives within timeout_ms.
  std::optional<Datagram> receive(int timeout_ms = 2000) {
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, timeout_ms) != 1) return std::nullopt;
    std::vector<char> buffer(1 << 20);
    iovec part{buffer.data(), buffer.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &part;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) return std::nullopt;
    Datagram result{std::string(buffer.data(), static_cast<std::size_t>(n))};
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        std::memcpy(&result.fd, CMSG_DATA(c), sizeof(int));
      }
    }
    return result;
  }

 private:
  int fd_ = -1;
  std::string dir_;
  std::string path_;
};

}  // namespace tunneld::test
