#!/usr/bin/env python3
"""Interoperability runs against the reference localproxy (issue 8).

Driven by scripts/interop-reference.sh, which builds the reference first; see
docs/interop.md. Every case runs in its own temp dir with a fresh tunnel-relay
and a fresh tunnel (throwaway CA, loopback only), one proxy of ours and one
reference proxy:

  ours-src/ref-dst   our localproxy as source, the reference as destination
  ref-src/ours-dst   the reference as source, our localproxy as destination

Workloads (each SHA-256 checked):
  upload     the client sends --size bytes and closes; the service reads all
  download   the client sends a short request line, then only reads; the
             service answers with --size bytes (the way an HTTP client starts)
  echo       the client sends --size/2 bytes while reading them back
  slow       like download, but the client reads slowly (--slow-rate bytes/s)

Outcome of a case:
  ok       the bytes arrived intact
  crash    a reference process exited on its own (its last [fatal] line is kept)
  stall    no byte moved for --idle seconds and nobody crashed
  fail     anything else (our proxy died, wrong bytes, setup failed): a bug
           of ours or of this script, printed in full

Exit status: 0 when no case stalled or failed (reference crashes are counted,
not failures of ours), 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import os
import random
import re
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import harness  # noqa: E402
from harness import Harness, TestFailure, check, settings_json  # noqa: E402

PAIRINGS = ("ours-src/ref-dst", "ref-src/ours-dst")
WORKLOADS = ("upload", "download", "echo", "slow")

# Protocol versions. Each entry says how to make both proxies speak it through
# tunnel-relay. V2 and V3 are being added by the V2/V3 work: fill in the
# settings and arguments for both sides (and the services to open the tunnel
# with) here, then `--protocol V2` runs the same workloads.
PROTOCOLS = {
    # Our proxy speaks 1.0. The reference cannot: whatever subprotocol it
    # negotiates, it waits for a SERVICE_IDS record before it listens or
    # connects (async_wait_for_service_ids), and the relay (like the service)
    # sends SERVICE_IDS only to 2.0/3.0 ends of a tunnel opened with services.
    # So the tunnel gets one service, the reference negotiates its default
    # (3.0) and is told to use V1 records with -y V1 (the option is documented
    # for sources; a destination needs it too, or it rejects a STREAM_START
    # without a service id).
    "V1": {
        "ours_subprotocol": "aws.iot.securetunneling-1.0",
        "ref_subprotocol": None,             # the reference's default (3.0)
        "tunnel_services": ["SSH"],          # relay.open_tunnel(services=...)
        "ref_source_args": ["-y", "V1"],
        "ref_destination_args": ["-y", "V1"],
        "ours_args": [],
    },
    # "V2": {...}, "V3": {...}  -- hook for the V2/V3 pairings: the same keys.
}

REF_FATAL_RE = re.compile(r"\[fatal\].*")


class Outcome(Exception):
    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


# ---------------------------------------------------------------- services


class RequestAnswerServer(harness._Server):
    """Reads one request line, then answers with `nbytes` random bytes and
    closes (a download: the client speaks first, briefly)."""

    def __init__(self, nbytes: int):
        super().__init__("answer")
        self.nbytes = nbytes
        self.sent: dict[int, dict] = {}
        self.requests = 0

    def serve(self, conn, idx):
        buf = b""
        while b"\n" not in buf:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
        with self._cond:
            self.requests += 1
        h = hashlib.sha256()
        left = self.nbytes
        rnd = random.Random(idx)
        while left > 0 and not self._stop.is_set():
            chunk = rnd.randbytes(min(left, 1 << 16))
            h.update(chunk)
            conn.sendall(chunk)
            left -= len(chunk)
        with self._cond:
            self.sent[idx] = {"bytes": self.nbytes - left, "sha256": h.hexdigest()}
            self._cond.notify_all()
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(120)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass


# ---------------------------------------------------------------- clients


class Progress:
    """Bytes moved so far, for stall detection."""

    def __init__(self):
        self.lock = threading.Lock()
        self.bytes = 0
        self.last = time.monotonic()

    def add(self, n: int):
        with self.lock:
            self.bytes += n
            self.last = time.monotonic()

    def idle_for(self) -> float:
        with self.lock:
            return time.monotonic() - self.last


def watch(progress: Progress, done: threading.Event, idle: float, limit: float,
          procs: list, what: str):
    """Waits for `done`; raises Outcome crash/stall when a reference process
    exits or nothing moves for `idle` seconds."""
    t0 = time.monotonic()
    while not done.wait(0.05):
        for p in procs:
            if not p.alive():
                raise_crash(p, what, progress)
        if progress.idle_for() > idle:
            raise Outcome("stall", f"{what}: no byte for {idle:.0f} s after "
                                   f"{progress.bytes} bytes")
        if time.monotonic() - t0 > limit:
            raise Outcome("stall", f"{what}: not done after {limit:.0f} s "
                                   f"({progress.bytes} bytes)")


def raise_crash(p, what: str, progress: Progress):
    p.wait_exit(2)
    text = p.stdout_text() + "\n" + p.stderr_text()
    fatal = REF_FATAL_RE.findall(text)
    rc = p.returncode
    reason = fatal[-1] if fatal else f"exit {rc}"
    if p.name.startswith("ref-"):
        raise Outcome("crash", f"{what}: {p.name} {reason} (exit {rc}) after "
                               f"{progress.bytes} bytes")
    raise Outcome("fail", f"{what}: our {p.name} exited ({rc}) after {progress.bytes} bytes")


def run_in_thread(fn):
    result: dict = {}
    done = threading.Event()

    def body():
        try:
            result["value"] = fn()
        except BaseException as e:  # reported by the watcher
            result["error"] = e
        finally:
            done.set()

    threading.Thread(target=body, daemon=True).start()
    return result, done


def connect(port: int) -> socket.socket:
    """The reference logs "Listening for new connection" just before its
    listen() call: a refused connect (nothing was accepted) is retried."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return harness.connect(port)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def client_upload(port: int, nbytes: int, progress: Progress) -> str:
    s = connect(port)
    h = hashlib.sha256()
    rnd = random.Random(1)
    left = nbytes
    try:
        while left > 0:
            chunk = rnd.randbytes(min(left, 1 << 16))
            h.update(chunk)
            s.sendall(chunk)
            progress.add(len(chunk))
            left -= len(chunk)
    finally:
        s.close()
    return h.hexdigest()


