#include "control_codec.h"

#include <algorithm>
#include <limits>

namespace tunneld::control {

std::string_view to_string(DecodeStatus s) {
  switch (s) {
    case DecodeStatus::ok:
      return "ok";
    case DecodeStatus::need_more:
      return "need more bytes";
    case DecodeStatus::too_long:
      return "frame too long";
    case DecodeStatus::malformed:
      return "malformed message";
  }
  return "unknown";
}

bool append_frame(std::string& out, const google::protobuf::MessageLite& message,
                  std::size_t max_body) {
  const std::size_t size = message.ByteSizeLong();
  if (size > max_body || size > std::numeric_limits<std::uint32_t>::max()) return false;
  const std::size_t start = out.size();
  out.resize(start + kFrameHeaderSize + size);
  auto* p = reinterpret_cast<unsigned char*>(out.data() + start);
  const auto len = static_cast<std::uint32_t>(size);
  p[0] = static_cast<unsigned char>(len >> 24);
  p[1] = static_cast<unsigned char>(len >> 16);
  p[2] = static_cast<unsigned char>(len >> 8);
  p[3] = static_cast<unsigned char>(len);
  if (!message.SerializeToArray(p + kFrameHeaderSize, static_cast<int>(size))) {
    out.resize(start);
    return false;
  }
  return true;
}

DecodeStatus FrameDecoder::next_frame(std::string_view& input, std::string& body) {
  if (failed_) return DecodeStatus::too_long;

  if (header_have_ < kFrameHeaderSize) {
    const std::size_t n = std::min(kFrameHeaderSize - header_have_, input.size());
    std::copy_n(input.data(), n, header_ + header_have_);
    header_have_ += n;
    input.remove_prefix(n);
    if (header_have_ < kFrameHeaderSize) return DecodeStatus::need_more;
    length_ = (std::uint32_t{header_[0]} << 24) | (std::uint32_t{header_[1]} << 16) |
              (std::uint32_t{header_[2]} << 8) | std::uint32_t{header_[3]};
    // The cap is checked here, before the body gets any memory.
    if (length_ > max_body_) {
      failed_ = true;
      return DecodeStatus::too_long;
    }
    body_.clear();
    body_.reserve(length_);
  }

  const std::size_t n = std::min<std::size_t>(length_ - body_.size(), input.size());
  body_.append(input.data(), n);
  input.remove_prefix(n);
  if (body_.size() < length_) return DecodeStatus::need_more;

  body = std::move(body_);
  body_ = std::string();
  header_have_ = 0;
  return DecodeStatus::ok;
}

Response make_response(std::uint64_t request_id, Response::Status status) {
  Response r;
  r.set_version(kProtocolVersion);
  r.set_request_id(request_id);
  r.set_status(status);
  return r;
}

Response make_error(std::uint64_t request_id, Response::Status status, std::string message) {
  Response r = make_response(request_id, status);
  r.set_error(std::move(message));
  return r;
}

Response make_decode_error(DecodeStatus status, std::uint32_t announced_length,
                           std::size_t max_body) {
  if (status == DecodeStatus::too_long) {
    return make_error(0, Response::BAD_LENGTH,
                      "frame of " + std::to_string(announced_length) +
                          " bytes exceeds the limit of " + std::to_string(max_body) +
                          " bytes; is the client speaking the tunneld control protocol?");
  }
  return make_error(0, Response::MALFORMED,
                    "frame body is not a control request; is the client speaking the tunneld "
                    "control protocol?");
}

std::optional<Response> check_version(const Request& request) {
  if (request.version() == kProtocolVersion) return std::nullopt;
  return make_error(request.request_id(), Response::BAD_VERSION,
                    "control protocol version " + std::to_string(request.version()) +
                        " is not supported (tunneld speaks version " +
                        std::to_string(kProtocolVersion) +
                        "); use a tunnelctl of the same release as tunneld");
}

std::optional<Response> check_body(const Request& request) {
  if (request.body_case() != Request::BODY_NOT_SET) return std::nullopt;
  return make_error(request.request_id(), Response::MALFORMED,
                    "request carries no operation this tunneld knows; use a tunnelctl of the "
                    "same release as tunneld");
}

Request make_request(std::uint64_t request_id) {
  Request r;
  r.set_version(kProtocolVersion);
  r.set_request_id(request_id);
  return r;
}

std::string status_name(Response::Status status) {
  if (!Response::Status_IsValid(status)) return "STATUS_" + std::to_string(status);
  return Response::Status_Name(status);
}

}  // namespace tunneld::control
