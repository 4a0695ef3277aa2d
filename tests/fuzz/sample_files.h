// The private directory of sample files the CLI targets may name with '@'
// (argv_input.h): created once per process under /tmp.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "argv_input.h"

namespace fuzz {

inline std::string make_sample_dir() {
  char tmpl[] = "/tmp/fuzz-cli-XXXXXX";
  const char* dir = ::mkdtemp(tmpl);
  if (!dir) std::abort();
  const std::string d(dir);
  const auto write = [&](const std::string& name, const std::string& text, mode_t mode) {
    std::ofstream(d + "/" + name) << text;
    ::chmod((d + "/" + name).c_str(), mode);
  };
  write(
      "settings.json",
      R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"500"},"tcp":{"connection_retry_count":"1"}}}})",
      0600);
  write("bad.json", R"({"tunneling":{"proxy":{"websocket":{"ping_period_ms":"abc"}}}})", 0600);
  write("lp.conf", "region = us-east-1\nsource-listen-port = 5555\n# comment\n", 0600);
  write("token", std::string(kAccessSecret) + "\n", 0600);
  write("token-open", std::string(kAccessSecret) + "\n", 0644);
  ::mkdir((d + "/services").c_str(), 0700);
  write("services/ssh", "SSH1 = 22\nHTTP1 = 127.0.0.1:80\n", 0600);
  return d;
}

}  // namespace fuzz
