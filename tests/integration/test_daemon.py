#!/usr/bin/python3
"""tunneld and tunnelctl end to end: the real daemon, the real control socket,
sessions through the real relay over TLS, restarts, permissions, hostile
control clients, secrets, signals, the config file, sd_notify and journald.

    python3 tests/integration/test_daemon.py BUILD_DIR [CASE_SUBSTRING...]

Every daemon runs in the case's temp dir with its own --socket and
--state-dir (never /run or /var/lib) and --log stderr unless the case is
about journald. Cases that need root (another user, a mount namespace) print
SKIP when they cannot run; the script exits 77 when every selected case was
skipped.
"""
import contextlib
import errno
import grp
import json
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from hostile_service import _varint as _enc_varint  # noqa: E402  (one protobuf varint encoder)
from harness import (Harness, Runner, TestFailure, assert_no_secret, check,  # noqa: E402
                     connect, echo_roundtrip, new_client_token, scaled, wait_for_echo)

MiB = 1 << 20

# Control protocol (proto/control.proto): Response.Status values and Request
# body field numbers.
OK, BAD_VERSION, BAD_LENGTH, MALFORMED, UNAUTHORIZED = 1, 2, 3, 4, 5
INVALID_ARGUMENT = 7
REQ_OPEN, REQ_LIST, REQ_VERSION = 10, 11, 14
MAX_REQUEST = 64 * 1024  # daemon/control/control_codec.h kMaxRequestSize

# tunnelctl exit statuses (docs/tunnelctl.md).
EXIT_PERMISSION = 4

# Reconnect quickly after a daemon restart; the defaults are for the cloud.
FAST_RECONNECT = {
    "tunneling": {"proxy": {"websocket": {
        "retry_delay_ms": "200", "retry_max_delay_ms": "1000"}}}}


# --------------------------------------------------------------------------
# Requirements and skipping


class DaemonRunner(Runner):
    """Runner whose cases may name a requirement: a function returning None
    when the case can run, else the reason to skip it. Skipped cases print
    `SKIP suite: case: reason`; if every selected case is skipped the script
    exits 77 (meson's "skipped")."""

    def __init__(self, suite: str):
        super().__init__(suite)
        self.requirements: dict[str, callable] = {}

    def case(self, name: str, requires=None):
        if requires is not None:
            self.requirements[name] = requires
        return super().case(name)

    def main(self):
        selected = [(n, f) for n, f in self.cases
                    if not self.only or any(o in n for o in self.only)]
        runnable = []
        for name, fn in selected:
            req = self.requirements.get(name)
            reason = req() if req else None
            if reason:
                print(f"SKIP {self.suite}: {name}: {reason}", flush=True)
            else:
                runnable.append((name, fn))
        if selected and not runnable:
            sys.exit(77)
        self.cases = runnable
        super().main()


def need_root():
    if os.geteuid() != 0:
        return "needs root (another user's credentials)"
    if not shutil.which("setpriv"):
        return "setpriv is not installed"
    try:
        grp.getgrnam("nogroup")
        grp.getgrnam("daemon")
    except KeyError:
        return "groups nogroup and daemon are needed"
    return None


def need_mount_namespace():
    if os.geteuid() != 0:
        return "needs root (a mount namespace with a fake journal socket)"
    if not shutil.which("unshare"):
        return "unshare is not installed"
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare -m failed: {e}"
    if r.returncode != 0:
        return f"unshare -m is not permitted here: {r.stderr.decode(errors='replace').strip()}"
    return None


# --------------------------------------------------------------------------
# A minimal protobuf reader/writer, enough for control frames and state files


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def pb_fields(data: bytes) -> dict[int, list]:
    """field number -> list of values (ints for varints, bytes otherwise)."""
    out: dict[int, list] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            n, i = _varint(data, i)
            if i + n > len(data):
                raise ValueError("truncated field")
            value, i = data[i:i + n], i + n
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.setdefault(num, []).append(value)
    return out


def pb_varint_field(num: int, value: int) -> bytes:
    return _enc_varint(num << 3) + _enc_varint(value)


def pb_bytes_field(num: int, value: bytes) -> bytes:
    return _enc_varint(num << 3 | 2) + _enc_varint(len(value)) + value


def control_request(request_id: int, body_field: int | None, version: int = 1,
                    body: bytes = b"") -> bytes:
    """A serialized Request (without the frame header)."""
    msg = b""
    if version:
        msg += pb_varint_field(1, version)
    msg += pb_varint_field(2, request_id)
    if body_field is not None:
        msg += pb_bytes_field(body_field, body)
    return msg


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


