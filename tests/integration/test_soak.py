#!/usr/bin/python3
"""Soak: many short lives, then check that nothing grew.

(a) cycles: connect, echo a few KiB (SHA-256), close, through one tunnel
    (source and destination localproxy via tunnel-relay);
(b) sessions: open a source session with tunnelctl in one tunneld, wait until
    it is connected, close it (a fresh tunnel each time).

Measured after a warm-up and again at the end, once the processes are idle:
open file descriptors (/proc/PID/fd) and VmRSS of every proxy process, and
for tunneld the libuv handles on its loop (its debug line "N session(s), M
libuv handles on the loop", logged at each open). Flat means: fds and
handles exactly as at the start; RSS within RSS_SLACK_KIB + RSS_SLACK_PCT.

Sizes: TUNNELD_SOAK_CYCLES (default 300) and TUNNELD_SOAK_SESSIONS (default
100); scripts/soak.sh runs 10,000 and 1,000. Figures go to stdout and, with
TUNNELD_SOAK_JSON=FILE, to a JSON file.

    python3 tests/integration/test_soak.py BUILD_DIR [CASE_SUBSTRING...]
"""
import hashlib
import json
import os
import re
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Runner, TestFailure, check, connect, scaled,  # noqa: E402
                     wait_for_echo)
from test_daemon import Tunneld  # noqa: E402

CYCLES = int(os.environ.get("TUNNELD_SOAK_CYCLES", "300"))
SESSIONS = int(os.environ.get("TUNNELD_SOAK_SESSIONS", "100"))
WARMUP = 0.1  # fraction of the run before the first measurement (allocator warm-up)
# RSS tolerance: allocator arenas and OpenSSL's caches settle in steps.
RSS_SLACK_KIB = 2048
RSS_SLACK_PCT = 10
KEEP_CLOSED = 5  # --keep-closed-tunnels of the sessions case's relay

r = Runner("soak")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure(f"no VmRSS for pid {pid}")


