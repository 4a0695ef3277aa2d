#!/usr/bin/python3
"""A scripted, misbehaving tunneling service (wss) for robustness tests.

Standard library only: ssl for TLS, and a minimal WebSocket server (RFC 6455:
handshake with Sec-WebSocket-Accept, unmasked server frames, masked client
frames, ping/pong, close). It accepts a localproxy and, on the FIRST
connection, plays one scenario; later connections (reconnects) get a
well-behaved service that answers pings and stays quiet, so a test can tell
"the proxy reconnected" from "the proxy is stuck".

Scenarios (SCENARIOS below): garbage records, a record without a type, an
oversized length prefix with junk, an over-limit DATA payload on an active
stream, a text frame, STREAM_START sent to a source, a frame over 131076 bytes,
a wrong subprotocol in the 101, an HTTP 500 handshake, a half-open peer that
never answers pings, and a handshake that is never answered.

Used in-process by test_hostile.py; also runnable by hand:
    hostile_service.py --cert S.pem --key S.key --scenario text_frame
prints {"event":"ready","listen":"127.0.0.1:PORT"} and logs to stderr.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_CLIENT_FRAME = 1 << 20  # what this server accepts from the proxy
MAX_REQUEST = 8192


# ---------------------------------------------------------------- encoding

def ws_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A server-to-client frame (never masked)."""
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = bytes([b0, n])
    elif n < 65536:
        hdr = bytes([b0, 126]) + n.to_bytes(2, "big")
    else:
        hdr = bytes([b0, 127]) + n.to_bytes(8, "big")
    return hdr + payload


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


def pb_message(type_: int | None = None, stream_id: int | None = None,
               payload: bytes | None = None) -> bytes:
    """Hand-encoded protobuf Message (docs/protocol.md section 3)."""
    out = b""
    if type_ is not None:
        out += b"\x08" + _varint(type_)
    if stream_id is not None:
        out += b"\x10" + _varint(stream_id)
    if payload is not None:
        out += b"\x22" + _varint(len(payload)) + payload
    return out


def record(msg: bytes) -> bytes:
    """[u16 BE length][message]"""
    assert len(msg) <= 0xFFFF
    return len(msg).to_bytes(2, "big") + msg


DATA, STREAM_START, STREAM_RESET, SESSION_RESET = 1, 2, 3, 4


def decode_records(buf: bytes) -> list[bytes]:
    """Splits complete records off a byte string (for the event log only)."""
    out = []
    i = 0
    while i + 2 <= len(buf):
        n = int.from_bytes(buf[i:i + 2], "big")
        if i + 2 + n > len(buf):
            break
        out.append(buf[i + 2:i + 2 + n])
        i += 2 + n
    return out


# ---------------------------------------------------------------- scenarios
#
# Each scenario: (mode the proxy should run in, what is sent after the
# handshake, description, settings it needs). The frames list holds raw bytes
# to write to the TLS socket, or ("sleep", seconds).

def _garbage():
    # A record of 8 bytes that are no valid protobuf (field 31, wire type 7),
    # then bytes that are no record at all.
    return [ws_frame(OP_BINARY, record(b"\xff" * 8) + b"\xfa\xfb\xfc\xfd")]


def _untyped_record():
    # Message with streamId=1 and no type: type must be non-zero.
    return [ws_frame(OP_BINARY, record(pb_message(stream_id=1)))]


def _oversized_length():
    # Length prefix 0xFFFF followed by 65535 bytes of junk: no valid Message
    # can be parsed from it; the decoder must neither allocate wildly nor crash.
    junk = bytes((i * 37 + 11) & 0xFF for i in range(0xFFFF))
    return [ws_frame(OP_BINARY, b"\xff\xff" + junk)]


def _oversized_payload():
    # An active stream, then a DATA record whose payload is 65000 bytes
    # (limit 64512): a protocol error, not a write.
    start = record(pb_message(STREAM_START, 1))
    data = record(pb_message(DATA, 1, b"x" * 65000))
    return [ws_frame(OP_BINARY, start), ("sleep", 0.5), ws_frame(OP_BINARY, data)]


def _text_frame():
    return [ws_frame(OP_TEXT, b"this is a text frame")]


def _stream_start_to_source():
    # u16 length 4 + Message{type=STREAM_START(2), streamId=1}: 08 02 10 01
    return [ws_frame(OP_BINARY, b"\x00\x04\x08\x02\x10\x01")]


