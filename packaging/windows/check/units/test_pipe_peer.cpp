#include <doctest/doctest.h>

#include "pipe_peer.h"

using tunneld::platform::win::judge_pipe_peer;
using tunneld::platform::win::PipePeer;

TEST_CASE("pipe peer: SYSTEM and elevated administrators may modify") {
  PipePeer system;
  system.identified = true;
  system.system = true;
  system.user_sid = "S-1-5-18";
  CHECK(judge_pipe_peer(system).may_modify);
  CHECK(judge_pipe_peer(system).refusal.empty());

  PipePeer admin;
  admin.identified = true;
  admin.user_sid = "S-1-5-21-1-2-3-500";
  admin.administrators_enabled = true;
  CHECK(judge_pipe_peer(admin).may_modify);
}

TEST_CASE("pipe peer: an administrator without elevation is told to elevate") {
  PipePeer peer;
  peer.identified = true;
  peer.user_sid = "S-1-5-21-1-2-3-1001";
  peer.administrators_deny_only = true;
  const auto verdict = judge_pipe_peer(peer);
  CHECK_FALSE(verdict.may_modify);
  CHECK(verdict.refusal.find("S-1-5-21-1-2-3-1001") != std::string::npos);
  CHECK(verdict.refusal.find("without elevation") != std::string::npos);
  CHECK(verdict.refusal.find("Run as administrator") != std::string::npos);
}

TEST_CASE("pipe peer: other users and unidentified clients are refused with a reason") {
  PipePeer user;
  user.identified = true;
  user.user_sid = "S-1-5-21-1-2-3-1002";
  const auto verdict = judge_pipe_peer(user);
  CHECK_FALSE(verdict.may_modify);
  CHECK(verdict.refusal.find("neither SYSTEM nor a member of Administrators") != std::string::npos);

  PipePeer anonymous;  // identified == false even if the flags say otherwise
  anonymous.administrators_enabled = true;
  CHECK_FALSE(judge_pipe_peer(anonymous).may_modify);
  CHECK(judge_pipe_peer(anonymous).refusal.find("identity") != std::string::npos);
}
