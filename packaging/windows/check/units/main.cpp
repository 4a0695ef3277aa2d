// Unit tests of daemon/platform/win, run under Wine by the cross build's
// `meson test` (or on Windows).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <iostream>

int main(int argc, char** argv) {
  // Unbuffered, so that a test that hangs shows which one it is: the C
  // runtime buffers a redirected stdout fully.
  std::setvbuf(stdout, nullptr, _IONBF, 0);
  std::cout << std::unitbuf;
  doctest::Context context(argc, argv);
  return context.run();
}
