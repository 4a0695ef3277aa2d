#include "admin_api.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "printable.h"
#include "socket_io.h"
#include "text.h"

namespace relay {
namespace {

using nlohmann::json;

const std::shared_ptr<spdlog::logger>& log() {
  static const std::shared_ptr<spdlog::logger> logger = [] {
    auto l = spdlog::get("admin");
    return l ? l : spdlog::default_logger();
  }();
  return logger;
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 501:
      return "Not Implemented";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Error";
  }
}

HttpResponse error(int status, std::string message) {
  // The message may quote the request (an unknown id), which need not be
  // UTF-8: replace such bytes rather than let dump() throw, which turned a
  // 404 into a 500 (found by fuzz-relay-requests).
  return HttpResponse{status, json{{"error", std::move(message)}}.dump(
                                  -1, ' ', false, json::error_handler_t::replace)};
}

bool valid_thing_name(const std::string& name) {
  return !name.empty() && name.size() <= 128 && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == ':' || c == '_' || c == '-';
  });
}

json to_json(const TunnelView& t) {
  return json{{"tunnelId", t.id},
              {"status", t.status},
              {"services", t.services},
              {"source", {{"connected", t.source_connected}}},
              {"destination", {{"connected", t.destination_connected}}}};
}

}  // namespace

namespace {

// RFC 9110 section 5.6.2: the characters of a method or a header name.
bool is_tchar(char c) {
  const auto u = static_cast<unsigned char>(c);
  if (std::isalnum(u) != 0 && u < 0x80) return true;
  return std::strchr("!#$%&'*+-.^_`|~", c) != nullptr && c != '\0';
}
bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}
// A request target: printable ASCII, no space.
bool is_target(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f;
  });
}
// A field value: no control character but HTAB (obs-text, 0x80-0xff, is allowed).
bool is_field_value(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return c == '\t' || (u >= 0x20 && u != 0x7f);
  });
}

// Stores a header that may appear once; false when it appeared before.
bool set_once(std::optional<std::string>& field, std::string_view value) {
  if (field) return false;
  field = std::string(value);
  return true;
}

}  // namespace

long parse_request_head(std::string_view data, HttpRequest& out, std::size_t max_head,
                        std::size_t max_body) {
  const std::size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) return data.size() > max_head ? -431 : 0;
  if (end + 4 > max_head) return -431;
  std::string_view head = data.substr(0, end + 2);

  // Lines end with CRLF; a CR or LF left inside a line is a bare one, which
  // the character checks below refuse (it would let a request forge log
  // lines, or be read differently by a proxy in front).
  const std::size_t line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = line.rfind(' ');
  // METHOD SP TARGET SP VERSION: neither the method nor the target is empty.
  if (sp1 == std::string_view::npos || sp2 == sp1 || sp1 == 0 || sp2 == sp1 + 1) return -400;
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  if (!is_token(method) || !is_target(target)) return -400;
  out.method = std::string(method);
  out.target = std::string(target);
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    return is_target(version) ? -505 : -400;
  }
  out.version = std::string(version);

  head.remove_prefix(line_end + 2);
  bool have_length = false;
  while (!head.empty()) {
    const std::size_t eol = head.find("\r\n");
    const std::string_view field = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    const std::size_t colon = field.find(':');
    if (colon == std::string_view::npos) return -400;
    // No space before the colon, no folded line (RFC 9112 section 5).
    const std::string_view name = field.substr(0, colon);
    if (!is_token(name) || !is_field_value(field.substr(colon + 1))) return -400;
    const std::string_view value = tunnel::text::trim(field.substr(colon + 1));
    if (tunnel::text::iequals(name, "content-length")) {
      std::size_t n = 0;
      const auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc() || p != value.data() + value.size() || value.empty()) return -400;
      if (have_length && n != out.content_length) return -400;
      if (n > max_body) return -413;
      out.content_length = n;
      have_length = true;
    } else if (tunnel::text::iequals(name, "transfer-encoding")) {
      return -501;  // chunked bodies are not needed by any client of this API
    } else if (tunnel::text::iequals(name, "expect")) {
      out.expect_continue = tunnel::text::iequals(value, "100-continue");
    } else if (tunnel::text::iequals(name, "host")) {
      if (!set_once(out.host, value)) return -400;
    } else if (tunnel::text::iequals(name, "origin")) {
      if (!set_once(out.origin, value)) return -400;
    } else if (tunnel::text::iequals(name, "sec-fetch-site")) {
      if (!set_once(out.sec_fetch_site, value)) return -400;
    } else if (tunnel::text::iequals(name, "content-type")) {
      if (!set_once(out.content_type, value)) return -400;
    } else if (tunnel::text::iequals(name, "authorization")) {
      if (!set_once(out.authorization, value)) return -400;
    }
  }
  return static_cast<long>(end + 4);
}

