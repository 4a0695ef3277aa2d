#include "record_splitter.h"

#include <algorithm>

namespace relay {

bool RecordSplitter::feed(std::span<const std::uint8_t> bytes, RecordQueue& out,
                          const Inspector& inspect) {
  const auto finish = [&]() {
    const auto body = out.open_bytes().subspan(2);
    if (looks_like_data(body) || inspect(body) == RecordVerdict::forward) {
      out.commit_record();
      return true;
    }
    out.abort_record();
    return false;
  };

  std::size_t i = 0;
  while (i < bytes.size()) {
    if (body_left_ == 0) {
      prefix_[prefix_have_++] = bytes[i++];
      if (prefix_have_ < 2) continue;
      prefix_have_ = 0;
      const std::size_t len = (std::size_t{prefix_[0]} << 8) | prefix_[1];
      out.open_record(2 + len);
      out.fill(prefix_);
      body_left_ = len;
      if (len == 0 && !finish()) return false;  // an empty record has type 0: inspected
      continue;
    }
    const std::size_t take = std::min(body_left_, bytes.size() - i);
    out.fill(bytes.subspan(i, take));
    i += take;
    body_left_ -= take;
    if (body_left_ == 0 && !finish()) return false;
  }
  return true;
}

}  // namespace relay
