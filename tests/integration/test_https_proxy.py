#!/usr/bin/python3
"""Reaching the service through an HTTP CONNECT proxy (connect_proxy.py):
HTTPS_PROXY / NO_PROXY / --https-proxy / the settings key, 407 is final and
names the proxy, drops and other statuses are retried, credentials never show.

    python3 tests/integration/test_https_proxy.py BUILD_DIR [CASE_SUBSTRING...]
"""
import base64
import os
import secrets
import stat
import subprocess
import sys
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from connect_proxy import ConnectProxy  # noqa: E402
from harness import (Runner, assert_no_secret, check, echo_roundtrip,  # noqa: E402
                     scaled, wait_for_echo)
from test_daemon import Tunneld  # noqa: E402

r = Runner("https-proxy")

MiB = 1024 * 1024
# Reconnect fast so that retried cases take a second, not a minute.
FAST = {"websocket.retry_delay_ms": 200, "websocket.retry_max_delay_ms": 400}


class Credentials:
    """A user and a password with characters that need percent-encoding."""

    def __init__(self):
        self.user = "proxy-user-" + secrets.token_hex(6)
        self.password = "pw@:/" + secrets.token_hex(12) + "%x"
        self.basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def url(self, proxy: ConnectProxy) -> str:
        q = urllib.parse.quote
        return f"http://{q(self.user, safe='')}:{q(self.password, safe='')}@{proxy.address}"

    def secrets(self, proxy: ConnectProxy) -> list[str]:
        # The raw and the encoded password, and the header value; the user name
        # too: it is half of the credentials.
        return [self.password, urllib.parse.quote(self.password, safe=""), self.basic,
                self.user, self.url(proxy)]


def proxy_with_auth(h) -> tuple[ConnectProxy, Credentials]:
    creds = Credentials()
    p = ConnectProxy(creds.user, creds.password)
    h.servers.append(p)
    return p, creds


def process_listing() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True,
                          timeout=10).stdout


def check_no_credentials(h, creds: Credentials, proxy: ConnectProxy, extra_text: str = ""):
    text = "\n".join("\n".join(p.stderr_lines + p.stdout_lines) for p in h.processes)
    assert_no_secret(text + extra_text, creds.secrets(proxy), "the output of a process")
    assert_no_secret(process_listing(), creds.secrets(proxy), "ps -eo args")


def start_pair(h, relay, t, echo_port: int, env_extra=None, src_env=None, dst_env=None,
               settings=None, src_extra=None, verbosity=5):
    env_d = dict(env_extra or {}, **(dst_env or {}))
    env_s = dict(env_extra or {}, **(src_env or {}))
    dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                             f"127.0.0.1:{echo_port}", verbosity=verbosity,
                             settings=settings, env_extra=env_d)
    src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0", verbosity=verbosity,
                             settings=settings, env_extra=env_s,
                             extra=["-b", "127.0.0.1"] + (src_extra or []))
    return dst, src


@r.case("through the proxy with Basic auth (HTTPS_PROXY): 4 MiB echoed intact, -v 6 quiet")
def _(h):
    proxy, creds = proxy_with_auth(h)
    relay = h.start_relay()
    t = relay.open_tunnel()
    echo = h.echo_server()
    dst, src = start_pair(h, relay, t, echo.port, env_extra={"HTTPS_PROXY": creds.url(proxy)},
                          verbosity=6)
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))
    sent, got, secs = echo_roundtrip(port, 4 * MiB, scaled(30))
    check(sent == got, f"4 MiB echo through the proxy: sha256 {got} != sent {sent}")
    print(f"  4 MiB each way through the proxy in {secs:.2f} s")
    check(proxy.tunnels >= 2, f"the proxy opened {proxy.tunnels} tunnels, want both ends (2)")
    check(all(tg == relay.endpoint for tg in proxy.targets),
          f"CONNECT targets {proxy.targets}, want {relay.endpoint}")
    check(all(a == f"Basic {creds.basic}" for a in proxy.auth_headers),
          "a CONNECT came without the right Proxy-Authorization")
    for p in (dst, src):
        check(any(proxy.address in line for line in p.stderr_lines),
              f"{p.name} never names the proxy {proxy.address} in its log")
    check_no_credentials(h, creds, proxy)


@r.case("407: exits 1 within 5 s naming the proxy, not its credentials; no retry")
def _(h):
    proxy, creds = proxy_with_auth(h)
    relay = h.start_relay()
    t = relay.open_tunnel()
    wrong = Credentials()
    p = h.start_localproxy("source", t["sourceAccessToken"], relay, "0", verbosity=6,
                           settings=FAST, env_extra={"HTTPS_PROXY": wrong.url(proxy)})
    rc = p.wait_exit(5.0)
    check(rc == 1, f"exit {rc} on a 407 from the proxy, want 1")
    text = p.stderr_text()
    check("407" in text, "stderr does not name the 407")
    check(proxy.address in text, f"stderr does not name the proxy {proxy.address}")
    check(proxy.connects == 1, f"the proxy saw {proxy.connects} CONNECTs; 407 must not be retried")
    check_no_credentials(h, wrong, proxy)
    print(f"  {[line for line in p.stderr_lines if '407' in line][-1].strip()[:160]}")


