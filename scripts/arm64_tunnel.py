#!/usr/bin/python3
"""A real tunnel through arm64 localproxies under qemu (scripts/arm64-check.sh).

    arm64_tunnel.py ARM64_BUILD_DIR NATIVE_BUILD_DIR [MIB]

The arm64 `localproxy` of ARM64_BUILD_DIR runs as both the destination and
the source, under qemu-aarch64-static (or directly where binfmt_misc has
qemu registered), against the amd64 `tunnel-relay` of NATIVE_BUILD_DIR with
a throwaway CA (tests/integration/harness.py). MIB MiB (default 64) of random
bytes go through the source to an echo service behind the destination and
back, so MIB MiB each way; both SHA-256 must match. Then the same with the
native amd64 localproxy of NATIVE_BUILD_DIR as the baseline of the same run.

Prints MiB/s and the CPU seconds each localproxy spent per GiB it carried
(under qemu: for information only; emulation costs many times the native
figure). Exit status 0 when the arm64 run's bytes came back intact.
"""
import os
import struct
import sys

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

from harness import Harness, TestFailure, echo_roundtrip  # noqa: E402

MIB = 1 << 20
GIB = 1 << 30
CLK_TCK = os.sysconf("SC_CLK_TCK")
EM_AARCH64 = 183


def elf_machine(path):
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        raise SystemExit(f"{path} is not an ELF file")
    return struct.unpack_from("<H", head, 18)[0]


def cpu_seconds(pid):
    """User + system CPU of a process and all its threads (qemu-user runs the
    guest's threads as its own)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def binfmt_registered():
    try:
        with open("/proc/sys/fs/binfmt_misc/qemu-aarch64") as f:
            return f.readline().strip() == "enabled"
    except OSError:
        return False


def run(label, native_build, localproxy_argv, nbytes):
    with Harness(native_build, f"arm64-{label}") as h:
        wrapper = h.write("localproxy", "#!/bin/sh\nexec " + " ".join(localproxy_argv) + ' "$@"\n')
        os.chmod(wrapper, 0o755)
        h.localproxy_bin = wrapper
        try:
            echo = h.echo_server()
            relay, _, dst, src, port = h.tunnel(echo.port)
            before = {p: cpu_seconds(p.pid) for p in (dst, src, relay.process)}
            sent, got, secs = echo_roundtrip(port, nbytes, timeout=900)
            cpu = {p: cpu_seconds(p.pid) - c for p, c in before.items()}
        except TestFailure as e:
            print(f"FAIL {label}: {e}")
            print(h.report())
            return False
        ok = sent == got
        # Each localproxy carried nbytes one way and nbytes the other.
        carried = 2 * nbytes / GIB
        print(f"{'PASS' if ok else 'FAIL'} {label}: {nbytes // MIB} MiB each way in {secs:.1f} s "
              f"({nbytes / MIB / secs:.1f} MiB/s each way), SHA-256 "
              f"{'identical' if ok else 'DIFFERS'} ({got[:16]}...)")
        print(f"    CPU s per GiB carried: destination localproxy {cpu[dst] / carried:.2f}, "
              f"source localproxy {cpu[src] / carried:.2f}, relay (amd64) {cpu[relay.process] / carried:.2f}")
        return ok


def main():
    if len(sys.argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    arm64_build, native_build = (os.path.abspath(d) for d in sys.argv[1:3])
    nbytes = int(sys.argv[3]) * MIB if len(sys.argv) == 4 else 64 * MIB
    arm64_lp = os.path.join(arm64_build, "ctl", "localproxy")
    native_lp = os.path.join(native_build, "ctl", "localproxy")
    if elf_machine(arm64_lp) != EM_AARCH64:
        raise SystemExit(f"{arm64_lp} is not an arm64 program")
    runner = [] if binfmt_registered() else ["qemu-aarch64-static"]
    how = "binfmt_misc" if not runner else "qemu-aarch64-static as the wrapper"
    print(f"arm64 localproxy: {arm64_lp} (ELF machine AArch64), run through {how}")
    ok = run("arm64 localproxy (qemu) <-> amd64 tunnel-relay", native_build, runner + [arm64_lp], nbytes)
    run("baseline: amd64 localproxy <-> amd64 tunnel-relay", native_build, [native_lp], nbytes)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
