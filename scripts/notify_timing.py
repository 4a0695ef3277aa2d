#!/usr/bin/env python3
"""Notification to connected destination, for a one-service and a
three-service tunnel (docs/notify.md, "Timing"). Not part of CI.

    python3 scripts/notify_timing.py BUILD_DIR [--count 20]

The world of tests/integration/test_notify.py: mosquitto on 127.0.0.1 (TLS,
client certificates required), tunnel-relay, tunneld with [notify]. For each
sample the relay opens a tunnel (admin API, without thingName), this script
publishes the notification itself (QoS 1, PUBACK awaited) and takes the wall
clock just before the publish; the sample ends at the timestamp of tunneld's
"[session notify-...] connected to" log line (the moment the session's
WebSocket is up, when `tunnelctl status` turns `connected`). The tunnel is
then closed, so the session ends and is forgotten, and the next sample
starts from the same state. Prints p50 / p99 / min / max per service count,
and the load average before and after.
"""
import argparse
import datetime
import os
import re
import statistics
import sys
import time

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import Harness, scaled  # noqa: E402
from mqtt_broker import need_mosquitto, notify_topic  # noqa: E402


def log_time(line: str) -> float:
    stamp = line.split(" ", 1)[0]
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").timestamp()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def measure(w, thing: str, services: list[str], count: int) -> list[float]:
    from test_notify import notification
    pub = w.publisher()
    times = []
    for _ in range(count):
        t = w.relay.open_tunnel(services=services)
        w.h.secrets += [t["sourceAccessToken"], t["destinationAccessToken"]]
        before = w.link()["accepted"]
        start = w.d.proc.line_count()
        t0 = time.time()
        pub.publish(notify_topic(thing), notification(t["destinationAccessToken"],
                                                         services=services))
        m = w.d.proc.wait_line(r"\[session (notify-\S+)\] connected to ", scaled(10),
                               start=start)
        times.append((log_time(m.string) - t0) * 1000)
        name = m.group(1)
        w.relay.close_tunnel(t["tunnelId"])
        deadline = time.monotonic() + scaled(10)
        while name in w.d.sessions():
            if time.monotonic() > deadline:
                sys.exit(f"{name} was not forgotten after its tunnel closed")
            time.sleep(0.02)
        assert w.link()["accepted"] == before + 1
    pub.close()
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build_dir")
    ap.add_argument("--count", type=int, default=20)
    args = ap.parse_args()
    if need_mosquitto():
        sys.exit(need_mosquitto())
    sys.argv = [sys.argv[0], args.build_dir]  # test_notify's runner reads it
    from test_notify import THING, World
    load0 = os.getloadavg()
    with Harness(args.build_dir, "notify-timing") as h:
        w = World(h, limits={"rate_burst": 1000, "rate_per_minute": 6000, "max_sessions": 64},
                  log_level="info")
        w.wait_link(True, scaled(10))
        for services in (["SSH"], ["SSH", "HTTP", "VNC"]):
            times = measure(w, THING, services, args.count)
            print(f"{len(services)} service(s), {len(times)} notifications: "
                  f"p50 {statistics.median(times):.1f} ms, p99 {percentile(times, 99):.1f} ms, "
                  f"min {min(times):.1f} ms, max {max(times):.1f} ms", flush=True)
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