namespace {

std::array<unsigned char, SHA256_DIGEST_LENGTH> digest(std::string_view s) {
  std::array<unsigned char, SHA256_DIGEST_LENGTH> d{};
  SHA256(reinterpret_cast<const unsigned char*>(s.data()), s.size(), d.data());
  return d;
}

// Equal without a timing that depends on where the first difference is, or
// on the length of the guess: both sides are hashed first.
bool same_secret(std::string_view given, std::string_view expected) {
  const auto a = digest(given);
  const auto b = digest(expected);
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The host part of a Host header value: "name", "1.2.3.4" or "[v6]", the
// port (digits) removed; nothing when the value is not of that form.
std::optional<std::string> host_part(std::string_view value) {
  std::string_view host = value;
  std::string_view port;
  if (!value.empty() && value.front() == '[') {
    const std::size_t close = value.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = value.substr(0, close + 1);
    port = value.substr(close + 1);
    if (!port.empty() && port.front() != ':') return std::nullopt;
  } else if (const std::size_t colon = value.rfind(':'); colon != std::string_view::npos) {
    host = value.substr(0, colon);
    port = value.substr(colon);
  }
  if (!port.empty()) {
    port.remove_prefix(1);
    if (port.empty() ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return std::nullopt;
  }
  if (host.empty()) return std::nullopt;
  return tunnel::text::lower(host);
}

// The address bytes of an IP literal ("1.2.3.4" or "[::1]" / "::1"), family
// first; nothing for a name.
std::optional<std::string> ip_bytes(std::string_view literal) {
  std::string text(literal);
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
    text = text.substr(1, text.size() - 2);
    in6_addr a6{};
    if (inet_pton(AF_INET6, text.c_str(), &a6) != 1) return std::nullopt;
    return "6" + std::string(reinterpret_cast<const char*>(&a6), sizeof a6);
  }
  in_addr a4{};
  if (inet_pton(AF_INET, text.c_str(), &a4) == 1)
    return "4" + std::string(reinterpret_cast<const char*>(&a4), sizeof a4);
  in6_addr a6{};
  if (inet_pton(AF_INET6, text.c_str(), &a6) == 1)
    return "6" + std::string(reinterpret_cast<const char*>(&a6), sizeof a6);
  return std::nullopt;
}

bool host_allowed(const AdminAccess& access, const std::string& host) {
  const HostPort bound{access.bound_host, 0};
  if (const auto ip = ip_bytes(host)) {
    // Any literal names this machine when the API listens on every address.
    if (access.bound_host == "0.0.0.0" || access.bound_host == "::") return true;
    return ip == ip_bytes(access.bound_host);
  }
  if (host == "localhost")
    return bound.is_loopback() || access.bound_host == "0.0.0.0" || access.bound_host == "::";
  return std::find(access.names.begin(), access.names.end(), host) != access.names.end();
}

}  // namespace

std::optional<HttpResponse> check_access(const AdminAccess& access, const HttpRequest& request) {
  // DNS rebinding: a web page whose name was re-pointed at this address
  // reaches the API with its own name in Host. Browsers always send Host;
  // only an HTTP/1.0 client (a script) may leave it out.
  if (request.host) {
    const auto host = host_part(*request.host);
    if (!host || !host_allowed(access, *host)) {
      return error(403,
                   "Host does not name this admin API; call it by its address, or start the "
                   "relay with --admin-host NAME");
    }
  } else if (request.version != "HTTP/1.0") {
    return error(400, "Host header missing (HTTP/1.1 requires it)");
  }
  // A page of another origin (cross-site request forgery). Browsers send
  // Origin with every POST and DELETE, and with cross-origin GETs.
  if (request.origin) {
    const std::string own = request.host ? std::string(access.tls ? "https://" : "http://") +
                                               tunnel::text::lower(*request.host)
                                         : std::string();
    if (own.empty() || tunnel::text::lower(*request.origin) != own)
      return error(403, "cross-origin request refused: the admin API serves no web page");
  }
  if (request.sec_fetch_site && *request.sec_fetch_site != "same-origin" &&
      *request.sec_fetch_site != "none") {
    return error(403, "cross-site request refused: the admin API serves no web page");
  }
  if (!access.token.empty()) {
    std::string_view given = request.authorization ? std::string_view(*request.authorization) : "";
    constexpr std::string_view scheme = "bearer ";
    const bool bearer = given.size() > scheme.size() &&
                        tunnel::text::iequals(given.substr(0, scheme.size()), scheme);
    if (!bearer || !same_secret(tunnel::text::trim(given.substr(scheme.size())), access.token)) {
      HttpResponse r = error(401,
                             "this admin API needs the bearer token of --admin-token-file "
                             "(Authorization: Bearer <token>)");
      r.ask_for_token = true;
      return r;
    }
  }
  // A body of another type is what an HTML form or a no-preflight fetch()
  // sends; JSON needs a CORS preflight, which this API never grants.
  if (request.content_length > 0) {
    const std::string_view type =
        request.content_type ? std::string_view(*request.content_type) : std::string_view();
    if (!tunnel::text::iequals(tunnel::text::trim(type.substr(0, type.find(';'))),
                               "application/json")) {
      return error(415, "the body must be sent with Content-Type: application/json");
    }
  }
  return std::nullopt;
}

std::string format_response(const HttpResponse& r) {
  std::string out =
      "HTTP/1.1 " + std::to_string(r.status) + " " + std::string(reason_phrase(r.status)) + "\r\n";
  out += "Content-Type: application/json\r\nContent-Length: " + std::to_string(r.body.size()) +
         "\r\nConnection: close\r\nCache-Control: no-store\r\n";
  if (r.ask_for_token) out += "WWW-Authenticate: Bearer\r\n";
  out += "\r\n";
  out += r.body;
  return out;
}

AdminApi::AdminApi(TunnelControl& control, std::chrono::seconds default_lifetime,
                   std::chrono::seconds max_lifetime)
    : control_(control), default_lifetime_(default_lifetime), max_lifetime_(max_lifetime) {}

HttpResponse AdminApi::handle(std::string_view method, std::string_view target,
                              std::string_view body) {
  std::string_view path = target.substr(0, target.find('?'));
  while (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  constexpr std::string_view collection = "/tunnels";
  if (path == collection) {
    if (method == "POST") return open(body);
    if (method == "GET") return list();
    return error(405, "use GET or POST on /tunnels");
  }
  if (path.size() > collection.size() + 1 && path.substr(0, collection.size() + 1) == "/tunnels/") {
    const std::string_view id = path.substr(collection.size() + 1);
    if (method == "DELETE") {
      if (!control_.close_tunnel(id, "closed through the admin API"))
        return error(404, "no tunnel with id '" + std::string(id) + "'");
      return HttpResponse{200, json{{"tunnelId", id}, {"status", "CLOSED"}}.dump()};
    }
    if (method == "GET") {
      for (const TunnelView& t : control_.tunnels())
        if (t.id == id) return HttpResponse{200, to_json(t).dump()};
      return error(404, "no tunnel with id '" + std::string(id) + "'");
    }
    return error(405, "use GET or DELETE on /tunnels/<id>");
  }
  return error(404, "unknown path; the API is POST/GET /tunnels, GET/DELETE /tunnels/<id>");
}

HttpResponse AdminApi::open(std::string_view body) {
  std::vector<std::string> services;
  std::chrono::seconds lifetime = default_lifetime_;
  if (!tunnel::text::trim(body).empty()) {
    const json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_object())
      return error(
          400, "body must be a JSON object like {\"services\":[\"SSH\"],\"lifetimeSeconds\":3600}");
    if (const auto it = doc.find("services"); it != doc.end() && !it->is_null()) {
      if (!it->is_array()) return error(400, "services must be an array of strings");
      for (const json& s : *it) {
        if (!s.is_string()) return error(400, "services must be an array of strings");
        services.push_back(s.get<std::string>());
      }
    }
    if (const auto it = doc.find("lifetimeSeconds"); it != doc.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<long long>() < 1 ||
          it->get<long long>() > max_lifetime_.count())
        return error(400, "lifetimeSeconds must be an integer in 1.." +
                              std::to_string(max_lifetime_.count()));
      lifetime = std::chrono::seconds(it->get<long long>());
    }
  }
  std::string thing;
  if (!tunnel::text::trim(body).empty()) {
    const json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (const auto it = doc.find("thingName"); it != doc.end() && !it->is_null()) {
      if (!it->is_string() || !valid_thing_name(it->get_ref<const std::string&>()))
        return error(400,
                     "thingName must be 1 to 128 characters of A-Z, a-z, 0-9, ':', '_' and '-'");
      thing = it->get<std::string>();
      if (notifier_ == nullptr)
        return error(400, "thingName needs a relay started with --notify-broker");
      if (services.empty())
        return error(400, "thingName needs services: the notification tells the device which");
    }
  }
  std::string why;
  if (!valid_service_list(services, why)) return error(400, why);
  const std::vector<std::string> notified_services = services;
  const std::optional<OpenedTunnel> opened =
      control_.open_tunnel(std::move(services), lifetime, why);
  if (!opened) return error(503, why + "; close a tunnel or try again later");
  const OpenedTunnel& t = *opened;
  json reply{{"tunnelId", t.id},
             {"sourceAccessToken", t.source_token},
             {"destinationAccessToken", t.destination_token}};
  if (!thing.empty()) {
    if (!notifier_->notify(thing, t.destination_token, notified_services, why)) {
      control_.close_tunnel(t.id, "the notification could not be published");
      return error(502, why);
    }
    reply["thingName"] = thing;
    reply["notified"] = true;
  }
  return HttpResponse{200, reply.dump()};
}

