#!/usr/bin/env python3
"""Interoperability runs against the reference localproxy.

Driven by scripts/interop-reference.sh, which builds the reference first; see
docs/interop.md. Every case runs in its own temp dir with a fresh tunnel-relay
and a fresh tunnel (throwaway CA, loopback only), one proxy of ours and one
reference proxy:

  ours-src/ref-dst   our localproxy as source, the reference as destination
  ref-src/ours-dst   the reference as source, our localproxy as destination
  ref-src/ref-dst    the reference on both ends (--control): what the
                     reference does without us, for comparison
  ours-src/ours-dst  our proxy on both ends (--pairing only): the same
                     workloads without the reference

--version V1|V2|V3 picks the protocol both ends speak (PROTOCOLS below).

Workloads (each SHA-256 checked):
  upload     the client sends --size bytes and closes; the service reads all
  download   the client sends a short request line, then only reads; the
             service answers with --size bytes (the way an HTTP client starts)
  echo       the client sends --size/2 bytes while reading them back
  slow       like download, but the client reads slowly (--slow-rate bytes/s)
  multi      --connections downloads at once, --size in all (default at V3
             only; with a V1/V2 peer they take turns); wrong bytes are
             located (which answer, where, what is there instead)

Outcome of a case:
  ok       the bytes arrived intact
  crash    a reference process exited on its own (its last [fatal] line is kept)
  stall    no byte moved for --idle seconds and nobody crashed
  fail     anything else (our proxy died, wrong bytes, setup failed)

Every case that is not ok is attributed: to the reference when the evidence
names one of its known defects (docs/interop.md: its own [fatal] line for
findings 2 and 4; for finding 3, the service echoed everything, the tail is
shorter than one record and the reference destination logged its lookup
miss, which needs --ref-verbosity 5, the default), or when the reference is
on both ends; otherwise to our side ("ours or unexplained").

Exit status: 0 when no case is attributed to our side, 1 otherwise.
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
CONTROL = "ref-src/ref-dst"
OURS_ONLY = "ours-src/ours-dst"  # our proxy on both ends, for comparison
WORKLOADS = ("upload", "download", "echo", "slow", "multi")

# Protocol versions. Each entry says how to make both proxies speak it through
# tunnel-relay; `--version V2` runs the same workloads with it.
#   ours_subprotocol  what our proxy offers (and so speaks)
#   ref_subprotocol   the reference's websocket.subprotocol (None: its default,
#                     aws.iot.securetunneling-3.0)
#   tunnel_services   services the tunnel is opened with (relay.open_tunnel)
#   service           the service name both proxies are given (-s NAME=PORT,
#                     -d NAME=HOST:PORT); None: an unnamed -s PORT / -d HOST:PORT
#   ref_*_args, ours_args   extra arguments
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
        "ref_subprotocol": None,
        "tunnel_services": ["SSH"],
        "service": None,
        "ref_source_args": ["-y", "V1"],
        "ref_destination_args": ["-y", "V1"],
        "ours_args": [],
    },
    # V2 records: serviceId on every stream record, no connectionId. Our proxy
    # negotiates 2.0. The reference has no V2 subprotocol mode of its own: it
    # negotiates 3.0, a reference source is told its peer is V2 (-y V2, then
    # it sends no connectionId), a reference destination detects V2 from the
    # first STREAM_START without connectionId ("reverting to v2 message
    # format", TcpAdapterProxy.cpp async_wait_for_stream_start).
    "V2": {
        "ours_subprotocol": "aws.iot.securetunneling-2.0",
        "ref_subprotocol": None,
        "tunnel_services": ["SSH"],
        "service": "SSH",
        "ref_source_args": ["-y", "V2"],
        "ref_destination_args": [],
        "ours_args": [],
    },
    # V3 on both ends: the reference's default; ours negotiates 3.0.
    "V3": {
        "ours_subprotocol": "aws.iot.securetunneling-3.0",
        "ref_subprotocol": None,
        "tunnel_services": ["SSH"],
        "service": "SSH",
        "ref_source_args": [],
        "ref_destination_args": [],
        "ours_args": [],
    },
}

REF_FATAL_RE = re.compile(r"\[fatal\].*")


# Reference defects known by their own [fatal] line (docs/interop.md). A
# reference exit without one of these is "unexplained" and counts as ours.
REF_KNOWN_FATAL = (
    (re.compile(r"basic_multi_buffer too long"),
     "finding 2: its receive path appends every DATA payload to its local write "
     "buffer (tcp.write_buffer_size) without a room check"),
    (re.compile(r"open: Already open"),
     "finding 4: its source reopens a socket that is still open after its client closed"),
)

# Finding 3 in the reference destination's debug log (-v 5): it looked up the
# connection of a DATA record it sends by an empty service id and found none.
REF_V1_LOOKUP_MISS = "No serviceId_to_tcp_client mapping for service_id: "

# Largest payload of one record: a tail the reference holds is shorter.
MAX_PAYLOAD = 64512


class Outcome(Exception):
    """How a case ended. side: "reference" when the evidence shows the
    reference's own defect (evidence says which and why), else "ours"
    (including anything unexplained): only those make the script fail."""

    def __init__(self, kind: str, detail: str, side: str = "ours", evidence: str = ""):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.side = side
        self.evidence = evidence


# ---------------------------------------------------------------- services


def answer_bytes(idx: int, nbytes: int) -> bytes:
    """What RequestAnswerServer sends on its connection `idx`."""
    rnd = random.Random(idx)
    out = []
    left = nbytes
    while left > 0:
        out.append(rnd.randbytes(min(left, 1 << 16)))
        left -= len(out[-1])
    return b"".join(out)


def locate(chunk: bytes, answers: dict[int, bytes]) -> tuple[int, int] | None:
    for idx, want in answers.items():
        at = want.find(chunk)
        if at >= 0:
            return idx, at
    return None


def diagnose_multi(received: list[bytes], answers: dict[int, bytes]) -> str:
    """For each download that is not exactly one answer: which answer it
    follows, where it first differs, and what it holds from there on, as
    segments (copied from which answer at which offset, or found nowhere),
    so a report tells lost, repeated, swapped and foreign bytes apart."""
    notes = []
    for k, got in enumerate(received):
        if got in answers.values():
            continue
        best, best_len = None, -1
        for idx, want in answers.items():
            n = 0
            while n < min(len(got), len(want)) and got[n:n + 4096] == want[n:n + 4096]:
                n += 4096
            while n < min(len(got), len(want)) and got[n] == want[n]:
                n += 1
            if n > best_len:
                best, best_len = idx, n
        segs = []
        pos = best_len
        while pos < len(got) and len(segs) < 6:
            hit = locate(got[pos:pos + 16], answers) if pos + 16 <= len(got) else None
            if hit is None:
                # Coarse steps keep this to seconds for a large foreign
                # region; its end is exact to 256 bytes.
                start = pos
                pos += 16
                while pos + 16 <= len(got) and locate(got[pos:pos + 16], answers) is None \
                        and pos - start < 1 << 21:
                    pos += 16 if pos - start < 4096 else 256
                if pos + 16 > len(got):
                    pos = len(got)
                region = got[start:pos]
                zeros = 100 * region.count(0) // max(1, len(region))
                segs.append(f"[{start}, {pos}) found nowhere ({zeros}% zero bytes; "
                            f"starts {got[start:start + 24].hex()})")
                continue
            idx, at = hit
            want = answers[idx]
            n = 16
            while pos + n < len(got) and at + n < len(want) and got[pos + n] == want[at + n]:
                n += 1
            segs.append(f"[{pos}, {pos + n}) = answer {idx} [{at}, {at + n})")
            pos += n
        notes.append(f"download {k + 1}: {len(got)} bytes, answer {best} up to {best_len}, then "
                     + ", ".join(segs))
    return "; ".join(notes)


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

    def wait_answers(self, n: int, timeout: float):
        """The client can read the last byte before serve() has recorded it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.sent) < n and time.monotonic() < deadline:
                self._cond.wait(0.05)