@r.case("401 (tinyproxy's answer to wrong credentials) and 403: final like 407, naming the proxy")
def _(h):
    proxy, creds = proxy_with_auth(h)
    proxy.auth_failure = 401
    relay = h.start_relay()
    t = relay.open_tunnel()
    wrong = Credentials()
    p = h.start_localproxy("source", t["sourceAccessToken"], relay, "0", verbosity=6,
                           settings=FAST, env_extra={"HTTPS_PROXY": wrong.url(proxy)})
    rc = p.wait_exit(5.0)
    check(rc == 1, f"exit {rc} on a 401 from the proxy, want 1")
    text = p.stderr_text()
    check("401" in text and "refused the credentials" in text,
          "stderr does not say the proxy refused the credentials (401)")
    check(proxy.address in text, f"stderr does not name the proxy {proxy.address}")
    check(proxy.connects == 1, f"the proxy saw {proxy.connects} CONNECTs; 401 must not be retried")
    check_no_credentials(h, wrong, proxy)

    forbidding = ConnectProxy()
    h.servers.append(forbidding)
    forbidding.status = 403
    p = h.start_localproxy("source", t["sourceAccessToken"], relay, "0", verbosity=6,
                           settings=FAST, env_extra={"HTTPS_PROXY": forbidding.url()})
    rc = p.wait_exit(5.0)
    check(rc == 1, f"exit {rc} on a 403 from the proxy, want 1")
    text = p.stderr_text()
    check("403" in text and "policy" in text, "stderr does not say the proxy's policy refused (403)")
    check(forbidding.address in text, f"stderr does not name the proxy {forbidding.address}")
    check(forbidding.connects == 1,
          f"the proxy saw {forbidding.connects} CONNECTs; 403 must not be retried")
    print(f"  {[line for line in p.stderr_lines if '403' in line][-1].strip()[:160]}")


@r.case("the proxy drops the CONNECT twice, then answers 503: retried with backoff, then works")
def _(h):
    proxy, creds = proxy_with_auth(h)
    proxy.drop_next = 2
    relay = h.start_relay()
    t = relay.open_tunnel()
    echo = h.echo_server()
    dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                             f"127.0.0.1:{echo.port}", settings=FAST,
                             env_extra={"HTTPS_PROXY": creds.url(proxy)})
    check(proxy.wait_for("connects", 3, scaled(10)),
          f"only {proxy.connects} CONNECTs: the dropped ones were not retried")
    gaps = [b - a for a, b in zip(proxy.connect_times, proxy.connect_times[1:])]
    check(all(g >= 0.08 for g in gaps[:2]), f"retries without backoff: gaps {gaps}")
    proxy.status = 503
    src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0", settings=FAST,
                             env_extra={"HTTPS_PROXY": creds.url(proxy)},
                             extra=["-b", "127.0.0.1"])
    n = proxy.connects
    check(proxy.wait_for("connects", n + 2, scaled(10)), "a 503 from the proxy was not retried")
    check(src.alive(), f"the source gave up on a 503 (exit {src.returncode})")
    proxy.status = None
    port = src.wait_listening(scaled(10))
    sent, got, _ = echo_roundtrip(port, 1 * MiB, scaled(20))
    check(sent == got, "1 MiB echo after the retries differs")
    print(f"  {proxy.connects} CONNECTs, {proxy.tunnels} tunnels; gaps {[round(g, 2) for g in gaps]}")
    check_no_credentials(h, creds, proxy)


@r.case("NO_PROXY bypasses HTTPS_PROXY: the proxy sees no connection")
def _(h):
    proxy, creds = proxy_with_auth(h)
    relay = h.start_relay()
    t = relay.open_tunnel()
    echo = h.echo_server()
    host = relay.endpoint.rsplit(":", 1)[0]
    _, src = start_pair(h, relay, t, echo.port,
                        env_extra={"HTTPS_PROXY": creds.url(proxy),
                                   "NO_PROXY": f"example.com, {host}:443"})
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))
    check(proxy.connections == 0, f"the proxy saw {proxy.connections} connections, want 0")


@r.case("--https-proxy and the settings key win over HTTPS_PROXY; 'direct' ignores it")
def _(h):
    proxy = ConnectProxy()
    h.servers.append(proxy)
    dead = f"http://127.0.0.1:{h.dead_port()}"
    relay = h.start_relay()
    t = relay.open_tunnel()
    echo = h.echo_server()
    dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                             f"127.0.0.1:{echo.port}",
                             settings={"https_proxy": proxy.url()},
                             env_extra={"HTTPS_PROXY": dead})
    src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0",
                             env_extra={"HTTPS_PROXY": dead},
                             extra=["-b", "127.0.0.1", "--https-proxy", proxy.url()])
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))
    check(proxy.tunnels == 2, f"the proxy opened {proxy.tunnels} tunnels, want 2")
    for p in (src, dst):
        p.terminate()
    t2 = relay.open_tunnel()
    _, src2 = start_pair(h, relay, t2, echo.port, env_extra={"HTTPS_PROXY": dead},
                         settings={"https_proxy": "direct"})
    wait_for_echo(src2.wait_listening(), scaled(10))
    check(proxy.tunnels == 2, "'direct' still went through a proxy")


