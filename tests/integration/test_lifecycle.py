#!/usr/bin/python3
"""Session life: service down, tunnel closed or expired, relay restarted, signals.

    python3 tests/integration/test_lifecycle.py BUILD_DIR [CASE_SUBSTRING...]
"""
import os
import signal
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Runner, check, connect, echo_roundtrip, new_client_token,  # noqa: E402
                     new_token, scaled, wait_for_echo)

r = Runner("lifecycle")

# Reconnect quickly in tests; the defaults (2.5 s, backoff) are for the cloud.
FAST_RECONNECT = {
    "websocket.retry_delay_ms": 200,
    "websocket.retry_max_delay_ms": 1000,
    "websocket.ping_period_ms": 1000,
    "websocket.pong_timeout_ms": 3000,
}


def _closed_within(port: int, limit: float) -> float:
    """Connects to the source port, sends a little, and returns how long the
    tunnel took to close the connection (EOF or reset)."""
    s = connect(port)
    t0 = time.monotonic()
    try:
        s.settimeout(max(limit * 3, scaled(10)))
        try:
            s.sendall(b"hello?\n")
            while True:
                d = s.recv(4096)
                if not d:
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
        except socket.timeout:
            return float("inf")
    finally:
        s.close()
    return time.monotonic() - t0


@r.case("destination service down: the client at the source is closed in < 5 s")
def _(h):
    dead = h.dead_port()
    # Retry settings sized so that the deadline is about closing, not waiting
    # out the reference's 5 x 1 s default.
    _, _, dst, src, port = h.tunnel(dead, dst_settings={
        "tcp.connection_retry_count": 1, "tcp.connection_retry_delay_ms": 200})
    for attempt in (1, 2):
        secs = _closed_within(port, 5)
        check(secs < 5, f"attempt {attempt}: source client still open after "
                        f"{secs:.1f} s with the service down")
        print(f"  attempt {attempt}: closed after {secs:.2f} s")
    check(src.alive() and dst.alive(), "a localproxy exited because the service was down")


@r.case("tunnel closed through the admin API: both localproxies exit 0 within 2 s")
def _(h):
    echo = h.echo_server()
    relay, t, dst, src, port = h.tunnel(echo.port)
    wait_for_echo(port, scaled(10))  # both ends are connected
    t0 = time.monotonic()
    relay.close_tunnel(t["tunnelId"])
    for p in (src, dst):
        rc = p.wait_exit(max(0.0, 2.0 - (time.monotonic() - t0)))
        check(rc is not None, f"{p.name} still running 2 s after DELETE /tunnels/<id>")
        check(rc == 0, f"{p.name} exited {rc} after the tunnel was closed (want 0)")
    print(f"  both exited after {time.monotonic() - t0:.2f} s")


@r.case("a closed tunnel refuses new handshakes (4xx, non-zero exit)")
def _(h):
    echo = h.echo_server()
    relay, t, dst, src, port = h.tunnel(echo.port)
    wait_for_echo(port, scaled(10))
    relay.close_tunnel(t["tunnelId"])
    for p in (src, dst):
        p.wait_exit(scaled(5))
    again = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                               f"127.0.0.1:{echo.port}")
    rc = again.wait_exit(scaled(5))
    check(rc is not None, "localproxy still running 5 s after connecting to a closed tunnel")
    check(rc != 0, "localproxy exited 0 on a refused handshake")
    again.wait_line(r"HTTP[ /]?4\d\d", 1)


@r.case("tunnel lifetime expiry: both localproxies exit 0")
def _(h):
    echo = h.echo_server()
    relay = h.start_relay()
    t = relay.open_tunnel(lifetime_seconds=3)
    dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                             f"127.0.0.1:{echo.port}")
    src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0")
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))
    for p in (src, dst):
        rc = p.wait_exit(3 + scaled(5))
        check(rc is not None, f"{p.name} still running after the tunnel expired")
        check(rc == 0, f"{p.name} exited {rc} on expiry (want 0)")