def client_download(port: int, nbytes: int, progress: Progress, rate: float | None) -> str:
    s = connect(port)
    s.settimeout(None)
    s.sendall(b"GET /blob HTTP/1.1\r\nHost: x\r\n\r\n")
    h = hashlib.sha256()
    got = 0
    t0 = time.monotonic()
    step = 16384 if rate else 1 << 18
    try:
        while got < nbytes:
            data = s.recv(min(step, nbytes - got))
            if not data:
                break
            h.update(data)
            got += len(data)
            progress.add(len(data))
            if rate:
                ahead = got / rate - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        s.close()
    if got != nbytes:
        raise TestFailure(f"download: connection closed after {got} of {nbytes} bytes")
    return h.hexdigest()


def client_echo(port: int, nbytes: int, progress: Progress) -> tuple[str, str]:
    s = connect(port)
    s.settimeout(None)
    sent = hashlib.sha256()
    errors: list = []

    def sender():
        rnd = random.Random(2)
        left = nbytes
        try:
            while left > 0:
                chunk = rnd.randbytes(min(left, 1 << 16))
                sent.update(chunk)
                s.sendall(chunk)
                left -= len(chunk)
        except OSError as e:
            errors.append(e)

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    got = 0
    recv = hashlib.sha256()
    try:
        while got < nbytes:
            data = s.recv(1 << 18)
            if not data:
                break
            recv.update(data)
            got += len(data)
            progress.add(len(data))
    finally:
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()
        th.join(5)
    if got != nbytes:
        raise TestFailure(f"echo: connection closed after {got} of {nbytes} bytes")
    return sent.hexdigest(), recv.hexdigest()


# ---------------------------------------------------------------- proxies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_reference(h: Harness, ref_bin: str, mode: str, token: str, relay, local: str,
                    proto: dict, verbosity: int, ref_settings: dict):
    capath = h.ca.hashed_dir(h.path("capath"))
    settings = dict(ref_settings)
    if proto["ref_subprotocol"]:
        settings.setdefault("websocket.subprotocol", proto["ref_subprotocol"])
    sj = h.write(f"ref-{mode}-settings.json", settings_json(settings))
    argv = [ref_bin, "-e", relay.endpoint, "-c", capath, "-v", str(verbosity),
            "--settings-json", sj]
    if mode == "source":
        argv += ["-s", local, "-b", "127.0.0.1"] + proto["ref_source_args"]
    else:
        argv += ["-d", local] + proto["ref_destination_args"]
    p = h.spawn(f"ref-{mode[:3]}", argv, env_extra={"AWSIOT_TUNNEL_ACCESS_TOKEN": token},
                secrets_=[token])
    return p


def wait_ref_connected(p, timeout: float):
    p.wait_line(r"Successfully established websocket connection", timeout, stream="stderr")


