#!/usr/bin/python3
"""localproxy against a misbehaving service (hostile_service.py).

For each scenario: the proxy must not crash (no signal, no sanitizer report),
must log a clear error, and must either reconnect (a second handshake reaches
the service: reconnect_on_data_error defaults to true) or exit non-zero, within
a bounded time. It must then still stop cleanly on SIGTERM (exit 0).

    python3 tests/integration/test_hostile.py BUILD_DIR [CASE_SUBSTRING...]
"""
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Runner, TestFailure, check, connect, new_token, scaled  # noqa: E402
from hostile_service import DATA, SCENARIOS, STREAM_START, HostileServer  # noqa: E402

r = Runner("hostile")

SETTINGS = {
    "websocket.ping_period_ms": 500,
    "websocket.pong_timeout_ms": 1500,
    "websocket.retry_delay_ms": 200,
    "websocket.retry_max_delay_ms": 1000,
}

# What a "clear error line" looks like. Bare "protocol" is not enough: the
# word is in every "subprotocol ..." info line.
ERROR_RE = (r"(?i)\b(error|invalid|malformed|oversized?|too (large|big|long)|exceed\w*|"
            r"unexpected|violation|refused|reject\w*|dead|timed? ?out|no pong|"
            r"text (frame|message)|failed|500)\b")


class _ServerHandle:
    """Lets the harness close the hostile server with its own services."""

    def __init__(self, srv):
        self.srv = srv

    def close(self):
        self.srv.close()


def run(h, scenario: str, settings=None, expect=None):
    mode, _, outcome = SCENARIOS[scenario]
    outcome = expect or outcome
    srv = HostileServer(h.ca.server_cert, h.ca.server_key, scenario)
    h.servers.append(_ServerHandle(srv))
    if mode == "source":
        local = "0"
    else:
        local = f"127.0.0.1:{h.echo_server().port}"
    lp = h.start_localproxy(mode, new_token("hostile"), srv.endpoint, local, verbosity=4,
                            settings={**SETTINGS, **(settings or {})})
    check(srv.wait_handshakes(1, scaled(10)),
          f"no handshake reached the hostile service within {scaled(10):.0f} s")
    # Every line of this (new) proxy counts: under ASan the proxy may log its
    # error and its "reconnecting" line before wait_handshakes returns.
    mark = 0
    t0 = time.monotonic()

    limit = scaled(10)
    if outcome == "sigterm":
        time.sleep(0.5)
        check(lp.alive(), f"{scenario}: proxy exited ({lp.returncode}) during the handshake")
        lp.signal(15)
        rc = lp.wait_exit(2)
        check(rc is not None, f"{scenario}: still running 2 s after SIGTERM during a pending "
                              "handshake")
        check(rc == 0, f"{scenario}: exit {rc} on SIGTERM (want 0)")
        return
    if outcome == "stay":
        time.sleep(3)
        check(lp.alive(), f"{scenario}: proxy exited ({lp.returncode}) on a well-formed service")
        check(srv.handshake_count() == 1,
              f"{scenario}: proxy reconnected from a well-formed service")
    else:
        while time.monotonic() - t0 < limit:
            if not lp.alive() or srv.handshake_count() >= 2:
                break
            time.sleep(0.05)
        secs = time.monotonic() - t0
        rc = lp.returncode
        reconnected = srv.handshake_count() >= 2
        if rc is None and not reconnected:
            raise TestFailure(f"{scenario}: neither reconnected nor exited within "
                              f"{limit:.0f} s (hung?); service saw: {srv.events[-6:]}")
        check(rc is None or rc > 0,
              f"{scenario}: exit {rc} (want a reconnect or a non-zero exit)")
        if outcome == "reconnect":
            check(reconnected, f"{scenario}: exited {rc} instead of reconnecting")
        if outcome == "exit":
            check(rc is not None and not reconnected,
                  f"{scenario}: reconnected instead of exiting non-zero")
        what = "reconnected" if reconnected else f"exited {rc}"
        print(f"  {scenario}: {what} after {secs:.2f} s")
        try:
            m = lp.wait_line(ERROR_RE, scaled(2), start=mark)
        except TestFailure:
            raise TestFailure(f"{scenario}: no clear error line in stderr")
        print(f"  logged: {m.string.strip()[:160]}")

    if lp.alive():
        # Let a reconnect finish first: SIGTERM during a handshake is its own
        # scenario (stalled_handshake), not this one's business.
        if srv.handshake_count() >= 2:
            try:
                lp.wait_line(r"hostile-([2-9]|\d\d)", scaled(3), start=mark + 1)
            except TestFailure:
                pass
            time.sleep(0.3)
        lp.signal(15)
        rc = lp.wait_exit(scaled(5))
        check(rc is not None, f"{scenario}: still running 5 s after SIGTERM (hung)")
        check(rc == 0, f"{scenario}: exit {rc} on SIGTERM after the scenario (want 0)")


