// Whether the tests run under Wine, which differs from Windows in places the
// tests name (ntdll exports wine_get_version only there).
#pragma once

#include <windows.h>

inline bool running_on_wine() {
  HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
}