@r.case("relay killed and restarted on the same port: both reconnect, data flows")
def _(h):
    echo = h.echo_server()
    src_tok, dst_tok = new_token("src"), new_token("dst")
    relay = h.start_relay(tunnels=[(src_tok, dst_tok)], admin=False)
    ct_src, ct_dst = new_client_token(), new_client_token()
    dst = h.start_localproxy("destination", dst_tok, relay, f"127.0.0.1:{echo.port}",
                             settings=FAST_RECONNECT, client_token=ct_dst,
                             client_token_in_argv=True)
    src = h.start_localproxy("source", src_tok, relay, "0", settings=FAST_RECONNECT,
                             client_token=ct_src, client_token_in_argv=True)
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))

    relay.process.kill()  # SIGKILL: no close frames, the kernel resets the sockets
    time.sleep(0.5)
    check(src.alive() and dst.alive(), "a localproxy exited when the relay died")
    relay2 = h.start_relay(tunnels=[(src_tok, dst_tok)], admin=False, port=relay.port)
    check(relay2.port == relay.port, "relay restarted on another port")
    secs = wait_for_echo(port, scaled(20))
    print(f"  tunnel working again {secs:.2f} s after the relay restarted")
    sent, got, _ = echo_roundtrip(port, 1 << 20, timeout=scaled(30))
    check(sent == got, "echo after the reconnect differs")
    check(src.alive() and dst.alive(), "a localproxy exited after the reconnect")


@r.case("SIGTERM while the relay is down (reconnect backoff): exit 0 promptly")
def _(h):
    echo = h.echo_server()
    src_tok, dst_tok = new_token("src"), new_token("dst")
    relay = h.start_relay(tunnels=[(src_tok, dst_tok)], admin=False)
    dst = h.start_localproxy("destination", dst_tok, relay, f"127.0.0.1:{echo.port}",
                             settings=FAST_RECONNECT)
    src = h.start_localproxy("source", src_tok, relay, "0", settings=FAST_RECONNECT)
    wait_for_echo(src.wait_listening(), scaled(10))
    relay.process.kill()
    # Failed reconnect attempts, reported with the socket's own error (not
    # libuv's "bad file descriptor" for POLLERR).
    for p in (src, dst):
        p.wait_line(r"no connection to the service: .*Connection refused", scaled(5))
        check("Bad file descriptor" not in p.stderr_text(), f"{p.name}: EBADF for a refused connect")
    for p, sig in ((src, signal.SIGTERM), (dst, signal.SIGINT)):
        check(p.alive(), f"{p.name} exited while the relay was down")
        p.signal(sig)
        rc = p.wait_exit(2)
        check(rc is not None, f"{p.name} still running 2 s after {sig.name} while reconnecting")
        check(rc == 0, f"{p.name} exited {rc} on {sig.name} (want 0)")


@r.case("SIGTERM and SIGINT: localproxy exits 0 promptly")
def _(h):
    echo = h.echo_server()
    _, _, dst, src, port = h.tunnel(echo.port)
    wait_for_echo(port, scaled(10))
    # An open stream at the time of the signal: it is reset, not leaked.
    s = connect(port)
    s.sendall(b"open stream\n")
    s.settimeout(scaled(5))
    s.recv(100)
    for p, sig in ((src, signal.SIGTERM), (dst, signal.SIGINT)):
        t0 = time.monotonic()
        p.signal(sig)
        rc = p.wait_exit(scaled(3))
        check(rc is not None, f"{p.name} still running 3 s after {sig.name}")
        check(rc == 0, f"{p.name} exited {rc} on {sig.name} (want 0)")
        print(f"  {p.name}: exit 0 {time.monotonic() - t0:.2f} s after {sig.name}")
    s.settimeout(scaled(5))
    try:
        rest = s.recv(100)
    except OSError:
        rest = b""
    check(rest == b"", "the client connection stayed open after the source exited")
    s.close()


if __name__ == "__main__":
    r.main()
