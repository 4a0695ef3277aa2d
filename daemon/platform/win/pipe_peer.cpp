#include "pipe_peer.h"

#include <sddl.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include "win_text.h"

namespace tunneld::platform::win {
namespace {

constexpr const char* kElevateHint =
    "run tunnelctl from an elevated prompt (right-click, Run as administrator)";

struct HandleCloser {
  void operator()(HANDLE h) const {
    if (h != nullptr && h != INVALID_HANDLE_VALUE) ::CloseHandle(h);
  }
};
using UniqueHandle = std::unique_ptr<void, HandleCloser>;

std::string sid_string(PSID sid) {
  wchar_t* text = nullptr;
  if (!::ConvertSidToStringSidW(sid, &text)) return {};
  std::string out = to_utf8(text);
  ::LocalFree(text);
  return out;
}

std::vector<unsigned char> token_information(HANDLE token, TOKEN_INFORMATION_CLASS what) {
  DWORD size = 0;
  ::GetTokenInformation(token, what, nullptr, 0, &size);
  std::vector<unsigned char> buffer(size);
  if (size == 0 || !::GetTokenInformation(token, what, buffer.data(), size, &size)) buffer.clear();
  return buffer;
}

void read_token(HANDLE token, PipePeer& peer) {
  const auto user = token_information(token, TokenUser);
  if (!user.empty()) {
    PSID sid = reinterpret_cast<const TOKEN_USER*>(user.data())->User.Sid;
    peer.user_sid = sid_string(sid);
    peer.system = ::IsWellKnownSid(sid, WinLocalSystemSid) != FALSE;
  }
  unsigned char admins_buffer[SECURITY_MAX_SID_SIZE];
  DWORD admins_size = sizeof admins_buffer;
  PSID admins = admins_buffer;
  if (!::CreateWellKnownSid(WinBuiltinAdministratorsSid, nullptr, admins, &admins_size)) return;
  // CheckTokenMembership counts enabled groups only: an unelevated
  // administrator's token carries Administrators as deny-only.
  BOOL member = FALSE;
  if (::CheckTokenMembership(token, admins, &member)) peer.administrators_enabled = member != FALSE;
  const auto groups = token_information(token, TokenGroups);
  if (groups.empty()) return;
  const auto* list = reinterpret_cast<const TOKEN_GROUPS*>(groups.data());
  for (DWORD i = 0; i < list->GroupCount; ++i) {
    if (::EqualSid(list->Groups[i].Sid, admins) &&
        (list->Groups[i].Attributes & SE_GROUP_USE_FOR_DENY_ONLY) != 0) {
      peer.administrators_deny_only = true;
    }
  }
}

}  // namespace

PeerVerdict judge_pipe_peer(const PipePeer& peer) {
  if (!peer.identified) {
    return {false,
            "the client's identity could not be read (it must allow identification: "
            "SecurityIdentification or higher); use tunnelctl"};
  }
  if (peer.system || peer.administrators_enabled) return {true, {}};
  const std::string who = peer.user_sid.empty() ? "the client" : "user " + peer.user_sid;
  if (peer.administrators_deny_only) {
    return {false, who + " is an administrator but runs without elevation; " + kElevateHint};
  }
  return {false, who +
                     " is neither SYSTEM nor a member of Administrators; only elevated "
                     "administrators and SYSTEM may control tunneld: run tunnelctl as an "
                     "administrator, from an elevated prompt"};
}

PipePeer identify_pipe_client(HANDLE pipe, std::string* error) {
  PipePeer peer;
  ULONG pid = 0;
  if (::GetNamedPipeClientProcessId(pipe, &pid)) peer.pid = pid;
  if (!::ImpersonateNamedPipeClient(pipe)) {
    *error = "cannot impersonate the pipe client: " + error_text(::GetLastError());
    return peer;
  }
  HANDLE raw = nullptr;
  // OpenAsSelf: open the thread token with the daemon's own rights, not the
  // client's.
  const BOOL opened = ::OpenThreadToken(::GetCurrentThread(), TOKEN_QUERY, TRUE, &raw);
  const DWORD open_error = opened ? ERROR_SUCCESS : ::GetLastError();
  if (!::RevertToSelf()) std::abort();  // never go on running as the client
  if (!opened) {
    *error = open_error == ERROR_CANT_OPEN_ANONYMOUS
                 ? std::string("the client connected anonymously")
                 : "cannot read the pipe client's token: " + error_text(open_error);
    return peer;
  }
  UniqueHandle token(raw);
  read_token(raw, peer);
  peer.identified = true;
  return peer;
}

}  // namespace tunneld::platform::win