def _oversized_frame():
    # 200000 bytes of otherwise harmless records (SESSION_RESET with no active
    # stream): the only fault is the frame size (limit 131076).
    rec = record(pb_message(SESSION_RESET))
    body = rec * (200000 // len(rec))
    return [ws_frame(OP_BINARY, body)]


def _fragmented_records():
    # Not hostile: records split across frames at awkward points, including a
    # continuation frame. The proxy must stay up and NOT reconnect.
    r = record(pb_message(SESSION_RESET)) * 3
    return [ws_frame(OP_BINARY, r[:1], fin=False), ws_frame(OP_CONT, r[1:5], fin=False),
            ws_frame(OP_CONT, r[5:]), ws_frame(OP_BINARY, r[:3]), ws_frame(OP_BINARY, r[3:])]


SCENARIOS = {
    # name: (proxy mode, frames factory, expected outcome)
    #   outcome "error": proxy logs an error and reconnects or exits non-zero
    #   outcome "reconnect": proxy must reconnect (a second handshake)
    #   outcome "stay": proxy must stay connected (no second handshake)
    "garbage": ("source", _garbage, "error"),
    "untyped_record": ("source", _untyped_record, "error"),
    "oversized_length": ("source", _oversized_length, "error"),
    "oversized_payload": ("destination", _oversized_payload, "error"),
    "text_frame": ("source", _text_frame, "error"),
    "stream_start_to_source": ("source", _stream_start_to_source, "error"),
    "oversized_frame": ("source", _oversized_frame, "error"),
    "wrong_subprotocol": ("source", lambda: [], "error"),
    "http_500": ("source", lambda: [], "reconnect"),
    "half_open": ("source", lambda: [], "reconnect"),
    # The upgrade request is read and never answered: SIGTERM must still stop
    # the proxy at once (exit 0) while its handshake is pending.
    "stalled_handshake": ("source", lambda: [], "sigterm"),
    "fragmented_records": ("source", _fragmented_records, "stay"),
    # Not hostile: a service that only listens (and records the proxy's
    # binary frames, see HostileServer.binary_frames).
    "quiet": ("source", lambda: [], "stay"),
}


# ---------------------------------------------------------------- server

class Handshake:
    def __init__(self, index: int, method: str, target: str, headers: dict[str, str]):
        self.index = index
        self.method = method
        self.target = target
        self.headers = headers
        self.time = time.monotonic()

    def __repr__(self):
        return f"Handshake(#{self.index} {self.method} {self.target})"


class HostileServer:
    def __init__(self, cert: str, key: str, scenario: str, log=None):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario}")
        self.scenario = scenario
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._log = log or (lambda s: None)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self.handshakes: list[Handshake] = []
        self.events: list[str] = []
        self.attack_done_at: float | None = None
        # (connection, time, payload) of each binary or continuation frame
        # from the proxy, the first 4 MiB of them.
        self.binary_frames: list[tuple[int, float, bytes]] = []
        self._binary_bytes = 0
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        t = threading.Thread(target=self._accept_loop, daemon=True, name="hostile-accept")
        t.start()
        self._threads.append(t)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def event(self, text: str):
        with self._cond:
            self.events.append(f"{time.monotonic():.3f} {text}")
            self._cond.notify_all()
        self._log(text)

    def wait_handshakes(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.handshakes) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def handshake_count(self) -> int:
        with self._cond:
            return len(self.handshakes)

    def close(self):
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._cond:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(timeout=3)

    # ---- connections
    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.connections += 1
                idx = self.connections
                self._socks.append(raw)
            t = threading.Thread(target=self._serve_safe, args=(raw, idx), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve_safe(self, raw: socket.socket, idx: int):
        conn = None
        try:
            raw.settimeout(5)
            conn = self.ctx.wrap_socket(raw, server_side=True)
            with self._cond:
                self._socks.append(conn)
            self._serve(conn, idx)
        except (OSError, ssl.SSLError, ValueError) as e:
            self.event(f"conn {idx}: ended: {e!r}")
        finally:
            # wrap_socket takes over raw's descriptor: close the TLS socket.
            for s in (conn, raw):
                if s is not None:
                    with contextlib.suppress(OSError):
                        s.close()

    def _read_request(self, conn) -> bytes:
        buf = b""
        deadline = time.monotonic() + 5
        while b"\r\n\r\n" not in buf:
            if len(buf) > MAX_REQUEST or time.monotonic() > deadline:
                raise ValueError("request too large or too slow")
            d = conn.recv(4096)
            if not d:
                raise ValueError("closed during the request")
            buf += d
        return buf

    def _serve(self, conn, idx: int):
        req = self._read_request(conn)
        head = req.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        lines = head.split("\r\n")
        method, target, _ = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        first = (idx == 1)
        scenario = self.scenario if first else "well_behaved"
        key = headers.get("sec-websocket-key", "")
        if method != "GET" or not key or not target.startswith("/tunnel"):
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            self.event(f"conn {idx}: bad request {lines[0]!r}")
            return
        hs = Handshake(idx, method, target, headers)
        with self._cond:
            self.handshakes.append(hs)
            self._cond.notify_all()
        self.event(f"conn {idx}: handshake {target} ({scenario})")

        if scenario == "stalled_handshake":
            conn.settimeout(0.2)
            while not self._stop.is_set():
                try:
                    if not conn.recv(4096):
                        self.event(f"conn {idx}: peer closed during the stalled handshake")
                        return
                except socket.timeout:
                    continue
            return

        if scenario == "http_500":
            conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                         b"Connection: close\r\n\r\n")
            return

        offered = [p.strip() for p in headers.get("sec-websocket-protocol", "").split(",")
                   if p.strip()]
        proto = offered[0] if offered else ""
        if scenario == "wrong_subprotocol":
            proto = "aws.iot.securetunneling-9.9"
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        resp = ("HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n"
                f"channel-id: hostile-{idx}\r\n")
        if proto:
            resp += f"Sec-WebSocket-Protocol: {proto}\r\n"
        conn.sendall((resp + "\r\n").encode())

        if first:
            time.sleep(0.3)  # let the proxy settle (a source starts listening)
            for item in SCENARIOS[scenario][1]():
                if isinstance(item, tuple) and item[0] == "sleep":
                    time.sleep(item[1])
                    continue
                conn.sendall(item)
            with self._cond:
                self.attack_done_at = time.monotonic()
            self.event(f"conn {idx}: scenario {scenario} sent")
        self._read_loop(conn, idx, answer_pings=(scenario != "half_open"))

    def _read_loop(self, conn, idx: int, answer_pings: bool):
        conn.settimeout(0.2)
        buf = b""
        while not self._stop.is_set():
            try:
                d = conn.recv(65536)
            except socket.timeout:
                continue
            except (OSError, ssl.SSLError) as e:
                self.event(f"conn {idx}: read error {e!r}")
                return
            if not d:
                self.event(f"conn {idx}: peer closed TCP")
                return
            buf += d
            while True:
                parsed = _parse_client_frame(buf)
                if parsed is None:
                    break
                if parsed == "bad":
                    self.event(f"conn {idx}: bad client frame")
                    return
                fin, opcode, payload, used = parsed
                buf = buf[used:]
                if opcode == OP_PING:
                    self.event(f"conn {idx}: ping")
                    if answer_pings:
                        conn.sendall(ws_frame(OP_PONG, payload))
                elif opcode == OP_CLOSE:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    self.event(f"conn {idx}: close frame code={code} "
                               f"reason={payload[2:].decode('utf-8', 'replace')!r}")
                    with contextlib.suppress(OSError):
                        conn.sendall(ws_frame(OP_CLOSE, payload[:2]))
                    return
                elif opcode == OP_TEXT:
                    self.event(f"conn {idx}: text frame from proxy ({len(payload)} B)")
                elif opcode in (OP_BINARY, OP_CONT):
                    with self._cond:
                        if self._binary_bytes + len(payload) <= (4 << 20):
                            self._binary_bytes += len(payload)
                            self.binary_frames.append((idx, time.monotonic(), payload))
                    self.event(f"conn {idx}: binary {len(payload)} B")