def sanitized(pid: int) -> bool:
    """ASan's quarantine keeps freed memory (up to 256 MiB): RSS says nothing
    about leaks there; LeakSanitizer does, at exit. gcc links libasan.so
    (seen in the maps); clang links its runtime statically, so the binary's
    own symbols tell."""
    with open(f"/proc/{pid}/maps") as f:
        if "libasan" in f.read():
            return True
    try:
        with open(os.readlink(f"/proc/{pid}/exe"), "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


def settle_fds(pids: dict[str, int], want: dict[str, int] | None, timeout: float) -> dict:
    """fd counts once they stop changing (or equal `want`) within `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        now = {n: fd_count(p) for n, p in pids.items()}
        if want is not None and now == want:
            return now
        if want is None and now == last:
            return now
        if time.monotonic() > deadline:
            return now
        last = now
        time.sleep(0.2)


def snapshot(pids: dict[str, int], want_fds=None) -> dict:
    fds = settle_fds(pids, want_fds, scaled(5))
    return {n: {"fds": fds[n], "rss_kib": rss_kib(p), "asan": sanitized(p)}
            for n, p in pids.items()}


def judge(start: dict, end: dict, allowance_kib: dict | None = None) -> list[str]:
    problems = []
    for n in start:
        a, b = start[n], end[n]
        if b["fds"] != a["fds"]:
            problems.append(f"{n}: {a['fds']} fds at the start, {b['fds']} at the end")
        limit = (a["rss_kib"] + RSS_SLACK_KIB + a["rss_kib"] * RSS_SLACK_PCT // 100 +
                 (allowance_kib or {}).get(n, 0))
        if b["rss_kib"] > limit and not a["asan"]:
            problems.append(f"{n}: RSS {a['rss_kib']} KiB at the start, {b['rss_kib']} KiB at "
                            f"the end (limit {limit})")
    return problems


def report(name: str, done: int, secs: float, start: dict, end: dict, more: dict | None = None):
    for n in start:
        print(f"  {n}: fds {start[n]['fds']} -> {end[n]['fds']}, RSS "
              f"{start[n]['rss_kib']} -> {end[n]['rss_kib']} KiB"
              f"{' (ASan: RSS not judged)' if start[n]['asan'] else ''}")
    for k, v in (more or {}).items():
        print(f"  {k}: {v}")
    print(f"  {done} {name} in {secs:.1f} s ({done / max(secs, 1e-6):.0f}/s)")
    out = os.environ.get("TUNNELD_SOAK_JSON")
    if out:
        data = {}
        if os.path.exists(out):
            with open(out) as f:
                data = json.load(f)
        data[name] = {"done": done, "seconds": round(secs, 1), "start": start, "end": end,
                      **(more or {})}
        with open(out, "w") as f:
            json.dump(data, f, indent=2)


def stop_all(procs):
    """SIGTERM, exit 0 required: LeakSanitizer reports only at a normal exit
    (the harness's final SIGKILL would hide a leak), and the runner then
    fails the case on its report."""
    for p in procs:
        rc = p.terminate(timeout=scaled(10))
        check(rc == 0, f"{p.name}: exit {rc} on SIGTERM after the soak (want 0)")


def one_cycle(port: int, i: int):
    # Sizes cycle through 1 B .. 96 KiB so records of every shape go by,
    # including ones above one DATA payload (64512 B).
    n = 1 + (i * 7919) % (96 * 1024)
    payload = os.urandom(n)
    s = connect(port, timeout=scaled(10))
    try:
        s.settimeout(scaled(10))
        s.sendall(payload)
        got = bytearray()
        while len(got) < n:
            d = s.recv(1 << 17)
            if not d:
                raise TestFailure(f"cycle {i}: EOF after {len(got)} of {n} bytes")
            got += d
    finally:
        s.close()
    if hashlib.sha256(got).digest() != hashlib.sha256(payload).digest():
        raise TestFailure(f"cycle {i}: the echo of {n} bytes differs")


@r.case(f"{CYCLES} connect/echo/close cycles through one tunnel: fds and RSS flat")
def _(h):
    echo = h.echo_server()
    relay, _, dst, src, port = h.tunnel(echo.port, verbosity=4)
    wait_for_echo(port, scaled(10))
    pids = {"localproxy source": src.pid, "localproxy destination": dst.pid,
            "tunnel-relay": relay.process.pid}
    warm = max(1, int(CYCLES * WARMUP))
    for i in range(warm):
        one_cycle(port, i)
    start = snapshot(pids)
    t0 = time.monotonic()
    for i in range(warm, CYCLES):
        one_cycle(port, i)
    secs = time.monotonic() - t0
    end = snapshot(pids, want_fds={n: v["fds"] for n, v in start.items()})
    report("cycles", CYCLES - warm, secs, start, end)
    problems = judge(start, end)
    check(not problems, "; ".join(problems))
    for p in (src, dst):
        check(p.alive(), f"{p.name} exited")
    check(echo.connections == CYCLES + 1, f"the echo service saw {echo.connections} "
                                          f"connections, want {CYCLES + 1}")
    stop_all([src, dst, relay.process])


HANDLES_RE = re.compile(r"(\d+) session\(s\), (\d+) libuv handles on the loop")


def _handles_with_one_session(d: Tunneld, start: int = 0) -> list[int]:
    out = []
    with d.proc._cond:
        lines = list(d.proc.stderr_lines[start:])
    for line in lines:
        m = HANDLES_RE.search(line)
        if m and m.group(1) == "1":
            out.append(int(m.group(2)))
    return out


@r.case(f"{SESSIONS} sessions opened, connected and closed through tunnelctl in one tunneld: "
        "fds, RSS and libuv handles flat")
def _(h):
    # The relay remembers the last KEEP_CLOSED closed tunnels and forgets
    # older ones: its memory must stay flat once that many have closed (the
    # warm-up closes more).
    relay = h.start_relay(extra=["--keep-closed-tunnels", str(KEEP_CLOSED)])
    d = Tunneld(h, log_level="debug").start()

    def cycle(i: int):
        t = relay.open_tunnel()
        name = f"soak-{i}"
        d.open("source", t["sourceAccessToken"], relay, "127.0.0.1:0", name)
        d.wait_states([name], "connected", scaled(10))
        d.ctl_ok("close", name)
        # Wait until it is gone from the list: its handles are closed then.
        deadline = time.monotonic() + scaled(10)
        while name in d.sessions():
            check(time.monotonic() < deadline, f"{name} still listed 10 s after close")
            time.sleep(0.02)
        relay.close_tunnel(t["tunnelId"])

    pids = {"tunneld": d.pid, "tunnel-relay": relay.process.pid}
    warm = max(1, int(SESSIONS * WARMUP))
    for i in range(warm):
        cycle(i)
    start = snapshot(pids)
    mark = d.proc.line_count()
    t0 = time.monotonic()
    for i in range(warm, SESSIONS):
        cycle(i)
    secs = time.monotonic() - t0
    end = snapshot(pids, want_fds={n: v["fds"] for n, v in start.items()})
    handles = _handles_with_one_session(d, start=mark)
    check(len(handles) >= 2, f"only {len(handles)} handle counts with one session in the "
                             "debug log (HANDLES_RE no longer matches?)")
    report("sessions", SESSIONS - warm, secs, start, end,
           {"libuv handles at an open with 1 session (first, last, max)":
            [handles[0], handles[-1], max(handles)]})
    problems = judge(start, end)
    listed = relay.list_tunnels()["tunnels"]
    if len(listed) != KEEP_CLOSED or any(t["status"] != "CLOSED" for t in listed):
        problems.append(f"tunnel-relay lists {len(listed)} tunnels after {SESSIONS} closed ones "
                        f"(--keep-closed-tunnels {KEEP_CLOSED}): {listed[:3]!r}...")
    if handles[-1] != handles[0]:
        problems.append(f"tunneld: {handles[0]} libuv handles at the first measured open, "
                        f"{handles[-1]} at the last")
    check(not problems, "; ".join(problems))
    check(d.proc.alive(), "tunneld exited")
    check(d.sessions() == {}, f"sessions left: {sorted(d.sessions())}")
    stop_all([d.proc, relay.process])


if __name__ == "__main__":
    r.main()
