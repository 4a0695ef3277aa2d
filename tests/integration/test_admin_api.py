#!/usr/bin/python3
"""tunnel-relay's admin API against what a hostile web page or client sends:
DNS rebinding (a foreign Host), cross-site requests (Origin, Sec-Fetch-Site,
a body that is not JSON), request lines that would forge log lines, the
bearer token and TLS for an API reached from another machine, and the
bounded number of admin connections.

    python3 tests/integration/test_admin_api.py BUILD_DIR [CASE_SUBSTRING...]
"""
import json
import os
import re
import resource
import socket
import ssl
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Runner, TestFailure, check, scaled  # noqa: E402

r = Runner("admin-api")


def split_hostport(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host.strip("[]"), int(port)


def http(addr: str, raw: bytes, tls_ctx: ssl.SSLContext | None = None,
         timeout: float | None = None) -> tuple[int, dict, str]:
    """Sends `raw` as it is and reads the answer up to EOF (the API closes
    every connection). Returns (status, lower-case headers, body)."""
    host, port = split_hostport(addr)
    s = socket.create_connection((host, port), timeout=timeout or scaled(10))
    if tls_ctx is not None:
        s = tls_ctx.wrap_socket(s, server_hostname=host)
    try:
        s.sendall(raw)
        data = b""
        while True:
            try:
                d = s.recv(65536)
            except (ConnectionResetError, ssl.SSLEOFError):
                break
            if not d:
                break
            data += d
    finally:
        s.close()
    check(b"\r\n\r\n" in data, f"no HTTP answer to {raw[:80]!r}: {data[:200]!r}")
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    return status, headers, body.decode(errors="replace")


def request(method: str, path: str, host: str | None, headers: list[tuple[str, str]] = (),
            body: bytes = b"", version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += [f"{k}: {v}" for k, v in headers]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def tunnel_count(relay) -> int:
    return len(relay.list_tunnels()["tunnels"])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure(f"no VmRSS for pid {pid}")


JSON = ("Content-Type", "application/json")


@r.case("DNS rebinding and cross-site requests are refused; the API's own clients work")
def _(h):
    relay = h.start_relay()
    a = relay.admin
    port = split_hostport(a)[1]
    body = b'{"services":["SSH"]}'
    refused = [
        ("foreign Host", request("POST", "/tunnels", f"rebind.example:{port}", [JSON], body), 403),
        ("foreign Host, GET", request("GET", "/tunnels", f"rebind.example:{port}"), 403),
        ("a name ending like the address", request("GET", "/tunnels", "127.0.0.1.rebind.example"),
         403),
        ("another loopback address", request("GET", "/tunnels", f"127.0.0.2:{port}"), 403),
        ("HTTP/1.1 without Host", request("GET", "/tunnels", None), 400),
        ("foreign Origin", request("POST", "/tunnels", a, [JSON, ("Origin", "http://evil.example")],
                                   body), 403),
        ("Origin null", request("POST", "/tunnels", a, [JSON, ("Origin", "null")], body), 403),
        ("same host, other scheme", request("POST", "/tunnels", a,
                                            [JSON, ("Origin", f"https://{a}")], body), 403),
        ("Sec-Fetch-Site cross-site", request("GET", "/tunnels", a,
                                              [("Sec-Fetch-Site", "cross-site")]), 403),
        ("text/plain body (a no-preflight fetch)",
         request("POST", "/tunnels", a, [("Content-Type", "text/plain")], body), 415),
        ("form body", request("POST", "/tunnels", a,
                              [("Content-Type", "application/x-www-form-urlencoded")], body), 415),
        ("body without a type", request("POST", "/tunnels", a, [], body), 415),
        ("two Host lines", request("GET", "/tunnels", a, [("Host", "rebind.example")]), 400),
    ]
    for what, raw, want in refused:
        status, _, text = http(a, raw)
        check(status == want, f"{what}: HTTP {status} {text!r}, want {want}")
        check("error" in json.loads(text), f"{what}: no error in {text!r}")
    check(tunnel_count(relay) == 0, "a refused request opened a tunnel")

    t = relay.open_tunnel(services=["SSH"])  # the harness: urllib, JSON with its type
    status, _, text = http(a, request("DELETE", f"/tunnels/{t['tunnelId']}", a,
                                      [("Origin", "http://evil.example")]))
    check(status == 403, f"cross-origin DELETE: HTTP {status} {text!r}")
    check(relay.list_tunnels()["tunnels"][0]["status"] == "OPEN", "cross-origin DELETE closed it")

    accepted = [
        ("Host localhost:PORT", request("GET", "/tunnels", f"localhost:{port}")),
        ("Host without port", request("GET", "/tunnels", "127.0.0.1")),
        ("Host in upper case", request("GET", "/tunnels", "LOCALHOST")),
        ("same-origin POST", request("POST", "/tunnels", a,
                                     [("Content-Type", "application/json; charset=utf-8"),
                                      ("Origin", f"http://{a}"),
                                      ("Sec-Fetch-Site", "same-origin")], body)),
        ("empty POST without a type", request("POST", "/tunnels", a)),
        ("HTTP/1.0 without Host", request("GET", "/tunnels", None, version="HTTP/1.0")),
    ]
    for what, raw in accepted:
        status, _, text = http(a, raw)
        check(status == 200, f"{what}: HTTP {status} {text!r}")
    check(tunnel_count(relay) == 3, f"{tunnel_count(relay)} tunnels, want 3")
    relay.close_tunnel(t["tunnelId"])


@r.case("request lines with a bare LF or control characters get 400 and forge no log line")
def _(h):
    relay = h.start_relay()
    a = relay.admin
    forged = [
        b"GET /tunnels\nFORGED-LINE admin: everything is fine HTTP/1.1\r\nHost: " +
        a.encode() + b"\r\n\r\n",
        b"GET /tunnels\rFORGED-LINE HTTP/1.1\r\nHost: " + a.encode() + b"\r\n\r\n",
        b"GET /t\x1b[2J\x1b[31mFORGED-LINE HTTP/1.1\r\nHost: " + a.encode() + b"\r\n\r\n",
        b"GET /tunnels/t1\x00FORGED-LINE HTTP/1.1\r\nHost: " + a.encode() + b"\r\n\r\n",
        b"GET /a b FORGED-LINE HTTP/1.1\r\nHost: " + a.encode() + b"\r\n\r\n",
        b"G\x7fT /tunnels HTTP/1.1\r\nHost: " + a.encode() + b"\r\n\r\n",
        b"GET /tunnels HTTP/1.1\r\nHost: " + a.encode() + b"\r\nX: a\nFORGED-LINE\r\n\r\n",
        b"GET /tunnels HTTP/1.1\r\nHost: " + a.encode() + b"\r\n folded: FORGED-LINE\r\n\r\n",
    ]
    for raw in forged:
        status, _, text = http(a, raw)
        check(status == 400, f"{raw!r}: HTTP {status} {text!r}, want 400")
    # What is served is logged, and only as printable text.
    status, _, _ = http(a, request("GET", "/tunnels/%1b%5b31m-no-such-id", a))
    check(status == 404, f"unknown id: HTTP {status}")
    relay.process.wait_line(r"GET /tunnels/%1b%5b31m-no-such-id -> 404", scaled(5))
    check(relay.process.alive(), "the relay died")
    log = relay.process.stderr_text()
    bad = [ln for ln in log.splitlines() if "FORGED-LINE" in ln or
           any(ord(c) < 0x20 or ord(c) == 0x7f for c in ln)]
    check(not bad, f"the relay logged what the client chose: {bad!r}")
    check(len(re.findall(r"request refused -> 400", log)) == len(forged),
          "every refused request is logged once, without its text")


def _token_file(h, name: str, token: str, mode: int = 0o600) -> str:
    p = h.path(name)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    os.chmod(p, mode)
    return p


def _relay_exit(h, *args) -> tuple[int, str]:
    p = h.spawn("relay", [h.relay_bin, "--listen", "127.0.0.1:0", *args])
    rc = p.wait_exit(scaled(10))
    check(rc is not None, f"tunnel-relay {' '.join(args)} did not exit")
    return rc, p.stderr_text()


@r.case("--admin-token-file and --admin-tls: 401 without the token, 200 with it, never logged; "
        "unsafe files and an exposed API without them refused")
def _(h):
    token = os.urandom(24).hex()
    h.secrets.append(token)
    path = _token_file(h, "admin.token", token)
    relay = h.start_relay(extra=["--admin-tls", "--admin-token-file", path, "-v", "trace"])
    a = relay.admin
    ctx = ssl.create_default_context(cafile=h.ca.ca_cert)
    status, hdrs, text = http(a, request("GET", "/tunnels", a), ctx)
    check(status == 401 and hdrs.get("www-authenticate") == "Bearer",
          f"no token: HTTP {status} {hdrs!r} {text!r}")
    for bad in ("Bearer " + token[:-1], "Bearer " + token + "x", "Basic " + token, token,
                "Bearer"):
        status, _, text = http(a, request("GET", "/tunnels", a, [("Authorization", bad)]), ctx)
        check(status == 401, f"Authorization {bad[:12]}...: HTTP {status} {text!r}")
    auth = ("Authorization", "Bearer " + token)
    status, _, text = http(a, request("POST", "/tunnels", a, [auth, JSON], b"{}"), ctx)
    check(status == 200 and "sourceAccessToken" in json.loads(text),
          f"with the token: HTTP {status} {text!r}")
    status, _, text = http(a, request("GET", "/tunnels", a, [("authorization", "bearer " + token)]),
                           ctx)
    check(status == 200 and len(json.loads(text)["tunnels"]) == 1, f"GET: {status} {text!r}")
    # The host checks still apply behind the token.
    status, _, _ = http(a, request("GET", "/tunnels", "rebind.example", [auth]), ctx)
    check(status == 403, f"foreign Host with the token: HTTP {status}")
    # Plain HTTP on the TLS port gets no answer.
    host, port = split_hostport(a)
    with socket.create_connection((host, port), timeout=scaled(5)) as s:
        s.sendall(request("GET", "/tunnels", a, [auth]))
        got = b""
        try:
            while len(got) < 64:
                d = s.recv(4096)
                if not d:
                    break
                got += d
        except (ConnectionResetError, socket.timeout):
            pass
    check(not got.startswith(b"HTTP/1.1 200"), f"plain HTTP was served: {got[:60]!r}")
    check(token not in relay.process.stderr_text(), "the admin token is in the relay's log")

    # Refused at start, exit 2, with a message that says what to do.
    loose = _token_file(h, "loose.token", token, 0o644)
    short = _token_file(h, "short.token", "abc")
    spaced = _token_file(h, "spaced.token", "a token with spaces in it")
    cert = ["--tls-cert", h.ca.server_cert, "--tls-key", h.ca.server_key]
    for args, want in (
            (["--admin", "127.0.0.1:0", "--admin-token-file", loose], r"mode 0644 .*chmod 600"),
            (["--admin", "127.0.0.1:0", "--admin-token-file", short], r"16 to 4096 characters"),
            (["--admin", "127.0.0.1:0", "--admin-token-file", spaced], r"without spaces"),
            (["--admin", "127.0.0.1:0", "--admin-token-file", h.path("none")], r"cannot open"),
            (["--admin", "0.0.0.0:0", *cert], r"needs --admin-token-file and --admin-tls"),
            (["--admin", "0.0.0.0:0", "--admin-token-file", path, *cert],
             r"needs --admin-token-file and --admin-tls"),
            (["--admin", "127.0.0.1:0", "--admin-tls"], r"--tls-cert and --tls-key"),
            (["--admin", "127.0.0.1:0", "--admin-host", "bad_name!"], r"DNS name")):
        rc, err = _relay_exit(h, *args)
        check(rc == 2 and re.search(want, err), f"{args}: exit {rc}, stderr {err!r}")
        check(token not in err, "the token was echoed")


@r.case("--admin-host: a name the self-hoster chose is accepted in Host, others still refused")
def _(h):
    relay = h.start_relay(extra=["--admin-host", "Relay.Example.NET"])
    a = relay.admin
    status, _, text = http(a, request("GET", "/tunnels", "relay.example.net:443"))
    check(status == 200, f"--admin-host name: HTTP {status} {text!r}")
    status, _, _ = http(a, request("GET", "/tunnels", "other.example.net"))
    check(status == 403, f"another name: HTTP {status}")


@r.case("admin connections are bounded: past 64, clients are refused at once; RSS stays flat; "
        "the API works again when they leave")
def _(h):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 600
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    relay = h.start_relay()
    a = relay.admin
    host, port = split_hostport(a)
    relay.list_tunnels()
    rss_before = rss_kib(relay.process.pid)
    # 400 clients, each with 15 KiB of a request head that never ends (the
    # head limit is 16 KiB): an old relay kept them all, with their buffers,
    # for 10 s.
    partial = (f"GET /tunnels HTTP/1.1\r\nHost: {a}\r\nX-Pad: ".encode() + b"p" * 15000)
    socks = []
    try:
        for _ in range(400):
            s = socket.create_connection((host, port), timeout=scaled(5))
            socks.append(s)
            try:
                s.sendall(partial)
            except OSError:
                pass  # refused already
        time.sleep(0.5)
        grown = rss_kib(relay.process.pid) - rss_before
        refused = 0
        busy = 0
        for s in socks:
            s.setblocking(False)
            try:
                d = s.recv(4096)
                if not d or d.startswith(b"HTTP/1.1 503"):
                    refused += 1
                    busy += d.startswith(b"HTTP/1.1 503")
            except BlockingIOError:
                pass
            except ConnectionResetError:
                refused += 1
        print(f"  400 clients with 15 KiB heads: {refused} refused at once ({busy} with 503), "
              f"relay RSS {rss_before} KiB -> +{grown} KiB")
        check(refused >= 400 - 64, f"only {refused} of 400 clients refused: no connection limit")
        check(grown < 6 * 1024, f"relay RSS grew by {grown} KiB")
        # While the slots are held, a new client is told why.
        status, _, text = http(a, request("GET", "/tunnels", a))
        check(status == 503 and "too many admin connections" in text,
              f"at the limit: HTTP {status} {text!r}")
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + scaled(5)
    while True:
        try:
            status, _, _ = http(a, request("GET", "/tunnels", a))
        except TestFailure:
            status = 0
        if status == 200:
            break
        check(time.monotonic() < deadline, f"the API did not come back: HTTP {status}")
        time.sleep(0.05)
    relay.process.wait_line(r"64 admin connections open, the limit", scaled(2))


if __name__ == "__main__":
    r.main()
