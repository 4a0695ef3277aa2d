#include "admin_api.h"
#include "text.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>

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
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
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

long parse_request_head(std::string_view data, HttpRequest& out, std::size_t max_head,
                        std::size_t max_body) {
  const std::size_t end = data.find("\r\n\r\n");
  if (end == std::string_view::npos) return data.size() > max_head ? -431 : 0;
  if (end + 4 > max_head) return -431;
  std::string_view head = data.substr(0, end + 2);

  const std::size_t line_end = head.find("\r\n");
  const std::string_view line = head.substr(0, line_end);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = line.rfind(' ');
  // METHOD SP TARGET SP VERSION: neither the method nor the target is empty.
  if (sp1 == std::string_view::npos || sp2 == sp1 || sp1 == 0 || sp2 == sp1 + 1) return -400;
  out.method = std::string(line.substr(0, sp1));
  out.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  const std::string_view version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return -505;

  head.remove_prefix(line_end + 2);
  bool have_length = false;
  while (!head.empty()) {
    const std::size_t eol = head.find("\r\n");
    const std::string_view field = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    const std::size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return -400;
    const std::string_view name = field.substr(0, colon);
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
    }
  }
  return static_cast<long>(end + 4);
}

std::string format_response(const HttpResponse& r) {
  std::string out =
      "HTTP/1.1 " + std::to_string(r.status) + " " + std::string(reason_phrase(r.status)) + "\r\n";
  out += "Content-Type: application/json\r\nContent-Length: " + std::to_string(r.body.size()) +
         "\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n";
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

// One admin connection: read one request, answer it, close. Owns two uv
// handles and deletes itself once both are closed.
class AdminServer::Connection {
 public:
  explicit Connection(AdminServer& server) : server_(&server) {
    uv_tcp_init(server.loop_, &tcp_);
    uv_timer_init(server.loop_, &timer_);
    tcp_.data = this;
    timer_.data = this;
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  void start(uv_stream_t* listener) {
    if (uv_accept(listener, reinterpret_cast<uv_stream_t*>(&tcp_)) != 0) {
      close();
      return;
    }
    uv_timer_start(&timer_, &Connection::on_timeout, kRequestTimeoutMs, 0);
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), &Connection::on_alloc,
                  &Connection::on_read);
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
  static void on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* self = static_cast<Connection*>(h->data);
    *buf = uv_buf_init(self->read_buf_.data(), static_cast<unsigned>(self->read_buf_.size()));
  }

  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* self = static_cast<Connection*>(s->data);
    if (n < 0) {
      self->close();
      return;
    }
    self->data_.append(buf->base, static_cast<std::size_t>(n));
    self->advance();
  }

  void advance() {
    if (head_len_ == 0) {
      const long r = parse_request_head(data_, request_, kMaxHead, kMaxBody);
      if (r == 0) return;
      if (r < 0) {
        respond(error(static_cast<int>(-r), "malformed or oversized request"));
        return;
      }
      head_len_ = static_cast<std::size_t>(r);
      if (request_.expect_continue && data_.size() < head_len_ + request_.content_length) {
        interim_ = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init(interim_.data(), static_cast<unsigned>(interim_.size()));
        uv_write(&interim_req_, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1, nullptr);
      }
    }
    if (data_.size() < head_len_ + request_.content_length) return;
    const std::string_view body(data_.data() + head_len_, request_.content_length);
    HttpResponse r;
    try {
      r = server_->api_.handle(request_.method, request_.target, body);
    } catch (const std::exception& e) {
      r = error(500, e.what());
    }
    log()->info("{} {} -> {}", request_.method, request_.target, r.status);
    respond(r);
  }

  void respond(const HttpResponse& r) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    uv_timer_stop(&timer_);
    response_ = format_response(r);
    uv_buf_t b = uv_buf_init(response_.data(), static_cast<unsigned>(response_.size()));
    if (uv_write(&write_req_, reinterpret_cast<uv_stream_t*>(&tcp_), &b, 1,
                 &Connection::on_written) != 0)
      close();
  }

  static void on_written(uv_write_t* req, int) {
    auto* self = static_cast<Connection*>(req->handle->data);
    self->close();
  }

  static void on_timeout(uv_timer_t* t) {
    auto* self = static_cast<Connection*>(t->data);
    self->respond(error(408, "request not received in time"));
  }

  static void on_closed(uv_handle_t* h) {
    auto* self = static_cast<Connection*>(h->data);
    if (++self->closed_handles_ == 2) delete self;
  }

  AdminServer* server_;
  uv_tcp_t tcp_{};
  uv_timer_t timer_{};
  uv_write_t write_req_{};
  uv_write_t interim_req_{};
  std::array<char, std::size_t{16} * 1024> read_buf_{};
  std::string data_;
  HttpRequest request_;
  std::size_t head_len_ = 0;
  std::string interim_;
  std::string response_;
  bool closing_ = false;
  int closed_handles_ = 0;
};

AdminServer::AdminServer(uv_loop_t* loop, AdminApi& api) : loop_(loop), api_(api) {}

AdminServer::~AdminServer() { close(); }

bool AdminServer::listen(const HostPort& at, HostPort& bound, std::string& error) {
  sockaddr_storage addr{};
  int rc = at.host.find(':') != std::string::npos
               ? uv_ip6_addr(at.host.c_str(), at.port, reinterpret_cast<sockaddr_in6*>(&addr))
               : uv_ip4_addr(at.host.c_str(), at.port, reinterpret_cast<sockaddr_in*>(&addr));
  if (rc != 0) {
    error = "bad admin address " + at.to_string();
    return false;
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
  auto* c = new Connection(*self);
  self->connections_.insert(c);
  c->start(listener);
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