class CountingEchoServer(harness._Server):
    """Echoes every byte back and counts what it echoed (the evidence that a
    missing tail is past the service)."""

    def __init__(self):
        super().__init__("echo")
        self.echoed: dict[int, int] = {}

    def serve(self, conn, idx):
        while not self._stop.is_set():
            data = conn.recv(1 << 18)
            if not data:
                return
            conn.sendall(data)
            with self._cond:
                self.echoed[idx] = self.echoed.get(idx, 0) + len(data)

    def echoed_total(self) -> int:
        with self._cond:
            return sum(self.echoed.values())


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
        for rx, why in REF_KNOWN_FATAL:
            if fatal and rx.search(fatal[-1]):
                raise Outcome("crash", f"{what}: {p.name} {reason} (exit {rc}) after "
                                       f"{progress.bytes} bytes", "reference",
                              f"its own [fatal] line; {why}")
        raise Outcome("crash", f"{what}: {p.name} {reason} (exit {rc}) after "
                               f"{progress.bytes} bytes (not a known reference defect)")
    raise Outcome("fail", f"{what}: our {p.name} exited ({rc}) after {progress.bytes} bytes")


def check_refs_after_error(refs: list, what: str, progress: Progress, wait: float = 3.0):
    """A client saw its connection end early. A dying reference closes its
    sockets before it has exited (and before its [fatal] line is out), so
    give it a moment before blaming anyone else."""
    deadline = time.monotonic() + wait
    while True:
        for p in refs:
            if not p.alive():
                raise_crash(p, what, progress)
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)


