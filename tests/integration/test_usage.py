#!/usr/bin/python3
"""localproxy's command line: usage errors exit 2 at once with a short message;
--help and --export-default-settings exit 0.

    python3 tests/integration/test_usage.py BUILD_DIR [CASE_SUBSTRING...]
"""
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import Runner, check, new_token  # noqa: E402

r = Runner("usage")

# Nothing listens on port 1: a usage error must not try to connect at all, and
# if it did, the 5 s bound below catches it.
EP = "127.0.0.1:1"


def _usage_error(h, args, token=True, what="", codes=(2,)):
    env = {"AWSIOT_TUNNEL_ACCESS_TOKEN": new_token()} if token else {}
    p = h.spawn("localproxy", [h.localproxy_bin, *args], env_extra=env,
                secrets_=list(env.values()))
    rc = p.wait_exit(5)
    check(rc is not None, f"{what}: still running after 5 s")
    check(rc in codes, f"{what}: exit {rc} (want {' or '.join(map(str, codes))})")
    lines = [l for l in p.stderr_lines if l.strip()]
    check(lines, f"{what}: no message on stderr")
    check(len(lines) <= 3 and len(lines[0]) <= 300,
          f"{what}: want a short message, got {len(lines)} lines")
    print(f"  {what}: {lines[0]}")


CASES = [
    ("both -s and -d", ["-e", EP, "-s", "5000", "-d", "22"], True),
    ("neither -s nor -d", ["-e", EP], True),
    ("no token anywhere", ["-e", EP, "-s", "5000"], False),
    ("both -e and -r", ["-e", EP, "-r", "us-east-1", "-s", "5000"], True),
    ("neither -e nor -r", ["-s", "5000"], True),
    ("-v not a number", ["-e", EP, "-s", "5000", "-v", "loud"], True),
    ("-s not a port", ["-e", EP, "-s", "70000"], True),
    ("unknown option", ["-e", EP, "-s", "5000", "--no-such-option"], True),
    ("-i client token of bad shape", ["-e", EP, "-s", "5000", "-i", "short"], True),
]

for _name, _args, _tok in CASES:
    def _make(name, args, tok):
        @r.case(f"usage error exits 2: {name}")
        def _(h):
            _usage_error(h, args, token=tok, what=name)
    _make(_name, _args, _tok)


@r.case("a missing --settings-json file fails at once (exit 1 or 2)")
def _(h):
    _usage_error(h, ["-e", EP, "-s", "5000", "--settings-json", "/nonexistent/settings.json"],
                 what="missing settings file", codes=(1, 2))


@r.case("--help exits 0 and lists the reference options")
def _(h):
    p = h.spawn("localproxy", [h.localproxy_bin, "--help"])
    rc = p.wait_exit(5)
    check(rc == 0, f"--help: exit {rc}")
    text = p.stdout_text() + p.stderr_text()
    for opt in ("--access-token", "--proxy-endpoint", "--region", "--source-listen-port",
                "--destination-app", "--local-bind-address", "--capath",
                "--no-ssl-host-verify", "--export-default-settings", "--settings-json",
                "--config", "--verbose"):
        check(opt in text, f"--help does not mention {opt}")


@r.case("--export-default-settings writes the reference JSON and exits 0")
def _(h):
    out = h.path("defaults.json")
    p = h.spawn("localproxy", [h.localproxy_bin, "--export-default-settings", out])
    rc = p.wait_exit(5)
    check(rc == 0, f"exit {rc}")
    with open(out) as f:
        js = json.load(f)
    ws = js["tunneling"]["proxy"]["websocket"]
    check(str(ws["ping_period_ms"]) == "5000", f"ping_period_ms = {ws['ping_period_ms']!r}")
    check(str(js["tunneling"]["proxy"]["message"]["max_payload_size"]) == "64512",
          "max_payload_size is not 64512")


@r.case("a bad value in --settings-json fails at once naming the key")
def _(h):
    bad = h.write("bad.json", json.dumps(
        {"tunneling": {"proxy": {"websocket": {"ping_period_ms": "abc"}}}}))
    p = h.spawn("localproxy", [h.localproxy_bin, "-e", EP, "-s", "5000",
                               "--settings-json", bad],
                env_extra={"AWSIOT_TUNNEL_ACCESS_TOKEN": new_token()})
    rc = p.wait_exit(5)
    check(rc in (1, 2), f"exit {rc} (want 1 or 2, at once)")
    check("ping_period_ms" in p.stderr_text(), "the message does not name the key")


if __name__ == "__main__":
    r.main()