class ControlConn:
    """A raw client of the control socket, for what tunnelctl never sends."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            d = self.sock.recv(n - len(buf))
            if not d:
                return None if not buf else buf
            buf += d
        return buf

    def response(self) -> dict | None:
        """The next Response as a dict, or None at EOF."""
        head = self._read_exact(4)
        if head is None:
            return None
        check(len(head) == 4, f"control socket: truncated frame header {head!r}")
        (length,) = struct.unpack(">I", head)
        check(length <= 4 * MiB, f"control socket: response announces {length} bytes")
        body = self._read_exact(length) if length else b""
        check(body is not None and len(body) == length,
              f"control socket: response body truncated ({0 if body is None else len(body)}"
              f" of {length} bytes)")
        f = pb_fields(body)
        return {
            "version": f.get(1, [0])[-1],
            "request_id": f.get(2, [0])[-1],
            "status": f.get(3, [0])[-1],
            "error": f.get(4, [b""])[-1].decode("utf-8", "replace"),
            "bodies": {k: v[-1] for k, v in f.items() if k >= 10},
        }

    def at_eof(self, timeout: float = 2.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()


# --------------------------------------------------------------------------
# tunneld and tunnelctl


def _clean_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWSIOT_") and k not in (
               "TUNNELD_SOCKET", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
               "JOURNAL_STREAM", "http_proxy", "https_proxy", "HTTP_PROXY",
               "HTTPS_PROXY", "all_proxy", "ALL_PROXY")}
    env.update(extra or {})
    return env


def _ctl_log(h: Harness) -> list[str]:
    """Everything every tunnelctl of this case printed (for the secrets check)."""
    if not hasattr(h, "daemon_ctl_output"):
        h.daemon_ctl_output = []
    return h.daemon_ctl_output


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Tunneld:
    """One tunneld with its own socket and state dir in the case's temp dir."""

    def __init__(self, h: Harness, name: str = "tunneld", socket_path: str | None = None,
                 state_dir: str | None = None, config: str | None = None,
                 log: str = "stderr", log_level: str = "debug",
                 env_extra: dict | None = None, wrap=None):
        self.h = h
        self.name = name
        self.bin = os.path.join(h.build_dir, "daemon", "tunneld")
        self.ctl_bin = os.path.join(h.build_dir, "ctl", "tunnelctl")
        self.socket = socket_path or h.path(f"{name}.sock")
        self.state_dir = state_dir or h.path(f"{name}-state")
        self.config = config
        self.log = log
        self.log_level = log_level
        self.env_extra = env_extra
        self.wrap = wrap
        self.proc = None

    def argv(self) -> list[str]:
        argv = [self.bin, "--socket", self.socket, "--state-dir", self.state_dir]
        if self.config:
            argv += ["--config", self.config]
        if self.log:
            argv += ["--log", self.log]
        if self.log_level:
            argv += ["--log-level", self.log_level]
        return self.wrap(argv) if self.wrap else argv

    def start(self, wait: bool = True) -> "Tunneld":
        check(os.access(self.bin, os.X_OK), f"{self.bin} is not built")
        check(os.access(self.ctl_bin, os.X_OK), f"{self.ctl_bin} is not built")
        self.proc = self.h.spawn(self.name, self.argv(), env_extra=_clean_env(self.env_extra))
        if wait:
            self.wait_ready(scaled(10))
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def version_over_socket(self) -> dict | None:
        """One raw VersionRequest; None if the socket does not answer."""
        try:
            c = ControlConn(self.socket, timeout=2)
        except OSError:
            return None
        try:
            c.send(frame(control_request(1, REQ_VERSION)))
            return c.response()
        except (OSError, TestFailure):
            return None
        finally:
            c.close()

    def wait_ready(self, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise TestFailure(f"{self.proc.name} exited ({self.proc.returncode}) "
                                  "before its control socket answered")
            r = self.version_over_socket()
            if r and r["status"] == OK:
                return
            time.sleep(0.05)
        raise TestFailure(f"{self.proc.name}: control socket {self.socket} did not answer "
                          f"within {timeout:.0f} s")

    # ---- tunnelctl
    def ctl(self, *args, token: str | None = None, env_extra: dict | None = None,
            prefix: list[str] | None = None, ctl_bin: str | None = None,
            stdin: bytes | None = None, timeout: float | None = None,
            socket_path: str | None = None) -> subprocess.CompletedProcess:
        env = _clean_env(env_extra)
        if token is not None:
            env["AWSIOT_TUNNEL_ACCESS_TOKEN"] = token
        argv = (prefix or []) + [ctl_bin or self.ctl_bin, "--socket",
                                 socket_path or self.socket, *args]
        try:
            r = subprocess.run(argv, env=env, input=stdin or b"", capture_output=True,
                               timeout=timeout or scaled(15), cwd=self.h.tmp)
        except subprocess.TimeoutExpired:
            raise TestFailure(f"tunnelctl {' '.join(args)} did not finish in time")
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        _ctl_log(self.h).append(" ".join(argv) + "\n" + out + err)
        return subprocess.CompletedProcess(argv, r.returncode, out, err)

    def ctl_ok(self, *args, **kw) -> subprocess.CompletedProcess:
        r = self.ctl(*args, **kw)
        check(r.returncode == 0, f"tunnelctl {' '.join(args)}: exit {r.returncode}: "
                                 f"{r.stderr.strip()}")
        return r

    def ctl_json(self, *args, **kw):
        r = self.ctl_ok(*args, "--json", **kw)
        try:
            return json.loads(r.stdout)
        except ValueError:
            raise TestFailure(f"tunnelctl {' '.join(args)} --json: not JSON: {r.stdout[:300]!r}")

    def open(self, mode: str, token: str, relay, local: str, name: str,
             extra: list[str] | None = None, env_extra: dict | None = None) -> tuple[str, int]:
        """tunnelctl open; returns (session id, bound port or 0)."""
        flag = "-s" if mode == "source" else "-d"
        args = ["open", flag, local, "-e", f"wss://{relay.endpoint}",
                "--cafile", self.h.ca.ca_cert, "--name", name, *(extra or [])]
        self.h.secrets.append(token)
        j = self.ctl_json(*args, token=token, env_extra=env_extra)
        check(isinstance(j.get("session_id"), str) and j["session_id"],
              f"open {name}: no session_id in {j!r}")
        if mode == "source":
            check(isinstance(j.get("bound_port"), int) and j["bound_port"] > 0,
                  f"open {name}: no bound_port in {j!r}")
        return j["session_id"], j.get("bound_port", 0)

    def sessions(self) -> dict[str, dict]:
        j = self.ctl_json("list")
        check(isinstance(j.get("sessions"), list), f"list --json: no sessions array: {j!r}")
        return {s["name"]: s for s in j["sessions"]}

    def wait_states(self, names, state: str, timeout: float) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while True:
            s = self.sessions()
            bad = {n: (s[n]["state"] if n in s else "absent") for n in names
                   if n not in s or s[n]["state"] != state}
            if not bad:
                return s
            if time.monotonic() > deadline:
                raise TestFailure(f"sessions not {state} within {timeout:.0f} s: {bad}")
            time.sleep(0.1)

    # ---- stopping
    def kill(self):
        self.proc.kill()


def port_of(session: dict) -> int:
    return int(session["local_address"].rsplit(":", 1)[1])


def two_tunnels(h: Harness, d: Tunneld, relay, fixed_port_for_a: bool = False):
    """Tunnels A and B, each with a destination and a source session in `d`
    (four tunnelctl opens), destinations in front of their own echo server."""
    echoes = {}
    ports = {}
    ids = {}
    for tag in "AB":
        t = relay.open_tunnel()
        echoes[tag] = h.echo_server()
        ids[f"dst-{tag}"], _ = d.open("destination", t["destinationAccessToken"], relay,
                                      f"127.0.0.1:{echoes[tag].port}", f"dst-{tag}")
        listen = f"127.0.0.1:{free_port()}" if fixed_port_for_a and tag == "A" else "127.0.0.1:0"
        ids[f"src-{tag}"], ports[tag] = d.open("source", t["sourceAccessToken"], relay, listen,
                                               f"src-{tag}")
    return echoes, ports, ids


def concurrent_echo(ports: dict[str, int], nbytes: int, timeout: float) -> dict:
    results: dict = {}

    def run(tag):
        try:
            results[tag] = echo_roundtrip(ports[tag], nbytes, timeout)
        except BaseException as e:  # reported below
            results[tag] = e

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    for tag in ports:
        res = results.get(tag)
        if isinstance(res, BaseException):
            raise TestFailure(f"tunnel {tag}: {res}")
        check(res is not None, f"tunnel {tag}: transfer thread did not finish")
        check(res[0] == res[1], f"tunnel {tag}: SHA-256 of the echo differs from what was sent")
    return results


def read_state_file(path: str) -> dict:
    """The OpenRequest of a state file (docs/tunneld-config.md, State directory)."""
    with open(path, "rb") as f:
        data = f.read()
    check(data[:8] == b"TNLDSES\x01", f"{path}: bad magic {data[:8]!r}")
    (length,) = struct.unpack(">I", data[8:12])
    body = data[16:16 + length]
    check(len(body) == length, f"{path}: truncated body")
    f = pb_fields(body)
    return {
        "name": f.get(1, [b""])[-1].decode(),
        "access_token": f.get(8, [b""])[-1].decode(),
        "client_token": f.get(9, [b""])[-1].decode(),
    }


r = DaemonRunner("daemon")


# --------------------------------------------------------------------------
# 1. Many sessions in one daemon


@r.case("one daemon, 2 tunnels, 4 sessions via tunnelctl: 16 MiB each way on both at once")
def _(h):
    relay = h.start_relay()
    d = Tunneld(h).start()
    echoes, ports, ids = two_tunnels(h, d, relay)
    names = list(ids)
    sessions = d.wait_states(names, "connected", scaled(10))
    check(len(sessions) == 4, f"list shows {len(sessions)} sessions, want 4: {list(sessions)}")
    for n, s in sessions.items():
        want = "destination" if n.startswith("dst") else "source"
        check(s["mode"] == want, f"{n}: mode {s['mode']!r}, want {want!r}")
        check(s["id"] == ids[n], f"{n}: id {s['id']!r}, open said {ids[n]!r}")
        check(s["endpoint"] == relay.endpoint, f"{n}: endpoint {s['endpoint']!r}")
    for tag in "AB":
        check(port_of(sessions[f"src-{tag}"]) == ports[tag],
              f"src-{tag}: list shows {sessions[f'src-{tag}']['local_address']}, "
              f"open reported port {ports[tag]}")

    n = 16 * MiB
    t0 = time.monotonic()
    res = concurrent_echo(ports, n, scaled(90))
    secs = time.monotonic() - t0
    print(f"  2 x 16 MiB echoed concurrently in {secs:.2f} s "
          f"(A {res['A'][2]:.2f} s, B {res['B'][2]:.2f} s)")
    for tag in "AB":
        # Each tunnel reached its own service, and only once.
        check(echoes[tag].connections == 1,
              f"echo {tag} saw {echoes[tag].connections} connections, want 1")
    for name in names:
        s = d.ctl_json("status", name)
        check(s.get("name") == name and s.get("id") == ids[name], f"status {name}: {s!r}")
        check(s["state"] == "connected", f"status {name}: state {s['state']}")
        for k in ("bytes_in", "bytes_out"):
            check(n <= s[k] <= n + n // 20,
                  f"status {name}: {k} = {s[k]}, want about {n} after a 16 MiB echo")
    text = d.ctl_ok("list").stdout
    for name in names:
        check(re.search(rf"^\S+\s+{re.escape(name)}\s+(source|destination)\s+connected\b",
                        text, re.M), f"text list has no connected row for {name}:\n{text}")


# --------------------------------------------------------------------------
# 2. Restart


@r.case("SIGKILL and restart on the same state dir: same sessions come back and carry data")
def _(h):
    relay = h.start_relay()
    d = Tunneld(h).start()
    _, ports, ids = two_tunnels(h, d, relay, fixed_port_for_a=True)
    d.wait_states(list(ids), "connected", scaled(10))
    for tag in "AB":
        wait_for_echo(ports[tag], scaled(10))
    files = sorted(os.listdir(d.state_dir))
    check(files == sorted(f"{i}.session" for i in ids.values()),
          f"state dir holds {files}, want one file per session")

    d.kill()
    check(d.proc.returncode == -signal.SIGKILL, f"tunneld: {d.proc.returncode} after SIGKILL")
    t0 = time.monotonic()
    d2 = Tunneld(h, name="tunneld-restarted", socket_path=d.socket,
                 state_dir=d.state_dir).start()  # the stale socket file is still there
    sessions = d2.wait_states(list(ids), "connected", scaled(15))
    print(f"  4 sessions connected again {time.monotonic() - t0:.2f} s after the restart")
    check(len(sessions) == 4, f"after restart: {len(sessions)} sessions: {list(sessions)}")
    for name, sid in ids.items():
        check(sessions[name]["id"] == sid,
              f"{name}: id {sessions[name]['id']!r} after restart, was {sid!r}")
        d2.proc.wait_line(rf"session {re.escape(sid)} restored", 2)
    # A fixed port comes back as it was; port 0 picks a new one (list shows it).
    check(port_of(sessions["src-A"]) == ports["A"],
          f"src-A listens on {sessions['src-A']['local_address']} after restart, "
          f"was 127.0.0.1:{ports['A']}")
    new_ports = {tag: port_of(sessions[f"src-{tag}"]) for tag in "AB"}
    for tag in "AB":
        wait_for_echo(new_ports[tag], scaled(10))
    concurrent_echo(new_ports, 2 * MiB, scaled(30))
    relay_log = relay.process.stderr_text() + relay.process.stdout_text()
    rejected = re.findall(r"handshake .* rejected.*", relay_log)
    check(not rejected, f"the relay refused a reconnect of the restarted daemon: {rejected}")


# --------------------------------------------------------------------------
# 3. Permissions


@r.case("a non-member is refused (EACCES, UNAUTHORIZED: exit 4) while read-only list works",
        requires=need_root)
def _(h):
    relay = h.start_relay()
    t1, t2 = relay.open_tunnel(), relay.open_tunnel()
    echo = h.echo_server()
    # The case dir is 0700: make it traversable (not listable) so that "nobody"
    # reaches exactly what each sub-case intends; tunnelctl and the CA are
    # copied where nobody may read them.
    os.chmod(h.tmp, 0o711)
    pub = h.path("public")
    os.mkdir(pub, 0o755)
    os.chmod(pub, 0o755)
    ctl_bin = os.path.join(pub, "tunnelctl")
    shutil.copy(os.path.join(h.build_dir, "ctl", "tunnelctl"), ctl_bin)
    os.chmod(ctl_bin, 0o755)
    os.chmod(h.ca.ca_cert, 0o644)
    os.chmod(os.path.dirname(h.ca.ca_cert), 0o755)

    def as_user(regid: str, groups: list[str] | None = None) -> list[str]:
        g = ["--groups=" + ",".join(groups)] if groups else ["--clear-groups"]
        return ["setpriv", "--reuid=nobody", f"--regid={regid}", *g, "--"]

    nobody = as_user("daemon")
    # (a) A socket in a directory nobody can enter: connect() fails with EACCES.
    priv = h.path("private")
    os.mkdir(priv, 0o700)
    dp = Tunneld(h, name="tunneld-private", socket_path=os.path.join(priv, "c.sock")).start()
    r_ = dp.ctl("list", prefix=nobody, ctl_bin=ctl_bin)
    check(r_.returncode == EXIT_PERMISSION,
          f"nobody, unreachable socket: exit {r_.returncode} (want 4): {r_.stderr.strip()}")
    check(re.search(r"permission denied.*add yourself to group tunneld", r_.stderr),
          f"nobody, unreachable socket: unhelpful message {r_.stderr.strip()!r}")
    print(f"  EACCES: exit 4, {r_.stderr.strip()}")

    # (b) A socket of group nogroup, mode 0660.
    cfg = h.write("group.toml", '[control]\nmode = "0660"\ngroup = "nogroup"\n')
    dg = Tunneld(h, name="tunneld-group", socket_path=os.path.join(pub, "g.sock"),
                 config=cfg).start()
    st = os.stat(dg.socket)
    check(stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == grp.getgrnam("nogroup").gr_gid,
          f"socket mode {stat.S_IMODE(st.st_mode):04o} gid {st.st_gid}, want 0660 nogroup")
    r_ = dg.ctl("list", prefix=nobody, ctl_bin=ctl_bin)
    check(r_.returncode == EXIT_PERMISSION and "add yourself to group tunneld" in r_.stderr,
          f"non-member on a 0660 socket: exit {r_.returncode}: {r_.stderr.strip()}")
    # A member by primary group may open and close; by a supplementary group too
    # (the daemon reads /proc/PID/status for those).
    for who, prefix in (("primary group", as_user("nogroup")),
                        ("supplementary group", as_user("daemon", ["nogroup"]))):
        name = "by-" + who.split()[0]
        tok = t1["destinationAccessToken"] if name == "by-primary" else t2["destinationAccessToken"]
        h.secrets.append(tok)
        r_ = dg.ctl("open", "-d", f"127.0.0.1:{echo.port}", "-e", f"wss://{relay.endpoint}",
                    "--cafile", h.ca.ca_cert, "--name", name, token=tok, prefix=prefix,
                    ctl_bin=ctl_bin)
        check(r_.returncode == 0, f"member by {who}: open exit {r_.returncode}: "
                                  f"{r_.stderr.strip()}")
    check(set(dg.sessions()) == {"by-primary", "by-supplementary"},
          f"sessions after the members' opens: {list(dg.sessions())}")
    r_ = dg.ctl("close", "by-supplementary", prefix=as_user("daemon", ["nogroup"]),
                ctl_bin=ctl_bin)
    check(r_.returncode == 0, f"member close: exit {r_.returncode}: {r_.stderr.strip()}")

    # (c) The same socket opened to everyone (0666): the peer-credential check
    # is what refuses changes; reading is allowed.
    os.chmod(dg.socket, 0o666)
    r_ = dg.ctl("list", "--json", prefix=nobody, ctl_bin=ctl_bin)
    check(r_.returncode == 0, f"non-member list on a 0666 socket: exit {r_.returncode}: "
                              f"{r_.stderr.strip()}")
    check([s["name"] for s in json.loads(r_.stdout)["sessions"]] == ["by-primary"],
          f"non-member list: {r_.stdout!r}")
    r_ = dg.ctl("status", "by-primary", prefix=nobody, ctl_bin=ctl_bin)
    check(r_.returncode == 0, f"non-member status: exit {r_.returncode}: {r_.stderr.strip()}")
    tok = relay.open_tunnel()["sourceAccessToken"]
    h.secrets.append(tok)
    r_ = dg.ctl("open", "-s", "0", "-e", f"wss://{relay.endpoint}", "--cafile", h.ca.ca_cert,
                "--name", "intruder", token=tok, prefix=nobody, ctl_bin=ctl_bin)
    check(r_.returncode == EXIT_PERMISSION,
          f"non-member open: exit {r_.returncode} (want 4): {r_.stderr.strip()}")
    check("permission denied" in r_.stderr and "add yourself to group" in r_.stderr,
          f"non-member open: unhelpful message {r_.stderr.strip()!r}")
    print(f"  UNAUTHORIZED: exit 4, {r_.stderr.strip()}")
    r_ = dg.ctl("close", "by-primary", prefix=nobody, ctl_bin=ctl_bin)
    check(r_.returncode == EXIT_PERMISSION, f"non-member close: exit {r_.returncode} (want 4)")
    check(set(dg.sessions()) == {"by-primary"},
          f"a refused request changed the sessions: {list(dg.sessions())}")
    dg.proc.wait_line(r"uid 65534 .*may not open or close", 2)


# --------------------------------------------------------------------------
# 4. Hostile control clients


@r.case("garbage, oversized and silent control clients get errors and harm no one")
def _(h):
    d = Tunneld(h).start()

    # A length of 0xffffffff: BAD_LENGTH, then the daemon hangs up (the stream
    # cannot be trusted any more).
    c = ControlConn(d.socket)
    c.send(b"\xff\xff\xff\xff")
    resp = c.response()
    check(resp is not None and resp["status"] == BAD_LENGTH,
          f"0xffffffff length: {resp!r}, want BAD_LENGTH")
    check(str(MAX_REQUEST) in resp["error"], f"BAD_LENGTH message: {resp['error']!r}")
    check(resp["version"] == 1, f"BAD_LENGTH response version {resp['version']}")
    check(c.at_eof(), "the daemon kept the connection open after BAD_LENGTH")
    c.close()

    # A junk body: MALFORMED, and the connection stays usable.
    c = ControlConn(d.socket)
    c.send(frame(b"\xff" * 5))
    resp = c.response()
    check(resp and resp["status"] == MALFORMED, f"junk body: {resp!r}, want MALFORMED")
    c.send(frame(control_request(42, REQ_VERSION)))
    resp = c.response()
    check(resp and resp["status"] == OK and resp["request_id"] == 42 and REQ_VERSION in
          resp["bodies"], f"version request after a malformed one: {resp!r}")
    # Version 0 (an empty frame) and an unknown version: BAD_VERSION; no body: MALFORMED.
    for body, want, what in ((b"", BAD_VERSION, "empty frame"),
                             (control_request(5, REQ_LIST, version=99), BAD_VERSION,
                              "version 99"),
                             (control_request(6, None), MALFORMED, "request without body"),
                             (control_request(7, 99), MALFORMED, "unknown body field")):
        c.send(frame(body))
        resp = c.response()
        check(resp and resp["status"] == want, f"{what}: {resp!r}, want status {want}")
    # A session name the logs and the state file cannot carry as it is (a
    # client other than tunnelctl, which checks it first): INVALID_ARGUMENT,
    # the name not echoed, no session.
    for name in (b"two words", b"forged\nlog line", b"x" * 65):
        c.send(frame(control_request(8, REQ_OPEN, body=pb_bytes_field(1, name))))
        resp = c.response()
        check(resp and resp["status"] == INVALID_ARGUMENT and
              "name: expected 1 to 64 characters" in resp["error"] and
              name.decode() not in resp["error"], f"open with name {name!r}: {resp!r}")
    # A request dribbled one byte at a time is still one request.
    for b in frame(control_request(43, REQ_LIST)):
        c.send(bytes([b]))
        time.sleep(0.002)
    resp = c.response()
    check(resp and resp["status"] == OK and resp["request_id"] == 43,
          f"byte-by-byte list request: {resp!r}")
    c.close()

    # Exactly at the cap: parsed (and refused as junk); one byte over: BAD_LENGTH.
    c = ControlConn(d.socket)
    c.send(frame(b"\xff" * MAX_REQUEST))
    resp = c.response()
    check(resp and resp["status"] == MALFORMED, f"{MAX_REQUEST}-byte junk frame: {resp!r}")
    c.close()
    # 1 MiB announced and sent: answered with BAD_LENGTH after the header,
    # whatever happens to the rest of the upload.
    c = ControlConn(d.socket)
    big = frame(os.urandom(MiB))

    def upload():
        try:
            c.sock.sendall(big)
        except OSError:
            pass  # the daemon hung up, as it should

    th = threading.Thread(target=upload, daemon=True)
    th.start()
    resp = c.response()
    check(resp and resp["status"] == BAD_LENGTH, f"1 MiB request: {resp!r}, want BAD_LENGTH")
    th.join(scaled(10))
    c.close()

    # Clients that connect and send nothing (or half a header) hold no one up.
    idle = [ControlConn(d.socket) for _ in range(8)]
    idle[0].send(b"\x00\x00")
    idle[1].send(frame(control_request(9, REQ_LIST))[:7])
    t0 = time.monotonic()
    r_ = d.ctl("version", timeout=5)
    secs = time.monotonic() - t0
    check(r_.returncode == 0 and re.search(r"^tunneld \S+", r_.stdout, re.M),
          f"tunnelctl version with 8 idle clients: exit {r_.returncode}: {r_.stdout!r} "
          f"{r_.stderr.strip()}")
    check(secs < 2, f"tunnelctl version took {secs:.2f} s with idle clients connected")
    r_ = d.ctl_json("list")
    check(r_ == {"sessions": []}, f"list: {r_!r}")
    for c in idle:
        c.close()
    check(d.proc.alive(), "tunneld died")
    d.proc.wait_line(r"frame too long", 2)
    print(f"  tunnelctl version answered in {secs * 1000:.0f} ms with 8 idle clients")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure(f"no VmRSS for pid {pid}")


@r.case("a control client that writes requests and never reads the answers is paused, "
        "then closed; tunneld's memory stays flat and tunnelctl keeps working")
def _(h):
    d = Tunneld(h, log_level="info").start()
    rss_before = rss_kib(d.pid)
    # 4 MiB of VersionRequests (10 bytes each: about 400,000 answers). A
    # daemon that answers whatever it reads queues them all for a client
    # that takes none; a bounded one stops reading, so most of this is never
    # even accepted by the socket.
    one = frame(control_request(1, REQ_VERSION))
    flood = memoryview(one * (4 * MiB // len(one)))
    c = ControlConn(d.socket)
    c.sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 3
    while sent < len(flood) and time.monotonic() < deadline:
        try:
            sent += c.sock.send(flood[sent:sent + 65536])
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(0.3)  # let the daemon serve what it accepted
    grown = rss_kib(d.pid) - rss_before
    print(f"  {sent / MiB:.2f} MiB of requests accepted by the socket, RSS "
          f"{rss_before} KiB -> +{grown} KiB")
    check(grown < 8 * 1024, f"tunneld RSS grew by {grown} KiB for a client that never reads")
    check(sent < len(flood), "the daemon read 4 MiB of requests from a client that reads "
                             "none of its answers")

    # Meanwhile every other client is served at once.
    t0 = time.monotonic()
    check(d.ctl_json("list") == {"sessions": []}, "list while a client is paused")
    check(time.monotonic() - t0 < 2, "tunnelctl list was slow while a client was paused")

    # The silent reader is closed (5 s without taking a byte): what the socket
    # holds can still be read, then EOF.
    d.proc.wait_line(r"control client pid \d+ does not read its answers .*closing", 8)
    c.sock.setblocking(True)
    c.sock.settimeout(scaled(5))
    drained = 0
    try:
        while True:
            chunk = c.sock.recv(1 << 16)
            if not chunk:
                break
            drained += len(chunk)
    except ConnectionResetError:
        pass
    c.close()
    print(f"  closed; {drained} bytes of answers were left in the socket")
    check(rss_kib(d.pid) - rss_before < 8 * 1024, "RSS did not come back")
    check(d.ctl("version").returncode == 0, "tunnelctl version after the flood")
    check(d.proc.alive(), "tunneld died")


# --------------------------------------------------------------------------
# 5. Secrets


CORE_PATTERN = "/proc/sys/kernel/core_pattern"


def need_core_files():
    """Cores must land in a file the case can read: the kernel's pattern is
    a plain name (written in the process's directory), or, as root, the
    case points it into its temp dir for its duration."""
    try:
        with open(CORE_PATTERN) as f:
            pattern = f.read().strip()
    except OSError as e:
        return f"cannot read {CORE_PATTERN}: {e}"
    if "/" in pattern or pattern.startswith("|"):
        if os.geteuid() != 0:
            return f"core_pattern is {pattern!r} and changing it needs root"
    return None


class CoreFiles:
    """Core files of processes started in `directory` with RLIMIT_CORE
    unlimited (set in this process while the case runs, inherited)."""

    def __init__(self, directory: str):
        self.dir = directory
        self.saved_pattern = None
        self.saved_limit = None

    def __enter__(self):
        import resource
        with open(CORE_PATTERN) as f:
            pattern = f.read().strip()
        if "/" in pattern or pattern.startswith("|"):
            self.saved_pattern = pattern
            with open(CORE_PATTERN, "w") as f:
                f.write(os.path.join(self.dir, "core"))
        self.saved_limit = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        return self

    def __exit__(self, *exc):
        import resource
        resource.setrlimit(resource.RLIMIT_CORE, self.saved_limit)
        if self.saved_pattern is not None:
            with open(CORE_PATTERN, "w") as f:
                f.write(self.saved_pattern)
        return False

    def take(self, timeout: float) -> bytes | None:
        """The core written since the last take (removed), or None."""
        deadline = time.monotonic() + timeout
        while True:
            names = [n for n in os.listdir(self.dir) if n == "core" or n.startswith("core.")]
            if names or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        data = None
        for n in names:
            with open(os.path.join(self.dir, n), "rb") as f:
                data = f.read()
            os.unlink(os.path.join(self.dir, n))
        return data


def _abort(h: Harness, proc) -> None:
    """SIGABRT on purpose: not a crash for the harness's report."""
    h.processes.remove(proc)
    os.kill(proc.pid, signal.SIGABRT)
    rc = proc.wait_exit(scaled(20))
    check(rc == -signal.SIGABRT, f"{proc.name} ended with {rc} after SIGABRT")


@r.case("core dumps: tunneld, tunnelctl, localproxy and tunnel-relay write none (they would "
        "hold tokens); with TUNNELD_ALLOW_CORE_DUMPS=1 they do, token included",
        requires=need_core_files)
def _(h):
    asan = os.environ.get("ASAN_OPTIONS", "")
    allow = {"TUNNELD_ALLOW_CORE_DUMPS": "1"}
    # ASan turns cores off by itself (RLIMIT_CORE 0) unless told otherwise;
    # its shadow memory is excluded from them (MADV_DONTDUMP).
    env_base = {"ASAN_OPTIONS": (asan + ":" if asan else "") + "disable_coredump=0"}
    token = "core-" + os.urandom(20).hex()
    h.secrets.append(token)
    fake_socket = h.path("silent.sock")
    with CoreFiles(h.tmp) as cores:
        for label, env_extra in (("protected", {}), ("allowed", allow)):
            env = {**env_base, **env_extra}
            started = []

            # tunneld with a session whose token it keeps (the service is
            # unreachable: the session retries and holds on to it).
            d = Tunneld(h, name=f"tunneld-{label}", env_extra=env).start()
            d.ctl_ok("open", "-d", "22", "-e", "wss://127.0.0.1:1", "--cafile", h.ca.ca_cert,
                     "--name", "held", token=token)
            started.append(("tunneld", d.proc))

            # localproxy with the token in its environment.
            lp = h.start_localproxy("destination", token, "127.0.0.1:1", 22,
                                    env_extra={**env, "AWSIOT_TUNNEL_ACCESS_TOKEN": token})
            lp.wait_line(r"", scaled(10))
            started.append(("localproxy", lp))

            # tunnel-relay with the token as a tunnel's.
            relay = h.spawn("relay", [h.relay_bin, "--listen", "127.0.0.1:0",
                                      "--tunnel", f"{token}:other-{token}"],
                            env_extra=env, secrets_=[token])
            relay.wait_line(r'"event":"ready"', scaled(10), stream="stdout")
            started.append(("tunnel-relay", relay))

            # tunnelctl waiting for the answer to an open request that carries
            # the token, from a socket that never answers.
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fake_socket)
            srv.bind(fake_socket)
            srv.listen(1)
            ctl = h.spawn("tunnelctl", [d.ctl_bin, "--socket", fake_socket, "open", "-d", "22",
                                        "-r", "us-east-1", "--name", "x"],
                          env_extra={**_clean_env(env), "AWSIOT_TUNNEL_ACCESS_TOKEN": token})
            srv.settimeout(scaled(10))
            conn, _ = srv.accept()
            got = b""
            while token.encode() not in got:
                chunk = conn.recv(65536)
                check(chunk, "tunnelctl closed before sending its request")
                got += chunk
            started.append(("tunnelctl", ctl))

            for name, proc in started:
                _abort(h, proc)
                core = cores.take(0.1)  # written before the exit status is
                if label == "protected":
                    check(core is None, f"{name} wrote a core of {len(core or b'')} bytes")
                else:
                    check(core is not None, f"{name} with TUNNELD_ALLOW_CORE_DUMPS=1 wrote no core: "
                                            "the check above proves nothing here")
                    check(token.encode() in core,
                          f"{name}'s core ({len(core)} bytes) does not hold the token")
                    print(f"  {name}: allowed core {len(core) // 1024} KiB, token in it")
            conn.close()
            srv.close()


@r.case("tokens: not in ps, not in trace logs; state files 0600, state dir 0700")
def _(h):
    relay = h.start_relay(extra=["-v", "trace"])
    state = h.path("state")
    os.mkdir(state, 0o755)
    os.chmod(state, 0o755)  # readable by others: the daemon tightens it
    d = Tunneld(h, state_dir=state, log_level="trace").start()
    check(stat.S_IMODE(os.stat(state).st_mode) == 0o700,
          f"state dir mode {stat.S_IMODE(os.stat(state).st_mode):04o}, want 0700")
    echo = h.echo_server()
    t = relay.open_tunnel()
    given_client_token = new_client_token()
    h.secrets += [t["destinationAccessToken"], t["sourceAccessToken"], given_client_token]
    d.open("destination", t["destinationAccessToken"], relay, f"127.0.0.1:{echo.port}",
           "dst", env_extra={"AWSIOT_TUNNEL_CLIENT_TOKEN": given_client_token})

    # The source's token comes on stdin; look at ps while tunnelctl waits for it.
    env = _clean_env()
    argv = [d.ctl_bin, "--socket", d.socket, "--json", "open", "-s", "0",
            "-e", f"wss://{relay.endpoint}", "--cafile", h.ca.ca_cert, "--name", "src",
            "--access-token-file", "-"]
    p = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, cwd=h.tmp)
    try:
        time.sleep(0.2)
        check(p.poll() is None, "tunnelctl --access-token-file - did not wait for stdin")
        ps_while_ctl = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True,
                                      timeout=10).stdout.decode(errors="replace")
        check(re.search(rf"^\s*{p.pid}\s", ps_while_ctl, re.M),
              "tunnelctl is not in the ps output")
        out, err = p.communicate(t["sourceAccessToken"].encode() + b"\n", timeout=scaled(10))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    _ctl_log(h).append(out.decode(errors="replace") + err.decode(errors="replace"))
    check(p.returncode == 0, f"open with the token on stdin: exit {p.returncode}: {err!r}")
    port = json.loads(out)["bound_port"]

    d.wait_states(["dst", "src"], "connected", scaled(10))
    sent, got, _ = echo_roundtrip(port, MiB, scaled(30))
    check(sent == got, "echo differs")

    # State: one 0600 file per session holding both tokens; the dir 0700.
    stored = {}
    for fn in os.listdir(state):
        path = os.path.join(state, fn)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        check(mode == 0o600, f"state file {fn}: mode {mode:04o}, want 0600")
        check(fn.endswith(".session"), f"unexpected file {fn} in the state dir")
        rec = read_state_file(path)
        stored[rec["name"]] = rec
    check(set(stored) == {"dst", "src"}, f"state files name {sorted(stored)}")
    check(stored["dst"]["access_token"] == t["destinationAccessToken"] and
          stored["src"]["access_token"] == t["sourceAccessToken"],
          "state files do not hold the access tokens")
    check(stored["dst"]["client_token"] == given_client_token,
          "the given client token was not persisted")
    check(len(stored["src"]["client_token"]) >= 32, "no generated client token persisted")
    h.secrets.append(stored["src"]["client_token"])
    check(stat.S_IMODE(os.stat(state).st_mode) == 0o700, "state dir mode changed")

    ps_now = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True,
                            timeout=10).stdout.decode(errors="replace")
    for text, where in ((ps_while_ctl, "ps -eo args while tunnelctl ran"),
                        (ps_now, "ps -eo args with the sessions connected")):
        assert_no_secret(text, h.secrets, where)
    with open(f"/proc/{d.pid}/environ", "rb") as f:
        assert_no_secret(f.read().decode(errors="replace"), h.secrets, "tunneld's environment")

    # Closing and stopping log too.
    d.ctl_ok("close", "src")
    rc = d.proc.terminate(5)
    check(rc == 0, f"tunneld exited {rc} on SIGTERM")
    log = d.proc.stderr_text() + d.proc.stdout_text()
    check(re.search(r"^\S+ (trace|debug) \[", log, re.M),
          "no debug or trace line in tunneld's log at --log-level trace")
    assert_no_secret(log, h.secrets, "tunneld's log at trace level")
    assert_no_secret("\n".join(_ctl_log(h)), h.secrets, "tunnelctl's output")
    assert_no_secret(relay.process.stderr_text() + relay.process.stdout_text(), h.secrets,
                     "the relay's log at trace level")
    print(f"  {len(log.splitlines())} log lines at --log-level trace, no token in them")


