#include "process_limits.h"

#include <sys/resource.h>

namespace tunnel {

std::uint64_t raise_fd_limit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit wanted = rl;
    wanted.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &wanted) == 0) rl = wanted;
  }
  return static_cast<std::uint64_t>(rl.rlim_cur);
}

}  // namespace tunnel