def setup(h: Harness, args, pairing: str, service_port: int):
    proto = PROTOCOLS[args.protocol]
    relay = h.start_relay()
    t = relay.open_tunnel(services=proto["tunnel_services"]) if proto["tunnel_services"] \
        else relay.open_tunnel()
    ours_settings = {"websocket.subprotocol": proto["ours_subprotocol"], **args.ours_settings}
    if pairing == "ours-src/ref-dst":
        dst = start_reference(h, args.reference, "destination", t["destinationAccessToken"],
                              relay, f"127.0.0.1:{service_port}", proto, args.ref_verbosity,
                              args.ref_settings)
        wait_ref_connected(dst, 20)
        src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0",
                                 verbosity=args.ours_verbosity, settings=ours_settings,
                                 extra=["-b", "127.0.0.1"] + proto["ours_args"])
        port = src.wait_listening(20)
        return port, [dst], [src]
    dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                             f"127.0.0.1:{service_port}", verbosity=args.ours_verbosity,
                             settings=ours_settings, extra=proto["ours_args"])
    dst.wait_line(r"connected to ", 20)
    port = free_port()
    src = start_reference(h, args.reference, "source", t["sourceAccessToken"], relay,
                          str(port), proto, args.ref_verbosity, args.ref_settings)
    src.wait_line(r"Listening for new connection on port", 20, stream="stderr")
    return port, [src], [dst]


