#!/usr/bin/python3
"""Tunnels that open themselves (docs/notify.md): tunneld subscribes to the
thing's tunnel-notify MQTT topic on a real broker (Debian's mosquitto, on
127.0.0.1 with TLS and `require_certificate true`) and starts destination
sessions without a person.

    python3 tests/integration/test_notify.py BUILD_DIR [CASE_SUBSTRING...]

Exits 77 (skipped) when mosquitto is not installed.
"""
import json
import os
import re
import secrets
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Harness, TestFailure, assert_no_secret, check,  # noqa: E402
                     echo_roundtrip, scaled)
from mqtt_broker import (AlpnGate, Broker, Publisher, client_cert,  # noqa: E402
                         need_mosquitto, notify_topic)
from test_daemon import DaemonRunner, Tunneld  # noqa: E402
from test_multiplex import run_parallel, service_ports  # noqa: E402

THING = "it-thing"
SESSION = f"notify-{THING}-1"  # the first notification's session (notify-<thing>-<n>)
SERVICES = ("SSH", "HTTP", "VNC")  # each mapped to its own echo server
REFUSED = re.compile(r"notify: notification refused: (.*)$")

r = DaemonRunner("notify")


class World:
    """Broker, relay (publishing notifications), one echo service per
    service id, tunneld."""

    def __init__(self, h: Harness, limits: dict | None = None, device_ca=None,
                 log_level: str = "debug", start: bool = True, plain_port: bool = False):
        self.h = h
        ca = h.ca
        self.broker = Broker(h, ca, plain_port=plain_port).start()
        pub_cert, pub_key = client_cert(ca, "relay-publisher")
        self.relay = h.start_relay(extra=[
            "--notify-broker", self.broker.endpoint, "--notify-cafile", ca.ca_cert,
            "--notify-cert", pub_cert, "--notify-key", pub_key])
        self.echoes = {name: h.echo_server() for name in SERVICES}
        self.echo = self.echoes["SSH"]
        self.pub_cert, self.pub_key = client_cert(ca, "test-publisher")
        self.dev_cert, self.dev_key = client_cert(device_ca or ca, "device")
        self.limits = limits or {}
        self.config = h.path("tunneld.toml")
        self.write_config()
        self.d = Tunneld(h, config=self.config, log_level=log_level)
        if start:
            self.d.start()

    def write_config(self, cert: str | None = None, key: str | None = None,
                     broker: str | None = None, alpn: str | None = None):
        ca = self.h.ca
        lines = [
            "[settings.websocket]",
            "retry_delay_ms = 200",
            "retry_max_delay_ms = 1000",
            "[notify]",
            f'broker = "{broker or self.broker.endpoint}"',
            f'thing_name = "{THING}"',
            f'cert_file = "{cert or self.dev_cert}"',
            f'key_file = "{key or self.dev_key}"',
            f'ca_file = "{ca.ca_cert}"',
            "keepalive_s = 5",
            f'tunnel_endpoint = "wss://{self.relay.endpoint}"',
            f'tunnel_cafile = "{ca.ca_cert}"',
        ]
        if alpn is not None:
            lines.append(f'alpn = "{alpn}"')
        lines += [f"{k} = {v}" for k, v in self.limits.items()]
        lines += ["[notify.services]"]
        lines += [f'{name} = "127.0.0.1:{e.port}"' for name, e in self.echoes.items()]
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

    def sources(self, t: dict, services) -> dict:
        """A source localproxy for a multi-service tunnel: {service: port}."""
        src = self.h.start_localproxy("source", t["sourceAccessToken"], self.relay,
                                      ",".join(f"{n}=0" for n in services),
                                      extra=["-b", "127.0.0.1"])
        self.last_source = src
        return service_ports(src, services)

    def notify_sessions(self) -> dict[str, dict]:
        return {n: s for n, s in self.d.sessions().items() if s["origin"] == "notify"}

    def wait_link_count(self, key: str, value: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            link = self.link()
            if link[key] >= value:
                check(link[key] == value, f"{key}: {link[key]}, expected {value}: {link}")
                return link
            check(time.monotonic() < deadline, f"{key} not {value} within {timeout:.0f} s: {link}")
            time.sleep(0.05)

    def refusals(self) -> list[str]:
        return [m.group(1) for m in map(REFUSED.search, self.d.proc.stderr_lines) if m]

    def refusals_after(self, before: int, n: int) -> list[str]:
        """The refusal lines after the first `before`, once `n` are there
        (tunneld's stderr is read by a thread: a counter in tunnelctl
        status can be ahead of the lines read so far)."""
        deadline = time.monotonic() + scaled(5)
        while len(self.refusals()) < before + n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.refusals()[before:]


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
    check(re.search(rf"service: +SSH 127\.0\.0\.1:{w.echo.port}\n", st),
          f"status text lacks the service:\n{st}")
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
        (notification("C" * 64, services=["SSH", "FTP", "VNC"]),
         "service FTP is not in [notify.services]"),
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

    # 300 copies of the session's own notification (a broker redelivering):
    # dropped and counted, nothing refused, the session untouched.
    copy = notification(t["destinationAccessToken"])
    for _ in range(300):
        pub.publish(topic, copy)
    w.wait_link_count("duplicates", 300, scaled(10))
    check(w.link()["refused"] == len(bad) and w.link()["accepted"] == 1, f"{w.link()}")
    s2 = w.d.sessions()[SESSION]
    check(s2["id"] == s["id"] and s2["state"] == "connected" and s2["reconnects"] == 0,
          f"session after the copies: {s2}")

    # A flood of valid-looking notifications: the rate limit (burst 3) lets a
    # few through (each a session of its own, which the relay refuses: their
    # tokens are made up), the rest get one line each.
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
    flood_refusals = w.refusals_after(before, 1000 - (link["accepted"] - 1))
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
    s2 = w.d.sessions()[SESSION]
    check(s2["id"] == s["id"] and s2["state"] == "connected", f"session after the flood: {s2}")

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


def wait_duplicates(w: World, n: int):
    w.wait_link_count("duplicates", n, scaled(10))


@r.case("redelivery: the same message twice, and again after a broker restart: same session, "
        "data keeps flowing", requires=need_mosquitto)
def _(h: Harness):
    w = World(h)
    w.wait_link(True, scaled(10))
    t = w.open_for_thing()
    first = w.d.wait_states([SESSION], "connected", scaled(10))[SESSION]
    port = w.source(t)
    # The notification as the relay published it, delivered a second time.
    copy = notification(t["destinationAccessToken"])
    pub = w.publisher()
    pub.publish(notify_topic(THING), copy)
    pub.close()
    wait_duplicates(w, 1)
    w.d.proc.wait_line("duplicate notification dropped: same token as session " + SESSION,
                       scaled(5))
    sent, got, _ = echo_roundtrip(port, 1 << 20, scaled(20))
    check(sent == got, "SHA-256 differs after the duplicate")

    w.broker.stop()
    w.wait_link(False, scaled(15))
    w.broker = Broker(h, h.ca, port=w.broker.port).start()
    t0 = time.monotonic()
    link = w.wait_link(True, scaled(20))
    print(f"  link back {time.monotonic() - t0:.1f} s after the broker", flush=True)
    check(link["connects"] >= 2, f"link: {link}")
    pub = w.publisher()
    pub.publish(notify_topic(THING), copy)
    pub.close()
    wait_duplicates(w, 2)
    s = w.notify_sessions()
    check(list(s) == [SESSION] and s[SESSION]["id"] == first["id"] and
          s[SESSION]["state"] == "connected" and s[SESSION]["reconnects"] == 0,
          f"sessions after the redeliveries: {s}")
    link = w.link()
    check(link["accepted"] == 1 and link["refused"] == 0, f"link: {link}")
    sent, got, _ = echo_roundtrip(port, 1 << 20, scaled(20))
    check(sent == got, "SHA-256 differs after the broker restart and the redelivery")
    # Subscribed again: a new tunnel's notification opens a second session.
    w.open_for_thing()
    w.d.wait_states([SESSION, f"notify-{THING}-2"], "connected", scaled(10))
    check(any("MQTT link to" in line and "down" in line for line in w.d.proc.stderr_lines),
          "no 'link down' line")
    check_secrets(h, w)


@r.case("2 and 3 services, two tunnels side by side; the cap refuses a third; the service "
        "closes one: forgotten, the other works, the cap frees", requires=need_mosquitto)
def _(h: Harness):
    w = World(h, limits={"max_sessions": 2})
    w.wait_link(True, scaled(10))
    two, three = ["SSH", "HTTP"], ["VNC", "SSH", "HTTP"]
    ta = w.open_for_thing(two)
    tb = w.open_for_thing(three)
    sa, sb = f"notify-{THING}-1", f"notify-{THING}-2"
    before = w.d.wait_states([sa, sb], "connected", scaled(10))
    ports_a = w.sources(ta, two)
    src_a = w.last_source
    ports_b = w.sources(tb, three)
    # Every service of both tunnels at once, each reaching its own service.
    jobs = [(tag, n, p) for tag, ports in (("A", ports_a), ("B", ports_b))
            for n, p in ports.items()]
    results = run_parallel([lambda p=p: echo_roundtrip(p, 512 << 10, scaled(60))
                            for _, _, p in jobs])
    for (tag, n, _), (sent, got, _) in zip(jobs, results):
        check(sent == got, f"tunnel {tag}, service {n}: SHA-256 differs")
    for n in SERVICES:
        want = 2 if n in two else 1
        check(w.echoes[n].wait_connections(want, scaled(5)),
              f"service {n}: {w.echoes[n].connections} connections, wanted {want}")
    st = w.d.ctl_ok("status", sb).stdout
    for n in three:
        check(re.search(rf"service: +{n} 127\.0\.0\.1:{w.echoes[n].port}\n", st),
              f"status of {sb} lacks service {n}:\n{st}")
    check(len(os.listdir(w.d.state_dir)) == 2, f"state: {os.listdir(w.d.state_dir)}")

    # At the cap (2): a third tunnel's notification is refused with the
    # reason; the working sessions are not touched.
    n_refused = len(w.refusals())
    tc = w.open_for_thing(["SSH"])
    w.wait_link_count("refused", 1, scaled(10))
    got = w.refusals_after(n_refused, 1)
    check(len(got) == 1 and "cap: 2 notify-opened session(s)" in got[0] and
          "max_sessions = 2" in got[0], f"refusals: {got}")
    now = w.notify_sessions()
    check(set(now) == {sa, sb}, f"sessions at the cap: {now}")
    for n in (sa, sb):
        check(now[n]["id"] == before[n]["id"] and now[n]["state"] == "connected" and
              now[n]["reconnects"] == 0, f"{n} touched at the cap: {now[n]}")

    # The service closes tunnel A: its session ends and is forgotten (state
    # file removed); B keeps working; the freed place takes a new tunnel.
    w.relay.close_tunnel(ta["tunnelId"])
    deadline = time.monotonic() + scaled(10)
    while set(w.d.sessions()) != {sb}:
        check(time.monotonic() < deadline, f"{sa} not forgotten: {w.d.sessions()}")
        time.sleep(0.05)
    check(w.link()["sessions"] == 1, f"link: {w.link()}")
    check(len(os.listdir(w.d.state_dir)) == 1, f"state: {os.listdir(w.d.state_dir)}")
    check(src_a.wait_exit(scaled(5)) == 0, "tunnel A's source did not end with the tunnel")
    results = run_parallel([lambda p=p: echo_roundtrip(p, 256 << 10, scaled(30))
                            for p in ports_b.values()])
    check(all(sent == got for sent, got, _ in results), "SHA-256 differs through B after A")
    w.open_for_thing(["HTTP"])
    w.d.wait_states([sb, f"notify-{THING}-3"], "connected", scaled(10))
    check(tc["tunnelId"] not in [x for x in os.listdir(w.d.state_dir)], "refused tunnel persisted")
    check_secrets(h, w)


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


@r.case("after a tunneld restart the restored session is kept; a redelivery does not "
        "replace it", requires=need_mosquitto)
def _(h: Harness):
    w = World(h)
    w.wait_link(True, scaled(10))
    t = w.open_for_thing()
    first = w.d.wait_states([SESSION], "connected", scaled(10))[SESSION]
    # Restart: the notified session comes back by itself, same id, same origin.
    w.d.proc.signal(signal.SIGTERM)
    check(w.d.proc.wait_exit(scaled(6)) == 0, "tunneld did not stop cleanly")
    w.d.start()
    s = w.d.wait_states([SESSION], "connected", scaled(15))[SESSION]
    check(s["id"] == first["id"] and s["origin"] == "notify", f"after restart: {s}")
    w.wait_link(True, scaled(10))
    # The broker delivers the notification again (its PUBACK was lost, say).
    pub = w.publisher()
    pub.publish(notify_topic(THING), notification(t["destinationAccessToken"]))
    pub.close()
    w.wait_link_count("duplicates", 1, scaled(10))
    s = w.notify_sessions()
    check(list(s) == [SESSION] and s[SESSION]["id"] == first["id"] and
          s[SESSION]["reconnects"] == 0, f"after the redelivery: {s}")
    check(len(os.listdir(w.d.state_dir)) == 1, f"state: {os.listdir(w.d.state_dir)}")
    port = w.source(t)
    sent, got, _ = echo_roundtrip(port, 1 << 20, scaled(20))
    check(sent == got, "SHA-256 differs through the restored session")
    # Names continue after the restored one.
    w.open_for_thing()
    w.d.wait_states([SESSION, f"notify-{THING}-2"], "connected", scaled(10))
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


@r.case("MQTT on an HTTPS port: with alpn the link connects through an ALPN-checking "
        "endpoint; without it the endpoint refuses and the line says why",
        requires=need_mosquitto)
def _(h: Harness):
    w = World(h, start=False, plain_port=True)
    gate = AlpnGate(w.broker)
    w.write_config(broker=gate.endpoint, alpn=AlpnGate.PROTOCOL)
    w.d.start()
    w.wait_link(True, scaled(10))
    check(gate.accepted and set(gate.accepted) == {AlpnGate.PROTOCOL}, f"{gate.accepted}")
    t = w.open_for_thing()
    w.d.wait_states([SESSION], "connected", scaled(10))
    # Without alpn (not port 443, so none by default): the link reconnects on
    # SIGHUP, the endpoint hangs up after the handshake, and each attempt is
    # one line that names the missing ALPN protocol.
    start = w.d.proc.line_count()
    w.write_config(broker=gate.endpoint)
    w.d.proc.signal(signal.SIGHUP)
    m = w.d.proc.wait_line(r"cannot connect to the MQTT broker .*; retrying in \d+ ms",
                           scaled(10), start=start)
    print(f"  error line: {m.group(0)}", flush=True)
    check("no ALPN protocol was offered" in m.group(0) and
          'alpn = "x-amzn-mqtt-ca"' in m.group(0), f"error line: {m.group(0)}")
    check(gate.refused >= 1 and gate.accepted[-1] is None, f"gate: {gate.accepted}")
    check(not w.link()["connected"], f"link: {w.link()}")
    # The tunnel session does not depend on the link.
    sent, got, _ = echo_roundtrip(w.source(t), 256 << 10, scaled(20))
    check(sent == got, "SHA-256 differs while the link is refused")
    gate.close()
    check_secrets(h, w)


if __name__ == "__main__":
    r.main()
