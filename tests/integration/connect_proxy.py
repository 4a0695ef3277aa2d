#!/usr/bin/python3
"""An HTTP CONNECT proxy for the tests (Python 3.11 standard library only).

Loopback only: it listens on 127.0.0.1 and tunnels only to loopback targets
(127.0.0.0/8, ::1, localhost). One thread per client connection; the tunnel
itself is a select() loop moving up to 256 KiB per read, so a few MiB each
way take well under a second.

Knobs (attributes, safe to change while it runs):
    user, password  when set, CONNECT needs "Proxy-Authorization: Basic ..."
                    with exactly these; otherwise 407 with Proxy-Authenticate
    auth_failure    the status for missing or wrong credentials: 407, or 401
                    as tinyproxy answers
    answer_407      answer every CONNECT with 407 (whatever the credentials)
    drop_next       this many next connections are closed right after their
                    CONNECT request arrived, without an answer
    status          answer with this status instead of tunnelling (e.g. 503)

Counters (read them any time):
    connections     TCP connections accepted
    connects        CONNECT requests read
    tunnels         tunnels opened (200 sent)
    targets         "host:port" of each CONNECT, in order
    connect_times   time.monotonic() of each CONNECT request
    auth_headers    the Proxy-Authorization value of each CONNECT ("" if none)

Standalone, for trying things by hand:
    python3 tests/integration/connect_proxy.py [--port N] [--user U --password P]
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import sys
import threading
import time

MAX_HEAD = 16 * 1024
CHUNK = 256 * 1024


def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host == "::1":
        return True
    parts = host.split(".")
    return len(parts) == 4 and parts[0] == "127" and all(p.isdigit() for p in parts)


class ConnectProxy:
    def __init__(self, user: str | None = None, password: str | None = None, port: int = 0):
        self.user = user
        self.password = password
        self.answer_407 = False
        self.auth_failure = 407
        self.drop_next = 0
        self.status: int | None = None
        self.connections = 0
        self.connects = 0
        self.tunnels = 0
        self.targets: list[str] = []
        self.connect_times: list[float] = []
        self.auth_headers: list[str] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closing = False
        self._conns: list[socket.socket] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="connect-proxy",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """http://[user:password@]127.0.0.1:port (values used as given: encode them yourself)."""
        if user is None:
            return f"http://{self.address}"
        return f"http://{user}:{password or ''}@{self.address}"

    # ---- waiting
    def wait_for(self, what: str, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while getattr(self, what) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # ---- serving
    def _count(self, what: str, value=None):
        with self._cond:
            if value is None:
                setattr(self, what, getattr(self, what) + 1)
            else:
                getattr(self, what).append(value)
            self._cond.notify_all()

    def _accept_loop(self):
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                self._conns.append(conn)
            self._count("connections")
            threading.Thread(target=self._serve_safe, args=(conn,), daemon=True).start()

    def _serve_safe(self, conn: socket.socket):
        upstream = None
        try:
            upstream = self._serve(conn)
        except OSError:
            pass
        except Exception as e:  # a bug in the proxy itself: make it visible
            self._count("errors", repr(e))
        finally:
            for s in (conn, upstream):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()

    @staticmethod
    def _reply(conn: socket.socket, status: int, reason: str, headers: str = ""):
        body = f"{status} {reason}\n".encode()
        conn.sendall(f"HTTP/1.1 {status} {reason}\r\n{headers}Content-Length: {len(body)}\r\n"
                     f"Connection: close\r\n\r\n".encode() + body)

    def _read_head(self, conn: socket.socket) -> tuple[bytes, bytes] | None:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                return None
            chunk = conn.recv(4096)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _serve(self, conn: socket.socket):
        got = self._read_head(conn)
        if got is None:
            return None
        head, rest = got
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self._count("connect_times", time.monotonic())
        self._count("connects")
        if len(parts) != 3 or parts[0] != "CONNECT" or not parts[2].startswith("HTTP/1."):
            self._reply(conn, 405, "Method Not Allowed")
            return None
        target = parts[1]
        self._count("targets", target)
        self._count("auth_headers", headers.get("proxy-authorization", ""))
        with self._lock:
            drop = self.drop_next > 0
            if drop:
                self.drop_next -= 1
        if drop:
            return None
        if self.answer_407:
            self._reply(conn, 407, "Proxy Authentication Required",
                        'Proxy-Authenticate: Basic realm="tunneld-test"\r\n')
            return None
        if not self._authorized(headers.get("proxy-authorization", "")):
            reason = "Unauthorized" if self.auth_failure == 401 else "Proxy Authentication Required"
            self._reply(conn, self.auth_failure, reason,
                        'Proxy-Authenticate: Basic realm="tunneld-test"\r\n')
            return None
        if self.status is not None:
            self._reply(conn, self.status, "Test Status")
            return None
        host, _, port = target.rpartition(":")
        if not _is_loopback(host) or not port.isdigit():
            self._reply(conn, 403, "Forbidden (loopback targets only)")
            return None
        try:
            upstream = socket.create_connection((host.strip("[]"), int(port)), timeout=5)
        except OSError:
            self._reply(conn, 502, "Bad Gateway")
            return None
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._count("tunnels")
        if rest:
            upstream.sendall(rest)
        self._pipe(conn, upstream)
        return upstream

    def _authorized(self, value: str) -> bool:
        if self.user is None and self.password is None:
            return True
        scheme, _, encoded = value.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except ValueError:
            return False
        return decoded == f"{self.user or ''}:{self.password or ''}"

    def _pipe(self, a: socket.socket, b: socket.socket):
        for s in (a, b):
            s.settimeout(None)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = {a: b, b: a}
        open_ = {a, b}
        while open_:
            ready, _, _ = select.select(list(open_), [], [], 1.0)
            if self._closing:
                return
            for s in ready:
                try:
                    data = s.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    open_.discard(s)
                    with contextlib.suppress(OSError):
                        peer[s].shutdown(socket.SHUT_WR)
                    continue
                peer[s].sendall(data)

    def close(self):
        with self._lock:
            self._closing = True
            conns = list(self._conns)
        with contextlib.suppress(OSError):
            self._sock.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()


def main(argv: list[str]) -> int:
    port, user, password = 0, None, None
    it = iter(argv)
    for arg in it:
        if arg == "--port":
            port = int(next(it))
        elif arg == "--user":
            user = next(it)
        elif arg == "--password":
            password = next(it)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    p = ConnectProxy(user, password, port)
    print(f"CONNECT proxy on {p.address}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        p.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
