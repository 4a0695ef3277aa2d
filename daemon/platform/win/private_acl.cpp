#include "private_acl.h"

#include <aclapi.h>
#include <sddl.h>

#include <algorithm>
#include <memory>
#include <utility>

#include "win_text.h"

namespace tunneld::platform::win {
namespace {

struct LocalFreeDeleter {
  void operator()(void* p) const { ::LocalFree(p); }
};

std::string sid_string(PSID sid) {
  wchar_t* text = nullptr;
  if (!::ConvertSidToStringSidW(sid, &text)) return {};
  std::unique_ptr<void, LocalFreeDeleter> owned(text);
  return to_utf8(text);
}

// "DOMAIN\name" for display; empty when the SID has no name here.
std::string account_name(PSID sid) {
  wchar_t name[256];
  wchar_t domain[256];
  DWORD name_len = 256;
  DWORD domain_len = 256;
  SID_NAME_USE use;
  if (!::LookupAccountSidW(nullptr, sid, name, &name_len, domain, &domain_len, &use)) return {};
  std::wstring full = domain_len > 0 ? std::wstring(domain) + L"\\" + name : std::wstring(name);
  return to_utf8(full);
}

// Appends instead of `"\"" + text + "\""`, which GCC 12 warns about
// wrongly (-Wrestrict, GCC bug 105651).
std::string quoted(const std::wstring& path) {
  std::string out(1, '"');
  out += to_utf8(path);
  out += '"';
  return out;
}

std::string icacls_fix(const std::wstring& path, bool directory) {
  const char* grant = directory ? ":(OI)(CI)F" : ":F";
  return std::string("icacls ") + quoted(path) + " /inheritance:r /grant:r *" + kLocalSystemSid +
         grant + " *" + kAdministratorsSid + grant;
}

std::optional<std::string> apply_dacl(const std::wstring& path, const wchar_t* sddl) {
  SecurityDescriptor sd(sddl);
  if (!sd.valid()) return "cannot build its access list: " + error_text(sd.error());
  BOOL present = FALSE;
  BOOL defaulted = FALSE;
  PACL dacl = nullptr;
  ::GetSecurityDescriptorDacl(sd.get(), &present, &dacl, &defaulted);
  // PROTECTED: inherited entries are removed, not merged in.
  const DWORD rc =
      ::SetNamedSecurityInfoW(const_cast<wchar_t*>(path.c_str()), SE_FILE_OBJECT,
                              DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
                              nullptr, nullptr, dacl, nullptr);
  if (rc != ERROR_SUCCESS) {
    return "cannot restrict " + quoted(path) + " to SYSTEM and Administrators: " + error_text(rc);
  }
  return std::nullopt;
}

}  // namespace

SecurityDescriptor::SecurityDescriptor(const wchar_t* sddl) {
  if (!::ConvertStringSecurityDescriptorToSecurityDescriptorW(sddl, SDDL_REVISION_1, &descriptor_,
                                                              nullptr)) {
    descriptor_ = nullptr;
    error_ = ::GetLastError();
    return;
  }
  attributes_.nLength = sizeof(attributes_);
  attributes_.lpSecurityDescriptor = descriptor_;
  attributes_.bInheritHandle = FALSE;
}

SecurityDescriptor::~SecurityDescriptor() {
  if (descriptor_ != nullptr) ::LocalFree(descriptor_);
}

SecurityDescriptor::SecurityDescriptor(SecurityDescriptor&& other) noexcept
    : descriptor_(std::exchange(other.descriptor_, nullptr)),
      attributes_(other.attributes_),
      error_(other.error_) {
  attributes_.lpSecurityDescriptor = descriptor_;
}

SecurityDescriptor& SecurityDescriptor::operator=(SecurityDescriptor&& other) noexcept {
  if (this != &other) {
    if (descriptor_ != nullptr) ::LocalFree(descriptor_);
    descriptor_ = std::exchange(other.descriptor_, nullptr);
    attributes_ = other.attributes_;
    attributes_.lpSecurityDescriptor = descriptor_;
    error_ = other.error_;
  }
  return *this;
}

std::optional<std::string> foreign_access(const std::optional<std::vector<AccessEntry>>& dacl,
                                          std::span<const std::string> also_allowed) {
  if (!dacl) return std::string("everyone (it has no access list at all)");
  std::vector<std::string> who;
  for (const AccessEntry& e : *dacl) {
    if (!e.allow || e.inherit_only || (e.mask & kSensitiveAccess) == 0) continue;
    if (e.sid == kLocalSystemSid || e.sid == kAdministratorsSid) continue;
    if (std::find(also_allowed.begin(), also_allowed.end(), e.sid) != also_allowed.end()) continue;
    std::string name = e.name.empty() ? e.sid : e.name + " (" + e.sid + ")";
    if (std::find(who.begin(), who.end(), name) == who.end()) who.push_back(std::move(name));
  }
  if (who.empty()) return std::nullopt;
  std::string text;
  for (std::size_t i = 0; i < who.size(); ++i) {
    if (i > 0) text += i + 1 == who.size() ? " and " : ", ";
    text += who[i];
  }
  return text;
}

bool read_dacl(const std::wstring& path, std::optional<std::vector<AccessEntry>>* dacl,
               DWORD* error) {
  PACL acl = nullptr;
  PSECURITY_DESCRIPTOR sd = nullptr;
  const DWORD rc = ::GetNamedSecurityInfoW(path.c_str(), SE_FILE_OBJECT, DACL_SECURITY_INFORMATION,
                                           nullptr, nullptr, &acl, nullptr, &sd);
  if (rc != ERROR_SUCCESS) {
    *error = rc;
    return false;
  }
  std::unique_ptr<void, LocalFreeDeleter> owned(sd);
  if (acl == nullptr) {
    dacl->reset();
    return true;
  }
  std::vector<AccessEntry> entries;
  for (DWORD i = 0; i < acl->AceCount; ++i) {
    void* raw = nullptr;
    if (!::GetAce(acl, i, &raw)) continue;
    const auto* header = static_cast<ACE_HEADER*>(raw);
    AccessEntry e;
    PSID sid = nullptr;
    if (header->AceType == ACCESS_ALLOWED_ACE_TYPE) {
      auto* ace = static_cast<ACCESS_ALLOWED_ACE*>(raw);
      e.allow = true;
      e.mask = ace->Mask;
      sid = &ace->SidStart;
    } else if (header->AceType == ACCESS_DENIED_ACE_TYPE) {
      auto* ace = static_cast<ACCESS_DENIED_ACE*>(raw);
      e.allow = false;
      e.mask = ace->Mask;
      sid = &ace->SidStart;
    } else {
      // Object and callback entries do not occur on files; count them as
      // granting everything to someone unknown rather than skip them.
      e.sid = "an access entry of type " + std::to_string(header->AceType);
      e.mask = GENERIC_ALL;
      entries.push_back(std::move(e));
      continue;
    }
    e.inherit_only = (header->AceFlags & INHERIT_ONLY_ACE) != 0;
    e.sid = sid_string(sid);
    if (e.allow && !e.inherit_only) e.name = account_name(sid);
    entries.push_back(std::move(e));
  }
  *dacl = std::move(entries);
  return true;
}

std::string process_user_sid() {
  HANDLE token = nullptr;
  if (!::OpenProcessToken(::GetCurrentProcess(), TOKEN_QUERY, &token)) return {};
  char buffer[SECURITY_MAX_SID_SIZE + sizeof(TOKEN_USER)];
  DWORD size = 0;
  std::string sid;
  if (::GetTokenInformation(token, TokenUser, buffer, sizeof buffer, &size)) {
    sid = sid_string(reinterpret_cast<TOKEN_USER*>(buffer)->User.Sid);
  }
  ::CloseHandle(token);
  return sid;
}

std::optional<std::string> check_private_file(const std::wstring& path) {
  std::optional<std::vector<AccessEntry>> dacl;
  DWORD error = 0;
  if (!read_dacl(path, &dacl, &error)) {
    return "cannot read the access list of " + quoted(path) + ": " + error_text(error);
  }
  const std::string self = process_user_sid();
  const std::vector<std::string> allowed =
      self.empty() ? std::vector<std::string>{} : std::vector<std::string>{self};
  const auto others = foreign_access(dacl, allowed);
  if (!others) return std::nullopt;
  const DWORD attributes = ::GetFileAttributesW(path.c_str());
  const bool directory =
      attributes != INVALID_FILE_ATTRIBUTES && (attributes & FILE_ATTRIBUTE_DIRECTORY) != 0;
  return quoted(path) + " is readable or writable by " + *others +
         "; allow only SYSTEM and Administrators: " + icacls_fix(path, directory);
}

std::optional<std::string> make_private_directory(const std::wstring& path) {
  SecurityDescriptor sd(kPrivateDirectorySddl);
  if (!sd.valid()) return "cannot build an access list: " + error_text(sd.error());
  if (::CreateDirectoryW(path.c_str(), sd.attributes())) return std::nullopt;
  const DWORD error = ::GetLastError();
  if (error != ERROR_ALREADY_EXISTS)
    return "cannot create " + quoted(path) + ": " + error_text(error);
  const DWORD attributes = ::GetFileAttributesW(path.c_str());
  if (attributes == INVALID_FILE_ATTRIBUTES || (attributes & FILE_ATTRIBUTE_DIRECTORY) == 0) {
    return quoted(path) + " exists and is not a directory";
  }
  if ((attributes & FILE_ATTRIBUTE_REPARSE_POINT) != 0) {
    // A junction or symbolic link could point anywhere; as with a symlinked
    // state directory on Linux, refuse instead of securing its target.
    return quoted(path) + " is a link (reparse point); remove it or choose another directory";
  }
  return apply_dacl(path, kPrivateDirectorySddl);
}

std::optional<std::string> restrict_to_administrators(const std::wstring& path) {
  return apply_dacl(path, kPrivateFileSddl);
}

HANDLE create_private_file(const std::wstring& path, DWORD* error) {
  SecurityDescriptor sd(kPrivateFileSddl);
  if (!sd.valid()) {
    *error = sd.error();
    return INVALID_HANDLE_VALUE;
  }
  HANDLE file = ::CreateFileW(path.c_str(), GENERIC_WRITE, 0, sd.attributes(), CREATE_NEW,
                              FILE_ATTRIBUTE_NORMAL, nullptr);
  *error = file == INVALID_HANDLE_VALUE ? ::GetLastError() : ERROR_SUCCESS;
  return file;
}

}  // namespace tunneld::platform::win
