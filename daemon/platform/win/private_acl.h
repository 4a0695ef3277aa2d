// Files and directories only SYSTEM and Administrators may use: on Windows
// the counterpart of tunneld's mode 0700 state directory, its 0600 state
// files and the check that refuses a token file others can read.
//
// Data directory: %ProgramData%\tunneld, with a protected DACL (nothing
// inherited from C:\ProgramData, which lets Users read) granting full
// control to SYSTEM and Administrators, inherited by everything created
// inside. Windows only, except foreign_access(), which is pure.
#pragma once

#include <windows.h>

#include <optional>
#include <span>
#include <string>
#include <vector>

namespace tunneld::platform::win {

// Well-known SIDs, in SDDL string form.
inline constexpr char kLocalSystemSid[] = "S-1-5-18";
inline constexpr char kAdministratorsSid[] = "S-1-5-32-544";

// Protected (P), SYSTEM (SY) and Administrators (BA) full control (FA);
// OICI: inherited by files and subdirectories.
inline constexpr wchar_t kPrivateDirectorySddl[] = L"D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";
inline constexpr wchar_t kPrivateFileSddl[] = L"D:P(A;;FA;;;SY)(A;;FA;;;BA)";

// A security descriptor made from SDDL, with the SECURITY_ATTRIBUTES that
// CreateFileW, CreateDirectoryW and CreateNamedPipeW take. Move-only.
class SecurityDescriptor {
 public:
  // On failure valid() is false and error() holds GetLastError().
  explicit SecurityDescriptor(const wchar_t* sddl);
  ~SecurityDescriptor();
  SecurityDescriptor(SecurityDescriptor&& other) noexcept;
  SecurityDescriptor& operator=(SecurityDescriptor&& other) noexcept;
  SecurityDescriptor(const SecurityDescriptor&) = delete;
  SecurityDescriptor& operator=(const SecurityDescriptor&) = delete;

  bool valid() const { return descriptor_ != nullptr; }
  DWORD error() const { return error_; }
  PSECURITY_DESCRIPTOR get() const { return descriptor_; }
  SECURITY_ATTRIBUTES* attributes() { return valid() ? &attributes_ : nullptr; }

 private:
  PSECURITY_DESCRIPTOR descriptor_ = nullptr;
  SECURITY_ATTRIBUTES attributes_{};
  DWORD error_ = ERROR_SUCCESS;
};

// One entry of a DACL, as much as the check needs.
struct AccessEntry {
  std::string sid;            // "S-1-5-32-545"
  std::string name;           // "BUILTIN\Users" when known, else empty
  bool allow = true;          // ACCESS_ALLOWED (true) or ACCESS_DENIED (false)
  DWORD mask = 0;             // the access mask as stored (generic bits included)
  bool inherit_only = false;  // applies to children only, not to this object
};

// Rights that let someone read or change a private file's content, or give
// themselves that right.
inline constexpr DWORD kSensitiveAccess = FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA |
                                          GENERIC_READ | GENERIC_WRITE | GENERIC_ALL | WRITE_DAC |
                                          WRITE_OWNER | MAXIMUM_ALLOWED;

// Pure: who besides SYSTEM, Administrators and `also_allowed` (SIDs) may read
// or change the object whose DACL is `dacl` (nullopt: a NULL DACL, which
// grants everyone everything). Returns nullopt when nobody, else a phrase
// naming them: "BUILTIN\Users (S-1-5-32-545) and Everyone (S-1-1-0)".
// Deny entries and inherit-only entries are ignored.
std::optional<std::string> foreign_access(const std::optional<std::vector<AccessEntry>>& dacl,
                                          std::span<const std::string> also_allowed = {});

// The DACL of a file or directory; nullopt in *dacl for a NULL DACL. Returns
// false and sets *error on failure.
bool read_dacl(const std::wstring& path, std::optional<std::vector<AccessEntry>>* dacl,
               DWORD* error);

// The SID of the user this process runs as ("S-1-5-18" for a service running
// as LocalSystem); empty on failure.
std::string process_user_sid();

// nullopt when only SYSTEM, Administrators and this process's own user may
// read or change `path`. Otherwise a one-line problem that says what to do:
//   C:\...\token is readable by BUILTIN\Users (S-1-5-32-545); allow only
//   SYSTEM and Administrators: icacls "C:\...\token" /inheritance:r /grant:r
//   *S-1-5-18:F *S-1-5-32-544:F
// The counterpart of refusing a token file whose mode is not 0600.
std::optional<std::string> check_private_file(const std::wstring& path);

// Creates directory `path` with the private directory DACL or, when it
// exists, replaces its DACL by that one (inherited entries removed). The
// parent must exist. nullopt on success, else a one-line problem.
std::optional<std::string> make_private_directory(const std::wstring& path);

// Replaces the DACL of file `path` by the private file DACL.
std::optional<std::string> restrict_to_administrators(const std::wstring& path);

// Creates file `path` (CREATE_NEW, for writing) with the private file DACL
// from the first moment, as open(O_CREAT | O_EXCL, 0600) does. Returns
// INVALID_HANDLE_VALUE and sets *error on failure.
HANDLE create_private_file(const std::wstring& path, DWORD* error);

}  // namespace tunneld::platform::win
