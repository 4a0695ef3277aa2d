// FUZZ_CHECK(invariant): on failure, names the invariant and its line on
// stderr, then aborts, which libFuzzer reports as a finding with the input.
#pragma once

#include <cstdio>
#include <cstdlib>

namespace fuzz {

[[noreturn]] inline void invariant_failed(const char* what, const char* file, int line) {
  std::fprintf(stderr, "%s:%d: invariant failed: %s\n", file, line, what);
  std::abort();
}

}  // namespace fuzz

#define FUZZ_CHECK(cond) ((cond) ? (void)0 : ::fuzz::invariant_failed(#cond, __FILE__, __LINE__))
