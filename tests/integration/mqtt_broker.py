"""A throwaway MQTT world for the notify tests: Debian's mosquitto broker on
127.0.0.1 with TLS and `require_certificate true`, client certificates from
the harness CA, a minimal MQTT 3.1.1 publisher (stdlib only) that never
puts a payload in argv, and AlpnGate, a TLS endpoint that behaves like AWS
IoT's port 443 (MQTT only for clients that offer ALPN x-amzn-mqtt-ca).
"""
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time

from harness import CertAuthority, Harness, TestFailure, _openssl, check, scaled

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def need_mosquitto():
    if not os.access(MOSQUITTO, os.X_OK):
        return "mosquitto is not installed (scripts/setup-deps.sh installs it)"
    return None


def client_cert(ca: CertAuthority, name: str) -> tuple[str, str]:
    """A client certificate and key (mode 0600) signed by `ca`."""
    key = os.path.join(ca.dir, f"{name}.key")
    csr = os.path.join(ca.dir, f"{name}.csr")
    cert = os.path.join(ca.dir, f"{name}.pem")
    ext = os.path.join(ca.dir, f"{name}.ext")
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", key, "-out", csr, "-subj", f"/CN={name}"], ca.dir)
    with open(ext, "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _openssl(["x509", "-req", "-in", csr, "-CA", ca.ca_cert, "-CAkey", ca.ca_key,
              "-CAcreateserial", "-out", cert, "-days", "2", "-extfile", ext], ca.dir)
    os.chmod(key, 0o600)
    return cert, key


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Broker:
    """mosquitto on 127.0.0.1:<port>, TLS, client certificates required."""

    def __init__(self, h: Harness, ca: CertAuthority, port: int | None = None,
                 plain_port: bool = False):
        """plain_port: also a listener without TLS (for AlpnGate only)."""
        self.h = h
        self.ca = ca
        self.port = port or free_port()
        self.plain_port = free_port() if plain_port else None
        self.proc = None
        self.conf = h.path(f"mosquitto-{self.port}.conf")
        with open(self.conf, "w") as f:
            f.write(f"""per_listener_settings false
allow_anonymous true
persistence false
log_dest stderr
log_type error
log_type warning
log_type notice
log_type information
user {'root' if os.geteuid() == 0 else ''}
listener {self.port} 127.0.0.1
cafile {ca.ca_cert}
certfile {ca.server_cert}
keyfile {ca.server_key}
require_certificate true
tls_version tlsv1.2
max_packet_size 65536
""")
            if self.plain_port:
                f.write(f"listener {self.plain_port} 127.0.0.1\n")
        if os.geteuid() != 0:
            with open(self.conf) as f:
                text = f.read().replace("user \n", "")
            with open(self.conf, "w") as f:
                f.write(text)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "Broker":
        self.proc = self.h.spawn("mosquitto", [MOSQUITTO, "-c", self.conf])
        deadline = time.monotonic() + scaled(10)
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise TestFailure(f"mosquitto exited: {self.proc.stderr_text()[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TestFailure("mosquitto did not listen in time")

    def stop(self):
        if self.proc and self.proc.alive():
            self.proc.terminate(timeout=5)


def _remaining_length(n: int) -> bytes:
    out = b""
    while True:
        b = n % 128
        n //= 128
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def _utf8(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


class Publisher:
    """One MQTT 3.1.1 connection over TLS with a client certificate."""

    def __init__(self, broker: Broker, cert: str, key: str, client_id: str = "it-publisher"):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(broker.ca.ca_cert)
        ctx.load_cert_chain(cert, key)
        raw = socket.create_connection(("127.0.0.1", broker.port), timeout=scaled(5))
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.mid = 0
        var = _utf8("MQTT") + bytes([4, 0x02]) + struct.pack(">H", 30)
        payload = _utf8(client_id)
        body = var + payload
        self.sock.sendall(bytes([0x10]) + _remaining_length(len(body)) + body)
        t, data = self._packet()
        check(t == 2 and data[1] == 0, f"MQTT CONNACK refused: {data!r}")

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            d = self.sock.recv(n - len(buf))
            if not d:
                raise TestFailure("MQTT broker closed the connection")
            buf += d
        return buf

    def _packet(self) -> tuple[int, bytes]:
        head = self._read(1)[0]
        mult, n = 1, 0
        while True:
            b = self._read(1)[0]
            n += (b & 0x7F) * mult
            mult *= 128
            if not b & 0x80:
                break
        return head >> 4, self._read(n) if n else b""

    def publish(self, topic: str, payload: bytes, qos: int = 1):
        """Publishes; with QoS 1 waits for the PUBACK."""
        body = _utf8(topic)
        if qos:
            self.mid = self.mid % 65535 + 1
            body += struct.pack(">H", self.mid)
        body += payload
        self.sock.sendall(bytes([0x30 | (qos << 1)]) + _remaining_length(len(body)) + body)
        if qos:
            t, data = self._packet()
            check(t == 4, f"MQTT: expected PUBACK, got packet type {t}")

    def close(self):
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
        except OSError:
            pass


class AlpnGate:
    """A TLS terminator on 127.0.0.1 standing in for AWS IoT's port 443: it
    requires a client certificate from the CA and the ALPN protocol
    x-amzn-mqtt-ca, and forwards the plaintext of such connections to the
    broker's plain listener. A client that offers no ALPN protocol (or
    another one) completes the TLS handshake and is then disconnected before
    any MQTT byte is read, as AWS IoT treats it as HTTPS. (Python's ssl
    cannot fail the handshake itself on ALPN: the server's selection only
    acknowledges a protocol or none.)"""

    PROTOCOL = "x-amzn-mqtt-ca"

    def __init__(self, broker: Broker):
        check(broker.plain_port, "AlpnGate needs Broker(plain_port=True)")
        self.broker = broker
        self.ctx = broker.ca.server_context()
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.load_verify_locations(broker.ca.ca_cert)
        self.ctx.set_alpn_protocols([self.PROTOCOL])
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[str | None] = []  # ALPN selected, per completed handshake
        self.refused = 0
        self.closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket):
        try:
            conn.settimeout(scaled(10))
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        alpn = tls.selected_alpn_protocol()
        self.accepted.append(alpn)
        if alpn != self.PROTOCOL:
            self.refused += 1
            tls.close()
            return
        try:
            plain = socket.create_connection(("127.0.0.1", self.broker.plain_port))
        except OSError:
            tls.close()
            return
        self._pump(tls, plain)

    def _pump(self, tls, plain):
        """One thread per connection, both directions: an SSL object must
        not be read and written from two threads at once. Non-blocking, so
        that a TLS record that is not application data cannot stall the
        other direction."""
        tls.setblocking(False)
        try:
            while not self.closed:
                ready, _, _ = select.select([tls, plain], [], [], 0.5)
                if tls in ready or tls.pending():
                    try:
                        data = tls.recv(65536)
                    except ssl.SSLWantReadError:
                        data = None
                    if data == b"":
                        break
                    if data:
                        plain.sendall(data)
                if plain in ready:
                    data = plain.recv(65536)
                    if not data:
                        break
                    self._send_tls(tls, data)
        except (OSError, ssl.SSLError):
            pass
        finally:
            plain.close()
            tls.close()

    @staticmethod
    def _send_tls(tls, data: bytes):
        view = memoryview(data)
        while view:
            try:
                view = view[tls.send(view):]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                select.select([tls], [tls], [], 0.5)

    def close(self):
        self.closed = True
        self.sock.close()


def notify_topic(thing: str) -> str:
    return f"$aws/things/{thing}/tunnels/notify"
