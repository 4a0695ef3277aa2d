// Sessions opened through tunnelctl, persisted so that they come back after a
// daemon restart (and reconnect with the same client token). One file per
// session in the state directory:
//
//   <state_dir>/<id>.session      mode 0600, directory mode 0700
//
// File format (binary, all integers big-endian):
//   offset  0: 8 bytes  magic "TNLDSES" followed by the format version byte 0x01
//   offset  8: u32      length N of the body
//   offset 12: u32      CRC-32 (IEEE 802.3, as zlib's crc32) of the body
//   offset 16: N bytes  the tunneld.control.OpenRequest, protobuf-serialized,
//                       tokens included (proto/control.proto)
// Protobuf rather than JSON: a field added to OpenRequest is persisted without
// touching this code, and old files stay readable. The checksum turns any
// corruption into a clean "skipped" instead of a half-valid session.
//
// Writes are atomic: a temporary ".<id>.session.tmp" is created with
// O_CREAT|O_EXCL and mode 0600, written, fsync'ed, renamed over the final name,
// and the directory is fsync'ed. A crash leaves either the old or the new file.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "control.pb.h"

namespace tunneld {

class StateStoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct StoredSession {
  std::string id;
  control::OpenRequest request;
};

struct StateLoadResult {
  std::vector<StoredSession> sessions;  // sorted by id
  // One line per file that was skipped, naming it and saying why.
  std::vector<std::string> errors;
};

class StateStore {
 public:
  // Opens the state directory, creating it (mode 0700, last component only)
  // when missing. Throws StateStoreError when it is not a directory, is not
  // owned by the effective user, or is writable by group or others. A
  // directory that is merely readable by others is tightened to 0700.
  explicit StateStore(std::string dir);
  ~StateStore();
  StateStore(StateStore&& other) noexcept;
  StateStore& operator=(StateStore&& other) noexcept;
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // Persists (or replaces) session `id` atomically. Errors are values: the
  // daemon calls this from its loop. std::errc::invalid_argument for an id
  // that is not is_valid_id, std::errc::message_size for a request too large.
  std::error_code save(std::string_view id, const control::OpenRequest& request);

  // Every readable session. A corrupt, truncated, foreign-owned or too-open
  // file is skipped with a message in `errors`; nothing here throws for a bad
  // file. Leftover temporary files of an interrupted save are deleted.
  StateLoadResult load_all();

  // Deletes session `id` and syncs the directory. std::errc::no_such_file_or_directory
  // when there is no such session.
  std::error_code remove(std::string_view id);

  const std::string& dir() const { return dir_; }
  std::string path_of(std::string_view id) const;

  // 1..64 characters of A-Z, a-z, 0-9, '-' and '_' (ids become file names).
  static bool is_valid_id(std::string_view id);

 private:
  std::string dir_;
  int dir_fd_ = -1;
};

}  // namespace tunneld
