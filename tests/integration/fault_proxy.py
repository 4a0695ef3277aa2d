#!/usr/bin/python3
"""A fault-injecting wss man in the middle between the proxies and tunnel-relay.

Standard library only. It terminates TLS toward the proxy (the harness CA's
server certificate) and originates TLS toward the relay (trusting the harness
CA), passes the HTTP upgrade through untouched, then parses both directions
as WebSocket frames and the payload as the record stream of docs/protocol.md
(section 3: [u16 length][Message], not aligned with frames). Every record is
forwarded re-framed, so a fault can act at record boundaries (inject, repeat)
or anywhere in the byte stream (re-chunk):

    p = FaultProxy(ca, relay.endpoint)       # then give the proxies -e p.endpoint
    p.chunk = 7                              # every frame carries 7 bytes of the stream
    p.delay = 0.05                           # every frame waits 50 ms, order kept
    p.dup_stream_start = True                # each STREAM_START reaches the relay twice
    p.drop(conn)                             # both TCP links closed, no close frame
    p.stall(conn)                            # nothing forwarded, sockets kept open
    p.drop(conn, relay_side=False)           # the proxy's link closed, the relay's kept
    p.inject(conn, session_reset())          # a record toward the proxy, at a boundary
    p.hold_handshakes = True                 # upgrade requests are never forwarded

Connections are numbered from 1 in accept order; `p.conns` holds them, each
with its `mode` (source / destination, from the request's query) and counters
of the records seen per type and direction. One thread per connection runs a
select loop over both non-blocking TLS sockets (an SSL object is never used by
two threads). Nothing here logs a header: the request carries the tokens.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import selectors
import socket
import ssl
import struct
import threading
import time

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 131076  # docs/protocol.md section 3, either direction
DATA, STREAM_START, STREAM_RESET, SESSION_RESET = 1, 2, 3, 4
SERVICE_IDS, CONNECTION_START, CONNECTION_RESET = 5, 6, 7
FLUSH_AFTER = 0.002  # a partial chunk waits this long for more bytes


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record(type_: int, stream_id: int = 0) -> bytes:
    """A whole record: [u16 length][Message with type (and streamId)]."""
    msg = b"\x08" + _varint(type_)
    if stream_id:
        msg += b"\x10" + _varint(stream_id)
    return len(msg).to_bytes(2, "big") + msg


def session_reset() -> bytes:
    return record(SESSION_RESET)


def record_type(rec: bytes) -> int:
    """Field 1 of the Message in a whole record (0 when absent)."""
    body, i = rec[2:], 0
    while i < len(body):
        key, i = _read_varint(body, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _read_varint(body, i)
            if num == 1:
                return v
        elif wire == 2:
            n, i = _read_varint(body, i)
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            return 0
    return 0


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while i < len(b):
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i
    return v, len(b)


def _xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return data
    n = len(data)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    b0 = 0x80 | opcode
    n = len(payload)
    mbit = 0x80 if masked else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([b0, mbit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return hdr + payload
    key = os.urandom(4)
    return hdr + key + _xor(payload, key)


class FrameDecoder:
    """Incremental RFC 6455 frames -> (opcode, payload); continuation frames
    are reported as binary (their payload is just more of the stream)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out = []
        while True:
            b = self.buf
            if len(b) < 2:
                return out
            opcode = b[0] & 0x0F
            masked = b[1] & 0x80
            n = b[1] & 0x7F
            i = 2
            if n == 126:
                if len(b) < 4:
                    return out
                n = int.from_bytes(b[2:4], "big")
                i = 4
            elif n == 127:
                if len(b) < 10:
                    return out
                n = int.from_bytes(b[2:10], "big")
                i = 10
            key = b""
            if masked:
                if len(b) < i + 4:
                    return out
                key = bytes(b[i:i + 4])
                i += 4
            if len(b) < i + n:
                return out
            payload = bytes(b[i:i + n])
            del self.buf[:i + n]
            if masked:
                payload = _xor(payload, key)
            out.append((OP_BINARY if opcode == OP_CONT else opcode, payload))