def run_case(args, pairing: str, workload: str, n: int) -> tuple[str, str, float]:
    """Returns (outcome, detail, MB/s)."""
    name = f"{pairing.replace('/', '_')}-{workload}-{n}"
    with Harness(args.build_dir, name) as h:
        try:
            size = args.size
            if workload == "upload":
                server = h.sink_server()
            elif workload == "echo":
                server = h.echo_server()
                size = max(1, args.size // 2)
            else:
                if workload == "slow":
                    size = args.slow_size
                server = RequestAnswerServer(size)
                h.servers.append(server)
            try:
                port, refs, ours = setup(h, args, pairing, server.port)
            except TestFailure as e:
                for p in h.processes:
                    if p.name.startswith("ref-") and not p.alive():
                        raise_crash(p, "setup", Progress())
                raise Outcome("fail", f"setup: {e}")
            progress = Progress()
            procs = refs + ours
            t0 = time.monotonic()
            if workload == "upload":
                result, done = run_in_thread(lambda: client_upload(port, size, progress))
                watch(progress, done, args.idle, args.limit, procs, workload)
                if "error" in result:
                    raise Outcome("fail", f"upload client: {result['error']!r}")
                # The client is done; now the bytes must reach the sink.
                sink_done = threading.Event()

                def sink_wait():
                    while True:
                        rec = server.results.get(1)
                        if rec and rec["eof"]:
                            sink_done.set()
                            return
                        time.sleep(0.02)

                sink_progress = Progress()

                def mirror():
                    last = 0
                    while not sink_done.is_set():
                        b = server.received(1)
                        if b != last:
                            sink_progress.add(b - last)
                            last = b
                        time.sleep(0.02)

                threading.Thread(target=sink_wait, daemon=True).start()
                threading.Thread(target=mirror, daemon=True).start()
                watch(sink_progress, sink_done, args.idle, args.limit, procs,
                      "upload (delivery)")
                rec = server.results[1]
                elapsed = time.monotonic() - t0
                if rec["bytes"] != size or rec["sha256"] != result["value"]:
                    raise Outcome("fail", f"upload: service got {rec['bytes']} of {size} "
                                          f"bytes, sha256 {'equal' if rec['sha256'] == result['value'] else 'differs'}")
            elif workload == "echo":
                result, done = run_in_thread(lambda: client_echo(port, size, progress))
                watch(progress, done, args.idle, args.limit, procs, workload)
                elapsed = time.monotonic() - t0
                if "error" in result:
                    raise Outcome("fail", f"echo client: {result['error']}")
                sent, got = result["value"]
                if sent != got:
                    raise Outcome("fail", "echo: sha256 of the echo differs")
            else:
                rate = args.slow_rate if workload == "slow" else None
                result, done = run_in_thread(
                    lambda: client_download(port, size, progress, rate))
                watch(progress, done, args.idle, args.limit, procs, workload)
                elapsed = time.monotonic() - t0
                if "error" in result:
                    for p in refs:
                        if not p.alive():
                            raise_crash(p, workload, progress)
                    raise Outcome("fail", f"{workload} client: {result['error']}")
                sent = server.sent.get(1)
                if not sent or sent["sha256"] != result["value"]:
                    raise Outcome("fail", f"{workload}: sha256 differs from what the service sent")
            # A reference that died right at the end still counts as a crash.
            for p in refs:
                if not p.alive():
                    raise_crash(p, workload, progress)
            for p in ours:
                check(p.alive(), f"our {p.name} exited")
                r = p.crash_report()
                if r:
                    raise Outcome("fail", r)
            return "ok", "", size / max(elapsed, 1e-9) / 1e6
        except Outcome as o:
            if args.verbose or o.kind == "fail":
                print(h.report(), flush=True)
            return o.kind, o.detail, 0.0
        except TestFailure as e:
            if args.verbose:
                print(h.report(), flush=True)
            return "fail", str(e), 0.0


def parse_kv(items: list[str]) -> dict:
    out = {}
    for it in items or []:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit(f"expected key=value, got {it!r}")
        out[k] = v
    return out


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([KMG]i?B?)?", text.strip(), re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    mult = {"": 1, "k": 1024, "m": 1 << 20, "g": 1 << 30}[(m.group(2) or "")[:1].lower()]
    return int(m.group(1)) * mult


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--reference", required=True, help="the reference localproxy binary")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--protocol", default="V1", choices=sorted(PROTOCOLS))
    ap.add_argument("--pairing", action="append", choices=PAIRINGS)
    ap.add_argument("--workload", action="append", choices=WORKLOADS)
    ap.add_argument("--size", type=parse_size, default=parse_size("8MiB"))
    ap.add_argument("--slow-size", type=parse_size, default=parse_size("8MiB"))
    ap.add_argument("--slow-rate", type=parse_size, default=parse_size("2MiB"),
                    help="bytes per second read by the slow client")
    ap.add_argument("--idle", type=float, default=10.0,
                    help="seconds without a byte that make a stall")
    ap.add_argument("--limit", type=float, default=120.0)
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                    help="fine-grained setting for our proxy (e.g. websocket.max_frame_size=65536)")
    ap.add_argument("--ref", action="append", default=[], metavar="KEY=VALUE",
                    help="fine-grained setting for the reference")
    ap.add_argument("--ours-verbosity", type=int, default=4)
    ap.add_argument("--ref-verbosity", type=int, default=4)
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--verbose", action="store_true", help="print the logs of non-ok cases")
    args = ap.parse_args()
    args.ours_settings = parse_kv(args.ours)
    args.ref_settings = parse_kv(args.ref)
    pairings = args.pairing or list(PAIRINGS)
    workloads = args.workload or list(WORKLOADS)

    print(f"interop: protocol {args.protocol}, {args.runs} runs, pairings {', '.join(pairings)}, "
          f"workloads {', '.join(workloads)}, size {args.size}, ours {args.ours_settings or '{}'}, "
          f"ref {args.ref_settings or '{}'}; load {os.getloadavg()[0]:.2f}", flush=True)
    counts = {p: {w: collections.Counter() for w in workloads} for p in pairings}
    rates = {p: {w: [] for w in workloads} for p in pairings}
    details = []
    t_all = time.monotonic()
    for n in range(1, args.runs + 1):
        for pairing in pairings:
            for w in workloads:
                t0 = time.monotonic()
                kind, detail, mbps = run_case(args, pairing, w, n)
                counts[pairing][w][kind] += 1
                if kind == "ok":
                    rates[pairing][w].append(mbps)
                else:
                    details.append((pairing, w, n, kind, detail))
                print(f"run {n:2d} {pairing:17s} {w:9s} {kind:6s} "
                      f"{time.monotonic() - t0:5.1f} s"
                      + (f"  {mbps:7.1f} MB/s" if kind == "ok" else f"  {detail}"),
                      flush=True)
    print(f"\n== counts ({args.protocol}, {args.runs} runs, "
          f"{time.monotonic() - t_all:.0f} s) ==", flush=True)
    print(f"{'pairing':17s} {'workload':9s} {'ok':>4s} {'crash':>6s} {'stall':>6s} "
          f"{'fail':>5s} {'median MB/s':>12s}")
    bad = 0
    summary = {}
    for p in pairings:
        tot = collections.Counter()
        for w in workloads:
            c = counts[p][w]
            tot.update(c)
            r = sorted(rates[p][w])
            med = r[len(r) // 2] if r else 0.0
            print(f"{p:17s} {w:9s} {c['ok']:4d} {c['crash']:6d} {c['stall']:6d} "
                  f"{c['fail']:5d} {med:12.1f}")
            summary.setdefault(p, {})[w] = dict(c, median_mbps=round(med, 1))
        print(f"{p:17s} {'all':9s} {tot['ok']:4d} {tot['crash']:6d} {tot['stall']:6d} "
              f"{tot['fail']:5d}")
        bad += tot["stall"] + tot["fail"]
    if details:
        print("\nnot ok:")
        for pairing, w, n, kind, detail in details:
            print(f"  run {n} {pairing} {w}: {kind}: {detail}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"protocol": args.protocol, "runs": args.runs,
                       "ours_settings": args.ours_settings, "ref_settings": args.ref_settings,
                       "counts": summary}, f, indent=2)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    harness._install_signal_handlers()
    main()