@r.case("bad proxy URLs are usage errors (exit 2) that never echo credentials")
def _(h):
    pw = "hunter2-" + secrets.token_hex(10)
    cases = [
        ({"HTTPS_PROXY": f"socks5://u:{pw}@127.0.0.1:1080"}, [], "HTTPS_PROXY"),
        ({"https_proxy": f"http://u:{pw}@127.0.0.1:99999"}, [], "https_proxy"),
        ({}, ["--https-proxy", f"https://u:{pw}@127.0.0.1:3128"], "--https-proxy"),
        ({}, ["--https-proxy", f"http://u:{pw}@127.0.0.1:3128/path"], "--https-proxy"),
    ]
    for env, extra, origin in cases:
        p = h.start_localproxy("source", "tok-" + secrets.token_hex(8), "127.0.0.1:9", "0",
                               cafile=None, env_extra=env, extra=extra)
        rc = p.wait_exit(scaled(5))
        check(rc == 2, f"{origin}: exit {rc}, want 2 (usage error)")
        text = p.stderr_text()
        check(origin in text, f"the error does not name {origin}: {text.strip()[:200]}")
        check(pw not in text, f"{origin}: the error repeats the password")
    # A good URL with credentials on argv works but warns about ps.
    p = h.start_localproxy("source", "tok-" + secrets.token_hex(8), "127.0.0.1:9", "0",
                           cafile=None, extra=["--https-proxy", f"http://u:{pw}@127.0.0.1:9"])
    p.wait_line(r"visible to other users", scaled(5))
    out = "\n".join(p.stderr_lines)
    check(pw not in out, "the warning repeats the password")


@r.case("tunneld: tunnelctl open --https-proxy and tunneld's HTTPS_PROXY; status shows host:port")
def _(h):
    proxy, creds = proxy_with_auth(h)
    relay = h.start_relay()
    t = relay.open_tunnel()
    echo = h.echo_server()
    d = Tunneld(h, env_extra={"HTTPS_PROXY": creds.url(proxy)}).start()
    fast = h.write("fast.json", '{"tunneling":{"proxy":{"websocket":'
                                '{"retry_delay_ms":"200","retry_max_delay_ms":"400"}}}}')
    # The destination follows tunneld's environment; the source names the
    # proxy itself (and is warned that argv shows it).
    d.open("destination", t["destinationAccessToken"], relay, f"127.0.0.1:{echo.port}", "dst",
           extra=["--settings-json", fast])
    r_open = d.ctl("open", "-s", "127.0.0.1:0", "-e", f"wss://{relay.endpoint}", "--cafile",
                   h.ca.ca_cert, "--name", "src", "--https-proxy", creds.url(proxy), "--json",
                   token=t["sourceAccessToken"])
    check(r_open.returncode == 0, f"open --https-proxy: exit {r_open.returncode}: {r_open.stderr}")
    check("visible to other users" in r_open.stderr,
          "no warning about credentials on tunnelctl's command line")
    sessions = d.wait_states(["dst", "src"], "connected", scaled(10))
    port = int(sessions["src"]["local_address"].rsplit(":", 1)[1])
    sent, got, _ = echo_roundtrip(port, 1 * MiB, scaled(20))
    check(sent == got, "1 MiB echo through tunneld via the proxy differs")
    check(proxy.tunnels == 2, f"the proxy opened {proxy.tunnels} tunnels, want 2")
    ctl_text = ""
    for name in ("dst", "src"):
        j = d.ctl_json("status", name)
        check(j.get("https_proxy") == proxy.address,
              f"status {name} --json: https_proxy {j.get('https_proxy')!r}, want {proxy.address}")
        text = d.ctl_ok("status", name).stdout
        check(proxy.address in text, f"status {name} does not show the proxy:\n{text}")
        ctl_text += text + str(j)
    ctl_text += d.ctl_ok("list").stdout + r_open.stdout + r_open.stderr
    for f in os.listdir(d.state_dir):
        mode = stat.S_IMODE(os.stat(os.path.join(d.state_dir, f)).st_mode)
        check(mode == 0o600, f"state file {f} has mode {mode:04o}, want 0600")
    # The credentials are in tunnelctl's own argv by the user's choice; ps
    # while tunnelctl runs is the user's business, not after it exited.
    check_no_credentials(h, creds, proxy, ctl_text)


if __name__ == "__main__":
    r.main()
