#!/usr/bin/python3
"""tunnel-relay's server side seen by a raw WebSocket client written here:
HTTP statuses and bodies of refused handshakes, the 101, RFC 6455 rules for
client frames (masking, text, size, fragmentation with control frames
between fragments, ping/pong, the close handshake), the relay's close codes
(replacement, DELETE, shutdown) and backpressure toward an absent end.

    python3 tests/integration/test_relay_server.py BUILD_DIR [CASE_SUBSTRING...]
"""
import base64
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Runner, check, new_client_token, new_token, scaled  # noqa: E402

r = Runner("relay-server")

V3 = "aws.iot.securetunneling-3.0"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 131076


class Client:
    """One TLS connection to the relay, speaking just enough HTTP/WebSocket."""

    def __init__(self, h, relay, tls=True):
        raw = socket.create_connection((relay.host.strip("[]"), relay.port), timeout=scaled(10))
        if tls:
            ctx = ssl.create_default_context(cafile=h.ca.ca_cert)
            ctx.set_alpn_protocols(["http/1.1"])
            self.s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        else:
            self.s = raw
        self.buf = b""
        self.key = base64.b64encode(secrets.token_bytes(16)).decode()

    def send(self, data: bytes):
        self.s.sendall(data)

    def request(self, path="/tunnel?local-proxy-mode=source", headers=None,
                protocols=(V3,), upgrade=True, extra: bytes = b""):
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1"]
        if upgrade:
            lines += ["Upgrade: websocket", "Connection: Upgrade",
                      f"Sec-WebSocket-Key: {self.key}", "Sec-WebSocket-Version: 13"]
            if protocols:
                lines.append("Sec-WebSocket-Protocol: " + ", ".join(protocols))
        for k, v in headers or []:
            lines.append(f"{k}: {v}")
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode() + extra)
        return self.response()

    def _fill(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def response(self):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split(" ")[1])
        hdrs = {}
        for ln in lines[1:]:
            k, v = ln.split(":", 1)
            hdrs.setdefault(k.strip().lower(), []).append(v.strip())
        body = b""
        n = int(hdrs.get("content-length", ["0"])[0])
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body.decode(errors="replace")

    def frame(self, opcode: int, payload: bytes, fin=True, masked=True, key=None):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        mbit = 0x80 if masked else 0
        if n < 126:
            hdr = bytes([b0, mbit | n])
        elif n <= 0xFFFF:
            hdr = bytes([b0, mbit | 126]) + struct.pack(">H", n)
        else:
            hdr = bytes([b0, mbit | 127]) + struct.pack(">Q", n)
        if not masked:
            return hdr + payload
        key = key if key is not None else secrets.token_bytes(4)
        if key == b"\0\0\0\0":
            return hdr + key + payload
        m = (key * (n // 4 + 1))[:n]
        x = (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big") \
            if n else b""
        return hdr + key + x

    def send_frame(self, *a, **kw):
        self.send(self.frame(*a, **kw))

    def read_frame(self):
        """(fin, opcode, payload) of a server frame, which must be unmasked."""
        while len(self.buf) < 2:
            self._fill()
        b0, b1 = self.buf[0], self.buf[1]
        check(not (b1 & 0x80), "the relay sent a masked frame")
        n = b1 & 0x7F
        i = 2
        if n == 126:
            while len(self.buf) < 4:
                self._fill()
            n = struct.unpack(">H", self.buf[2:4])[0]
            i = 4
        elif n == 127:
            while len(self.buf) < 10:
                self._fill()
            n = struct.unpack(">Q", self.buf[2:10])[0]
            i = 10
        while len(self.buf) < i + n:
            self._fill()
        payload = self.buf[i:i + n]
        self.buf = self.buf[i + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def read_close(self):
        """Skips data frames up to a close frame: (code, reason)."""
        while True:
            _, op, p = self.read_frame()
            if op == 8:
                if len(p) >= 2:
                    return struct.unpack(">H", p[:2])[0], p[2:].decode(errors="replace")
                return 1005, ""

    def closed_by_peer(self, timeout: float) -> bool:
        self.s.settimeout(timeout)
        try:
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
        except (ConnectionError, ssl.SSLError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def record(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


def varint(v: int) -> bytes:
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def stream_start(sid: int) -> bytes:
    return record(b"\x08\x02\x10" + varint(sid))


def data_record(sid: int, payload: bytes) -> bytes:
    return record(b"\x08\x01\x10" + varint(sid) + b"\x22" + varint(len(payload)) + payload)


def parse_records(stream: bytes):
    """Whole records of a byte stream: [(type, stream id, payload)], rest."""
    out = []
    while len(stream) >= 2:
        n = struct.unpack(">H", stream[:2])[0]
        if len(stream) < 2 + n:
            break
        body, stream = stream[2:2 + n], stream[2 + n:]
        fields, i = {}, 0
        while i < len(body):
            tag = body[i]
            i += 1
            if tag & 7 == 0:
                v, shift = 0, 0
                while True:
                    b = body[i]
                    i += 1
                    v |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                fields[tag >> 3] = v
            else:
                ln, shift = 0, 0
                while True:
                    b = body[i]
                    i += 1
                    ln |= (b & 0x7F) << shift
                    shift += 7
                    if not b & 0x80:
                        break
                fields.setdefault(tag >> 3, b"")
                fields[tag >> 3] = body[i:i + ln]
                i += ln
        out.append((fields.get(1, 0), fields.get(2, 0), fields.get(4, b"")))
    return out, stream


def open_ws(h, relay, token, mode="source", client_token=None):
    c = Client(h, relay)
    hdrs = [("access-token", token)]
    if client_token:
        hdrs.append(("client-token", client_token))
    status, hd, body = c.request(f"/tunnel?local-proxy-mode={mode}", hdrs)
    check(status == 101, f"handshake: HTTP {status} {body!r}")
    return c, hd


def refused(h, relay, **kw):
    c = Client(h, relay)
    try:
        status, hd, body = c.request(**kw)
        check("close" in [v.lower() for v in hd.get("connection", [])],
              f"HTTP {status} without Connection: close")
        return status, body
    finally:
        c.close()


@r.case("refused handshakes: status codes and one-line bodies")
def _(h):
    src, dst = new_token("s"), new_token("d")
    relay = h.start_relay(tunnels=[(src, dst)])
    tok = [("access-token", src)]
    cases = [
        ("plain HTTP", dict(path="/", upgrade=False), 400, "use a WebSocket upgrade on /tunnel"),
        ("upgrade to something else", dict(headers=tok + [("Upgrade", "h2c")], upgrade=False),
         400, "only WebSocket upgrades"),
        ("wrong path", dict(path="/other?local-proxy-mode=source", headers=tok), 400,
         "path must be /tunnel"),
        ("no mode", dict(path="/tunnel", headers=tok), 400, "local-proxy-mode"),
        ("bad mode", dict(path="/tunnel?local-proxy-mode=both", headers=tok), 400,
         "source or destination"),
        ("no token", dict(), 401, "no access token"),
        ("unknown token", dict(headers=[("access-token", new_token("x"))]), 401, ""),
        ("two access-token lines", dict(headers=tok + tok), 400, "more than one access token"),
        ("header and cookie", dict(headers=tok + [("Cookie", f"awsiot-tunnel-token={src}")]),
         400, "more than one access token"),
        ("bad client-token", dict(headers=tok + [("client-token", "short")]), 400,
         "client-token"),
        ("no subprotocol", dict(headers=tok, protocols=()), 400, "Sec-WebSocket-Protocol"),
        ("unknown subprotocol", dict(headers=tok, protocols=("chat",)), 400,
         "Sec-WebSocket-Protocol"),
        ("wrong mode", dict(path="/tunnel?local-proxy-mode=destination", headers=tok), 403, ""),
        ("head over 4 KiB", dict(headers=tok + [("X-Pad", "a" * 4200)]), 431, "4096"),
        ("head over 8 KiB", dict(headers=tok + [("X-Pad", "a" * 20000)]), 431, ""),
    ]
    for name, kw, want, text in cases:
        status, body = refused(h, relay, **kw)
        print(f"  {name}: {status} {body.strip()}")
        check(status == want, f"{name}: HTTP {status}, expected {want} ({body!r})")
        check(text in body and body.endswith("\n") and body.count("\n") == 1,
              f"{name}: body {body!r} lacks {text!r}")
    # Single use without a client token; closed tunnels get 410.
    c, _ = open_ws(h, relay, src)
    c.close()
    time.sleep(0.2)
    status, body = refused(h, relay, headers=tok)
    check(status == 401, f"reuse without client-token: HTTP {status} {body!r}")
    t = relay.open_tunnel()
    relay.close_tunnel(t["tunnelId"])
    status, body = refused(h, relay, headers=[("access-token", t["sourceAccessToken"])])
    check(status == 410, f"closed tunnel: HTTP {status} {body!r}")
    check(relay.process.alive(), "relay died")


def admin_post(relay, body: dict) -> tuple[int, dict]:
    """POST /tunnels, returning the status and JSON body of errors too."""
    req = urllib.request.Request(f"http://{relay.admin}/tunnels", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=scaled(10)) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@r.case("limits: --max-open-tunnels answers 503, --keep-closed-tunnels forgets the oldest "
        "closed tunnel (410, then 401); bad values exit 2")
def _(h):
    src, dst = new_token("s"), new_token("d")
    relay = h.start_relay(tunnels=[(src, dst)],
                          extra=["--max-open-tunnels", "2", "--keep-closed-tunnels", "1"])
    t2 = relay.open_tunnel()
    status, body = admin_post(relay, {})
    print(f"  third open: {status} {body}")
    check(status == 503 and "--max-open-tunnels" in body.get("error", ""),
          f"third open of 2: HTTP {status} {body!r}")
    relay.process.wait_line(r"tunnel not opened: 2 tunnels are open", scaled(5))
    relay.close_tunnel(t2["tunnelId"])
    t3 = relay.open_tunnel()  # a closed tunnel makes room
    # t2 is the one closed tunnel remembered: 410 (gone).
    status, body = refused(h, relay, headers=[("access-token", t2["sourceAccessToken"])])
    check(status == 410, f"remembered closed tunnel: HTTP {status} {body!r}")
    relay.close_tunnel(t3["tunnelId"])
    # Now t3 is remembered and t2 forgotten: its tokens are unknown.
    status, body = refused(h, relay, headers=[("access-token", t2["sourceAccessToken"])])
    check(status == 401 and "unknown access token" in body,
          f"forgotten closed tunnel: HTTP {status} {body!r}")
    status, body = refused(h, relay, headers=[("access-token", t3["sourceAccessToken"])])
    check(status == 410, f"remembered closed tunnel: HTTP {status} {body!r}")
    listed = [(t["tunnelId"], t["status"]) for t in relay.list_tunnels()["tunnels"]]
    check(listed == [("t1", "OPEN"), (t3["tunnelId"], "CLOSED")], f"GET /tunnels: {listed}")
    # The --tunnel tunnel still carries a connection.
    c, _ = open_ws(h, relay, src)
    c.close()
    check(relay.process.alive(), "relay died")

    bad = [
        (["--max-open-tunnels", "0"], "--max-open-tunnels"),
        (["--keep-closed-tunnels", "-1"], "--keep-closed-tunnels"),
        (["--max-open-tunnels", "1", "--tunnel", "aaaa:bbbb", "--tunnel", "cccc:dddd"],
         "leaves no room"),
        (["--no-such-option"], "--no-such-option"),
    ]
    for args, text in bad:
        p = subprocess.run([h.relay_bin, "--listen", "127.0.0.1:0", *args], capture_output=True,
                           text=True, timeout=scaled(10), stdin=subprocess.DEVNULL)
        err = p.stderr.strip()
        print(f"  {' '.join(args)}: exit {p.returncode}: {err}")
        check(p.returncode == 2 and text in err and err.count("\n") == 0,
              f"{args}: exit {p.returncode}, stderr {p.stderr!r}")
        check(not any(tok in p.stderr for tok in ("aaaa", "bbbb")),
              f"{args}: a --tunnel token in the error: {p.stderr!r}")


@r.case("101: Sec-WebSocket-Accept, the first offered subprotocol accepted, channel-id")
def _(h):
    src, dst = new_token("s"), new_token("d")
    relay = h.start_relay(tunnels=[(src, dst)], extra=["--subprotocols", "1.0,2.0"])
    c = Client(h, relay)
    status, hd, body = c.request(headers=[("access-token", src)],
                                 protocols=("aws.iot.securetunneling-3.0",
                                            "aws.iot.securetunneling-1.0",
                                            "aws.iot.securetunneling-2.0"))
    check(status == 101, f"HTTP {status} {body!r}")
    accept = base64.b64encode(hashlib.sha1(c.key.encode() + GUID).digest()).decode()
    check(hd.get("sec-websocket-accept") == [accept], f"accept {hd.get('sec-websocket-accept')}")
    check(hd.get("sec-websocket-protocol") == ["aws.iot.securetunneling-1.0"],
          f"subprotocol {hd.get('sec-websocket-protocol')}")
    check(re.fullmatch(r"[0-9a-f]{32}", hd.get("channel-id", [""])[0]) is not None,
          f"channel-id {hd.get('channel-id')}")
    check(c.s.selected_alpn_protocol() == "http/1.1", f"ALPN {c.s.selected_alpn_protocol()}")
    c.close()


@r.case("plain ws on [::1] (no --tls-cert): 101, frames sent right behind the request")
def _(h):
    import json
    from harness import Relay
    src, dst = new_token("s"), new_token("d")
    p = h.spawn("relay", [h.relay_bin, "--listen", "[::1]:0", "--tunnel", f"{src}:{dst}"],
                secrets_=[src, dst])
    m = p.wait_line(r"^\{.*\}$", scaled(10), stream="stdout")
    listen = json.loads(m.group(0))["listen"]
    check(re.fullmatch(r"\[::1\]:\d+", listen) is not None, f"ready line listen {listen!r}")
    relay = Relay(p, listen, None)
    c = Client(h, relay, tls=False)
    ping = c.frame(9, b"early")
    status, hd, body = c.request(headers=[("access-token", src)], extra=ping)
    check(status == 101, f"HTTP {status} {body!r}")
    check(c.read_frame() == (True, 10, b"early"), "no pong for the ping behind the request")
    c.close()


def _expect_close(c: Client, code: int, what: str):
    got, reason = c.read_close()
    print(f"  {what}: close {got} {reason!r}")
    check(got == code, f"{what}: close {got} ({reason!r}), expected {code}")
    try:
        c.send_frame(8, struct.pack(">H", got))  # the answer the relay waits for
    except OSError:
        pass
    check(c.closed_by_peer(scaled(5)), f"{what}: the relay kept the connection open")


@r.case("client frames: unmasked, text, oversize and bad control frames close the connection")
def _(h):
    src, dst = new_token("s"), new_token("d")
    ct = new_client_token()
    relay = h.start_relay(tunnels=[(src, dst)])
    bad = [
        ("unmasked binary frame", lambda c: c.send_frame(2, b"\0\0", masked=False), 1002),
        ("text frame", lambda c: c.send_frame(1, b"hello"), 1003),
        ("one frame over 131076 bytes", lambda c: c.send_frame(2, b"\0" * (MAX_MESSAGE + 1)),
         1009),
        ("fragments adding up to over 131076 bytes",
         # (the first fragment holds part of one record, so only the size can fail)
         lambda c: (c.send_frame(2, b"\xff\xff" + b"\0" * 60000, fin=False),
                    c.send_frame(0, b"\0" * 71077)), 1009),
        ("fragmented ping", lambda c: c.send_frame(9, b"x", fin=False), 1002),
        ("continuation without a message", lambda c: c.send_frame(0, b"\0\0"), 1002),
        ("reserved opcode", lambda c: c.send_frame(3, b""), 1002),
        ("a record a client may not send (SERVICE_IDS)",
         lambda c: c.send_frame(2, record(b"\x08\x05")), 1008),
    ]
    for what, act, code in bad:
        c, _ = open_ws(h, relay, src, client_token=ct)
        act(c)
        _expect_close(c, code, what)
        c.close()
    check(relay.process.alive(), "relay died")


@r.case("ping -> pong, fragments with a ping between them, records forwarded whole")
def _(h):
    src, dst = new_token("s"), new_token("d")
    relay = h.start_relay(tunnels=[(src, dst)])
    d, _ = open_ws(h, relay, dst, mode="destination")
    s, _ = open_ws(h, relay, src)
    s.send_frame(9, b"are you there")
    fin, op, p = s.read_frame()
    check((fin, op, p) == (True, 10, b"are you there"), f"pong: {(fin, op, p)!r}")
    payload = secrets.token_bytes(3000)
    stream = stream_start(1) + data_record(1, payload)
    # Split in the middle of a record's length prefix and of its body.
    cuts = [1, 7, 1500, len(stream)]
    prev = 0
    for i, cut in enumerate(cuts):
        s.send_frame(0 if i else 2, stream[prev:cut], fin=cut == len(stream))
        if i == 1:
            s.send_frame(9, b"between")
        prev = cut
    fin, op, p = s.read_frame()
    check((op, p) == (10, b"between"), f"pong between fragments: {(op, p)!r}")
    got = b""
    while True:
        recs, rest = parse_records(got)
        if len(recs) >= 2 and not rest:
            break
        fin, op, p = d.read_frame()
        check(op in (0, 2), f"destination got opcode {op}")
        got += p
    check(recs[0][:2] == (2, 1) and recs[1] == (1, 1, payload), f"records {recs[:2]!r}")
    # Our close: the relay answers with the same code and closes.
    s.send_frame(8, struct.pack(">H", 1000) + b"bye")
    _expect_close(s, 1000, "client close")
    # The destination learns the stream is gone.
    fin, op, p = d.read_frame()
    recs, _ = parse_records(p)
    check(recs and recs[0][:2] == (3, 1), f"expected STREAM_RESET, got {recs!r}")


@r.case("reconnect with the client token replaces (1000), DELETE closes (1000), SIGTERM 1001")
def _(h):
    src, dst = new_token("s"), new_token("d")
    ct = new_client_token()
    relay = h.start_relay(tunnels=[(src, dst)])
    a, _ = open_ws(h, relay, src, client_token=ct)
    b, _ = open_ws(h, relay, src, client_token=ct)
    got, reason = a.read_close()
    check((got, reason) == (1000, "replaced by a new connection"), f"replaced: {got} {reason!r}")
    a.send_frame(8, struct.pack(">H", got))
    check(a.closed_by_peer(scaled(5)), "replaced connection left open")
    t = relay.open_tunnel()
    c, _ = open_ws(h, relay, t["sourceAccessToken"])
    relay.close_tunnel(t["tunnelId"])
    got, reason = c.read_close()
    check((got, reason) == (1000, "tunnel closed"), f"DELETE: {got} {reason!r}")
    relay.process.signal(signal.SIGTERM)
    got, reason = b.read_close()
    check((got, reason) == (1001, "relay shutting down"), f"SIGTERM: {got} {reason!r}")
    b.send_frame(8, struct.pack(">H", got))
    rc = relay.process.wait_exit(scaled(5))
    check(rc == 0, f"relay exit {rc}")


@r.case("an absent end: the sender is paused, then 32 MiB arrive intact once it connects")
def _(h):
    src, dst = new_token("s"), new_token("d")
    relay = h.start_relay(tunnels=[(src, dst)])
    s, _ = open_ws(h, relay, src)
    total = 32 << 20
    data = secrets.token_bytes(total)
    frames = []
    wire = stream_start(7)
    for off in range(0, total, 60000):
        wire += data_record(7, data[off:off + 60000])
        if len(wire) > 120000:
            frames.append(s.frame(2, wire, key=b"\0\0\0\0"))
            wire = b""
    frames.append(s.frame(2, wire, key=b"\0\0\0\0"))
    sent = [0]

    def pump():
        try:
            for f in frames:
                s.send(f)
                sent[0] += len(f)
        except OSError:
            pass

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    t.join(scaled(3))
    print(f"  with no destination the relay took {sent[0] >> 20} MiB of {total >> 20} MiB")
    check(t.is_alive(), "the relay read everything for an absent end (no backpressure)")
    d, _ = open_ws(h, relay, dst, mode="destination")
    sha = hashlib.sha256()
    got = 0
    stream = b""
    deadline = time.monotonic() + scaled(60)
    while got < total:
        check(time.monotonic() < deadline, f"only {got} of {total} bytes arrived")
        _, op, p = d.read_frame()
        check(op == 2, f"opcode {op}")
        recs, stream = parse_records(stream + p)
        for typ, sid, payload in recs:
            if typ == 1:
                sha.update(payload)
                got += len(payload)
    check(sha.digest() == hashlib.sha256(data).digest(), "data corrupted")
    t.join(scaled(10))
    check(not t.is_alive(), "the sender stayed paused")


if __name__ == "__main__":
    r.main()
