"""Integration-test harness: spawns the real binaries on loopback.

Python 3.11 standard library only. Everything here is bounded in time: every
wait takes a timeout, every spawned process is killed at the end of a test (and
by the kernel if this interpreter dies: PR_SET_PDEATHSIG), and a failing test
carries the stderr of every process it started in its message.

Typical use:

    with Harness(build_dir, "transfer") as h:
        relay = h.start_relay()
        t = relay.open_tunnel()
        echo = h.echo_server()
        dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                                 local=f"127.0.0.1:{echo.port}")
        src = h.start_localproxy("source", t["sourceAccessToken"], relay, local="0")
        port = src.wait_listening()

Environment knobs:
    TUNNELD_TEST_TIMEOUT_SCALE  multiplies the generous "must not hang" timeouts
                                (not the behavioural deadlines such as "exit
                                within 2 s"); run-tests.sh sets 3 under ASan.
    TUNNELD_TEST_KEEP           keep the temp dir for inspection.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

TIMEOUT_SCALE = float(os.environ.get("TUNNELD_TEST_TIMEOUT_SCALE", "1") or "1")

# Lines that mean a sanitizer or the C++ runtime found a bug in a child.
CRASH_PATTERNS = re.compile(
    r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
    r"ThreadSanitizer|terminate called|Segmentation fault|double free|"
    r"stack smashing")

LISTENING_RE = r"listening on (\S+):(\d+)"


def scaled(seconds: float) -> float:
    """A generous anti-hang timeout, stretched under sanitizers."""
    return seconds * TIMEOUT_SCALE


class TestFailure(AssertionError):
    pass


def check(cond, message: str):
    if not cond:
        raise TestFailure(message)


# --------------------------------------------------------------------------
# Child processes


def _child_setup():
    # Die with the test: if the interpreter is killed (meson timeout, ^C),
    # the kernel sends SIGKILL to every child we started.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


class Process:
    """A child process whose stdout/stderr are collected line by line."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: str,
                 secrets_: list[str] | None = None):
        self.name = name
        self.argv = argv
        self.secrets = [s for s in (secrets_ or []) if s]
        self._cond = threading.Condition()
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._eof = {"stdout": False, "stderr": False}
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_child_setup, close_fds=True)
        self.pid = self.proc.pid
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "stdout"),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr"),
                             daemon=True),
        ]
        for t in self._readers:
            t.start()

    def _pump(self, stream, which: str):
        lines = self.stdout_lines if which == "stdout" else self.stderr_lines
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    lines.append(line)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof[which] = True
                self._cond.notify_all()

    # ---- state
    @property
    def returncode(self):
        return self.proc.poll()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_text(self) -> str:
        with self._cond:
            return "\n".join(self.stderr_lines)

    def stdout_text(self) -> str:
        with self._cond:
            return "\n".join(self.stdout_lines)

    def describe(self) -> str:
        rc = self.proc.poll()
        status = "running" if rc is None else (
            f"killed by signal {-rc}" if rc < 0 else f"exit {rc}")
        cmd = " ".join(self.argv)
        for s in self.secrets:
            cmd = cmd.replace(s, "<secret>")
        err = self.stderr_text()
        if len(err) > 12000:
            err = "[... " + str(len(err) - 12000) + " chars cut ...]\n" + err[-12000:]
        return f"--- {self.name} (pid {self.pid}, {status}): {cmd}\n{err}\n--- end {self.name}"

    # ---- waiting
    def wait_line(self, pattern: str, timeout: float, stream: str = "stderr",
                  start: int = 0) -> re.Match:
        """Waits for a line matching `pattern` (re.search) at index >= start.
        Fails early if the process exits without printing it."""
        rx = re.compile(pattern)
        lines = self.stderr_lines if stream == "stderr" else self.stdout_lines
        deadline = time.monotonic() + timeout
        idx = start
        with self._cond:
            while True:
                while idx < len(lines):
                    m = rx.search(lines[idx])
                    idx += 1
                    if m:
                        return m
                if self._eof[stream] and self.proc.poll() is not None:
                    raise TestFailure(
                        f"{self.name} exited ({self.proc.poll()}) before logging "
                        f"/{pattern}/ on {stream}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure(
                        f"{self.name}: no line matching /{pattern}/ on {stream} "
                        f"within {timeout:.1f} s")
                self._cond.wait(min(left, 0.2))

    def line_count(self, stream: str = "stderr") -> int:
        with self._cond:
            return len(self.stderr_lines if stream == "stderr" else self.stdout_lines)

    def wait_listening(self, timeout: float | None = None) -> int:
        """Source mode: the port of the 'listening on ADDR:PORT' log line."""
        m = self.wait_line(LISTENING_RE, timeout or scaled(15))
        return int(m.group(2))

    def wait_exit(self, timeout: float) -> int | None:
        """Returns the exit status, or None if still running after `timeout`."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        for t in self._readers:
            t.join(timeout=2)
        return rc

    # ---- stopping
    def signal(self, sig):
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def terminate(self, timeout: float = 5.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`. Returns the exit status."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                self.kill()
        return self.wait_exit(5) if self.proc.poll() is None else self.proc.poll()

    def kill(self):
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for t in self._readers:
            t.join(timeout=2)

    def crash_report(self) -> str | None:
        """A reason if the process died by a signal or a sanitizer spoke."""
        rc = self.proc.poll()
        if rc is not None and rc < 0 and rc not in (-signal.SIGKILL, -signal.SIGTERM):
            return f"{self.name} died by signal {-rc}"
        m = CRASH_PATTERNS.search(self.stderr_text())
        if m:
            return f"{self.name}: stderr contains {m.group(0)!r}"
        return None


class Relay:
    def __init__(self, process: Process, listen: str, admin: str | None):
        self.process = process
        self.listen = listen
        self.admin = admin
        self.host, port = listen.rsplit(":", 1)
        self.port = int(port)

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- admin API (plain HTTP on loopback; never through an http_proxy)
    def _admin(self, method: str, path: str, body=None, timeout: float = 10.0):
        check(self.admin, "relay has no admin API")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"http://{self.admin}{path}", data=data,
                                     method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            raise TestFailure(f"admin {method} {path}: HTTP {e.code} {e.read()[:300]!r}")
        except (urllib.error.URLError, OSError) as e:
            raise TestFailure(f"admin {method} {path}: {e}")
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise TestFailure(f"admin {method} {path}: not JSON: {raw[:300]!r}")

    def open_tunnel(self, services=None, lifetime_seconds=None) -> dict:
        body = {}
        if services is not None:
            body["services"] = services
        if lifetime_seconds is not None:
            body["lifetimeSeconds"] = lifetime_seconds
        _, t = self._admin("POST", "/tunnels", body if body else None)
        for k in ("tunnelId", "sourceAccessToken", "destinationAccessToken"):
            check(isinstance(t, dict) and k in t, f"POST /tunnels: no {k} in {t!r}")
        return t

    def list_tunnels(self):
        return self._admin("GET", "/tunnels")[1]

    def close_tunnel(self, tunnel_id: str):
        return self._admin("DELETE", f"/tunnels/{tunnel_id}")


# --------------------------------------------------------------------------
# TLS material


def _openssl(args: list[str], cwd: str):
    r = subprocess.run(["openssl", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        raise TestFailure(f"openssl {' '.join(args)} failed:\n{r.stderr.decode(errors='replace')}")


class CertAuthority:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost."""

    def __init__(self, directory: str, name: str = "ca"):
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        self.ca_cert = os.path.join(directory, f"{name}.pem")
        self.ca_key = os.path.join(directory, f"{name}.key")
        self.server_cert = os.path.join(directory, f"{name}-server.pem")
        self.server_key = os.path.join(directory, f"{name}-server.key")
        csr = os.path.join(directory, f"{name}-server.csr")
        ext = os.path.join(directory, f"{name}-server.ext")
        _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "2",
                  "-subj", f"/CN=tunneld test CA {name} {secrets.token_hex(4)}",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign"], directory)
        _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                  "-nodes", "-keyout", self.server_key, "-out", csr,
                  "-subj", "/CN=localhost"], directory)
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl(["x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                  "-CAcreateserial", "-out", self.server_cert, "-days", "2",
                  "-extfile", ext], directory)

    def hashed_dir(self, directory: str) -> str:
        """A CA directory as `openssl rehash` makes it (for -c)."""
        os.makedirs(directory, exist_ok=True)
        shutil.copy(self.ca_cert, os.path.join(directory, "ca.pem"))
        _openssl(["rehash", directory], directory)
        return directory

    def server_context(self):
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        return ctx


