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

from harness import Runner, TestFailure, check, new_token, scaled  # noqa: E402
from hostile_service import SCENARIOS, HostileServer  # noqa: E402

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
    mark = max(0, lp.line_count() - 1)
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
        check(lp.alive(), f"proxy exited ({lp.returncode}) on well-formed fragmented records")
        check(srv.handshake_count() == 1,
              "proxy reconnected after well-formed fragmented records")
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


if __name__ == "__main__":
    r.main()
