// Who is at the other end of a control pipe connection: the Windows
// counterpart of SO_PEERCRED. The daemon reads the client's access token by
// impersonating it for a moment (ImpersonateNamedPipeClient), so the answer
// describes the connecting thread's token, not a process id that could have
// been reused.
//
// Permission rule (the counterpart of root / the daemon's user / group
// tunneld on Linux): SYSTEM, or a token in which the Administrators group is
// enabled, which for an administrator means an elevated process. The pipe's
// DACL already admits nobody else; this check is the second line and gives
// the refusal a reason a user can act on.
#pragma once

#include <windows.h>

#include <optional>
#include <string>

namespace tunneld::platform::win {

struct PipePeer {
  unsigned long pid = 0;                  // GetNamedPipeClientProcessId, for logs only
  std::string user_sid;                   // "S-1-5-21-...-1001"; empty when unknown
  bool identified = false;                // the token could be read
  bool system = false;                    // the user is LocalSystem
  bool administrators_enabled = false;    // Administrators is enabled in the token
  bool administrators_deny_only = false;  // an administrator without elevation (UAC)
};

struct PeerVerdict {
  bool may_modify = false;
  std::string refusal;  // one line saying why not and what to do; empty when allowed
};

// Pure: the permission rule above, with the refusal text.
PeerVerdict judge_pipe_peer(const PipePeer& peer);

// Reads the identity of the client connected to server pipe instance
// `pipe`. On failure returns a peer with identified == false and puts the
// reason into *error (e.g. the client connected with an anonymous
// impersonation level). Must run on a thread that is not impersonating
// anyone; it reverts before returning, and ends the process if it cannot
// (carrying on as the client would be worse).
PipePeer identify_pipe_client(HANDLE pipe, std::string* error);

}  // namespace tunneld::platform::win