class RecordSplitter:
    def __init__(self):
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 2:
            n = int.from_bytes(self.buf[:2], "big")
            if len(self.buf) < 2 + n:
                break
            out.append(bytes(self.buf[:2 + n]))
            del self.buf[:2 + n]
        return out


class Direction:
    """One way through the proxy: frames in from `src`, frames out to `dst`."""

    def __init__(self, name: str, masked_out: bool):
        self.name = name  # "up" (proxy -> relay) or "down" (relay -> proxy)
        self.masked_out = masked_out
        self.frames = FrameDecoder()
        self.records = RecordSplitter()
        self.carry = bytearray()       # stream bytes not yet framed (re-chunking)
        self.carry_since = 0.0
        self.queue: collections.deque = collections.deque()  # (due, frame bytes)
        self.out = bytearray()         # bytes ready for the socket
        self.eof = False
        self.frames_out = 0
        self.counts: collections.Counter = collections.Counter()


class Conn:
    def __init__(self, proxy: "FaultProxy", idx: int, client: ssl.SSLSocket):
        self.proxy = proxy
        self.idx = idx
        self.client = client
        self.relay: ssl.SSLSocket | None = None
        self.mode = "?"
        self.request = b""
        self.upgraded = False
        self.closed = threading.Event()
        self.up = Direction("up", masked_out=True)
        self.down = Direction("down", masked_out=False)
        self.stalled = False
        self.actions: collections.deque = collections.deque()  # from the test thread
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)

    # ---- requests from the test thread
    def _ask(self, action):
        self.actions.append(action)
        with contextlib.suppress(OSError):
            self.wake_w.send(b"x")

    def counts(self, direction: str) -> collections.Counter:
        return collections.Counter((self.up if direction == "up" else self.down).counts)


