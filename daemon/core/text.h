// Small ASCII text helpers shared by the parsers (HTTP heads, URLs, command
// lines, configuration values). Locale-independent: protocol text is ASCII.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

namespace tunnel::text {

// HTTP's optional whitespace (RFC 9110 section 5.6.3): space and tab.
constexpr bool is_ows(char c) { return c == ' ' || c == '\t'; }
// ASCII white space: space, tab, CR, LF, VT, FF.
constexpr bool is_space(char c) { return is_ows(c) || (c >= '\n' && c <= '\r'); }

// Without leading and trailing HTTP optional whitespace.
constexpr std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && is_ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ows(s.back())) s.remove_suffix(1);
  return s;
}

// Without leading and trailing ASCII white space.
constexpr std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

constexpr char to_lower(char c) {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// ASCII lower case (other bytes unchanged).
inline std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(), to_lower);
  return out;
}

// Equal ignoring ASCII case.
constexpr bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return to_lower(x) == to_lower(y);
         });
}

// The name of an enum value from a table in the enum's declaration order
// (the caller static_asserts that the table covers the last value).
template <typename Enum, std::size_t N>
constexpr std::string_view enum_name(Enum e, const std::string_view (&names)[N]) {
  const auto i = static_cast<std::size_t>(e);
  return i < N ? names[i] : std::string_view("?");
}

}  // namespace tunnel::text