# --------------------------------------------------------------------------
# 6. SIGTERM with live transfers


class LiveClient:
    """A TCP client that keeps sending and reading until the connection ends;
    records when it saw EOF or a reset."""

    def __init__(self, port: int, name: str):
        self.name = name
        self.sock = connect(port)
        self.sock.settimeout(0.2)
        self.sent = 0
        self.ended_at: float | None = None
        self.how = ""
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._recv, daemon=True)]
        for t in self._threads:
            t.start()

    def _end(self, how: str):
        if self.ended_at is None:
            self.ended_at = time.monotonic()
            self.how = how

    def _send(self):
        chunk = os.urandom(16384)
        while not self._stop.is_set() and self.ended_at is None:
            try:
                self.sent += self.sock.send(chunk)
            except socket.timeout:
                continue
            except OSError as e:
                self._end(f"send: {errno.errorcode.get(e.errno, e)}")
                return

    def _recv(self):
        while not self._stop.is_set():
            try:
                d = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                self._end(f"recv: {errno.errorcode.get(e.errno, e)}")
                return
            if not d:
                self._end("EOF")
                return

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self.sock.close()


def _sink_connection_end(sink, idx: int, deadline: float) -> str:
    """Waits until connection `idx` of a SinkServer ended, by EOF or by an
    error such as a reset; returns which."""
    while True:
        rec = sink.results.get(idx)
        if rec and rec["eof"]:
            return f"EOF after {rec['bytes']} bytes"
        errs = [e for e in list(sink.errors) if e.startswith(f"connection {idx}:")]
        if errs:
            return errs[0]
        if time.monotonic() > deadline:
            raise TestFailure(f"{sink.name} connection {idx} still open "
                              f"({sink.received(idx)} bytes in)")
        time.sleep(0.02)


