// Text at the Windows API boundary: UTF-8 (everything inside tunneld) to and
// from UTF-16 (the W functions), and Win32 error codes as readable text.
// Windows only.
#pragma once

#include <windows.h>

#include <string>
#include <string_view>

namespace tunneld::platform::win {

// Invalid UTF-8 becomes U+FFFD; never throws for bad input.
std::wstring to_wide(std::string_view utf8);
// Unpaired surrogates become U+FFFD.
std::string to_utf8(std::wstring_view wide);

// FormatMessage's text for a Win32 error, without the trailing period and
// line break, followed by its number: "Access is denied (error 5)".
std::string error_text(DWORD error);

}  // namespace tunneld::platform::win
