#!/usr/bin/python3
"""Tokens and TLS trust: wrong tokens are refused loudly, secrets never reach a
log line, -c DIR / --cafile / -k behave.

    python3 tests/integration/test_auth.py BUILD_DIR [CASE_SUBSTRING...]
"""
import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (Runner, assert_no_secret, check, echo_roundtrip,  # noqa: E402
                     new_client_token, new_token, scaled, wait_for_echo)

r = Runner("auth")

# Give up after a couple of attempts so a TLS failure ends the process.
FEW_RETRIES = {"websocket.connect_retry_count": 1, "websocket.retry_delay_ms": 100}


def _expect_refused(p, limit: float, status_re=r"HTTP[ /]?4\d\d"):
    rc = p.wait_exit(limit)
    check(rc is not None, f"{p.name} still running {limit:.0f} s after a refused handshake")
    check(rc > 0, f"{p.name} exited {rc} on a refused handshake (want non-zero, no signal)")
    m = p.wait_line(status_re, 1)
    return rc, m.group(0)


@r.case("wrong token: source exits non-zero within 5 s naming the 4xx")
def _(h):
    relay = h.start_relay()
    relay.open_tunnel()
    p = h.start_localproxy("source", new_token("bogus"), relay, "0")
    rc, status = _expect_refused(p, 5.0)
    print(f"  exit {rc}, stderr names {status}")


@r.case("wrong token: destination exits non-zero within 5 s naming the 4xx")
def _(h):
    relay = h.start_relay()
    relay.open_tunnel()
    echo = h.echo_server()
    p = h.start_localproxy("destination", new_token("bogus"), relay, f"127.0.0.1:{echo.port}")
    rc, status = _expect_refused(p, 5.0)
    print(f"  exit {rc}, stderr names {status}")


@r.case("a token used in the wrong mode is refused (4xx)")
def _(h):
    relay = h.start_relay()
    t = relay.open_tunnel()
    p = h.start_localproxy("source", t["destinationAccessToken"], relay, "0")
    rc, status = _expect_refused(p, 5.0)
    print(f"  exit {rc}, stderr names {status}")


@r.case("-t on the command line works but warns, and the token is not echoed")
def _(h):
    relay = h.start_relay()
    tok = new_token("argv")
    h.secrets.append(tok)
    p = h.start_localproxy("source", None, relay, "0", extra=["-t", tok])
    p.secrets.append(tok)
    _expect_refused(p, 5.0)
    check(any("warn" in l.lower() for l in p.stderr_lines),
          "no warning about a token given on the command line")
    assert_no_secret(p.stderr_text() + p.stdout_text(), [tok], f"{p.name} output")


@r.case("tokens never appear in any output, even at -v 6")
def _(h):
    echo = h.echo_server()
    relay = h.start_relay()
    t = relay.open_tunnel()
    ct_src, ct_dst = new_client_token(), new_client_token()
    dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                             f"127.0.0.1:{echo.port}", verbosity=6, client_token=ct_dst)
    src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0", verbosity=6,
                             client_token=ct_src)
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))
    sent, got, _ = echo_roundtrip(port, 256 * 1024, timeout=scaled(30))
    check(sent == got, "echo differs")
    relay.close_tunnel(t["tunnelId"])
    for p in (src, dst):
        p.wait_exit(scaled(5))
    relay.process.terminate()
    # The check means something only if -v 6 really logs more than info.
    for p in (src, dst):
        check(any(re.search(r"(?i)\b(debug|trace)\b", l) for l in p.stderr_lines),
              f"{p.name}: no debug/trace line at -v 6")
    secrets = [t["sourceAccessToken"], t["destinationAccessToken"], ct_src, ct_dst]
    for p in (src, dst, relay.process):
        assert_no_secret(p.stderr_text() + "\n" + p.stdout_text(), secrets,
                         f"{p.name} output")


@r.case("-c DIR (openssl rehash) is a trust anchor")
def _(h):
    echo = h.echo_server()
    relay = h.start_relay()
    t = relay.open_tunnel()
    cadir = h.ca.hashed_dir(h.path("cadir"))
    dst = h.start_localproxy("destination", t["destinationAccessToken"], relay,
                             f"127.0.0.1:{echo.port}", cafile=None, extra=["-c", cadir])
    src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0", cafile=None,
                             extra=["-c", cadir])
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))
    check(dst.alive(), "destination exited")


@r.case("-e wss://127.0.0.1:PORT URL form works")
def _(h):
    echo = h.echo_server()
    relay = h.start_relay()
    t = relay.open_tunnel()
    url = f"wss://{relay.endpoint}"
    h.start_localproxy("destination", t["destinationAccessToken"], url,
                       f"127.0.0.1:{echo.port}")
    src = h.start_localproxy("source", t["sourceAccessToken"], url, "0")
    wait_for_echo(src.wait_listening(), scaled(10))


@r.case("an untrusted CA fails with a certificate verification message")
def _(h):
    relay = h.start_relay()
    t = relay.open_tunnel()
    other = h.new_ca("other")
    for extra, label in (([], "--cafile OTHER"), (["-c", other.hashed_dir(h.path("otherdir"))],
                                                  "-c OTHERDIR")):
        p = h.start_localproxy("source", t["sourceAccessToken"], relay, "0",
                               cafile=(other.ca_cert if not extra else None),
                               settings=FEW_RETRIES, extra=extra)
        rc = p.wait_exit(scaled(10))
        check(rc is not None, f"{label}: still running 10 s after failing TLS verification "
                              "(connect_retry_count=1)")
        check(rc > 0, f"{label}: exit {rc} after failing TLS verification (want non-zero)")
        p.wait_line(r"(?i)certificate|verif", 1)
        check(not any("listening on" in l for l in p.stderr_lines),
              f"{label}: source started listening with an untrusted service")


@r.case("-k skips verification with a loud warning")
def _(h):
    echo = h.echo_server()
    relay = h.start_relay()
    t = relay.open_tunnel()
    other = h.new_ca("other")
    h.start_localproxy("destination", t["destinationAccessToken"], relay,
                       f"127.0.0.1:{echo.port}", cafile=other.ca_cert, extra=["-k"])
    src = h.start_localproxy("source", t["sourceAccessToken"], relay, "0",
                             cafile=other.ca_cert, extra=["-k"])
    port = src.wait_listening()
    wait_for_echo(port, scaled(10))
    src.wait_line(r"(?i)warn.*(verif|insecure|-k)|(verif|insecure).*(disabled|off)", 1)


if __name__ == "__main__":
    r.main()