@r.case("SIGTERM with live transfers: exit 0 within 5 s, every peer sees the end promptly")
def _(h):
    relay = h.start_relay()
    d = Tunneld(h).start()
    sink1, sink2 = h.sink_server(), h.sink_server()
    # Tunnel 1: the daemon is the destination, a localproxy the remote source.
    t1 = relay.open_tunnel()
    d.open("destination", t1["destinationAccessToken"], relay, f"127.0.0.1:{sink1.port}",
           "dst")
    lp_src = h.start_localproxy("source", t1["sourceAccessToken"], relay, "0",
                                extra=["-b", "127.0.0.1"])
    lp_port = lp_src.wait_listening()
    # Tunnel 2: the daemon is the source, a localproxy the remote destination.
    t2 = relay.open_tunnel()
    lp_dst = h.start_localproxy("destination", t2["destinationAccessToken"], relay,
                                f"127.0.0.1:{sink2.port}")
    _, d_port = d.open("source", t2["sourceAccessToken"], relay, "127.0.0.1:0", "src")
    d.wait_states(["dst", "src"], "connected", scaled(10))
    time.sleep(0.3)  # the localproxy destination's handshake

    c1 = LiveClient(lp_port, "client of the remote localproxy source")
    c2 = LiveClient(d_port, "client of the daemon's source")
    try:
        deadline = time.monotonic() + scaled(20)
        while sink1.received(1) < MiB or sink2.received(1) < MiB:
            check(time.monotonic() < deadline,
                  f"transfers did not start: {sink1.received(1)} and {sink2.received(1)} bytes")
            check(c1.ended_at is None and c2.ended_at is None,
                  f"a client connection ended early: {c1.how} {c2.how}")
            time.sleep(0.05)
        t0 = time.monotonic()
        d.proc.signal(signal.SIGTERM)
        rc = d.proc.wait_exit(5)
        exit_secs = time.monotonic() - t0
        check(rc is not None, "tunneld still running 5 s after SIGTERM with live transfers")
        check(rc == 0, f"tunneld exited {rc} on SIGTERM (want 0)")
        limit = 3.0
        for c in (c1, c2):
            end = time.monotonic() + limit
            while c.ended_at is None and time.monotonic() < end:
                time.sleep(0.02)
            check(c.ended_at is not None,
                  f"{c.name}: connection still open {limit:.0f} s after SIGTERM")
            print(f"  {c.name}: {c.how} {c.ended_at - t0:.2f} s after SIGTERM")
        for sink, what in ((sink1, "service behind the daemon's destination"),
                           (sink2, "service behind the remote localproxy destination")):
            how = _sink_connection_end(sink, 1, t0 + limit)
            print(f"  {what}: {how}")
        print(f"  tunneld exit 0 {exit_secs:.2f} s after SIGTERM")
        check(lp_src.alive() and lp_dst.alive(),
              "a remote localproxy exited because tunneld stopped")
        check("did not stop within" not in d.proc.stderr_text(),
              "tunneld hit its stop deadline instead of closing the sessions")
    finally:
        c1.close()
        c2.close()