def attribute_stall(o: Outcome, pairing: str, workload: str, size: int, refs: list,
                    server, progress: Progress) -> Outcome:
    """A stall is ours unless the evidence names the reference."""
    dst = next((p for p in refs if p.name.startswith("ref-des")), None)
    if workload == "echo" and dst is not None and isinstance(server, CountingEchoServer):
        echoed = server.echoed_total()
        short = size - progress.bytes
        misses = dst.stderr_text().count(REF_V1_LOOKUP_MISS) + \
            dst.stdout_text().count(REF_V1_LOOKUP_MISS)
        if echoed == size and 0 < short < MAX_PAYLOAD and misses:
            o.side = "reference"
            o.evidence = (f"finding 3: the service echoed all {size} bytes to {dst.name} and "
                          f"{short} never came back; {dst.name} logged "
                          f"'{REF_V1_LOOKUP_MISS.strip()}' {misses} times (its V1 "
                          f"destination send path lost its continuation)")
        else:
            o.evidence = (f"not finding 3: service echoed {echoed} of {size} bytes, "
                          f"{short} short, {misses} lookup misses logged")
    if pairing == CONTROL:
        o.side = "reference"
        o.evidence = "the reference on both ends" + (f"; {o.evidence}" if o.evidence else "")
    return o


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


def client_download(port: int, nbytes: int, progress: Progress, rate: float | None,
                    keep: list | None = None) -> str:
    """keep: if given, the received bytes are appended to it (for diagnosis)."""
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
            if keep is not None:
                keep.append(data)
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


def named(proto: dict, local: str) -> str:
    return f"{proto['service']}={local}" if proto["service"] else local