for _name in SCENARIOS:
    def _make(name):
        mode, _, outcome = SCENARIOS[name]
        @r.case(f"{name} ({mode}; expect {outcome})")
        def _(h):
            run(h, name)
    _make(_name)


@r.case("text_frame with reconnect_on_data_error=false: exits non-zero")
def _(h):
    run(h, "text_frame", settings={"websocket.reconnect_on_data_error": False}, expect="exit")


def _records(frame: bytes) -> list[tuple[int, int, bytes]]:
    """(type, streamId, payload) of each whole record in one frame; fields
    1, 2 and 4 of the Message, the others skipped."""
    out = []
    i = 0
    while i + 2 <= len(frame):
        n = int.from_bytes(frame[i:i + 2], "big")
        body = frame[i + 2:i + 2 + n]
        i += 2 + n
        fields = {1: 0, 2: 0, 4: b""}
        j = 0
        while j < len(body):
            key, j = _varint(body, j)
            num, wire = key >> 3, key & 7
            if wire == 0:
                fields[num], j = _varint(body, j)
            elif wire == 2:
                ln, j = _varint(body, j)
                fields[num] = body[j:j + ln]
                j += ln
            else:
                raise TestFailure(f"unexpected wire type {wire} in a record")
        out.append((fields[1], fields[2], fields[4]))
    return out


def _varint(b: bytes, i: int) -> tuple[int, int]:
    v = shift = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return v, i


@r.case("source: a stream's first DATA is followed by empty DATA in later frames")
def _(h):
    # docs/interop.md, finding 1: the reference localproxy as destination
    # leaves records that share a frame with STREAM_START unprocessed until a
    # later frame arrives, so a source sends an empty DATA 20 ms, 200 ms and
    # 2 s after the first DATA of each stream.
    srv = HostileServer(h.ca.server_cert, h.ca.server_key, "quiet")
    h.servers.append(_ServerHandle(srv))
    lp = h.start_localproxy("source", new_token("hostile"), srv.endpoint, "0", verbosity=4,
                            settings=SETTINGS, extra=["-b", "127.0.0.1"])
    port = lp.wait_listening()
    # The service starts reading 0.3 s after the handshake; frame arrival
    # times only mean something from then on.
    time.sleep(0.6)
    client = connect(port)
    h.sockets.append(client)
    client.sendall(b"GET / HTTP/1.1\r\n\r\n")
    time.sleep(3.0)
    frames = [(t, _records(p)) for c, t, p in list(srv.binary_frames) if c == 1]
    start = [k for k, (_, recs) in enumerate(frames) if (STREAM_START, 1, b"") in recs]
    check(start, f"no STREAM_START for stream 1 among {len(frames)} frames")
    data = [(k, t) for k, (t, recs) in enumerate(frames)
            for typ, sid, payload in recs if typ == DATA and sid == 1 and payload]
    check(data and b"".join(p for _, (_, recs) in enumerate(frames) for typ, sid, p in recs
                             if typ == DATA) == b"GET / HTTP/1.1\r\n\r\n",
          f"the request did not arrive as DATA for stream 1: {frames!r}")
    first_k, first_t = data[0]
    empty = [(k, t) for k, (t, recs) in enumerate(frames)
             for typ, sid, payload in recs if typ == DATA and sid == 1 and not payload]
    check(len(empty) == 3, f"want 3 empty DATA records within 3 s, got {len(empty)}")
    check(all(k > first_k for k, _ in empty),
          "an empty DATA shares the frame of the first DATA (it must come later)")
    delays = [round((t - first_t) * 1000) for _, t in empty]
    print(f"  empty DATA after the first DATA: {delays} ms")
    check(delays[0] >= 10 and delays[1] >= 150 and delays[2] >= 1500,
          f"empty DATA too early: {delays} ms (want about 20, 200, 2000)")
    check(lp.alive(), f"proxy exited ({lp.returncode})")


if __name__ == "__main__":
    r.main()