HttpResponse AdminApi::list() const {
  json arr = json::array();
  for (const TunnelView& t : control_.tunnels()) arr.push_back(to_json(t));
  return HttpResponse{200, json{{"tunnels", std::move(arr)}}.dump()};
}

namespace {

// One read buffer for every admin connection, and one for the plaintext TLS
// gives back: what is read is consumed before the callback returns.
char g_read_buffer[std::size_t{64} * 1024];
char g_plain_buffer[std::size_t{16} * 1024];

// Answered without reading the request when max_connections are open.
const std::string& busy_response() {
  static const std::string text =
      format_response(error(503, "too many admin connections at once; try again in a moment"));
  return text;
}

SSL_CTX* make_admin_tls(const std::string& cert, const std::string& key, std::string& error) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  const char* step = nullptr;
  if (ctx == nullptr)
    step = "cannot create a TLS context";
  else if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
    step = "cannot require TLS 1.2";
  else if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1)
    step = "cannot load the certificate (--tls-cert)";
  else if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
    step = "cannot load the key (--tls-key)";
  else if (SSL_CTX_check_private_key(ctx) != 1)
    step = "the key does not match the certificate";
  if (step != nullptr) {
    error = std::string("admin API: ") + step + ": " + tunnel::tls_error_text();
    SSL_CTX_free(ctx);
    return nullptr;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  return ctx;
}