# --------------------------------------------------------------------------
# Local TCP services (threads on 127.0.0.1:0)


class _Server:
    def __init__(self, name: str):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        # Room for a burst: the multiplex cases open 50 and 128 connections at
        # once. With a queue of 16, on a busy machine the accept thread fell
        # behind, the kernel answered the overflow with SYN cookies and then
        # reset the connection on its first bytes (seen as a flaky case).
        self.sock.listen(512)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self.connections = 0
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        t = threading.Thread(target=self._accept_loop, daemon=True, name=name)
        t.start()
        self._threads.append(t)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._cond:
                self.connections += 1
                idx = self.connections
                self._conns.append(conn)
                self._cond.notify_all()
            t = threading.Thread(target=self._serve_safe, args=(conn, idx), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve_safe(self, conn, idx):
        try:
            self.serve(conn, idx)
        except OSError as e:
            with self._cond:
                self.errors.append(f"connection {idx}: {e}")
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def serve(self, conn: socket.socket, idx: int):
        raise NotImplementedError

    def wait_connections(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.connections < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self):
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._cond:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
        for t in self._threads:
            t.join(timeout=2)


class EchoServer(_Server):
    """Echoes every byte back, until the peer closes."""

    def __init__(self):
        super().__init__("echo")

    def serve(self, conn, idx):
        while not self._stop.is_set():
            data = conn.recv(1 << 18)
            if not data:
                return
            conn.sendall(data)


class SinkServer(_Server):
    """Reads everything, records per connection (byte count, SHA-256, eof)."""

    def __init__(self):
        super().__init__("sink")
        self.results: dict[int, dict] = {}

    def serve(self, conn, idx):
        h = hashlib.sha256()
        rec = {"bytes": 0, "sha256": None, "eof": False}
        with self._cond:
            self.results[idx] = rec
        while not self._stop.is_set():
            data = conn.recv(1 << 18)
            if not data:
                break
            h.update(data)
            with self._cond:
                rec["bytes"] += len(data)
                self._cond.notify_all()
        with self._cond:
            rec["eof"] = True
            rec["sha256"] = h.hexdigest()
            self._cond.notify_all()

    def wait_result(self, idx: int, nbytes: int, timeout: float) -> dict:
        """Waits until connection `idx` got `nbytes` and then EOF."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                rec = self.results.get(idx)
                if rec and rec["eof"]:
                    return dict(rec)
                left = deadline - time.monotonic()
                if left <= 0:
                    got = rec["bytes"] if rec else 0
                    raise TestFailure(
                        f"sink connection {idx}: {got} of {nbytes} bytes and no EOF "
                        f"within {timeout:.0f} s")
                self._cond.wait(min(left, 0.2))

    def received(self, idx: int) -> int:
        with self._cond:
            rec = self.results.get(idx)
            return rec["bytes"] if rec else 0


class BlastServer(_Server):
    """On each connection, sends `nbytes` random bytes then closes; records the
    SHA-256 of what it sent."""

    def __init__(self, nbytes: int):
        super().__init__("blast")
        self.nbytes = nbytes
        self.sent: dict[int, dict] = {}

    def serve(self, conn, idx):
        h = hashlib.sha256()
        left = self.nbytes
        while left > 0 and not self._stop.is_set():
            chunk = os.urandom(min(left, 1 << 16))
            h.update(chunk)
            conn.sendall(chunk)
            left -= len(chunk)
        with self._cond:
            self.sent[idx] = {"bytes": self.nbytes - left, "sha256": h.hexdigest()}
            self._cond.notify_all()
        conn.shutdown(socket.SHUT_WR)
        # Keep the socket until the peer is done, so nothing is reset early.
        conn.settimeout(scaled(120))
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass

    def wait_sent(self, idx: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while idx not in self.sent:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure(f"blast connection {idx} did not finish sending")
                self._cond.wait(min(left, 0.2))
            return dict(self.sent[idx])


def reserve_dead_port() -> tuple[socket.socket, int]:
    """A loopback port where nothing listens (connect -> ECONNREFUSED); the
    returned socket keeps it reserved. Close it when done."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


# --------------------------------------------------------------------------
# Client-side transfers


def connect(port: int, timeout: float = 5.0, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def echo_roundtrip(port: int, nbytes: int, timeout: float) -> tuple[str, str, float]:
    """Sends `nbytes` random bytes to an echo path through `port` while reading
    the echo. Returns (sha256 sent, sha256 received, seconds)."""
    s = connect(port)
    s.settimeout(timeout)
    sent_hash = hashlib.sha256()
    errors: list[BaseException] = []
    t0 = time.monotonic()

    def sender():
        try:
            left = nbytes
            while left > 0:
                chunk = os.urandom(min(left, 1 << 16))
                sent_hash.update(chunk)
                s.sendall(chunk)
                left -= len(chunk)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    got = 0
    recv_hash = hashlib.sha256()
    deadline = t0 + timeout
    try:
        while got < nbytes:
            if time.monotonic() > deadline:
                raise TestFailure(f"echo: {got} of {nbytes} bytes back after {timeout:.0f} s")
            try:
                data = s.recv(1 << 18)
            except socket.timeout:
                raise TestFailure(f"echo: stalled at {got} of {nbytes} bytes")
            except OSError as e:
                raise TestFailure(f"echo: connection error after {got} of {nbytes} bytes: {e}")
            if not data:
                raise TestFailure(f"echo: connection closed after {got} of {nbytes} bytes")
            recv_hash.update(data)
            got += len(data)
    finally:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
        th.join(timeout=5)
    if errors:
        raise TestFailure(f"echo: sending failed: {errors[0]!r}")
    return sent_hash.hexdigest(), recv_hash.hexdigest(), time.monotonic() - t0


def send_all(port: int, nbytes: int, timeout: float, close: bool = True):
    """Sends `nbytes` random bytes; returns (sha256, socket or None)."""
    s = connect(port)
    s.settimeout(timeout)
    h = hashlib.sha256()
    left = nbytes
    try:
        while left > 0:
            chunk = os.urandom(min(left, 1 << 16))
            h.update(chunk)
            s.sendall(chunk)
            left -= len(chunk)
    except OSError as e:
        s.close()
        raise TestFailure(f"send: failed after {nbytes - left} of {nbytes} bytes: {e}")
    if close:
        s.close()
        return h.hexdigest(), None
    return h.hexdigest(), s


def receive_all(port: int, nbytes: int, timeout: float) -> tuple[str, int]:
    """Connects and reads until EOF or `nbytes`; returns (sha256, count)."""
    s = connect(port)
    s.settimeout(timeout)
    h = hashlib.sha256()
    got = 0
    deadline = time.monotonic() + timeout
    try:
        while got < nbytes and time.monotonic() < deadline:
            try:
                data = s.recv(1 << 18)
            except socket.timeout:
                break
            except OSError:
                break
            if not data:
                break
            h.update(data)
            got += len(data)
    finally:
        s.close()
    return h.hexdigest(), got


def wait_for_echo(port: int, timeout: float, payload: bytes = b"ping\n") -> float:
    """Retries a tiny echo through `port` until it works; returns seconds taken.
    Used after a reconnect, while the tunnel may not be up yet."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    last = "never tried"
    while time.monotonic() < deadline:
        try:
            with connect(port, timeout=2) as s:
                s.settimeout(min(3.0, max(0.2, deadline - time.monotonic())))
                s.sendall(payload)
                buf = b""
                while len(buf) < len(payload):
                    d = s.recv(4096)
                    if not d:
                        break
                    buf += d
                if buf == payload:
                    return time.monotonic() - t0
                last = f"got {buf!r}"
        except OSError as e:
            last = repr(e)
        time.sleep(0.25)
    raise TestFailure(f"no working echo through port {port} within {timeout:.0f} s (last: {last})")


# --------------------------------------------------------------------------
# The harness


def settings_json(flat: dict) -> str:
    """{'websocket.ping_period_ms': 500} -> the reference's nested JSON
    (keys under tunneling.proxy, every value a string)."""
    root: dict = {}
    for key, value in flat.items():
        parts = ["tunneling", "proxy", *key.split(".")]
        node = root
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, bool):
            value = "true" if value else "false"
        node[parts[-1]] = str(value)
    return json.dumps(root, indent=2)


def new_token(prefix: str = "tok") -> str:
    return f"{prefix}-{secrets.token_hex(20)}"


def new_client_token() -> str:
    h = secrets.token_hex(16)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


class Harness:
    """One test case's world: a temp dir, a CA, the processes and servers it
    started. Use as a context manager; everything is torn down on exit."""

    def __init__(self, build_dir: str, name: str):
        self.build_dir = os.path.abspath(build_dir)
        self.name = name
        self.relay_bin = os.path.join(self.build_dir, "relay", "tunnel-relay")
        self.localproxy_bin = os.path.join(self.build_dir, "ctl", "localproxy")
        self.tmp = tempfile.mkdtemp(prefix=f"tunneld-it-{name}-")
        self.processes: list[Process] = []
        self.servers: list = []
        self.sockets: list[socket.socket] = []
        self.secrets: list[str] = []
        self._ca: CertAuthority | None = None
        self._n = 0

    # ---- context
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.cleanup()
        return False

    def cleanup(self):
        for p in reversed(self.processes):
            if p.alive():
                p.kill()
        for s in self.servers:
            s.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()
        if os.environ.get("TUNNELD_TEST_KEEP"):
            print(f"  (kept {self.tmp})", flush=True)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def report(self) -> str:
        return "\n".join(p.describe() for p in self.processes)

    def crash_reports(self) -> list[str]:
        return [r for r in (p.crash_report() for p in self.processes) if r]

    def path(self, *parts) -> str:
        return os.path.join(self.tmp, *parts)

    def write(self, name: str, text: str) -> str:
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    @property
    def ca(self) -> CertAuthority:
        if self._ca is None:
            self._ca = CertAuthority(self.path("pki"))
        return self._ca

    def new_ca(self, name: str) -> CertAuthority:
        return CertAuthority(self.path(f"pki-{name}"), name)

    def _env(self, extra: dict | None = None) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWSIOT_")}
        for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                  "ALL_PROXY"):
            env.pop(k, None)
        if extra:
            env.update(extra)
        return env

    def spawn(self, name: str, argv: list[str], env_extra: dict | None = None,
              secrets_: list[str] | None = None) -> Process:
        check(os.access(argv[0], os.X_OK), f"{argv[0]} is not built")
        self._n += 1
        p = Process(f"{name}#{self._n}", argv, self._env(env_extra), self.tmp,
                    secrets_=secrets_)
        self.processes.append(p)
        return p

    # ---- relay
    def start_relay(self, tunnels: list[tuple[str, str]] | None = None, port: int = 0,
                    admin: bool = True, extra: list[str] | None = None,
                    ca: CertAuthority | None = None, timeout: float | None = None) -> Relay:
        ca = ca or self.ca
        argv = [self.relay_bin, "--listen", f"127.0.0.1:{port}",
                "--tls-cert", ca.server_cert, "--tls-key", ca.server_key]
        if admin:
            argv += ["--admin", "127.0.0.1:0"]
        toks = []
        for src, dst in tunnels or []:
            argv += ["--tunnel", f"{src}:{dst}"]
            toks += [src, dst]
        argv += extra or []
        p = self.spawn("relay", argv, secrets_=toks)
        m = p.wait_line(r"^\s*\{.*\"event\"\s*:\s*\"ready\".*\}\s*$",
                        timeout or scaled(10), stream="stdout")
        try:
            ready = json.loads(m.group(0))
        except ValueError:
            raise TestFailure(f"relay ready line is not JSON: {m.group(0)!r}")
        check("listen" in ready, f"relay ready line has no listen: {ready!r}")
        return Relay(p, ready["listen"], ready.get("admin"))

    # ---- localproxy
    def start_localproxy(self, mode: str, token: str | None, relay: Relay | str | None,
                         local: str | int | None, verbosity: int | None = 5,
                         settings: dict | None = None, cafile: str | None = "default",
                         client_token: str | None = None, client_token_in_argv=False,
                         extra: list[str] | None = None,
                         env_extra: dict | None = None) -> Process:
        """mode: 'source' (-s local) or 'destination' (-d local). The access
        token goes in the environment, never argv. cafile='default' trusts the
        harness CA with --cafile; None adds no trust option."""
        argv = [self.localproxy_bin]
        if relay is not None:
            ep = relay.endpoint if isinstance(relay, Relay) else relay
            argv += ["-e", ep]
        if local is not None:
            argv += ["-s" if mode == "source" else "-d", str(local)]
        if cafile == "default":
            argv += ["--cafile", self.ca.ca_cert]
        elif cafile:
            argv += ["--cafile", cafile]
        if verbosity is not None:
            argv += ["-v", str(verbosity)]
        if settings:
            self._n += 1
            argv += ["--settings-json", self.write(f"settings-{self._n}.json",
                                                   settings_json(settings))]
        env = {}
        if token is not None:
            env["AWSIOT_TUNNEL_ACCESS_TOKEN"] = token
            self.secrets.append(token)
        if client_token is not None:
            self.secrets.append(client_token)
            if client_token_in_argv:
                argv += ["-i", client_token]
            else:
                env["AWSIOT_TUNNEL_CLIENT_TOKEN"] = client_token
        argv += extra or []
        env.update(env_extra or {})
        return self.spawn(f"localproxy-{mode[:3]}", argv, env,
                          secrets_=[token or "", client_token or ""])

    # ---- services
    def echo_server(self) -> EchoServer:
        s = EchoServer()
        self.servers.append(s)
        return s

    def sink_server(self) -> SinkServer:
        s = SinkServer()
        self.servers.append(s)
        return s

    def blast_server(self, nbytes: int) -> BlastServer:
        s = BlastServer(nbytes)
        self.servers.append(s)
        return s

    def dead_port(self) -> int:
        s, port = reserve_dead_port()
        self.sockets.append(s)
        return port

    # ---- common shape: relay + tunnel + destination + source
    def tunnel(self, service_port: int, src_settings=None, dst_settings=None,
               verbosity: int = 4) -> tuple[Relay, dict, Process, Process, int]:
        relay = self.start_relay()
        t = relay.open_tunnel()
        dst = self.start_localproxy("destination", t["destinationAccessToken"], relay,
                                    f"127.0.0.1:{service_port}", verbosity=verbosity,
                                    settings=dst_settings)
        src = self.start_localproxy("source", t["sourceAccessToken"], relay, "0",
                                    verbosity=verbosity, settings=src_settings,
                                    extra=["-b", "127.0.0.1"])
        port = src.wait_listening()
        return relay, t, dst, src, port


# --------------------------------------------------------------------------
# Running cases


class Runner:
    """Runs named cases, prints PASS/FAIL lines, exits non-zero on failure.

        r = Runner("transfer")
        @r.case("echo 64 MiB")
        def _(h): ...
        r.main()
    """

    def __init__(self, suite: str):
        self.suite = suite
        self.cases: list[tuple[str, callable]] = []
        if len(sys.argv) < 2:
            print(f"usage: {sys.argv[0]} BUILD_DIR [CASE_SUBSTRING...]", file=sys.stderr)
            sys.exit(2)
        self.build_dir = sys.argv[1]
        self.only = sys.argv[2:]

    def case(self, name: str):
        def deco(fn):
            self.cases.append((name, fn))
            return fn
        return deco

    def main(self):
        _install_signal_handlers()
        failed = []
        passed = 0
        t_suite = time.monotonic()
        for name, fn in self.cases:
            if self.only and not any(o in name for o in self.only):
                continue
            t0 = time.monotonic()
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
            h = Harness(self.build_dir, slug)
            try:
                try:
                    fn(h)
                    crashes = h.crash_reports()
                    if crashes:
                        raise TestFailure("; ".join(crashes))
                except BaseException as e:
                    if isinstance(e, KeyboardInterrupt):
                        raise
                    # Stop everything first so the report holds final stderr.
                    for p in h.processes:
                        if p.alive():
                            p.terminate(timeout=2)
                    msg = str(e) if isinstance(e, TestFailure) else traceback.format_exc()
                    print(f"FAIL {self.suite}: {name} ({time.monotonic() - t0:.1f} s): {msg}",
                          flush=True)
                    report = h.report()
                    if report:
                        print(report, flush=True)
                    failed.append(name)
                    continue
                print(f"PASS {self.suite}: {name} ({time.monotonic() - t0:.1f} s)", flush=True)
                passed += 1
            finally:
                h.cleanup()
        print(f"{self.suite}: {passed} passed, {len(failed)} failed "
              f"({time.monotonic() - t_suite:.1f} s)", flush=True)
        for n in failed:
            print(f"  failed: {n}", flush=True)
        sys.exit(1 if failed else 0)


def _install_signal_handlers():
    # meson sends SIGTERM on timeout: unwind so `finally` blocks kill children.
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def assert_no_secret(text: str, secrets_: list[str], where: str):
    """Fails if any secret, or any 16-char piece of one, is in `text`."""
    for s in secrets_:
        if not s:
            continue
        if s in text:
            raise TestFailure(f"a token appears verbatim in {where}")
        n = 16
        for i in range(0, max(1, len(s) - n + 1)):
            piece = s[i:i + n]
            if len(piece) == n and piece in text:
                raise TestFailure(f"a 16-char piece of a token ({i}..{i + n}) appears in {where}")
