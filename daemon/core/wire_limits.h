// The sizes the wire protocol fixes (docs/protocol.md section 3), for every
// layer that needs one without the record codec itself.
#pragma once

#include <cstddef>

namespace tunnel {

inline constexpr std::size_t kLengthPrefixSize = 2;
inline constexpr std::size_t kMaxPayloadSize = 64512;  // 63 KiB: a record's payload field
inline constexpr std::size_t kMaxRecordSize = 65535;   // u16 length, by construction
inline constexpr std::size_t kMaxFrameSize = 131076;   // a WebSocket message payload
// Longest serviceId encode_data_record accepts (the service limits service
// names to 128 characters).
inline constexpr std::size_t kMaxServiceIdSize = 128;

}  // namespace tunnel