std::string peer_name(const uv_tcp_t* tcp) {
  sockaddr_storage sa{};
  int len = sizeof sa;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return "?";
  char ip[INET6_ADDRSTRLEN] = "?";
  if (sa.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&sa);
    uv_ip6_name(a, ip, sizeof ip);
    return "[" + std::string(ip) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&sa);
  uv_ip4_name(a, ip, sizeof ip);
  return std::string(ip) + ":" + std::to_string(ntohs(a->sin_port));
}

}  // namespace

// One admin connection: read one request, answer it, close. Owns two uv
// handles and deletes itself once both are closed. With TLS, OpenSSL works
// on memory BIOs between the socket and the request.
class AdminServer::Connection {
 public:
  explicit Connection(AdminServer& server) : server_(&server) {
    uv_tcp_init(server.loop_, &tcp_);
    uv_timer_init(server.loop_, &timer_);
    tcp_.data = this;
    timer_.data = this;
  }
  ~Connection() {
    if (ssl_ != nullptr) SSL_free(ssl_);  // frees both BIOs
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // `busy`: the server is at its connection limit; answer 503 and close.
  void start(uv_stream_t* listener, bool busy) {
    if (uv_accept(listener, stream()) != 0) {
      close();
      return;
    }
    if (busy) {
      // Nothing is queued for a refused client: what the socket does not
      // take at once is dropped with the connection.
      if (server_->tls_ == nullptr) {
        const std::string& busy_text = busy_response();
        uv_buf_t b = uv_buf_init(const_cast<char*>(busy_text.data()),
                                 static_cast<unsigned>(busy_text.size()));
        uv_try_write(stream(), &b, 1);
      }
      close();
      return;
    }
    peer_ = peer_name(&tcp_);
    if (server_->tls_ != nullptr) {
      ssl_ = SSL_new(server_->tls_);
      BIO* in = BIO_new(BIO_s_mem());
      BIO* out = BIO_new(BIO_s_mem());
      if (ssl_ == nullptr || in == nullptr || out == nullptr) {
        BIO_free(in);
        BIO_free(out);
        close();
        return;
      }
      SSL_set_bio(ssl_, in, out);
      SSL_set_accept_state(ssl_);
      tls_out_ = out;
      tls_in_ = in;
    }
    uv_timer_start(&timer_, &Connection::on_timeout, server_->options_.request_timeout_ms, 0);
    uv_read_start(stream(), &Connection::on_alloc, &Connection::on_read);
  }

  void close() {
    if (closing_) return;
    closing_ = true;
    if (server_ != nullptr) server_->connections_.erase(this);
    server_ = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Connection::on_closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Connection::on_closed);
  }