def setup(h: Harness, args, pairing: str, service_port: int):
    """Starts the relay, the tunnel and both proxies (destination first).
    Returns (source port, reference processes, our processes)."""
    proto = PROTOCOLS[args.protocol]
    relay = h.start_relay()
    t = relay.open_tunnel(services=proto["tunnel_services"]) if proto["tunnel_services"] \
        else relay.open_tunnel()
    ours_settings = {"websocket.subprotocol": proto["ours_subprotocol"], **args.ours_settings}
    target = named(proto, f"127.0.0.1:{service_port}")
    src_kind, dst_kind = pairing.split("/")
    refs, ours = [], []
    if dst_kind == "ref-dst":
        dst = start_reference(h, args.reference, "destination", t["destinationAccessToken"],
                              relay, target, proto, args.ref_verbosity, args.ref_settings)
        wait_ref_connected(dst, 20)
        refs.append(dst)
    else:
        dst = h.start_localproxy("destination", t["destinationAccessToken"], relay, target,
                                 verbosity=args.ours_verbosity, settings=ours_settings,
                                 extra=proto["ours_args"])
        dst.wait_line(r"connected to ", 20)
        ours.append(dst)
    if src_kind == "ours-src":
        src = h.start_localproxy("source", t["sourceAccessToken"], relay, named(proto, "0"),
                                 verbosity=args.ours_verbosity, settings=ours_settings,
                                 extra=["-b", "127.0.0.1"] + proto["ours_args"])
        port = src.wait_listening(20)
        ours.append(src)
    else:
        port = free_port()
        src = start_reference(h, args.reference, "source", t["sourceAccessToken"], relay,
                              named(proto, str(port)), proto, args.ref_verbosity,
                              args.ref_settings)
        src.wait_line(r"Listening for new connection on port", 20, stream="stderr")
        refs.append(src)
    return port, refs, ours


def report(h: Harness, tail: int = 60) -> str:
    """The last lines of every process's log; the reference's debug lines
    (-v 5 logs several per record) are left out."""
    out = []
    for p in h.processes:
        lines = (p.stdout_text() + "\n" + p.stderr_text()).splitlines()
        if p.name.startswith("ref-"):
            lines = [ln for ln in lines if "[debug]" not in ln and "[trace]" not in ln]
        lines = [ln for ln in lines if ln.strip()]
        cut = max(0, len(lines) - tail)
        cmd = " ".join(p.argv)
        for sec in p.secrets:
            cmd = cmd.replace(sec, "<secret>")
        rc = p.proc.poll()
        out.append(f"--- {p.name} ({'running' if rc is None else f'exit {rc}'}): {cmd}")
        if cut:
            out.append(f"[... {cut} lines cut ...]")
        out += lines[cut:]
    return "\n".join(out)


