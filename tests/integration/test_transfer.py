#!/usr/bin/python3
"""Bytes through a real tunnel: relay + destination + source localproxy.

    python3 tests/integration/test_transfer.py BUILD_DIR [CASE_SUBSTRING...]
"""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Runner, check, echo_roundtrip, receive_all, scaled,  # noqa: E402
                     send_all)

MIB = 1 << 20
BIG = int(os.environ.get("TUNNELD_TEST_BIG_MIB", "64")) * MIB
# One-way bulk transfers: 1 GiB each way in the plain build, less
# under the sanitizers (3-10x slower; TUNNELD_TEST_TIMEOUT_SCALE > 1 there).
_plain = os.environ.get("TUNNELD_TEST_TIMEOUT_SCALE", "1") in ("", "1")
BULK = int(os.environ.get("TUNNELD_TEST_BULK_MIB", "1024" if _plain else "128")) * MIB

r = Runner("transfer")


def _rate(nbytes, seconds):
    return f"{nbytes / MIB:.0f} MiB in {seconds:.2f} s = {nbytes / MIB / max(seconds, 1e-6):.1f} MiB/s"


@r.case("64 MiB of random bytes through an echo service return intact (SHA-256)")
def _(h):
    echo = h.echo_server()
    _, _, _, _, port = h.tunnel(echo.port)
    sent, got, secs = echo_roundtrip(port, BIG, timeout=scaled(180))
    check(sent == got, f"echo: SHA-256 differs: sent {sent}, got {got}")
    print(f"  echo {_rate(BIG, secs)}")


@r.case("1 GiB (128 MiB under ASan) source -> destination into a sink arrives intact")
def _(h):
    sink = h.sink_server()
    _, _, _, _, port = h.tunnel(sink.port)
    t0 = time.monotonic()
    sha, sock = send_all(port, BULK, timeout=scaled(180), close=False)
    deadline = time.monotonic() + scaled(120)
    while sink.received(1) < BULK and time.monotonic() < deadline:
        time.sleep(0.05)
    secs = time.monotonic() - t0
    sock.close()
    rec = sink.wait_result(1, BULK, timeout=scaled(15))
    check(rec["bytes"] == BULK, f"sink got {rec['bytes']} of {BULK} bytes")
    check(rec["sha256"] == sha, f"sink: SHA-256 differs: sent {sha}, got {rec['sha256']}")
    print(f"  upload {_rate(BULK, secs)}")


@r.case("1 GiB (128 MiB under ASan) destination -> source from a service arrives intact")
def _(h):
    blast = h.blast_server(BULK)
    _, _, _, _, port = h.tunnel(blast.port)
    t0 = time.monotonic()
    sha, got = receive_all(port, BULK, timeout=scaled(180))
    secs = time.monotonic() - t0
    sent = blast.wait_sent(1, timeout=scaled(10))
    check(got == BULK, f"client got {got} of {BULK} bytes")
    check(sha == sent["sha256"], f"download: SHA-256 differs: sent {sent['sha256']}, got {sha}")
    print(f"  download {_rate(BULK, secs)}")


@r.case("a second connection after the first closes works")
def _(h):
    echo = h.echo_server()
    _, _, _, src, port = h.tunnel(echo.port)
    for i in (1, 2, 3):
        sent, got, _ = echo_roundtrip(port, MIB, timeout=scaled(30))
        check(sent == got, f"connection {i}: echo differs")
    check(echo.wait_connections(3, scaled(5)),
          f"destination opened {echo.connections} service connections for 3 streams")
    check(src.alive(), "source localproxy exited")


@r.case("closing right after sending still delivers every byte")
def _(h):
    sink = h.sink_server()
    _, _, _, _, port = h.tunnel(sink.port)
    n = 4 * MIB
    sha, _ = send_all(port, n, timeout=scaled(60), close=True)
    rec = sink.wait_result(1, n, timeout=scaled(30))
    check(rec["bytes"] == n, f"sink got {rec['bytes']} of {n} bytes (data lost on close)")
    check(rec["sha256"] == sha, "sink: SHA-256 differs")
    # and the tunnel is usable afterwards
    sha2, _ = send_all(port, 1024, timeout=scaled(10), close=True)
    rec2 = sink.wait_result(2, 1024, timeout=scaled(15))
    check(rec2["sha256"] == sha2, "second stream into the sink differs")


@r.case("record-boundary sizes (1 B .. 64513 B, 16 MiB) echo intact")
def _(h):
    echo = h.echo_server()
    _, _, _, _, port = h.tunnel(echo.port)
    # Small records and large ones interleave; a flow-control bug shows as a stall.
    for size in (1, 100, 65535, 64512, 64513, 16 * MIB):
        sent, got, _ = echo_roundtrip(port, size, timeout=scaled(60))
        check(sent == got, f"echo of {size} bytes differs")


if __name__ == "__main__":
    r.main()
