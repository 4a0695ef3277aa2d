#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <set>
#include <vector>

#include "backoff.h"

using tunnel::Backoff;

TEST_SUITE("backoff") {
  TEST_CASE("the first delay lies in [initial/2, initial]") {
    for (std::uint64_t seed = 0; seed < 200; ++seed) {
      Backoff b(1000, 30000, seed);
      const auto d = b.next_delay_ms();
      CHECK(d >= 500);
      CHECK(d <= 1000);
      CHECK(b.attempts() == 1);
    }
  }

  TEST_CASE("the ceiling doubles per attempt up to the cap") {
    Backoff b(100, 10000, 42);
    std::uint32_t ceiling = 100;
    for (int attempt = 0; attempt < 20; ++attempt) {
      const auto d = b.next_delay_ms();
      CHECK_MESSAGE(d <= ceiling, "attempt " << attempt);
      CHECK_MESSAGE(d >= ceiling / 2, "attempt " << attempt);
      ceiling = std::min<std::uint32_t>(ceiling * 2, 10000);
    }
  }

  TEST_CASE("delays grow on average until the cap") {
    // Mean of [d/2, d] is 3d/4: attempt 3 (ceiling 800) beats attempt 0 (100).
    double first = 0;
    double fourth = 0;
    for (std::uint64_t seed = 0; seed < 100; ++seed) {
      Backoff b(100, 100000, seed);
      first += b.next_delay_ms();
      b.next_delay_ms();
      b.next_delay_ms();
      fourth += b.next_delay_ms();
    }
    CHECK(fourth > first * 4);
  }

  TEST_CASE("the cap holds and large attempt counts do not overflow") {
    Backoff b(2500, 30000, 7);
    for (int i = 0; i < 10000; ++i) {
      const auto d = b.next_delay_ms();
      REQUIRE(d <= 30000);
      REQUIRE(d >= 15000 - (i < 4 ? 15000 : 0));
    }
    CHECK(b.attempts() == 10000);

    constexpr auto kMax = std::numeric_limits<std::uint32_t>::max();
    Backoff huge(kMax, kMax, 1);
    for (int i = 0; i < 100; ++i) {
      const auto d = huge.next_delay_ms();
      REQUIRE(d >= kMax / 2);
    }
  }

  TEST_CASE("a cap below the initial delay wins") {
    Backoff b(5000, 1000, 3);
    for (int i = 0; i < 10; ++i) {
      const auto d = b.next_delay_ms();
      CHECK(d <= 1000);
      CHECK(d >= 500);
    }
  }

  TEST_CASE("jitter spreads delays across [cap/2, cap]") {
    Backoff b(1000, 1000, 99);
    std::vector<std::uint32_t> seen;
    seen.reserve(2000);
    for (int i = 0; i < 2000; ++i) {
      seen.push_back(b.next_delay_ms());
    }
    const auto [lo, hi] = std::minmax_element(seen.begin(), seen.end());
    CHECK(*lo >= 500);
    CHECK(*lo < 550);
    CHECK(*hi <= 1000);
    CHECK(*hi > 950);
    CHECK(std::set<std::uint32_t>(seen.begin(), seen.end()).size() > 300);

    // Different seeds (a fleet) do not march in lockstep.
    std::set<std::uint32_t> firsts;
    for (std::uint64_t seed = 0; seed < 50; ++seed) {
      firsts.insert(Backoff(10000, 10000, seed).next_delay_ms());
    }
    CHECK(firsts.size() > 40);
  }

  TEST_CASE("the same seed gives the same sequence") {
    Backoff a(100, 5000, 12345);
    Backoff b(100, 5000, 12345);
    for (int i = 0; i < 50; ++i) {
      CHECK(a.next_delay_ms() == b.next_delay_ms());
    }
  }

  TEST_CASE("reset starts again from the initial delay") {
    Backoff b(100, 100000, 5);
    for (int i = 0; i < 12; ++i) {
      b.next_delay_ms();
    }
    CHECK(b.attempts() == 12);
    b.reset();
    CHECK(b.attempts() == 0);
    const auto d = b.next_delay_ms();
    CHECK(d >= 50);
    CHECK(d <= 100);
  }

  TEST_CASE("a zero initial delay stays zero") {
    Backoff b(0, 1000, 1);
    for (int i = 0; i < 40; ++i) {
      CHECK(b.next_delay_ms() == 0);
    }
  }
}
