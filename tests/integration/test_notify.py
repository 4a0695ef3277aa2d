#!/usr/bin/python3
"""Tunnels that open themselves (docs/notify.md): tunneld subscribes to the
thing's tunnel-notify MQTT topic on a real broker (Debian's mosquitto, on
127.0.0.1 with TLS and `require_certificate true`) and starts destination
sessions without a person.

    python3 tests/integration/test_notify.py BUILD_DIR [CASE_SUBSTRING...]

Exits 77 (skipped) when mosquitto is not installed.
"""
import datetime
import json
import os
import re
import secrets
import signal
import statistics
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Harness, TestFailure, assert_no_secret, check,  # noqa: E402
                     echo_roundtrip, scaled)
from mqtt_broker import (Broker, Publisher, client_cert, need_mosquitto,  # noqa: E402
                         notify_topic)
from test_daemon import DaemonRunner, Tunneld  # noqa: E402

THING = "it-thing"
SESSION = f"notify-{THING}"
REFUSED = re.compile(r"notify: notification refused: (.*)$")

r = DaemonRunner("notify")


class World:
    """Broker, relay (publishing notifications), echo service, tunneld."""

    def __init__(self, h: Harness, limits: dict | None = None, device_ca=None,
                 log_level: str = "debug", start: bool = True):
        self.h = h
        ca = h.ca
        self.broker = Broker(h, ca).start()
        pub_cert, pub_key = client_cert(ca, "relay-publisher")
        self.relay = h.start_relay(extra=[
            "--notify-broker", self.broker.endpoint, "--notify-cafile", ca.ca_cert,
            "--notify-cert", pub_cert, "--notify-key", pub_key])
        self.echo = h.echo_server()
        self.pub_cert, self.pub_key = client_cert(ca, "test-publisher")
        self.dev_cert, self.dev_key = client_cert(device_ca or ca, "device")
        self.limits = limits or {}
        self.config = h.path("tunneld.toml")
        self.write_config()
        self.d = Tunneld(h, config=self.config, log_level=log_level)
        if start:
            self.d.start()

    def write_config(self, cert: str | None = None, key: str | None = None):
        ca = self.h.ca
        lines = [
            "[settings.websocket]",
            "retry_delay_ms = 200",
            "retry_max_delay_ms = 1000",
            "[notify]",
            f'broker = "{self.broker.endpoint}"',
            f'thing_name = "{THING}"',
            f'cert_file = "{cert or self.dev_cert}"',
            f'key_file = "{key or self.dev_key}"',
            f'ca_file = "{ca.ca_cert}"',
            "keepalive_s = 5",
            f'tunnel_endpoint = "wss://{self.relay.endpoint}"',
            f'tunnel_cafile = "{ca.ca_cert}"',
        ]
        lines += [f"{k} = {v}" for k, v in self.limits.items()]
        lines += ["[notify.services]", f'SSH = "127.0.0.1:{self.echo.port}"',
                  'VNC = "127.0.0.1:5900"']
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")

    def link(self) -> dict:
        return self.d.ctl_json("status")

    def wait_link(self, connected: bool, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            s = self.link()
            if s["connected"] == connected:
                return s
            if time.monotonic() > deadline:
                raise TestFailure(f"notify link not connected={connected} within "
                                  f"{timeout:.0f} s: {s}")
            time.sleep(0.05)

    def open_for_thing(self, services=("SSH",)) -> dict:
        """The whole AWS flow: the admin API opens a tunnel for the thing and
        the relay publishes the notification."""
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                status, t = self.relay._admin("POST", "/tunnels",
                                              {"services": list(services), "thingName": THING})
                break
            except TestFailure as e:
                # 502: the relay's own MQTT client is still reconnecting.
                if "502" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        check(status == 200 and t.get("notified") is True, f"POST /tunnels: {t!r}")
        self.h.secrets += [t["sourceAccessToken"], t["destinationAccessToken"]]
        return t

    def publisher(self) -> Publisher:
        return Publisher(self.broker, self.pub_cert, self.pub_key,
                         client_id=f"pub-{secrets.token_hex(3)}")

    def source(self, t: dict) -> int:
        src = self.h.start_localproxy("source", t["sourceAccessToken"], self.relay, "0",
                                      extra=["-b", "127.0.0.1"])
        return src.wait_listening()

    def refusals(self) -> list[str]:
        return [m.group(1) for m in map(REFUSED.search, self.d.proc.stderr_lines) if m]


def notification(token: str, **over) -> bytes:
    msg = {"clientAccessToken": token, "clientMode": "destination", "region": "us-east-1",
           "services": ["SSH"]}
    msg.update(over)
    return json.dumps({k: v for k, v in msg.items() if v is not None}).encode()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def check_secrets(h: Harness, w: World):
    """No token in any log, argv, or file other than mode 0600 ones."""
    toks = [s for s in h.secrets if s]
    for p in h.processes:
        assert_no_secret(p.stderr_text() + p.stdout_text(), toks, f"{p.name}'s output")
        assert_no_secret(" ".join(p.argv), toks, f"{p.name}'s argv")
        if p.alive():
            with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                assert_no_secret(f.read().decode(errors="replace"), toks,
                                 f"/proc/{p.pid}/cmdline")
    for root, _, files in os.walk(h.tmp):
        for name in files:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as f:
                    data = f.read().decode("latin-1")
            except OSError:
                continue
            if any(t in data for t in toks):
                mode = os.stat(path).st_mode & 0o777
                check(mode == 0o600, f"{path} holds a token with mode {mode:04o}")


@r.case("relay notification opens a destination: bytes intact, origin notify, token private",
        requires=need_mosquitto)
def _(h: Harness):
    w = World(h, log_level="trace")
    w.wait_link(True, scaled(10))
    t = w.open_for_thing()
    s = w.d.wait_states([SESSION], "connected", scaled(10))[SESSION]
    check(s["origin"] == "notify" and s["notify_thing"] == THING, f"session: {s}")
    check(s["mode"] == "destination", f"session: {s}")
    port = w.source(t)
    sent, got, _ = echo_roundtrip(port, 4 << 20, scaled(30))
    check(sent == got, "SHA-256 of the echoed 4 MiB differs")
    st = w.d.ctl("status", SESSION).stdout
    check("origin:" in st and "notify" in st, f"status text lacks the origin:\n{st}")
    link = w.link()
    check(link["accepted"] == 1 and link["refused"] == 0 and link["sessions"] == 1,
          f"link: {link}")
    check(link["last_notification_unix_ms"] > 0 and link["thing_name"] == THING, f"{link}")
    text = w.d.ctl("status").stdout
    check("connected" in text and w.broker.endpoint in text, f"status text:\n{text}")
    # Persisted like any session: one 0600 file in the state directory.
    files = os.listdir(w.d.state_dir)
    check(len(files) == 1, f"state dir: {files}")
    check(os.stat(os.path.join(w.d.state_dir, files[0])).st_mode & 0o777 == 0o600,
          "state file is not 0600")
    check_secrets(h, w)


@r.case("bad payloads and a flood are refused one line each; others unaffected",
        requires=need_mosquitto)
def _(h: Harness):
    w = World(h, limits={"rate_burst": 3, "rate_per_minute": 6})
    w.wait_link(True, scaled(10))
    t = w.open_for_thing()
    w.d.wait_states([SESSION], "connected", scaled(10))
    port = w.source(t)
    sent, got, _ = echo_roundtrip(port, 1 << 20, scaled(20))
    check(sent == got, "SHA-256 differs before the bad payloads")
    pub = w.publisher()
    topic = notify_topic(THING)
    bad = [
        (b"this is not json {", "not JSON"),
        (notification("A" * 64, clientMode="source"), "clientMode"),
        (notification(None), "clientAccessToken is missing"),
        (notification("B" * 64, services=["FTP"]), "not in [notify.services]"),
        (os.urandom(10 * 1024), "limit"),
        (notification("C" * 64, services=["SSH", "VNC"]), "V2"),
        (notification("tiny"), "characters"),
        (notification("D" * 64, region=None), "region"),
        (b"[1,2,3]", "not a JSON object"),
    ]
    for payload, why in bad:
        before = len(w.refusals())
        pub.publish(topic, payload)
        deadline = time.monotonic() + scaled(5)
        while len(w.refusals()) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        got = w.refusals()[before:]
        check(len(got) == 1 and why in got[0], f"payload for {why!r}: refusals {got}")
    s = w.d.sessions()[SESSION]
    check(s["state"] == "connected" and s["reconnects"] == 0, f"session after bad payloads: {s}")

    # A flood of valid-looking notifications: the rate limit (burst 3) lets a
    # few through (each replaces the previous session), the rest get one line each.
    rss0 = rss_kib(w.d.pid)
    before = len(w.refusals())
    for i in range(1000):
        pub.publish(topic, notification(f"flood-{i:04d}-" + "x" * 40))
    deadline = time.monotonic() + scaled(20)
    while time.monotonic() < deadline:
        link = w.link()
        if link["accepted"] + link["refused"] >= 1 + len(bad) + 1000:
            break
        time.sleep(0.1)
    link = w.link()
    check(link["accepted"] + link["refused"] == 1 + len(bad) + 1000, f"link after flood: {link}")
    flood_refusals = w.refusals()[before:]
    accepted_in_flood = link["accepted"] - 1
    check(1 <= accepted_in_flood <= 4, f"accepted during the flood: {accepted_in_flood}")
    check(len(flood_refusals) == 1000 - accepted_in_flood,
          f"{len(flood_refusals)} refusal lines for {1000 - accepted_in_flood} refusals")
    check(all("rate limit" in x or "cap" in x for x in flood_refusals),
          f"unexpected refusal: {[x for x in flood_refusals if 'rate' not in x][:3]}")
    grown = rss_kib(w.d.pid) - rss0
    print(f"  flood: {accepted_in_flood} accepted, {len(flood_refusals)} refused, "
          f"RSS growth {grown} KiB", flush=True)
    check(grown < 32 * 1024, f"tunneld grew by {grown} KiB during the flood")
    check(w.d.proc.alive(), "tunneld died")
    pub.close()

    # The daemon still serves: a tunnelctl-opened pair still carries bytes,
    # and the link still takes the next good notification (rate permitting).
    t2 = w.relay.open_tunnel()
    h.secrets += [t2["sourceAccessToken"], t2["destinationAccessToken"]]
    w.d.open("destination", t2["destinationAccessToken"], w.relay,
             f"127.0.0.1:{w.echo.port}", "manual-dst")
    _, sport = w.d.open("source", t2["sourceAccessToken"], w.relay, "127.0.0.1:0", "manual-src")
    w.d.wait_states(["manual-dst", "manual-src"], "connected", scaled(10))
    sent, got, _ = echo_roundtrip(sport, 1 << 20, scaled(20))
    check(sent == got, "SHA-256 differs through the tunnelctl pair after the flood")
    check_secrets(h, w)


@r.case("broker restart: the link comes back, tunnel sessions never notice",
        requires=need_mosquitto)
def _(h: Harness):
    w = World(h)
    w.wait_link(True, scaled(10))
    t = w.open_for_thing()
    w.d.wait_states([SESSION], "connected", scaled(10))
    port = w.source(t)
    w.broker.stop()
    w.wait_link(False, scaled(15))
    w.broker = Broker(h, h.ca, port=w.broker.port).start()
    t0 = time.monotonic()
    link = w.wait_link(True, scaled(20))
    print(f"  link back {time.monotonic() - t0:.1f} s after the broker", flush=True)
    check(link["connects"] >= 2, f"link: {link}")
    s = w.d.sessions()[SESSION]
    check(s["state"] == "connected" and s["reconnects"] == 0, f"session: {s}")
    sent, got, _ = echo_roundtrip(port, 1 << 20, scaled(20))
    check(sent == got, "SHA-256 differs after the broker restart")
    # Subscribed again: the next notification is taken.
    before = w.link()["accepted"]
    w.open_for_thing()
    deadline = time.monotonic() + scaled(10)
    while w.link()["accepted"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    check(w.link()["accepted"] == before + 1, "notification after the restart not taken")
    check(any("MQTT link to" in line and "down" in line for line in w.d.proc.stderr_lines),
          "no 'link down' line")


@r.case("wrong client certificate: clear error, backoff; SIGHUP with the right one connects",
        requires=need_mosquitto)
def _(h: Harness):
    other = h.new_ca("other")
    w = World(h, device_ca=other)
    m = w.d.proc.wait_line(r"cannot connect to the MQTT broker .*retrying in (\d+) ms",
                           scaled(10))
    first = int(m.group(1))
    print(f"  error line: {m.group(0)}", flush=True)
    check("cert_file" in m.group(0), f"error does not point at the certificate: {m.group(0)}")
    lines = [x for x in w.d.proc.stderr_lines if "cannot connect to the MQTT broker" in x]
    deadline = time.monotonic() + scaled(8)
    while len(lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        lines = [x for x in w.d.proc.stderr_lines if "cannot connect to the MQTT broker" in x]
    check(len(lines) >= 3, f"not retried: {lines}")
    delays = [int(re.search(r"retrying in (\d+) ms", x).group(1)) for x in lines]
    check(delays[2] > first, f"no backoff: {delays}")
    link = w.link()
    check(not link["connected"] and link["last_error"], f"link: {link}")
    # Fix the certificate and reload: the link comes up without a restart.
    good_cert, good_key = client_cert(h.ca, "device-good")
    w.write_config(cert=good_cert, key=good_key)
    w.d.proc.signal(signal.SIGHUP)
    w.wait_link(True, scaled(10))


@r.case("replacement by a second notification; the session survives a tunneld restart",
        requires=need_mosquitto)
def _(h: Harness):
    w = World(h)
    w.wait_link(True, scaled(10))
    w.open_for_thing()
    first = w.d.wait_states([SESSION], "connected", scaled(10))[SESSION]
    t2 = w.open_for_thing()
    deadline = time.monotonic() + scaled(10)
    while True:
        s = w.d.sessions()
        if SESSION in s and s[SESSION]["id"] != first["id"] and \
                s[SESSION]["state"] == "connected":
            break
        check(time.monotonic() < deadline, f"not replaced: {s}")
        time.sleep(0.05)
    check(len([x for x in s.values() if x["origin"] == "notify"]) == 1, f"sessions: {s}")
    check(any("replaced by a newer notification" in x for x in w.d.proc.stderr_lines),
          "no replacement line")
    check(len(os.listdir(w.d.state_dir)) == 1, f"state: {os.listdir(w.d.state_dir)}")
    new_id = s[SESSION]["id"]
    # Restart: the notified session comes back by itself, same id, same origin.
    w.d.proc.signal(signal.SIGTERM)
    check(w.d.proc.wait_exit(scaled(6)) == 0, "tunneld did not stop cleanly")
    w.d.start()
    s = w.d.wait_states([SESSION], "connected", scaled(15))[SESSION]
    check(s["id"] == new_id and s["origin"] == "notify", f"after restart: {s}")
    port = w.source(t2)
    sent, got, _ = echo_roundtrip(port, 1 << 20, scaled(20))
    check(sent == got, "SHA-256 differs through the restored session")
    check_secrets(h, w)


@r.case("key file readable by others: tunneld refuses to start", requires=need_mosquitto)
def _(h: Harness):
    w = World(h, start=False)
    os.chmod(w.dev_key, 0o644)
    w.d.start(wait=False)
    rc = w.d.proc.wait_exit(scaled(10))
    check(rc not in (None, 0), f"tunneld started with a world-readable key (rc {rc})")
    err = w.d.proc.stderr_text()
    check("notify.key_file" in err and "chmod 600" in err, f"stderr: {err[-400:]}")


def _log_time(line: str) -> float:
    stamp = line.split(" ", 1)[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()


@r.case("notification to connected destination: p50 over 20", requires=need_mosquitto)
def _(h: Harness):
    w = World(h, limits={"rate_burst": 100, "rate_per_minute": 6000, "max_sessions": 64})
    w.wait_link(True, scaled(10))
    pub = w.publisher()
    rx = re.compile(rf"\[session {re.escape(SESSION)}\] connected to ")
    times = []
    for _ in range(20):
        t = w.relay.open_tunnel(services=["SSH"])
        h.secrets += [t["sourceAccessToken"], t["destinationAccessToken"]]
        start = len(w.d.proc.stderr_lines)
        t0 = time.time()
        pub.publish(notify_topic(THING), notification(t["destinationAccessToken"]))
        m = w.d.proc.wait_line(rx.pattern, scaled(10), start=start)
        times.append((_log_time(m.string) - t0) * 1000)
    pub.close()
    p50 = statistics.median(times)
    print(f"  notification -> connected destination: p50 {p50:.1f} ms, "
          f"min {min(times):.1f} ms, max {max(times):.1f} ms (20 notifications)", flush=True)
    check(p50 < scaled(250), f"p50 {p50:.1f} ms")
    check_secrets(h, w)


if __name__ == "__main__":
    r.main()
