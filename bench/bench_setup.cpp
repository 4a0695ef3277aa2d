#include "bench_setup.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "load_client.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace bench {

std::uint64_t parse_size(const std::string& text) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw BenchError("not a size: " + text);
  }
  std::string unit = text.substr(used);
  unit.erase(0, unit.find_first_not_of(' '));
  static const std::pair<const char*, double> units[] = {
      {"", 1},          {"B", 1},    {"K", 1024},    {"KiB", 1024},    {"KB", 1e3}, {"M", 1 << 20},
      {"MiB", 1 << 20}, {"MB", 1e6}, {"G", 1 << 30}, {"GiB", 1 << 30}, {"GB", 1e9}};
  for (const auto& [name, factor] : units) {
    if (unit == name && v > 0) return static_cast<std::uint64_t>(v * factor);
  }
  throw BenchError("not a size: " + text + " (use e.g. 1GiB, 256MiB, 100MB)");
}

std::string find_program(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  for (std::string d; std::getline(dirs, d, ':');) {
    std::string candidate = d + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw BenchError(name + " not found in PATH");
}

std::uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw BenchError("cannot find a free loopback port");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::uint16_t port_of(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) throw BenchError("no port in " + host_port);
  return static_cast<std::uint16_t>(std::stoi(host_port.substr(colon + 1)));
}

std::string own_build_dir() {
  return fs::canonical("/proc/self/exe").parent_path().parent_path().string();
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos && colon + 2 <= line.size()) return line.substr(colon + 2);
    }
  }
  return "unknown";
}

std::string load_average() {
  std::istringstream in(read_file("/proc/loadavg"));
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

Pki make_pki(const std::string& openssl, const std::string& dir) {
  const std::string pki = dir + "/pki";
  fs::create_directories(pki);
  Pki p{pki + "/ca.pem", pki + "/server.pem", pki + "/server.key", pki + "/ca-dir"};
  const std::string ca_key = pki + "/ca.key";
  const std::string csr = pki + "/server.csr";
  const std::string ext = pki + "/server.ext";
  std::ofstream(ext) << "basicConstraints=CA:FALSE\n"
                        "keyUsage=critical,digitalSignature,keyEncipherment\n"
                        "extendedKeyUsage=serverAuth\n"
                        "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
  const auto timeout = 30s;
  const std::vector<std::string> ec = {"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                       "-nodes"};
  std::vector<std::string> ca = {openssl, "req", "-x509"};
  ca.insert(ca.end(), ec.begin(), ec.end());
  ca.insert(ca.end(),
            {"-keyout", ca_key, "-out", p.ca_cert, "-days", "1", "-subj",
             "/CN=tunneld bench throwaway CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"});
  run_command(ca, dir, timeout);
  std::vector<std::string> req = {openssl, "req"};
  req.insert(req.end(), ec.begin(), ec.end());
  req.insert(req.end(), {"-keyout", p.server_key, "-out", csr, "-subj", "/CN=localhost"});
  run_command(req, dir, timeout);
  run_command({openssl, "x509", "-req", "-in", csr, "-CA", p.ca_cert, "-CAkey", ca_key,
               "-CAcreateserial", "-out", p.server_cert, "-days", "1", "-extfile", ext},
              dir, timeout);
  fs::create_directories(p.ca_dir);
  fs::copy_file(p.ca_cert, p.ca_dir + "/ca.pem");
  run_command({openssl, "rehash", p.ca_dir}, dir, timeout);
  return p;
}

Relay start_relay(const std::string& binary, const Pki& pki, const std::string& log_dir) {
  Relay r;
  r.process = std::make_unique<ChildProcess>(
      "relay",
      std::vector<std::string>{binary, "--listen", "127.0.0.1:0", "--tls-cert", pki.server_cert,
                               "--tls-key", pki.server_key, "--admin", "127.0.0.1:0", "-v", "warn"},
      std::vector<std::string>{}, log_dir);
  const std::string line = wait_for_line(
      *r.process, r.process->stdout_path(),
      [](const std::string& l) { return l.find("\"ready\"") != std::string::npos; },
      Clock::now() + 20s);
  const auto ready = nlohmann::json::parse(line);
  r.listen = ready.at("listen").get<std::string>();
  r.admin_port = port_of(ready.at("admin").get<std::string>());
  return r;
}

nlohmann::json admin_request(std::uint16_t admin_port, const std::string& method,
                             const std::string& path, const std::string& body) {
  Connection c = Connection::open(admin_port, 5000ms);
  const std::string req = method + " " + path +
                          " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          "Content-Length: " +
                          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  c.send_all(req.data(), req.size());
  std::string resp;
  char buf[4096];
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    const std::size_t n = c.recv_some(buf, sizeof buf);
    if (n == 0) break;  // Connection: close, so EOF ends the body
    resp.append(buf, n);
  }
  const auto head_end = resp.find("\r\n\r\n");
  if (resp.rfind("HTTP/1.1 2", 0) != 0 || head_end == std::string::npos) {
    throw BenchError("relay admin " + method + " " + path + ": " + resp.substr(0, 200));
  }
  return nlohmann::json::parse(resp.substr(head_end + 4));
}

nlohmann::json open_tunnel(std::uint16_t admin_port, const std::vector<std::string>& services) {
  nlohmann::json body = nlohmann::json::object();
  if (!services.empty()) body["services"] = services;
  return admin_request(admin_port, "POST", "/tunnels", body.dump());
}

std::string make_run_dir(const std::string& prefix, bool keep) {
  std::string tmpl = "/tmp/" + prefix + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw BenchError("mkdtemp failed");
  std::string dir = tmpl;
  // Termination signals go to this one thread, which kills the children: no
  // work inside a signal handler, and no child left behind on ^C.
  std::thread([dir, keep, prefix] {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, s);
    int sig = 0;
    sigwait(&set, &sig);
    kill_all_children();
    if (!keep) {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
    std::fprintf(stderr, "%s: interrupted by signal %d; children killed\n", prefix.c_str(), sig);
    std::_Exit(128 + sig);
  }).detach();
  return dir;
}

void remove_run_dir(const std::string& dir, bool keep) {
  if (keep) {
    std::fprintf(stderr, "[bench] kept %s\n", dir.c_str());
    return;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

}  // namespace bench