 private:
  struct Write {
    uv_write_t req{};
    std::string data;
    Connection* connection = nullptr;
  };

  uv_stream_t* stream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  static void on_alloc(uv_handle_t*, std::size_t, uv_buf_t* buf) {
    *buf = uv_buf_init(g_read_buffer, sizeof g_read_buffer);
  }

  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* self = static_cast<Connection*>(s->data);
    if (n < 0) {
      self->close();
      return;
    }
    if (self->closing_ || self->responded_) return;
    if (self->ssl_ == nullptr) {
      self->data_.append(buf->base, static_cast<std::size_t>(n));
    } else if (!self->decrypt(buf->base, static_cast<std::size_t>(n))) {
      self->close();
      return;
    }
    self->advance();
  }

  // Feeds ciphertext to TLS and appends the plaintext it yields; sends what
  // TLS has to say (handshake). False when the connection is over.
  bool decrypt(const char* data, std::size_t n) {
    if (BIO_write(tls_in_, data, static_cast<int>(n)) != static_cast<int>(n)) return false;
    for (;;) {
      const int got = SSL_read(ssl_, g_plain_buffer, static_cast<int>(sizeof g_plain_buffer));
      if (got > 0) {
        data_.append(g_plain_buffer, static_cast<std::size_t>(got));
        continue;
      }
      const int e = SSL_get_error(ssl_, got);
      if (e == SSL_ERROR_WANT_READ) break;
      if (e != SSL_ERROR_ZERO_RETURN)
        log()->debug("{}: TLS handshake or record refused: {}", peer_, tunnel::tls_error_text());
      ERR_clear_error();
      flush_tls();
      return false;
    }
    flush_tls();
    return true;
  }

  void flush_tls() {
    char* p = nullptr;
    const long pending = BIO_get_mem_data(tls_out_, &p);
    if (pending <= 0) return;
    std::string out(p, static_cast<std::size_t>(pending));
    (void)BIO_reset(tls_out_);
    send_raw(std::move(out));
  }

  void send(std::string text) {
    if (ssl_ == nullptr) {
      send_raw(std::move(text));
      return;
    }
    // Memory BIOs take everything once the handshake is done; before that
    // (a timeout or an error mid-handshake) there is nobody to answer.
    if (SSL_is_init_finished(ssl_) != 1 ||
        SSL_write(ssl_, text.data(), static_cast<int>(text.size())) !=
            static_cast<int>(text.size())) {
      ERR_clear_error();
      return;
    }
    flush_tls();
  }

  void send_raw(std::string data) {
    auto* w = new Write;
    w->data = std::move(data);
    w->connection = this;
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    if (uv_write(&w->req, stream(), &b, 1, &Connection::on_written) != 0) {
      delete w;
      close();
      return;
    }
    ++pending_writes_;
  }

  static void on_written(uv_write_t* req, int status) {
    auto* w = reinterpret_cast<Write*>(req);
    Connection* self = w->connection;
    delete w;
    --self->pending_writes_;
    if (status < 0 || (self->responded_ && self->pending_writes_ == 0)) self->close();
  }

  void advance() {
    if (head_len_ == 0) {
      const long r = parse_request_head(data_, request_, kMaxHead, kMaxBody);
      if (r == 0) return;
      if (r < 0) {
        respond(error(static_cast<int>(-r), "malformed or oversized request"), false);
        return;
      }
      head_len_ = static_cast<std::size_t>(r);
      // Refused before the body is waited for (a 401 needs no body).
      if (auto refused = check_access(server_->options_.access, request_)) {
        respond(*refused, true);
        return;
      }
      if (request_.expect_continue && data_.size() < head_len_ + request_.content_length)
        send("HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (data_.size() < head_len_ + request_.content_length) return;
    const std::string_view body(data_.data() + head_len_, request_.content_length);
    HttpResponse r;
    try {
      r = server_->api_.handle(request_.method, request_.target, body);
    } catch (const std::exception& e) {
      r = error(500, e.what());
    }
    respond(r, true);
  }

  // `parsed`: the request line was read (else only the status is logged).
  void respond(const HttpResponse& r, bool parsed) {
    if (responded_ || closing_) return;
    responded_ = true;
    uv_read_stop(stream());
    // Only printable text reaches the log: the request line was checked
    // by the parser, and is cut here to keep one line short.
    if (parsed) {
      log()->info("{} {} {} -> {}", peer_, tunnel::printable_ascii(request_.method, 16),
                  tunnel::printable_ascii(request_.target, 200), r.status);
    } else {
      log()->info("{} request refused -> {}", peer_, r.status);
    }
    // As long again to take the answer as to send the request: a client
    // that never reads holds its connection no longer.
    uv_timer_start(&timer_, &Connection::on_timeout, server_->options_.request_timeout_ms, 0);
    send(format_response(r));
    if (ssl_ != nullptr && SSL_is_init_finished(ssl_) == 1) {
      SSL_shutdown(ssl_);
      flush_tls();
    }
    if (pending_writes_ == 0) close();
  }

  static void on_timeout(uv_timer_t* t) {
    auto* self = static_cast<Connection*>(t->data);
    if (self->responded_) {
      log()->debug("{}: the answer was not taken in time; closing", self->peer_);
      self->close();
      return;
    }
    self->respond(error(408, "request not received in time"), self->head_len_ != 0);
  }

  static void on_closed(uv_handle_t* h) {
    auto* self = static_cast<Connection*>(h->data);
    if (++self->closed_handles_ == 2) delete self;
  }

  AdminServer* server_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  SSL* ssl_ = nullptr;
  BIO* tls_in_ = nullptr;   // owned by ssl_
  BIO* tls_out_ = nullptr;  // owned by ssl_
  std::string peer_;
  std::string data_;
  HttpRequest request_;
  std::size_t head_len_ = 0;
  int pending_writes_ = 0;
  bool responded_ = false;
  bool closing_ = false;
  int closed_handles_ = 0;
};

AdminServer::AdminServer(uv_loop_t* loop, AdminApi& api, AdminServerOptions options)
    : loop_(loop), api_(api), options_(std::move(options)) {}

AdminServer::~AdminServer() {
  close();
  if (tls_ != nullptr) SSL_CTX_free(tls_);
}

bool AdminServer::listen(const HostPort& at, HostPort& bound, std::string& error) {
  sockaddr_storage addr{};
  int rc = at.host.find(':') != std::string::npos
               ? uv_ip6_addr(at.host.c_str(), at.port, reinterpret_cast<sockaddr_in6*>(&addr))
               : uv_ip4_addr(at.host.c_str(), at.port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) {
    error = "bad admin address " + at.to_string();
    return false;
  }
  if (!options_.tls_cert.empty()) {
    tls_ = make_admin_tls(options_.tls_cert, options_.tls_key, error);
    if (tls_ == nullptr) return false;
  }
  listener_ = new uv_tcp_t;
  uv_tcp_init(loop_, listener_);
  listener_->data = this;
  rc = uv_tcp_bind(listener_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 64, &AdminServer::on_connection);
  if (rc != 0) {
    error = "cannot listen on " + at.to_string() + ": " + uv_strerror(rc);
    close();
    return false;
  }
  sockaddr_storage got{};
  int len = sizeof(got);
  uv_tcp_getsockname(listener_, reinterpret_cast<sockaddr*>(&got), &len);
  bound = at;
  bound.port = ntohs(got.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
  return true;
}

void AdminServer::on_connection(uv_stream_t* listener, int status) {
  auto* self = static_cast<AdminServer*>(listener->data);
  if (status < 0) {
    log()->warn("admin accept failed: {}", uv_strerror(status));
    return;
  }
  const bool busy = self->connections_.size() >= self->options_.max_connections;
  if (busy && !self->refusing_) {
    log()->warn("{} admin connections open, the limit: refusing new ones until one ends",
                self->options_.max_connections);
  }
  self->refusing_ = busy;
  auto* c = new Connection(*self);
  if (!busy) self->connections_.insert(c);
  c->start(listener, busy);
}

void AdminServer::close() {
  if (listener_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(listener_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
    listener_ = nullptr;
  }
  // Connection::close() erases itself from the set.
  while (!connections_.empty()) (*connections_.begin())->close();
}

}  // namespace relay