def _parse_client_frame(buf: bytes):
    """Returns (fin, opcode, payload, consumed), None (need more) or 'bad'."""
    if len(buf) < 2:
        return None
    b0, b1 = buf[0], buf[1]
    fin = bool(b0 & 0x80)
    opcode = b0 & 0x0F
    masked = bool(b1 & 0x80)
    n = b1 & 0x7F
    i = 2
    if n == 126:
        if len(buf) < 4:
            return None
        n = int.from_bytes(buf[2:4], "big")
        i = 4
    elif n == 127:
        if len(buf) < 10:
            return None
        n = int.from_bytes(buf[2:10], "big")
        i = 10
    if n > MAX_CLIENT_FRAME or not masked:
        return "bad"  # RFC 6455 5.1: client frames must be masked
    if len(buf) < i + 4 + n:
        return None
    mask = buf[i:i + 4]
    i += 4
    payload = bytes(b ^ mask[j & 3] for j, b in enumerate(buf[i:i + n])) if n < 4096 else \
        _unmask_fast(buf[i:i + n], mask)
    return fin, opcode, payload, i + n


def _unmask_fast(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(data, "big") ^ m).to_bytes(n, "big")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--duration", type=float, default=600, help="exit after this many seconds")
    args = ap.parse_args()
    srv = HostileServer(args.cert, args.key, args.scenario,
                        log=lambda s: print(s, file=sys.stderr, flush=True))
    print(json.dumps({"event": "ready", "listen": srv.endpoint}), flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    stop.wait(args.duration)
    srv.close()


if __name__ == "__main__":
    main()