# --------------------------------------------------------------------------
# 7. Configuration file


def _token_file(h: Harness, name: str, token: str) -> str:
    path = h.path(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(path, 0o600)
    h.secrets.append(token)
    return path


def _config_text(relay, ca: str, sessions: list[dict]) -> str:
    lines = ['[log]', 'level = "debug"', '']
    for s in sessions:
        lines.append("[[session]]")
        for k, v in s.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines += [f'endpoint = "wss://{relay.endpoint}"', f"cafile = {json.dumps(ca)}", ""]
    return "\n".join(lines)


@r.case("config: a bad file (wrong type, unknown key, open token file) stops start-up "
        "naming file:line:key")
def _(h):
    lax = h.path("lax.token")
    with open(lax, "w") as f:
        f.write("tok-not-private\n")
    os.chmod(lax, 0o644)
    _token_file(h, "private.token", "tok-private")
    bad = [
        ("wrong type", 'state_dir = 5\n', 1, "state_dir"),
        ("unknown key", '[log]\nlevel = "info"\n\n[control]\nsockt = "/tmp/x.sock"\n', 5,
         "control.sockt"),
        ("session value of the wrong type",
         '[[session]]\nname = "x"\nmode = "destination"\ntarget = "22"\n'
         'endpoint = "wss://127.0.0.1:1"\naccess_token_file = "private.token"\n'
         'verify = "no"\n', 7, "session.verify"),
        ("token file readable by others",
         '[[session]]\nname = "x"\nmode = "destination"\ntarget = "22"\n'
         'endpoint = "wss://127.0.0.1:1"\naccess_token_file = "lax.token"\n', 6,
         "session.access_token_file"),
    ]
    for i, (what, text, line, key) in enumerate(bad):
        path = h.write(f"bad{i}.toml", text)
        bd = Tunneld(h, name=f"tunneld-bad{i}", config=path)
        bd.start(wait=False)
        rc = bd.proc.wait_exit(scaled(5))
        check(rc is not None, f"{what}: tunneld still running with a bad config")
        check(rc > 0, f"{what}: tunneld exited {rc} with a bad config (want > 0)")
        err = bd.proc.stderr_text()
        check(f"{path}:{line}:" in err and key in err,
              f"{what}: stderr does not name {path}:{line}: and {key}:\n{err}")
        check(not os.path.exists(bd.socket), f"{what}: the control socket was created")
        print(f"  {what}: exit {rc}: {err.strip().splitlines()[-1].split(': ', 2)[-1]}")


def _config_world(h: Harness, dst_client_token_file: bool) -> dict:
    """A daemon started from a file with two [[session]] tables, plus one
    session opened with tunnelctl:
      tunnel 1: cfg-dst (config, in front of echo1) <-> ctl-src (tunnelctl)
      tunnel 2: cfg-src (config) <-> a remote localproxy destination (echo2)
    Data flows through both; `keep` is a connection through tunnel 1 that
    stays open."""
    relay = h.start_relay()
    echo1, echo2 = h.echo_server(), h.echo_server()
    t1, t2 = relay.open_tunnel(), relay.open_tunnel()
    cfg_dst = {"name": "cfg-dst", "mode": "destination", "target": f"127.0.0.1:{echo1.port}",
               "access_token_file": os.path.basename(
                   _token_file(h, "t1-dst.token", t1["destinationAccessToken"]))}
    if dst_client_token_file:
        cfg_dst["client_token_file"] = os.path.basename(
            _token_file(h, "t1-dst.client", new_client_token()))
    cfg_src = {"name": "cfg-src", "mode": "source", "listen": "127.0.0.1:0",
               "access_token_file": os.path.basename(
                   _token_file(h, "t2-src.token", t2["sourceAccessToken"])),
               "client_token_file": os.path.basename(
                   _token_file(h, "t2-src.client", new_client_token()))}
    config = h.write("tunneld.toml", _config_text(relay, h.ca.ca_cert, [cfg_dst, cfg_src]))
    d = Tunneld(h, config=config).start()
    check(set(d.sessions()) == {"cfg-dst", "cfg-src"},
          f"sessions started from the file: {list(d.sessions())}")
    _, ctl_port = d.open("source", t1["sourceAccessToken"], relay, "127.0.0.1:0", "ctl-src")
    h.start_localproxy("destination", t2["destinationAccessToken"], relay,
                       f"127.0.0.1:{echo2.port}")
    before = d.wait_states(["cfg-dst", "cfg-src", "ctl-src"], "connected", scaled(10))
    check(len(before) == 3, f"sessions: {list(before)}")
    check(before["cfg-src"]["mode"] == "source" and before["cfg-dst"]["mode"] == "destination",
          "config sessions have the wrong modes")
    wait_for_echo(ctl_port, scaled(10))
    wait_for_echo(port_of(before["cfg-src"]), scaled(10))
    keep = connect(ctl_port)
    keep.settimeout(scaled(5))
    h.sockets.append(keep)
    keep.sendall(b"before reload\n")
    check(keep.recv(100) == b"before reload\n", "echo through ctl-src before the reload")
    return {"relay": relay, "d": d, "config": config, "cfg_dst": cfg_dst, "cfg_src": cfg_src,
            "before": before, "keep": keep}


def _reload(w: dict, sessions: list[dict]):
    with open(w["config"], "w") as f:
        f.write(_config_text(w["relay"], w["d"].h.ca.ca_cert, sessions))
    w["d"].proc.signal(signal.SIGHUP)


def _remove_cfg_src_and_check_others(w: dict):
    d, before = w["d"], w["before"]
    cfg_port = port_of(before["cfg-src"])
    mark = d.proc.line_count()
    _reload(w, [w["cfg_dst"]])
    d.proc.wait_line(r"config: session cfg-src removed", scaled(5), start=mark)
    deadline = time.monotonic() + scaled(5)
    while "cfg-src" in d.sessions():
        check(time.monotonic() < deadline, "cfg-src still listed 5 s after SIGHUP")
        time.sleep(0.05)
    refused = False
    while time.monotonic() < deadline and not refused:
        try:
            connect(cfg_port, timeout=1).close()
            time.sleep(0.05)
        except OSError:
            refused = True
    check(refused, f"port {cfg_port} of the removed session still accepts connections")

    time.sleep(0.5)  # let a wrongly restarted session show itself
    after = d.sessions()
    check(set(after) == {"cfg-dst", "ctl-src"}, f"sessions after SIGHUP: {list(after)}")
    for n in ("cfg-dst", "ctl-src"):
        check(after[n]["id"] == before[n]["id"] and after[n]["state"] == "connected" and
              after[n]["reconnects"] == 0 and after[n]["channel_id"] == before[n]["channel_id"],
              f"{n} was touched by a reload that did not change it: before "
              f"{ {k: before[n][k] for k in ('id', 'state', 'channel_id')} }, after "
              f"{ {k: after[n][k] for k in ('id', 'state', 'channel_id', 'last_error')} }")
    check(not re.search(r"config: session cfg-dst changed", d.proc.stderr_text()),
          "the reload restarted cfg-dst although its table did not change")
    keep = w["keep"]
    keep.sendall(b"after reload\n")
    check(keep.recv(100) == b"after reload\n",
          "a connection through the untouched sessions broke on SIGHUP")
    check(d.proc.alive(), "tunneld exited on SIGHUP")


@r.case("config: two [[session]] tables start; SIGHUP without one stops it and leaves "
        "the others untouched")
def _(h):
    # cfg-dst has no client_token_file: the daemon generates its client token.
    _remove_cfg_src_and_check_others(_config_world(h, dst_client_token_file=False))


@r.case("config: SIGHUP with the same or a broken file changes nothing; a [[session]] "
        "removed and added back starts again")
def _(h):
    w = _config_world(h, dst_client_token_file=True)
    d = w["d"]
    # The same file again: nothing restarts (cfg-src listens on port 0).
    mark = d.proc.line_count()
    _reload(w, [w["cfg_dst"], w["cfg_src"]])
    d.proc.wait_line(r"SIGHUP: reloading", scaled(5), start=mark)
    time.sleep(0.5)
    now = d.sessions()
    for n, b in w["before"].items():
        check(n in now and now[n]["id"] == b["id"] and now[n]["channel_id"] == b["channel_id"],
              f"an identical reload restarted {n}: "
              f"{[ln for ln in d.proc.stderr_lines[mark:] if 'config:' in ln]}")
    with open(w["config"], "w") as f:
        f.write("[log]\nlevl = 1\n")
    mark = d.proc.line_count()
    d.proc.signal(signal.SIGHUP)
    d.proc.wait_line(rf"reload failed.*{re.escape(w['config'])}:2:.*log\.levl", scaled(5),
                     start=mark)
    time.sleep(0.3)
    now = d.sessions()
    check(set(now) == {"cfg-dst", "cfg-src", "ctl-src"} and
          all(now[n]["id"] == w["before"][n]["id"] for n in now),
          f"a failed reload changed the sessions: {list(now)}")

    _remove_cfg_src_and_check_others(w)
    # Added back: started again (a new id); with its client token file the
    # relay lets it take its place in the tunnel again.
    _reload(w, [w["cfg_dst"], w["cfg_src"]])
    again = d.wait_states(["cfg-dst", "cfg-src", "ctl-src"], "connected", scaled(10))
    check(again["cfg-src"]["id"] != w["before"]["cfg-src"]["id"], "cfg-src kept its old id")
    wait_for_echo(port_of(again["cfg-src"]), scaled(10))
    ctl_id = w["before"]["ctl-src"]["id"]
    check(os.listdir(d.state_dir) == [f"{ctl_id}.session"],
          f"state dir: {os.listdir(d.state_dir)} (only tunnelctl sessions are persisted)")


# --------------------------------------------------------------------------
# 8. sd_notify


class NotifySocket:
    """A fake NOTIFY_SOCKET: records every datagram with its arrival time.
    `on_ready` runs in the reader thread as soon as READY=1 arrives."""

    def __init__(self, path: str, on_ready=None):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.on_ready = on_ready
        self.messages: list[tuple[float, str]] = []
        self.ready_checks: list = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            text = data.decode(errors="replace")
            if self.on_ready and "READY=1" in text.split("\n"):
                self.ready_checks.append(self.on_ready())
            with self._cond:
                self.messages.append((time.monotonic(), text))
                self._cond.notify_all()

    def lines(self) -> list[tuple[float, str]]:
        with self._cond:
            return [(t, line) for t, m in self.messages for line in m.split("\n")]

    def wait_for(self, pattern: str, timeout: float, after: float = 0.0) -> float:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, m in self.messages:
                    if t >= after and any(rx.fullmatch(line) for line in m.split("\n")):
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure(f"no /{pattern}/ on NOTIFY_SOCKET within {timeout:.0f} s;"
                                      f" got {[m for _, m in self.messages][-10:]}")
                self._cond.wait(min(left, 0.2))

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _watchdog_wrap(watchdog_pid: str):
    # WATCHDOG_PID must be tunneld's own pid: the shell exports its $$ and
    # execs tunneld, which keeps that pid.
    def wrap(argv):
        return ["/bin/sh", "-c", f'WATCHDOG_PID={watchdog_pid}; export WATCHDOG_PID; exec "$@"',
                "sh", *argv]
    return wrap


@r.case("sd_notify: READY=1 after the socket and restored sessions; STATUS=, WATCHDOG=1, "
        "RELOADING=1, STOPPING=1")
def _(h):
    relay = h.start_relay()
    echo = h.echo_server()
    t = relay.open_tunnel()
    # A session to restore: opened in a first daemon that is then killed.
    d0 = Tunneld(h, name="tunneld-first").start()
    sid, _ = d0.open("destination", t["destinationAccessToken"], relay,
                     f"127.0.0.1:{echo.port}", "persisted",
                     extra=["--settings-json", h.write("fast.json", json.dumps(FAST_RECONNECT))])
    d0.wait_states(["persisted"], "connected", scaled(10))
    d0.kill()

    socket_path = h.path("n.sock")

    def at_ready():
        # Runs the moment READY=1 arrives: the socket must answer and list the
        # restored session already.
        try:
            c = ControlConn(socket_path, timeout=2)
            c.send(frame(control_request(77, REQ_LIST)))
            resp = c.response()
            c.close()
        except OSError as e:
            return f"control socket unusable at READY=1: {e!r}"
        if not resp or resp["status"] != OK:
            return f"list at READY=1: {resp!r}"
        return resp["bodies"].get(REQ_LIST, b"")

    notify = NotifySocket(h.path("notify"), on_ready=at_ready)
    h.sockets.append(notify.sock)
    config = h.write("empty.toml", "")
    try:
        d = Tunneld(h, socket_path=socket_path, state_dir=d0.state_dir, config=config,
                    env_extra={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"},
                    wrap=_watchdog_wrap("$$"))
        d.start(wait=False)
        t_ready = notify.wait_for("READY=1", scaled(10))
        check(notify.ready_checks, "READY=1 arrived but the check did not run")
        first = notify.ready_checks[0]
        check(isinstance(first, bytes), str(first))
        check(sid.encode() in first and b"persisted" in first,
              "the restored session was not listed at READY=1")
        before_ready = [line for t_, line in notify.lines() if t_ < t_ready and line]
        check(not any(line.startswith("STOPPING") for line in before_ready),
              f"before READY=1: {before_ready}")
        notify.wait_for(r"STATUS=\d+ session\(s\): .*", scaled(5))
        notify.wait_for(r"STATUS=1 session\(s\): 1 connected, 0 connecting, 0 ended", scaled(10))
        d.proc.wait_line(rf"session {sid} restored", 1)

        # Watchdog: WATCHDOG_USEC=2 s, so a ping at least every second.
        time.sleep(3.5)
        pings = [t_ for t_, line in notify.lines() if line == "WATCHDOG=1" and t_ >= t_ready]
        check(len(pings) >= 3, f"{len(pings)} WATCHDOG=1 in 3.5 s with WATCHDOG_USEC=2000000")
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        check(max(gaps) < 1.5, f"WATCHDOG=1 gaps {[round(g, 2) for g in gaps]} (want about 1 s)")

        # SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then READY=1 again.
        t_hup = time.monotonic()
        d.proc.signal(signal.SIGHUP)
        t_rel = notify.wait_for("RELOADING=1", scaled(5), after=t_hup)
        notify.wait_for(r"MONOTONIC_USEC=\d+", 1, after=t_hup)
        notify.wait_for("READY=1", scaled(5), after=t_rel)

        t_term = time.monotonic()
        d.proc.signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1", scaled(5), after=t_term)
        rc = d.proc.wait_exit(5)
        check(rc == 0, f"tunneld exited {rc} on SIGTERM")
        after_stop = [line for t_, line in notify.lines() if t_ >= t_term]
        check("READY=1" not in after_stop, f"READY=1 after STOPPING=1: {after_stop}")
        print(f"  {len(pings)} watchdog pings, gaps {min(gaps):.2f}..{max(gaps):.2f} s; "
              f"{len(notify.lines())} notify lines")
    finally:
        notify.close()


@r.case("sd_notify: no WATCHDOG=1 when WATCHDOG_PID names another process")
def _(h):
    # sd_watchdog_enabled(3): the variables were inherited, not meant for us.
    notify = NotifySocket(h.path("notify"))
    h.sockets.append(notify.sock)
    try:
        d = Tunneld(h, name="tunneld-other-pid",
                    env_extra={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"},
                    wrap=_watchdog_wrap("1"))
        d.start(wait=False)
        t_ready = notify.wait_for("READY=1", scaled(10))
        time.sleep(max(0.0, t_ready + 2.5 - time.monotonic()))
        pings = [line for _, line in notify.lines() if line == "WATCHDOG=1"]
        check(not pings, f"{len(pings)} WATCHDOG=1 in 2.5 s although WATCHDOG_PID names "
                         "another process (the watchdog is off)")
        check(d.proc.terminate(5) == 0, "tunneld did not exit 0 on SIGTERM")
    finally:
        notify.close()


@r.case("SIGHUP keeps the command line's --socket, --state-dir and --log-level")
def _(h):
    relay = h.start_relay()
    echo = h.echo_server()
    config = h.write("empty.toml", "")
    d = Tunneld(h, config=config, log_level="debug").start()
    mark = d.proc.line_count()
    d.proc.signal(signal.SIGHUP)
    d.proc.wait_line(r"SIGHUP: reloading", scaled(5), start=mark)
    time.sleep(0.2)
    t = relay.open_tunnel()
    d.open("destination", t["destinationAccessToken"], relay, f"127.0.0.1:{echo.port}",
           "after-reload")
    d.wait_states(["after-reload"], "connected", scaled(10))
    lines = d.proc.stderr_text().splitlines()[mark:]
    debug_after = any(re.search(r"\bdebug \[session after-reload\]", ln) for ln in lines)
    spurious = [ln for ln in lines if "take effect at the next restart" in ln]
    check(debug_after and not spurious,
          "after SIGHUP with an unchanged file: "
          + ("" if debug_after else "--log-level debug no longer applies (no debug line for a "
             "session opened after the reload); ")
          + ("" if not spurious else f"a spurious warning: {spurious[0]!r}"))
    check(os.path.exists(d.socket), "the control socket is gone after SIGHUP")
    d.ctl_ok("version")


# --------------------------------------------------------------------------
# 9. journald


class FakeJournal:
    """A datagram socket speaking the receiving half of journald's native
    protocol: KEY=value lines, KEY\\n<u64 LE length><value>\\n for values with
    newlines, and entries passed as a sealed memfd (SCM_RIGHTS). Records the
    sender's pid (SO_PASSCRED) with each entry."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        # Room for a burst at trace level: the daemon drops what does not fit.
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33),
                                 8 * MiB)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MiB)
        self.sock.settimeout(0.2)
        self.entries: list[dict] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def parse(data: bytes) -> dict[str, str]:
        fields: dict[str, str] = {}
        i = 0
        while i < len(data):
            nl = data.find(b"\n", i)
            if nl < 0:
                raise ValueError(f"entry does not end with a newline at {i}")
            line = data[i:nl]
            eq = line.find(b"=")
            if eq >= 0:
                key, value = line[:eq], line[eq + 1:]
                i = nl + 1
            else:
                key = line
                if nl + 9 > len(data):
                    raise ValueError(f"truncated binary field {key!r}")
                (size,) = struct.unpack("<Q", data[nl + 1:nl + 9])
                start = nl + 9
                value = data[start:start + size]
                if len(value) != size or data[start + size:start + size + 1] != b"\n":
                    raise ValueError(f"bad binary field {key!r}")
                i = start + size + 1
            k = key.decode()
            if not re.fullmatch(r"[A-Z0-9][A-Z0-9_]{0,63}", k):
                raise ValueError(f"invalid field name {k!r}")
            fields[k] = value.decode("utf-8", "replace")
            if eq < 0:
                fields["_BINARY"] = fields.get("_BINARY", "") + k + " "
        return fields

    def _run(self):
        ucred_size = struct.calcsize("3i")
        while not self._stop.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(1 << 18, socket.CMSG_SPACE(4 * 4) +
                                                    socket.CMSG_SPACE(ucred_size))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:ucred_size])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fd = struct.unpack("i", payload[:4])[0]
                    try:
                        os.lseek(fd, 0, os.SEEK_SET)
                        chunks = []
                        while True:
                            c = os.read(fd, 1 << 16)
                            if not c:
                                break
                            chunks.append(c)
                        data = b"".join(chunks)
                    finally:
                        os.close(fd)
            try:
                entry = self.parse(data)
            except (ValueError, UnicodeDecodeError) as e:
                with self._lock:
                    self.errors.append(f"{e}: {data[:200]!r}")
                continue
            entry["_PID"] = str(pid)
            with self._lock:
                self.entries.append(entry)

    def of(self, pid: int) -> list[dict]:
        with self._lock:
            return [e for e in self.entries if e["_PID"] == str(pid)]

    def wait_for(self, pid: int, pred, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.of(pid):
                if pred(e):
                    return e
            if time.monotonic() > deadline:
                msgs = [e.get("MESSAGE") for e in self.of(pid)][-15:]
                raise TestFailure(f"journal: no entry {what} within {timeout:.0f} s; "
                                  f"last messages: {msgs}")
            time.sleep(0.05)

    def close(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


# Inside a private mount namespace, puts DIR over /run/systemd/journal (making
# the mount point on a tmpfs when the host has none), then execs tunneld.
_JOURNAL_NS_SCRIPT = r'''
set -e
dir=$1; shift
if [ ! -d /run/systemd/journal ]; then
  if [ -d /run/systemd ]; then top=/run/systemd; else top=/run; fi
  mount -t tmpfs -o mode=0755,size=1m tunneld-test "$top"
  mkdir -p /run/systemd/journal
fi
mount --bind "$dir" /run/systemd/journal
if [ -n "$TUNNELD_TEST_JOURNAL_STREAM" ]; then
  JOURNAL_STREAM=$(stat -L -c %d:%i /proc/$$/fd/2); export JOURNAL_STREAM
fi
exec "$@"
'''


@r.case("journald: native protocol entries with MESSAGE, PRIORITY, SYSLOG_IDENTIFIER and "
        "session fields", requires=need_mount_namespace)
def _(h):
    relay = h.start_relay()
    echo = h.echo_server()
    t = relay.open_tunnel()
    jdir = h.path("journal")
    os.mkdir(jdir, 0o755)
    journal = FakeJournal(os.path.join(jdir, "socket"))
    h.sockets.append(journal.sock)

    def in_namespace(argv):
        return [shutil.which("unshare"), "-m", "--propagation", "private", "/bin/sh", "-c",
                _JOURNAL_NS_SCRIPT, "sh", jdir, *argv]

    try:
        config = h.write("tunneld.toml", "")
        d = Tunneld(h, log="journal", log_level="trace", config=config,
                    wrap=in_namespace).start()
        ids = {}
        ids["jdst"], _ = d.open("destination", t["destinationAccessToken"], relay,
                                f"127.0.0.1:{echo.port}", "jdst")
        ids["jsrc"], port = d.open("source", t["sourceAccessToken"], relay, "127.0.0.1:0",
                                   "jsrc")
        d.wait_states(list(ids), "connected", scaled(10))
        sent, got, _ = echo_roundtrip(port, MiB, scaled(30))
        check(sent == got, "echo differs")
        d.ctl_ok("close", "jsrc")
        journal.wait_for(d.pid, lambda e: "closed by request" in e.get("MESSAGE", ""),
                         scaled(5), "about the close")
        # A reload error whose message holds a newline (a quoted TOML key may):
        # journald's binary-safe field form.
        with open(config, "w") as f:
            f.write('"line1\\nline2" = 1\n')
        d.proc.signal(signal.SIGHUP)
        multi = journal.wait_for(d.pid, lambda e: "line1\nline2" in e.get("MESSAGE", ""),
                                 scaled(5), "with a two-line MESSAGE")
        check("MESSAGE" in multi.get("_BINARY", ""),
              f"a MESSAGE with a newline was not sent in the binary form: {multi}")
        check(multi["PRIORITY"] == "3", f"reload failure logged at PRIORITY {multi['PRIORITY']}")
        rc = d.proc.terminate(5)
        check(rc == 0, f"tunneld exited {rc} on SIGTERM")
        journal.wait_for(d.pid, lambda e: e.get("MESSAGE", "").endswith("stopped"),
                         scaled(2), "'stopped'")

        entries = journal.of(d.pid)
        check(not journal.errors, f"malformed journal datagrams: {journal.errors[:3]}")
        check(len(entries) >= 10, f"only {len(entries)} journal entries")
        for e in entries:
            check(e.get("MESSAGE"), f"entry without MESSAGE: {e}")
            check(e.get("PRIORITY", "") in {"2", "3", "4", "6", "7"},
                  f"entry with PRIORITY {e.get('PRIORITY')!r}: {e}")
            check(e.get("SYSLOG_IDENTIFIER") == "tunneld", f"SYSLOG_IDENTIFIER: {e}")
            check(not e["MESSAGE"].endswith("\n"), f"MESSAGE ends with a newline: {e}")
        ready = [e for e in entries if re.search(r"tunneld \S+ ready", e["MESSAGE"])]
        check(len(ready) == 1 and ready[0]["PRIORITY"] == "6", f"ready entries: {ready}")
        check(any(e["PRIORITY"] == "7" for e in entries), "no debug entry at --log-level trace")
        try:
            grp.getgrnam("tunneld")
        except KeyError:  # then the daemon warns that the socket's group is missing
            warn = [e for e in entries if "group 'tunneld' does not exist" in e["MESSAGE"]]
            check(warn and warn[0]["PRIORITY"] == "4", f"the missing-group warning: {warn}")
        for name, sid in ids.items():
            mine = [e for e in entries if e.get("TUNNEL_SESSION_NAME") == name]
            check(mine, f"no entry with TUNNEL_SESSION_NAME={name}")
            mode = "destination" if name == "jdst" else "source"
            for e in mine:
                check(e.get("TUNNEL_SESSION_ID") == sid, f"{name}: TUNNEL_SESSION_ID in {e}")
                check(e.get("TUNNEL_MODE") == mode, f"{name}: TUNNEL_MODE in {e}")
                check(e.get("TUNNEL_ENDPOINT") == relay.endpoint,
                      f"{name}: TUNNEL_ENDPOINT {e.get('TUNNEL_ENDPOINT')!r}, want "
                      f"{relay.endpoint!r}")
            connected = [i for i, m in enumerate(mine)
                         if m["MESSAGE"].startswith(f"[session {name}] connected to")]
            check(connected, f"{name}: no 'connected to' entry with session fields")
            # From its connection on, every entry of the session names the
            # channel the relay gave it (the relay logs the same id).
            cid = re.search(r"channel-id ([0-9a-f]{32}),", mine[connected[0]]["MESSAGE"])
            check(cid, f"{name}: no channel-id in {mine[connected[0]]['MESSAGE']!r}")
            check(cid.group(1) in relay.process.stderr_text(),
                  f"{name}: channel-id {cid.group(1)} not in the relay's log")
            for e in mine[connected[0]:]:
                check(e.get("TUNNEL_CHANNEL_ID") == cid.group(1),
                      f"{name}: TUNNEL_CHANNEL_ID {e.get('TUNNEL_CHANNEL_ID')!r} in {e}")
            check(all("TUNNEL_CHANNEL_ID" not in e for e in mine[:connected[0]]),
                  f"{name}: TUNNEL_CHANNEL_ID before the first connection")
        # Every entry that names a session in its logger carries its fields.
        for e in entries:
            m = re.match(r"\[session (\S+)\]", e["MESSAGE"])
            if m:
                check(e.get("TUNNEL_SESSION_NAME") == m.group(1), f"session fields missing: {e}")
        stray = [line for line in d.proc.stderr_lines if re.match(r"\d{4}-\d\d-\d\dT", line)]
        check(not stray, f"log lines on stderr with --log journal: {stray[:3]}")
        assert_no_secret(json.dumps(entries), h.secrets, "journal entries at trace level")
        fields = sorted({k for e in entries for k in e})
        print(f"  {len(entries)} entries; fields: {', '.join(fields)}")

        # --log auto under systemd: JOURNAL_STREAM naming stderr selects the journal.
        d2 = Tunneld(h, name="tunneld-auto", log=None, log_level="info", wrap=in_namespace,
                     env_extra={"TUNNELD_TEST_JOURNAL_STREAM": "1"}).start()
        journal.wait_for(d2.pid, lambda e: re.search(r"ready", e.get("MESSAGE", "")),
                         scaled(5), "'ready' from --log auto with JOURNAL_STREAM")
        check(d2.proc.terminate(5) == 0, "tunneld (auto) did not exit 0")
        check(not any(re.match(r"\d{4}-\d\d-\d\dT", ln) for ln in d2.proc.stderr_lines),
              "--log auto with JOURNAL_STREAM still logged to stderr")
    finally:
        journal.close()


@r.case("multi-service sessions via tunnelctl: status lists each connection; a service "
        "mismatch fails the session with the reason")
def _(h):
    relay = h.start_relay()
    d = Tunneld(h).start()
    t = relay.open_tunnel(services=["SSH1", "WEB1"])
    e1, e2 = h.echo_server(), h.echo_server()
    d.open("destination", t["destinationAccessToken"], relay,
           f"SSH1=127.0.0.1:{e1.port},WEB1=127.0.0.1:{e2.port}", "dst")
    d.open("source", t["sourceAccessToken"], relay, "SSH1=127.0.0.1:0,WEB1=127.0.0.1:0", "src")
    d.wait_states(["dst", "src"], "connected", scaled(10))
    st = d.ctl_json("status", "src")
    ports = {m["name"]: int(m["address"].rsplit(":", 1)[1]) for m in st.get("services", [])}
    check(set(ports) == {"SSH1", "WEB1"} and all(ports.values()),
          f"status --json services: {st.get('services')!r}")
    socks = []
    for name, port in ports.items():
        s = connect(port)
        socks.append(s)
        s.sendall(name.encode())
        s.settimeout(scaled(5))
        check(s.recv(16) == name.encode(), f"{name}: no echo")
    st = d.ctl_json("status", "src")
    conns = st.get("connections", [])
    check(sorted(c["service"] for c in conns) == ["SSH1", "WEB1"],
          f"status --json connections: {conns!r}")
    for c in conns:
        check(c["peer"].startswith("127.0.0.1:") and c["bytes_in"] >= 4 and c["bytes_out"] >= 4
              and c["connection_id"] >= 1 and c["stream_id"] >= 1, f"connection entry {c!r}")
    text = d.ctl_ok("status", "src").stdout
    check("connections:" in text and "SSH1 stream" in text, f"status text: {text!r}")
    for s in socks:
        s.close()

    bad = relay.open_tunnel(services=["A1", "B1"])
    d.open("source", bad["sourceAccessToken"], relay, "A1=127.0.0.1:0,C1=127.0.0.1:0", "bad")
    sessions = d.wait_states(["bad"], "failed", scaled(10))
    err = sessions["bad"]["last_error"]
    check("service mismatch" in err and "{A1, B1}" in err and "{A1, C1}" in err,
          f"failed session's reason: {err!r}")
    check(d.sessions()["src"]["state"] == "connected", "the other sessions were hurt")


if __name__ == "__main__":
    r.main()
