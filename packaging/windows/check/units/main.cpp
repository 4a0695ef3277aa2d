// Unit tests of daemon/platform/win, run under Wine by the cross build's
// `meson test` (or on Windows).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
