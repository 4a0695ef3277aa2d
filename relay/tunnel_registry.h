// The tunnels a relay knows, their access tokens and the admission rules of
// docs/protocol.md section 2 seen from the service side. Pure: no sockets, no loop,
// no clock; the relay server drives it and owns the connections.
#pragma once

#include <array>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace relay {

enum class Role { source = 0, destination = 1 };
std::string_view to_string(Role r);
std::optional<Role> parse_role(std::string_view mode);  // "source" | "destination"
inline Role peer_of(Role r) { return r == Role::source ? Role::destination : Role::source; }
inline std::size_t index_of(Role r) { return static_cast<std::size_t>(r); }

enum class TunnelStatus { open, closed };
std::string_view to_string(TunnelStatus s);  // "OPEN" | "CLOSED"

struct TunnelEnd {
  std::string access_token;
  bool ever_connected = false;  // tokens are single use (see admit())
  std::string client_token;     // sent by the first connection; empty = none
  bool connected = false;
};

struct Tunnel {
  std::string id;
  std::vector<std::string> services;  // empty: a V1 tunnel
  TunnelStatus status = TunnelStatus::open;
  std::array<TunnelEnd, 2> ends;  // indexed by index_of(Role)

  TunnelEnd& end(Role r) { return ends[index_of(r)]; }
  const TunnelEnd& end(Role r) const { return ends[index_of(r)]; }
};

// The answer to a handshake. `http_status` is 0 when admitted, else the 4xx to
// send. `reason` is for the response body and the log: it never holds a token.
struct Admission {
  int http_status = 0;
  std::string reason;
  std::string tunnel_id;
  Role role = Role::source;
  bool replaces_connected = false;  // a live connection of this end will be replaced

  bool admitted() const { return http_status == 0; }
};

// What the registry holds at most, so that a relay that runs for months
// keeps a bounded memory (docs/relay.md, "Limits").
struct RegistryLimits {
  // Open tunnels; open() and add() refuse more.
  std::size_t max_open = 10'000;
  // Closed tunnels remembered, so that their tokens are answered 410 (gone)
  // rather than 401 (unknown) and GET /tunnels still shows them. Beyond this,
  // the oldest closed tunnel is forgotten. About 1 KiB each.
  std::size_t max_closed = 1'000;
};

class TunnelRegistry {
 public:
  // Produces fresh random access tokens (url-safe); injected so tests are
  // deterministic and the registry stays free of OpenSSL.
  using TokenSource = std::function<std::string()>;

  explicit TunnelRegistry(TokenSource tokens, RegistryLimits limits = {});

  // A tunnel with the given tokens (--tunnel). Ids are t1, t2, ... in creation
  // order, shared with open(). Returns nullptr and sets `error` when a token
  // is already in use or max_open tunnels are open.
  const Tunnel* add(std::string source_token, std::string destination_token,
                    std::vector<std::string> services, std::string& error);
  // A tunnel with fresh tokens (admin API). Returns nullptr and sets `error`
  // when max_open tunnels are open.
  const Tunnel* open(std::vector<std::string> services, std::string& error);

  // Decides a handshake without changing anything. `client_token` is empty when
  // the request had none (its format is checked by the caller).
  Admission admit(std::string_view access_token, Role mode, std::string_view client_token) const;

  // A handshake admitted by admit() completed: the end is connected now.
  void attach(std::string_view tunnel_id, Role role, std::string_view client_token);
  // The connection of an end went away (closed or replaced).
  void detach(std::string_view tunnel_id, Role role);
  // Marks the tunnel closed: later handshakes get 410 while it is among the
  // max_closed most recently closed, 401 (unknown token) once forgotten. May
  // forget the oldest closed tunnel, or this one when max_closed is 0: a
  // pointer to a closed tunnel is not valid after close(). False for an
  // unknown id.
  bool close(std::string_view tunnel_id);

  const Tunnel* find(std::string_view tunnel_id) const;
  // All tunnels in creation order (the remembered closed ones included).
  std::vector<const Tunnel*> list() const;
  std::size_t open_count() const { return open_count_; }

 private:
  struct TokenRef {
    std::string tunnel_id;
    Role role;
  };
  Tunnel* find_mutable(std::string_view tunnel_id);
  Tunnel& insert(std::string source_token, std::string destination_token,
                 std::vector<std::string> services);
  bool full(std::string& error) const;
  void forget(std::size_t n);

  TokenSource tokens_;
  RegistryLimits limits_;
  std::size_t next_id_ = 1;
  std::size_t open_count_ = 0;
  std::deque<std::size_t> closed_;         // creation numbers, in the order closed
  std::map<std::size_t, Tunnel> tunnels_;  // by creation number
  std::unordered_map<std::string, std::size_t> by_id_;
  std::unordered_map<std::string, TokenRef> by_token_;
};

}  // namespace relay