class FaultProxy:
    def __init__(self, ca, upstream: str, name: str = "fault-proxy"):
        self.ca = ca
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.name = name
        self.server_ctx = ca.server_context()
        self.client_ctx = ssl.create_default_context(cafile=ca.ca_cert)
        # Faults applying to every connection (read on each frame).
        self.chunk: int | None = None
        self.chunk_dirs = ("up", "down")
        self.delay = 0.0
        self.dup_stream_start = False
        self.hold_handshakes = False
        self.conns: list[Conn] = []
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept_loop, daemon=True, name=name)]
        self._threads[0].start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ---- faults on one connection
    def drop(self, conn: Conn, client_side: bool = True, relay_side: bool = True,
             rst: bool = False):
        """Closes the TCP link(s) without a WebSocket close frame or TLS
        close_notify. With only client_side, the relay keeps seeing a live
        peer (a reconnect then replaces it)."""
        conn._ask(("drop", client_side, relay_side, rst))

    def stall(self, conn: Conn):
        """Half-open: nothing is read or forwarded any more either way."""
        conn._ask(("stall",))

    def inject(self, conn: Conn, rec: bytes, direction: str = "down"):
        """Sends a whole record at the next record boundary."""
        conn._ask(("inject", direction, rec))

    # ---- waiting
    def wait_conns(self, n: int, timeout: float, upgraded: bool = True) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while sum(1 for c in self.conns if c.upgraded or not upgraded) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def live(self, mode: str) -> Conn | None:
        """The newest upgraded, still open connection of a mode."""
        with self._cond:
            for c in reversed(self.conns):
                if c.mode == mode and c.upgraded and not c.closed.is_set():
                    return c
        return None

    def wait_live(self, mode: str, timeout: float, after: int = 0) -> Conn | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            c = self.live(mode)
            if c and c.idx > after:
                return c
            time.sleep(0.02)
        return None

    def close(self):
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        for c in list(self.conns):
            c._ask(("drop", True, True, False))
        for t in self._threads:
            t.join(timeout=2)

    # ---- internals
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve_safe, args=(raw,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve_safe(self, raw: socket.socket):
        conn = None
        try:
            raw.settimeout(10)
            tls = self.server_ctx.wrap_socket(raw, server_side=True)
            with self._cond:
                conn = Conn(self, len(self.conns) + 1, tls)
                self.conns.append(conn)
                self._cond.notify_all()
            self._serve(conn)
        except (OSError, ssl.SSLError, ValueError) as e:
            with self._cond:
                self.errors.append(f"connection {conn.idx if conn else '?'}: {e!r}")
        finally:
            if conn:
                conn.closed.set()
                for s in (conn.client, conn.relay, conn.wake_r, conn.wake_w):
                    if s is not None:
                        with contextlib.suppress(OSError):
                            s.close()
            else:
                with contextlib.suppress(OSError):
                    raw.close()
            with self._cond:
                self._cond.notify_all()

    @staticmethod
    def _read_head(sock) -> tuple[bytes, bytes]:
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = sock.recv(4096)
            if not d:
                raise OSError("EOF during the HTTP upgrade")
            buf += d
            if len(buf) > 16384:
                raise OSError("oversized HTTP head")
        head, _, rest = buf.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n", rest

    def _serve(self, conn: Conn):
        head, rest_up = self._read_head(conn.client)
        conn.request = head
        m = re.search(rb"local-proxy-mode=(\w+)", head.split(b"\r\n", 1)[0])
        conn.mode = m.group(1).decode() if m else "?"
        conn.client.settimeout(0.05)
        while self.hold_handshakes and not self._stop.is_set():
            if conn.actions:
                return
            try:
                # Nothing is due before the 101: a read ends only at EOF.
                if not conn.client.recv(1):
                    return
            except (socket.timeout, ssl.SSLWantReadError):
                pass
        conn.client.settimeout(10)
        raw = socket.create_connection(self.upstream, timeout=10)
        conn.relay = self.client_ctx.wrap_socket(raw, server_hostname=self.upstream[0])
        conn.relay.sendall(head + rest_up)
        resp, rest_down = self._read_head(conn.relay)
        conn.client.sendall(resp)
        if not resp.startswith(b"HTTP/1.1 101"):
            return
        with self._cond:
            conn.upgraded = True
            self._cond.notify_all()
        self._pump(conn, rest_up=b"", rest_down=rest_down)

    def _pump(self, conn: Conn, rest_up: bytes, rest_down: bytes):
        sel = selectors.DefaultSelector()
        for s in (conn.client, conn.relay):
            s.setblocking(False)
        sel.register(conn.wake_r, selectors.EVENT_READ)
        ends = {"up": (conn.client, conn.relay, conn.up), "down": (conn.relay, conn.client, conn.down)}
        if rest_down:
            self._on_bytes(conn, conn.down, rest_down)
        registered: dict = {}
        while not self._stop.is_set():
            # Requests from the test.
            while conn.actions:
                act = conn.actions.popleft()
                if act[0] == "drop":
                    _, cs, rs, rst = act
                    for side, s in ((cs, conn.client), (rs, conn.relay)):
                        if side:
                            if rst:
                                with contextlib.suppress(OSError):
                                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                 struct.pack("ii", 1, 0))
                            # The raw fd closes without close_notify.
                            with contextlib.suppress(OSError):
                                if s in registered:
                                    sel.unregister(s)
                                    registered.pop(s)
                                s.close()
                    if cs and rs:
                        return
                    # One side left: read and discard it until it closes.
                    conn.stalled = "discard"
                elif act[0] == "stall":
                    conn.stalled = True
                elif act[0] == "inject":
                    d = conn.up if act[1] == "up" else conn.down
                    self._emit(d, act[2], force_flush=True)
            with contextlib.suppress(OSError):
                while conn.wake_r.recv(64):
                    pass
            # Move due frames to the socket buffers.
            now = time.monotonic()
            for d in (conn.up, conn.down):
                if d.carry and now - d.carry_since >= FLUSH_AFTER:
                    self._frame_carry(d, flush=True)
                while d.queue and d.queue[0][0] <= now:
                    d.out += d.queue.popleft()[1]
            # What to watch.
            want = {}
            for key, (src, dst, d) in ends.items():
                if conn.stalled is True:
                    break
                if src.fileno() >= 0 and not d.eof and (conn.stalled or len(d.out) < (1 << 20)):
                    want[src] = want.get(src, 0) | selectors.EVENT_READ
                if dst.fileno() >= 0 and d.out and not conn.stalled:
                    want[dst] = want.get(dst, 0) | selectors.EVENT_WRITE
            for s in list(registered):
                if s not in want:
                    sel.unregister(s)
                    registered.pop(s)
            for s, ev in want.items():
                if registered.get(s) != ev:
                    if s in registered:
                        sel.modify(s, ev)
                    else:
                        sel.register(s, ev)
                    registered[s] = ev
            timeout = 0.2
            for d in (conn.up, conn.down):
                if d.queue:
                    timeout = min(timeout, max(0.0, d.queue[0][0] - now))
                if d.carry:
                    timeout = min(timeout, FLUSH_AFTER)
            pending = [s for s in (conn.client, conn.relay)
                       if s.fileno() >= 0 and s in want and want[s] & selectors.EVENT_READ
                       and s.pending()]
            events = sel.select(0 if pending else timeout)
            ready = {key.fileobj: mask for key, mask in events}
            for s in pending:
                ready[s] = ready.get(s, 0) | selectors.EVENT_READ
            for key, (src, dst, d) in ends.items():
                if ready.get(src, 0) & selectors.EVENT_READ:
                    try:
                        while True:
                            data = src.recv(1 << 16)
                            if not data:
                                d.eof = True
                                break
                            if conn.stalled != "discard":
                                self._on_bytes(conn, d, data)
                            if not src.pending():
                                break
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                    except (OSError, ssl.SSLError):
                        d.eof = True
                if ready.get(dst, 0) & selectors.EVENT_WRITE and d.out:
                    try:
                        n = dst.send(d.out[:1 << 16])
                        del d.out[:n]
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                        pass
                    except (OSError, ssl.SSLError):
                        d.eof = True
            if conn.up.eof or conn.down.eof:
                if conn.stalled == "discard":
                    return
                # One end went away: pass the bytes already due, then close the other.
                for d, dst in ((conn.up, conn.relay), (conn.down, conn.client)):
                    with contextlib.suppress(OSError, ssl.SSLError, ValueError):
                        dst.setblocking(True)
                        dst.settimeout(1)
                        if not d.eof:
                            while d.queue:
                                d.out += d.queue.popleft()[1]
                            if d.out:
                                dst.sendall(bytes(d.out))
                return

    def _on_bytes(self, conn: Conn, d: Direction, data: bytes):
        for opcode, payload in d.frames.feed(data):
            if opcode == OP_BINARY:
                for rec in d.records.feed(payload):
                    t = record_type(rec)
                    d.counts[t] += 1
                    self._emit(d, rec)
                    if t == STREAM_START and d.name == "up" and self.dup_stream_start:
                        d.counts["dup"] += 1
                        self._emit(d, rec)
                self._frame_carry(d, flush=False)
            else:
                d.counts[f"op{opcode}"] += 1
                self._frame_carry(d, flush=True)
                self._queue(d, encode_frame(opcode, payload, d.masked_out))

    def _emit(self, d: Direction, rec: bytes, force_flush: bool = False):
        if not d.carry:
            d.carry_since = time.monotonic()
        d.carry += rec
        if force_flush:
            self._frame_carry(d, flush=True)

    def _frame_carry(self, d: Direction, flush: bool):
        size = self.chunk if (self.chunk and d.name in self.chunk_dirs) else MAX_FRAME
        size = max(1, min(size, MAX_FRAME))
        while len(d.carry) >= size or (flush and d.carry):
            piece = bytes(d.carry[:size])
            del d.carry[:size]
            self._queue(d, encode_frame(OP_BINARY, piece, d.masked_out))
        if size == MAX_FRAME and d.carry and not self.chunk:
            # Not re-chunking: a frame carries whole records as they came.
            piece = bytes(d.carry)
            d.carry.clear()
            self._queue(d, encode_frame(OP_BINARY, piece, d.masked_out))
        if d.carry:
            d.carry_since = time.monotonic()

    def _queue(self, d: Direction, frame: bytes):
        d.frames_out += 1
        if self.delay:
            d.queue.append((time.monotonic() + self.delay, frame))
        else:
            d.out += frame
