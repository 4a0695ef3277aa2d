// What tunnel-bench and daemon-bench both set up before they measure: sizes
// and programs from the command line, a throwaway CA, a tunnel-relay on
// loopback with its admin API, tunnels opened through it, and a temp dir
// that goes away with the run (also on ^C).
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "child_process.h"

namespace bench {

// "1GiB", "256MiB", "100MB", "4096": bytes. Throws BenchError otherwise.
std::uint64_t parse_size(const std::string& text);

// `name` itself when it holds a '/', else its first match in PATH.
std::string find_program(const std::string& name);

// A loopback port nobody listens on right now.
std::uint16_t free_port();
// The port of "host:port" or "[v6]:port".
std::uint16_t port_of(const std::string& host_port);

// The meson build dir a bench program runs from (it lives in BUILD/bench/).
std::string own_build_dir();

std::string cpu_model();
std::string load_average();  // "1.00 0.50 0.25"

// A throwaway CA and a server certificate for 127.0.0.1 and localhost,
// made with the openssl command in dir/pki.
struct Pki {
  std::string ca_cert;
  std::string server_cert;
  std::string server_key;
  // The CA alone in a hashed directory (`openssl rehash`), for a proxy that
  // takes a CA directory (-c) rather than a file.
  std::string ca_dir;
};
Pki make_pki(const std::string& openssl, const std::string& dir);

// A tunnel-relay child on 127.0.0.1 (TLS with `pki`, admin API on loopback).
struct Relay {
  std::unique_ptr<ChildProcess> process;
  std::string listen;  // host:port for localproxy -e
  std::uint16_t admin_port = 0;
};
Relay start_relay(const std::string& binary, const Pki& pki, const std::string& log_dir);

// One call to the relay's admin API (HTTP/1.1 on loopback): the JSON body of
// a 2xx answer; throws BenchError with the answer otherwise.
nlohmann::json admin_request(std::uint16_t admin_port, const std::string& method,
                             const std::string& path, const std::string& body);
// POST /tunnels: {"tunnelId", "sourceAccessToken", "destinationAccessToken", ...}.
nlohmann::json open_tunnel(std::uint16_t admin_port, const std::vector<std::string>& services = {});

// mkdtemp("/tmp/<prefix>-XXXXXX"), plus a thread that takes SIGINT, SIGTERM
// and SIGHUP (block them in main before any thread starts), kills every child,
// removes the dir unless `keep`, and exits 128+signal.
std::string make_run_dir(const std::string& prefix, bool keep);
// Removes the run dir (or says where it was kept).
void remove_run_dir(const std::string& dir, bool keep);

}  // namespace bench