def run_case(args, pairing: str, workload: str, n: int) -> tuple[Outcome | None, float]:
    """Returns (None, MB/s) when ok, else (the Outcome, 0)."""
    name = f"{pairing.replace('/', '_')}-{workload}-{n}"
    with Harness(args.build_dir, name) as h:
        refs: list = []
        server = None
        size = args.size
        progress = Progress()
        try:
            if workload == "upload":
                server = h.sink_server()
            elif workload == "echo":
                server = CountingEchoServer()
                h.servers.append(server)
                size = max(1, args.size // 2)
            else:
                if workload == "slow":
                    size = args.slow_size
                server = RequestAnswerServer(size // args.connections
                                             if workload == "multi" else size)
                h.servers.append(server)
            try:
                port, refs, ours = setup(h, args, pairing, server.port)
            except TestFailure as e:
                for p in h.processes:
                    if p.name.startswith("ref-") and not p.alive():
                        raise_crash(p, "setup", Progress())
                raise Outcome("fail", f"setup: {e}")
            procs = refs + ours
            t0 = time.monotonic()
            if workload == "upload":
                result, done = run_in_thread(lambda: client_upload(port, size, progress))
                watch(progress, done, args.idle, args.limit, procs, workload)
                if "error" in result:
                    check_refs_after_error(refs, workload, progress)
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
                    check_refs_after_error(refs, workload, progress)
                    raise Outcome("fail", f"echo client: {result['error']}")
                sent, got = result["value"]
                if sent != got:
                    raise Outcome("fail", "echo: sha256 of the echo differs")
            elif workload == "multi":
                k = args.connections
                each = size // k
                results = []
                kept: list[list] = [[] for _ in range(k)]
                for j in range(k):
                    results.append(run_in_thread(
                        lambda j=j: client_download(port, each, progress, None, kept[j])))
                for _, done in results:
                    watch(progress, done, args.idle, args.limit, procs, workload)
                elapsed = time.monotonic() - t0
                for result, _ in results:
                    if "error" in result:
                        check_refs_after_error(refs, workload, progress)
                        raise Outcome("fail", f"multi client: {result['error']}")
                server.wait_answers(k, 5)
                got = sorted(r["value"] for r, _ in results)
                want = sorted(v["sha256"] for v in server.sent.values())
                if got != want:
                    why = diagnose_multi([b"".join(x) for x in kept],
                                         {i: answer_bytes(i, each) for i in server.sent})
                    raise Outcome("fail", f"multi: {k} downloads, sha256s differ from what "
                                          f"the service sent ({len(want)} answers): {why}")
                size = each * k
            else:
                rate = args.slow_rate if workload == "slow" else None
                result, done = run_in_thread(
                    lambda: client_download(port, size, progress, rate))
                watch(progress, done, args.idle, args.limit, procs, workload)
                elapsed = time.monotonic() - t0
                if "error" in result:
                    check_refs_after_error(refs, workload, progress)
                    raise Outcome("fail", f"{workload} client: {result['error']}")
                server.wait_answers(1, 5)
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
            return None, size / max(elapsed, 1e-9) / 1e6
        except Outcome as o:
            if o.kind == "stall":
                attribute_stall(o, pairing, workload, size, refs, server, progress)
            elif pairing == "ref-src/ref-dst" and o.side == "ours":
                o.side, o.evidence = "reference", "the reference on both ends"
            if args.verbose or o.side != "reference":
                print(report(h), flush=True)
            return o, 0.0
        except TestFailure as e:
            print(report(h), flush=True)
            return Outcome("fail", str(e)), 0.0


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
    ap.add_argument("--version", "--protocol", dest="protocol", default="V1",
                    choices=sorted(PROTOCOLS), help="protocol version of both ends")
    ap.add_argument("--pairing", action="append", choices=PAIRINGS + (CONTROL, OURS_ONLY),
                    help=f"default: {', '.join(PAIRINGS)}; {CONTROL} is the reference "
                         "on both ends (a control)")
    ap.add_argument("--control", action="store_true", help=f"also run {CONTROL}")
    ap.add_argument("--workload", action="append", choices=WORKLOADS,
                    help="default: upload, download, echo, slow (and multi at V3)")
    ap.add_argument("--size", type=parse_size, default=parse_size("8MiB"))
    ap.add_argument("--slow-size", type=parse_size, default=parse_size("8MiB"))
    ap.add_argument("--slow-rate", type=parse_size, default=parse_size("2MiB"),
                    help="bytes per second read by the slow client")
    ap.add_argument("--connections", type=int, default=4,
                    help="simultaneous clients of the multi workload")
    ap.add_argument("--idle", type=float, default=10.0,
                    help="seconds without a byte that make a stall")
    ap.add_argument("--limit", type=float, default=120.0)
    ap.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                    help="fine-grained setting for our proxy (e.g. websocket.max_frame_size=65536)")
    ap.add_argument("--ref", action="append", default=[], metavar="KEY=VALUE",
                    help="fine-grained setting for the reference")
    ap.add_argument("--ours-verbosity", type=int, default=4)
    ap.add_argument("--ref-verbosity", type=int, default=5,
                    help="5 (debug) logs the line that identifies finding 3")
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--verbose", action="store_true", help="print the logs of every non-ok case")
    args = ap.parse_args()
    args.ours_settings = parse_kv(args.ours)
    args.ref_settings = parse_kv(args.ref)
    pairings = args.pairing or list(PAIRINGS)
    if args.control and CONTROL not in pairings:
        pairings.append(CONTROL)
    workloads = args.workload or (list(WORKLOADS) if args.protocol == "V3"
                                  else [w for w in WORKLOADS if w != "multi"])

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
                o, mbps = run_case(args, pairing, w, n)
                kind = o.kind if o else "ok"
                counts[pairing][w][kind] += 1
                if o is None:
                    rates[pairing][w].append(mbps)
                else:
                    counts[pairing][w]["ref-side" if o.side == "reference" else "our-side"] += 1
                    details.append((pairing, w, n, o))
                side = "" if o is None else (" [reference]" if o.side == "reference"
                                             else " [OURS?]")
                print(f"run {n:2d} {pairing:17s} {w:9s} {kind:6s} "
                      f"{time.monotonic() - t0:5.1f} s"
                      + (f"  {mbps:7.1f} MB/s" if o is None else f"{side}  {o.detail}"),
                      flush=True)
    print(f"\n== counts ({args.protocol}, {args.runs} runs, "
          f"{time.monotonic() - t_all:.0f} s) ==", flush=True)
    print(f"{'pairing':17s} {'workload':9s} {'ok':>4s} {'crash':>6s} {'stall':>6s} "
          f"{'fail':>5s} {'ref':>4s} {'ours':>5s} {'median MB/s':>12s}")
    print("  (crash = a reference process exited; ref / ours = of the not-ok cases, how many "
          "the evidence attributes to the reference / to our side or nobody)")
    ours_bad = 0
    summary = {}
    for p in pairings:
        tot = collections.Counter()
        for w in workloads:
            c = counts[p][w]
            tot.update(c)
            r = sorted(rates[p][w])
            med = r[len(r) // 2] if r else 0.0
            print(f"{p:17s} {w:9s} {c['ok']:4d} {c['crash']:6d} {c['stall']:6d} "
                  f"{c['fail']:5d} {c['ref-side']:4d} {c['our-side']:5d} {med:12.1f}")
            summary.setdefault(p, {})[w] = {
                "ok": c["ok"], "crash": c["crash"], "stall": c["stall"], "fail": c["fail"],
                "reference_side": c["ref-side"], "our_side": c["our-side"],
                "median_mbps": round(med, 1)}
        print(f"{p:17s} {'all':9s} {tot['ok']:4d} {tot['crash']:6d} {tot['stall']:6d} "
              f"{tot['fail']:5d} {tot['ref-side']:4d} {tot['our-side']:5d}")
        ours_bad += tot["our-side"]
    ref_cases = [d for d in details if d[3].side == "reference"]
    our_cases = [d for d in details if d[3].side != "reference"]
    if ref_cases:
        print("\nthe reference's own defects (not counted against us):")
        for pairing, w, n, o in ref_cases:
            print(f"  run {n} {pairing} {w}: {o.kind}: {o.detail}\n      evidence: {o.evidence}")
    if our_cases:
        print("\nON OUR SIDE, or not explained (these fail the run):")
        for pairing, w, n, o in our_cases:
            print(f"  run {n} {pairing} {w}: {o.kind}: {o.detail}"
                  + (f"\n      {o.evidence}" if o.evidence else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"protocol": args.protocol, "runs": args.runs,
                       "ours_settings": args.ours_settings, "ref_settings": args.ref_settings,
                       "counts": summary,
                       "not_ok": [{"run": n, "pairing": p, "workload": w, "kind": o.kind,
                                   "side": o.side, "detail": o.detail, "evidence": o.evidence}
                                  for p, w, n, o in details]}, f, indent=2)
    print(f"\ninterop: {len(our_cases)} case(s) on our side or unexplained, "
          f"{len(ref_cases)} of the reference's own; exit {1 if ours_bad else 0}")
    sys.exit(1 if ours_bad else 0)


if __name__ == "__main__":
    harness._install_signal_handlers()
    main()
