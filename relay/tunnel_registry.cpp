#include "tunnel_registry.h"

#include <utility>

namespace relay {

std::string_view to_string(Role r) { return r == Role::source ? "source" : "destination"; }

std::optional<Role> parse_role(std::string_view mode) {
  if (mode == "source") return Role::source;
  if (mode == "destination") return Role::destination;
  return std::nullopt;
}

std::string_view to_string(TunnelStatus s) { return s == TunnelStatus::open ? "OPEN" : "CLOSED"; }

TunnelRegistry::TunnelRegistry(TokenSource tokens, RegistryLimits limits)
    : tokens_(std::move(tokens)), limits_(limits) {}

bool TunnelRegistry::full(std::string& error) const {
  if (open_count_ < limits_.max_open) return false;
  error = std::to_string(open_count_) + " tunnels are open, the relay's limit (--max-open-tunnels)";
  return true;
}

Tunnel& TunnelRegistry::insert(std::string source_token, std::string destination_token,
                               std::vector<std::string> services) {
  const std::size_t n = next_id_++;
  Tunnel& t = tunnels_[n];
  t.id = "t" + std::to_string(n);
  t.services = std::move(services);
  by_token_[source_token] = TokenRef{t.id, Role::source};
  by_token_[destination_token] = TokenRef{t.id, Role::destination};
  t.end(Role::source).access_token = std::move(source_token);
  t.end(Role::destination).access_token = std::move(destination_token);
  by_id_[t.id] = n;
  ++open_count_;
  return t;
}

const Tunnel* TunnelRegistry::add(std::string source_token, std::string destination_token,
                                  std::vector<std::string> services, std::string& error) {
  if (source_token.empty() || destination_token.empty() || source_token == destination_token) {
    error = "a tunnel needs two distinct, non-empty access tokens";
    return nullptr;
  }
  if (by_token_.count(source_token) != 0 || by_token_.count(destination_token) != 0) {
    error = "access token already used by another tunnel";
    return nullptr;
  }
  if (full(error)) return nullptr;
  return &insert(std::move(source_token), std::move(destination_token), std::move(services));
}

const Tunnel* TunnelRegistry::open(std::vector<std::string> services, std::string& error) {
  if (full(error)) return nullptr;
  // Random tokens do not collide in practice; the loop makes it a guarantee.
  std::string src;
  do {
    src = tokens_();
  } while (by_token_.count(src) != 0);
  std::string dst;
  do {
    dst = tokens_();
  } while (dst == src || by_token_.count(dst) != 0);
  return &insert(std::move(src), std::move(dst), std::move(services));
}

Admission TunnelRegistry::admit(std::string_view access_token, Role mode,
                                std::string_view client_token) const {
  Admission a;
  const auto it = by_token_.find(std::string(access_token));
  if (it == by_token_.end()) {
    a.http_status = 401;
    a.reason = "unknown access token";
    return a;
  }
  const Tunnel& t = *find(it->second.tunnel_id);
  a.tunnel_id = t.id;
  a.role = it->second.role;
  if (t.status == TunnelStatus::closed) {
    a.http_status = 410;
    a.reason = "tunnel " + t.id + " is closed";
    return a;
  }
  if (mode != a.role) {
    a.http_status = 403;
    a.reason = "local-proxy-mode=" + std::string(to_string(mode)) +
               " does not match the access token, which is the " + std::string(to_string(a.role)) +
               " token of tunnel " + t.id;
    return a;
  }
  const TunnelEnd& end = t.end(a.role);
  if (end.ever_connected) {
    // Tokens are single use; a reconnect is allowed only with the client
    // token of the first connection (docs/protocol.md section 2).
    if (end.client_token.empty() || client_token != end.client_token) {
      a.http_status = 401;
      a.reason =
          "the " + std::string(to_string(a.role)) + " access token of tunnel " + t.id +
          " was already used" +
          (end.client_token.empty() ? " (its first connection sent no client-token)"
                                    : " (client-token does not match the first connection's)");
      return a;
    }
    a.replaces_connected = end.connected;
  }
  return a;
}

void TunnelRegistry::attach(std::string_view tunnel_id, Role role, std::string_view client_token) {
  Tunnel* t = find_mutable(tunnel_id);
  if (t == nullptr) return;
  TunnelEnd& end = t->end(role);
  if (!end.ever_connected) end.client_token = std::string(client_token);
  end.ever_connected = true;
  end.connected = true;
}

void TunnelRegistry::detach(std::string_view tunnel_id, Role role) {
  if (Tunnel* t = find_mutable(tunnel_id)) t->end(role).connected = false;
}

bool TunnelRegistry::close(std::string_view tunnel_id) {
  const auto it = by_id_.find(std::string(tunnel_id));
  if (it == by_id_.end()) return false;
  const std::size_t n = it->second;
  Tunnel& t = tunnels_.at(n);
  if (t.status == TunnelStatus::closed) return true;
  t.status = TunnelStatus::closed;
  for (TunnelEnd& end : t.ends) end.connected = false;
  --open_count_;
  closed_.push_back(n);
  while (closed_.size() > limits_.max_closed) {
    forget(closed_.front());
    closed_.pop_front();
  }
  return true;
}

void TunnelRegistry::forget(std::size_t n) {
  const auto it = tunnels_.find(n);
  if (it == tunnels_.end()) return;
  for (const TunnelEnd& end : it->second.ends) by_token_.erase(end.access_token);
  by_id_.erase(it->second.id);
  tunnels_.erase(it);
}

Tunnel* TunnelRegistry::find_mutable(std::string_view tunnel_id) {
  const auto it = by_id_.find(std::string(tunnel_id));
  return it == by_id_.end() ? nullptr : &tunnels_.at(it->second);
}

const Tunnel* TunnelRegistry::find(std::string_view tunnel_id) const {
  const auto it = by_id_.find(std::string(tunnel_id));
  return it == by_id_.end() ? nullptr : &tunnels_.at(it->second);
}

std::vector<const Tunnel*> TunnelRegistry::list() const {
  std::vector<const Tunnel*> out;
  out.reserve(tunnels_.size());
  for (const auto& [n, t] : tunnels_) out.push_back(&t);
  return out;
}

}  // namespace relay
