#!/usr/bin/env bash
# tunneld under a real systemd, installed as a Debian package: builds the
# packages (scripts/build-deb.sh), boots a Debian 12 system container
# (systemd-nspawn --boot, systemd as PID 1, loopback only), installs them
# there with `apt-get install ./tunneld_<version>_amd64.deb ...` as
# docs/install.md says, and checks what an administrator relies on:
#
#   install    the packages install; user and group from sysusers,
#              /etc/tunneld from tmpfiles, the conffile, tunneld enabled and
#              running, tunnel-relay disabled, the localproxy alternative
#   tunnelctl  right after install, a user added to group tunneld may use it
#              (in a session begun after usermod), a non-member is refused
#   start      `systemctl start tunneld` returns once READY=1 arrived; active
#   tunnel     a real tunnel (tunnel-relay in the container) opened with
#              tunnelctl carries bytes; journalctl -u tunneld shows the
#              session's structured fields, and no token
#   relay unit the packaged tunnel-relay.service starts (credentials, dynamic
#              user) once given a certificate, and opens tunnels
#   reload     `systemctl reload tunneld`: a [[session]] added to the config
#              starts, sessions and an open connection survive, a broken file
#              changes nothing
#   upgrade    the same tree rebuilt as version N+1, installed over N: the
#              service restarts, every session is restored, the edited
#              configuration is kept
#   watchdog   WatchdogSec= is honoured: pings seen over more than WatchdogSec;
#              a stopped event loop is killed and restarted (sessions restored)
#   stop       `systemctl stop tunneld` with live sessions completes in < 5 s
#   remove     stops the service, keeps /etc/tunneld, /var/lib/tunneld, the user
#   purge      removes them, and user and group tunneld
#
# Each check prints `PASS systemd-check: ...` or `FAIL systemd-check: ...`,
# followed by the evidence; the last line is `N passed, N failed`. Exit status
# 0 when all passed, 1 otherwise, 77 when this machine cannot run it (not
# root, no systemd-nspawn/debootstrap and no apt-get to install them).
#
# A long-form check: about 100 s plus two package builds (the second one
# mostly from ccache) and, the first time, a debootstrap (~300 MB). Not part
# of CI. Needs root.
#
#   sudo scripts/systemd-check.sh            # build, boot, check
#   sudo scripts/systemd-check.sh --quick    # without the 40 s watchdog-kill case
#   sudo scripts/systemd-check.sh --keep     # keep the work dir (logs, boot log)
#
# Environment:
#   DEBS_DIR            take version N from the tunneld_*, tunneld-localproxy_*
#                       and tunnel-relay_*_amd64.deb files here instead of
#                       building it (N+1 is always built)
#   SYSTEMD_CHECK_ROOT  the debootstrapped tree, kept between runs and never
#                       modified by a run (the container boots with
#                       --volatile=overlay); default
#                       /var/cache/tunneld-systemd-check/debian12
#   DEBIAN_MIRROR       for debootstrap (default: the first Debian URI in
#                       /etc/apt/sources.list*, else http://deb.debian.org/debian)
#   JOBS                passed to scripts/build-deb.sh
#
# Inside the container only the loopback interface exists (--private-network);
# the relay, the echo service and tunneld all use 127.0.0.1. Without a
# network apt cannot download anything there: the packages' dependencies
# are part of the tree (RUNTIME_PACKAGES), as on a device image.
set -euo pipefail

SUITE=systemd-check
SHARE=/mnt/tunneld-check # where the container sees the packages and this script

# ===================================================================== inside
# Runs as root inside the booted container (entered with nsenter), from the
# read-only bind mount $SHARE. Prints PASS/FAIL lines.
inside() {
  local quick=$1
  VERSION_N=$2  # the packages in $SHARE/debs/n
  VERSION_N1=$3 # the same tree rebuilt as the next version, in $SHARE/debs/n1
  # Every check decides PASS or FAIL itself; one failing command must not end the run.
  set +e
  export LANG=C.UTF-8
  local npass=0 nfail=0
  local W=/root/check
  mkdir -m 0700 "$W"

  pass() { npass=$((npass + 1)); echo "PASS $SUITE: $*"; }
  fail() {
    nfail=$((nfail + 1))
    echo "FAIL $SUITE: $*"
    echo "    --- journalctl -u tunneld (last 25 lines)"
    journalctl -u tunneld --no-pager -n 25 -o short-monotonic 2>&1 | sed 's/^/    /'
  }
  show() { sed 's/^/    /'; } # evidence, indented under its PASS/FAIL line
  prop() { systemctl show tunneld -P "$1"; }
  as_member() { setpriv --reuid=tunnel-member --regid=tunnel-member --init-groups -- "$@"; }
  as_outsider() { setpriv --reuid=tunnel-outsider --regid=tunnel-outsider --init-groups -- "$@"; }
  mono_usec() { python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC)//1000)'; }
  # json_get FILE EXPR: evaluates a Python expression over the JSON in FILE (as j)
  json_get() { python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
  # session_field NAME FIELD: a field of `tunnelctl status NAME --json`, as root
  session_field() {
    tunnelctl status "$1" --json >"$W/status.json" 2>/dev/null || { echo "?"; return; }
    json_get "$W/status.json" "j.get('$2', '')"
  }
  # local_port NAME: the port a source session listens on (a restart with
  # port 0 binds a new one)
  local_port() { local a; a=$(session_field "$1" local_address); echo "${a##*:}"; }
  # wait_state NAME STATE SECONDS
  wait_state() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
      [[ $(session_field "$1" state) == "$2" ]] && return 0
      sleep 0.1
    done
    return 1
  }
  # wait_journal UNIT REGEX SECONDS: the first matching message of this boot
  wait_journal() {
    local i line
    for ((i = 0; i < $3 * 10; i++)); do
      line=$(journalctl -u "$1" -b -o cat --no-pager 2>/dev/null | grep -m1 -E -- "$2" || true)
      if [[ -n $line ]]; then printf '%s\n' "$line"; return 0; fi
      sleep 0.1
    done
    return 1
  }
  # echo_through PORT BYTES: sends BYTES random bytes to 127.0.0.1:PORT and
  # checks that the same bytes come back (SHA-256). It closes only once all
  # came back: the tunnel protocol has no half-close (a FIN resets the stream).
  echo_through() {
    python3 - "$1" "$2" <<'PY'
import hashlib, os, socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
data = os.urandom(size)
s = socket.create_connection(("127.0.0.1", port), timeout=20)
sender = threading.Thread(target=s.sendall, args=(data,))
sender.start()
got = bytearray()
while len(got) < size:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
sender.join()
s.close()
ok = hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
print(f"{len(got)} of {size} bytes back, SHA-256 {'intact' if ok else 'MISMATCH'}")
sys.exit(0 if ok else 1)
PY
  }
  # new_tunnel ADMIN OUT: POST /tunnels on the relay's admin API; OUT gets the
  # JSON answer (mode 0600: it holds both access tokens)
  new_tunnel() {
    python3 - "$1" "$2" <<'PY'
import json, os, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(f"http://{sys.argv[1]}/tunnels", data=b"{}", method="POST",
                             headers={"Content-Type": "application/json"})
with opener.open(req, timeout=10) as r:
    t = json.load(r)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(t, f)
PY
  }
  # hold_connection PORT DIR: a client that keeps one connection through the
  # tunnel open: echoes a line, writes DIR/ready, waits for DIR/go, echoes
  # another line on the same connection, writes DIR/result
  hold_connection() {
    mkdir -p "$2"
    rm -f "$2"/{ready,go,result}
    python3 - "$1" "$2" >"$2/log" 2>&1 <<'PY' &
import os, socket, sys, time
port, d = int(sys.argv[1]), sys.argv[2]
def echo(s, line):
    s.sendall(line)
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("connection closed")
        got += chunk
    if got != line:
        raise OSError(f"echo mismatch: {got!r}")
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    echo(s, b"before\n")
    open(f"{d}/ready", "w").close()
    for _ in range(1200):
        if os.path.exists(f"{d}/go"):
            break
        time.sleep(0.1)
    echo(s, b"after\n")
    result = "ok: the same connection echoed before and after"
except OSError as e:
    result = f"error: {e}"
with open(f"{d}/result", "w") as f:
    f.write(result + "\n")
PY
  }
  wait_file() {
    local i
    for ((i = 0; i < $2 * 10; i++)); do [[ -e $1 ]] && return 0; sleep 0.1; done
    return 1
  }

  # ----------------------------------------------------------------- boot
  # We may come in before PID 1 has set itself up: until /run/systemd/system
  # exists systemctl says "offline", until the private socket does "Failed to
  # connect to bus".
  local state i
  for ((i = 0; i < 600; i++)); do
    [[ -d /run/systemd/system && -S /run/systemd/private ]] && break
    sleep 0.1
  done
  state=$(timeout 120 systemctl is-system-running --wait 2>&1)
  if [[ $state == running || $state == degraded ]]; then
    {
      echo "PID 1: $(cat /proc/1/comm) $(systemctl --version | head -1)"
      echo "systemctl is-system-running: $state"
      systemctl --failed --no-legend --plain 2>&1
      echo "network interfaces: $(ip -br link | awk '{print $1}' | paste -sd' ')"
    } | show
    pass "boot: systemd is PID 1 ($state), loopback only"
  else
    echo "FAIL $SUITE: boot: systemctl is-system-running says '$state'"
    echo "0 passed, 1 failed"
    return 1
  fi

  # -------------------------------------------------------------- install
  # As docs/install.md: apt install ./tunneld_<version>_<arch>.deb (with the
  # other two packages). The container has no network: the packages'
  # dependencies are already in the tree (RUNTIME_PACKAGES), so apt resolves
  # them there. tunnel-member exists before the package, as the user of a
  # device would, and joins group tunneld after it, as the docs say.
  useradd --no-create-home --shell /bin/bash tunnel-member
  useradd --no-create-home --shell /bin/bash tunnel-outsider
  local problems="" install_rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$SHARE"/debs/n/*.deb >"$W/install.log" 2>&1 || install_rc=$?
  [[ $install_rc -eq 0 ]] || problems+="apt install exited $install_rc; "
  local pkg status_line
  for pkg in tunneld tunneld-localproxy tunnel-relay; do
    status_line=$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$pkg" 2>&1)
    [[ $status_line == "ii  $VERSION_N" ]] || problems+="$pkg: dpkg says '$status_line', expected 'ii  $VERSION_N'; "
  done
  local missing
  missing=$(ldd /usr/sbin/tunneld /usr/bin/tunnelctl /usr/bin/tunnel-relay /usr/bin/tunneld-localproxy 2>&1 | grep 'not found' || true)
  [[ -z $missing ]] || problems+="libraries missing (the packages' Depends or RUNTIME_PACKAGES in $0): $missing; "
  local etc_mode user_line conffiles
  etc_mode=$(stat -c '%U:%G %a' /etc/tunneld 2>&1)
  user_line=$(getent passwd tunneld || true)
  conffiles=$(dpkg-query -W -f='${Conffiles}' tunneld)
  [[ $etc_mode == "root:tunneld 750" ]] || problems+="/etc/tunneld is '$etc_mode', expected root:tunneld 750; "
  [[ $user_line == *:/usr/sbin/nologin ]] || problems+="user tunneld: '$user_line'; "
  [[ $conffiles == *" /etc/tunneld/tunneld.toml "* ]] || problems+="/etc/tunneld/tunneld.toml is not a conffile: '$conffiles'; "
  [[ $(systemctl show tunneld -P ExecStart) == *"path=/usr/sbin/tunneld"* ]] ||
    problems+="systemd does not know tunneld.service with ExecStart=/usr/sbin/tunneld; "
  # Enabled and started by the postinst; tunnel-relay installed disabled.
  [[ $(systemctl is-enabled tunneld 2>&1) == enabled && $(prop ActiveState) == active ]] ||
    problems+="tunneld is $(systemctl is-enabled tunneld 2>&1)/$(prop ActiveState), expected enabled/active; "
  [[ $(systemctl is-enabled tunnel-relay 2>&1) == disabled && $(systemctl show tunnel-relay -P ActiveState) == inactive ]] ||
    problems+="tunnel-relay is $(systemctl is-enabled tunnel-relay 2>&1), expected disabled and inactive; "
  local lp_target lp_version
  lp_target=$(readlink -f /usr/bin/localproxy 2>&1)
  lp_version=$(localproxy --version 2>&1)
  [[ $lp_target == /usr/bin/tunneld-localproxy && $lp_version == localproxy* ]] ||
    problems+="localproxy alternative: /usr/bin/localproxy -> '$lp_target', --version '$lp_version'; "
  local page
  for page in /usr/share/man/man8/tunneld.8.gz /usr/share/man/man1/tunnelctl.1.gz /usr/share/man/man5/tunneld.toml.5.gz \
    /usr/share/man/man1/localproxy.1.gz /usr/share/man/man1/tunnel-relay.1.gz \
    /usr/share/bash-completion/completions/tunnelctl; do
    [[ -e $page ]] || problems+="$page missing; "
  done
  {
    echo "# apt-get install -y $(cd "$SHARE/debs/n" && echo ./*.deb): exit $install_rc"
    grep -E '^(Setting up|Created symlink|update-alternatives|Unpacking)|tunnel' "$W/install.log" | grep -v '^Selecting\|^Preparing' | head -14
    for pkg in tunneld tunneld-localproxy tunnel-relay; do dpkg-query -W -f='dpkg: ${db:Status-Abbrev} ${Package} ${Version}\n' "$pkg"; done
    echo "getent passwd tunneld: $user_line"
    echo "/etc/tunneld: $etc_mode; conffile:$(grep tunneld.toml <<<"$conffiles")"
    echo "tunneld.service: $(systemctl is-enabled tunneld 2>&1)/$(prop ActiveState), MainPID $(prop MainPID); tunnel-relay.service: $(systemctl is-enabled tunnel-relay 2>&1)/$(systemctl show tunnel-relay -P ActiveState)"
    echo "/usr/bin/localproxy -> $lp_target ($lp_version)"
    # (WatchdogUSec= reads "infinity" until the service runs: show the file's setting)
    echo "unit: $(prop FragmentPath), Type=$(prop Type), $(grep '^WatchdogSec=' "$(prop FragmentPath)")"
  } | show
  if [[ -z $problems ]]; then
    pass "install: apt install ./tunneld_${VERSION_N}_amd64.deb (+ localproxy, relay): user and group from sysusers, /etc/tunneld from tmpfiles, conffile, tunneld enabled and running, tunnel-relay disabled, man pages"
  else
    fail "install: $problems"
  fi

  # ------------------------------------------------------------ tunnelctl
  # Right after the install, against the tunneld the postinst started: a
  # user added to group tunneld may use tunnelctl in any session begun after
  # that (runuser/setpriv --init-groups read the groups as a login does);
  # nothing restarts. A non-member is refused and told how to fix it.
  usermod -aG tunneld tunnel-member
  local member_rc=0 outsider_rc=0 member_out outsider_out outsider_open_rc=0 outsider_open_out login_rc=0 login_out
  login_out=$(runuser -u tunnel-member -- tunnelctl list 2>&1) || login_rc=$?
  member_out=$(as_member tunnelctl list 2>&1) || member_rc=$?
  outsider_out=$(as_outsider tunnelctl list 2>&1) || outsider_rc=$?
  outsider_open_out=$(AWSIOT_TUNNEL_ACCESS_TOKEN=x as_outsider tunnelctl open -e 127.0.0.1:1 -d 22 2>&1) ||
    outsider_open_rc=$?
  {
    echo "# usermod -aG tunneld tunnel-member; id: $(id tunnel-member)"
    echo "# runuser -u tunnel-member -- tunnelctl list -> exit $login_rc"
    echo "$login_out"
    echo "# tunnel-member (setpriv --init-groups): tunnelctl list -> exit $member_rc"
    echo "$member_out"
    echo "# tunnel-outsider: tunnelctl list -> exit $outsider_rc"
    echo "$outsider_out"
    echo "# tunnel-outsider: tunnelctl open ... -> exit $outsider_open_rc"
    echo "$outsider_open_out"
  } | show
  if [[ $login_rc -eq 0 && $member_rc -eq 0 && $outsider_rc -eq 4 && $outsider_out == *"add yourself to group tunneld"* &&
    $outsider_open_rc -eq 4 ]]; then
    pass "tunnelctl: right after install, a user added to group tunneld (usermod -aG) may use it in a new session; non-member refused with exit 4 and how to fix it"
  else
    fail "tunnelctl: member exit $login_rc/$member_rc (expected 0), non-member exit $outsider_rc/$outsider_open_rc (expected 4 with 'add yourself to group tunneld')"
  fi

  # Throwaway CA and a server certificate for 127.0.0.1 (as scripts/demo.sh).
  (
    cd "$W"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout ca.key -out ca.pem -days 1 -subj "/CN=tunneld systemd-check CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout server.key -out server.csr -subj "/CN=localhost"
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out server.pem -days 1 -extfile server.ext
  ) >"$W/openssl.log" 2>&1
  # tunneld (User=tunneld, PrivateTmp=, ProtectHome=) reads the CA from /etc/tunneld.
  install -m 0644 "$W/ca.pem" /etc/tunneld/check-ca.pem
  local CA=/etc/tunneld/check-ca.pem
  printf '[log]\nlevel = "info"\n' >"$W/tunneld.toml"
  install -m 0640 -g tunneld "$W/tunneld.toml" /etc/tunneld/tunneld.toml

  # ---------------------------------------------------------------- start
  # The postinst started tunneld with the packaged configuration; start it
  # again from stopped with the one written above.
  systemctl stop tunneld
  local t0 t1 rc=0 start_ms
  t0=$(date +%s%N)
  systemctl start tunneld >"$W/start.log" 2>&1 || rc=$?
  t1=$(date +%s%N)
  start_ms=$(((t1 - t0) / 1000000))
  local version_out version_rc=0
  # docs/systemd.md: "systemctl start tunneld returning means tunnelctl works"
  version_out=$(as_member tunnelctl version 2>&1) || version_rc=$?
  {
    echo "# systemctl start tunneld   (exit $rc, ${start_ms} ms)"
    cat "$W/start.log"
    echo "# systemctl show tunneld"
    systemctl show tunneld -p Type -p ActiveState -p SubState -p MainPID -p StatusText -p WatchdogUSec -p NotifyAccess
    echo "# tunnelctl version (as tunnel-member, right after start returned): exit $version_rc"
    echo "$version_out"
    echo "# ls -ld /run/tunneld /run/tunneld/control.sock /var/lib/tunneld"
    ls -ld /run/tunneld /run/tunneld/control.sock /var/lib/tunneld 2>&1
  } | show
  if [[ $rc -eq 0 && $(prop ActiveState) == active && $(prop SubState) == running &&
    $(prop Type) == notify && $version_rc -eq 0 && $(prop StatusText) == *"session(s)"* ]]; then
    pass "start: systemctl start tunneld -> active (running), Type=notify, READY=1 and STATUS= seen, control socket answers (${start_ms} ms)"
  else
    fail "start: systemctl start tunneld exited $rc, state $(prop ActiveState)/$(prop SubState), tunnelctl version exited $version_rc"
    echo "$nfail failed before the session checks; giving up"
    echo "$npass passed, $nfail failed"
    return 1
  fi

  # --------------------------------------------------------------- tunnel
  # The relay and an echo service run as transient units inside the container.
  systemd-run --quiet --unit=check-relay -p Type=exec /usr/bin/tunnel-relay \
    --listen 127.0.0.1:0 --tls-cert "$W/server.pem" --tls-key "$W/server.key" --admin 127.0.0.1:0
  systemd-run --quiet --unit=check-echo -p Type=exec /usr/bin/python3 -u -c '
import socketserver
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        while chunk := self.request.recv(65536):
            self.request.sendall(chunk)
socketserver.ThreadingTCPServer.daemon_threads = True
with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo) as s:
    print("echo on port", s.server_address[1], flush=True)
    s.serve_forever()'
  local ready echo_line RELAY ADMIN ECHO
  ready=$(wait_journal check-relay '"event" *: *"ready"' 15) || true
  echo_line=$(wait_journal check-echo 'echo on port' 15) || true
  if [[ -z $ready || -z $echo_line ]]; then
    fail "tunnel: relay or echo service did not start: '$ready' '$echo_line'"
    journalctl -u check-relay -u check-echo --no-pager | tail -20 | show
    echo "$npass passed, $nfail failed"
    return 1
  fi
  read -r RELAY ADMIN < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["listen"], r["admin"])' "$ready")
  ECHO=${echo_line##* }
  new_tunnel "$ADMIN" "$W/t1.json"
  local SRC_TOKEN DST_TOKEN
  SRC_TOKEN=$(json_get "$W/t1.json" 'j["sourceAccessToken"]')
  DST_TOKEN=$(json_get "$W/t1.json" 'j["destinationAccessToken"]')
  local dst_out src_out dst_rc=0 src_rc=0 DST_ID SRC_ID SRC_PORT
  dst_out=$(AWSIOT_TUNNEL_ACCESS_TOKEN=$DST_TOKEN as_member tunnelctl open -e "wss://$RELAY" \
    --cafile "$CA" -d "127.0.0.1:$ECHO" --name check-dst 2>&1) || dst_rc=$?
  src_out=$(AWSIOT_TUNNEL_ACCESS_TOKEN=$SRC_TOKEN as_member tunnelctl open -e "wss://$RELAY" \
    --cafile "$CA" -s 127.0.0.1:0 --name check-src 2>&1) || src_rc=$?
  DST_ID=$(head -1 <<<"$dst_out")
  SRC_ID=$(head -1 <<<"$src_out")
  SRC_PORT=$(sed -n 's/^listening on \([0-9]*\).*/\1/p' <<<"$src_out")
  local connected=0 transfer_out transfer_rc=1
  if wait_state check-dst connected 15 && wait_state check-src connected 15; then connected=1; fi
  if ((connected)) && [[ -n $SRC_PORT ]]; then
    transfer_out=$(echo_through "$SRC_PORT" $((1024 * 1024)) 2>&1) && transfer_rc=0
  fi
  {
    echo "relay wss://$RELAY (admin $ADMIN), echo service 127.0.0.1:$ECHO"
    echo "# as tunnel-member: tunnelctl open -e wss://$RELAY --cafile $CA -d 127.0.0.1:$ECHO --name check-dst -> exit $dst_rc"
    echo "$dst_out"
    echo "# as tunnel-member: tunnelctl open -e wss://$RELAY --cafile $CA -s 127.0.0.1:0 --name check-src -> exit $src_rc"
    echo "$src_out"
    echo "# tunnelctl list"
    tunnelctl list 2>&1
    echo "systemctl show -p StatusText: $(prop StatusText)"
    echo "# 1 MiB through 127.0.0.1:$SRC_PORT -> check-src -> relay -> check-dst -> echo and back"
    echo "${transfer_out:-not run}"
  } | show
  if [[ $dst_rc -eq 0 && $src_rc -eq 0 && $connected -eq 1 && $transfer_rc -eq 0 ]]; then
    pass "tunnel: sessions opened with tunnelctl (as a member) connected through tunnel-relay; 1 MiB echoed intact"
  else
    fail "tunnel: open exit $dst_rc/$src_rc, connected=$connected, transfer exit $transfer_rc"
  fi

  # ----------------------------------------------------------- relay unit
  # The packaged tunnel-relay.service, which nothing enabled: with a
  # certificate and key in /etc/tunnel-relay (root-only; the unit gets them as
  # credentials) and options in /etc/default/tunnel-relay it starts as a
  # dynamic user and opens tunnels. Stopped again: the tunnel above uses its
  # own relay, which the upgrade below must not restart.
  install -d -m 0700 /etc/tunnel-relay
  install -m 0600 "$W/server.pem" /etc/tunnel-relay/tls.crt
  install -m 0600 "$W/server.key" /etc/tunnel-relay/tls.key
  printf 'TUNNEL_RELAY_OPTS="--listen 127.0.0.1:0 --admin 127.0.0.1:0"\n' >/etc/default/tunnel-relay
  local relay_rc=0 relay_ready relay_uid relay_tunnel_rc=1 RELAY2 ADMIN2
  systemctl start tunnel-relay >"$W/relay-start.log" 2>&1 || relay_rc=$?
  relay_ready=$(wait_journal tunnel-relay '"event" *: *"ready"' 15) || true
  relay_uid=$(awk '/^Uid:/ { print $2 }' "/proc/$(systemctl show tunnel-relay -P MainPID)/status" 2>/dev/null)
  if [[ -n $relay_ready ]]; then
    read -r RELAY2 ADMIN2 < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["listen"], r["admin"])' "$relay_ready")
    new_tunnel "$ADMIN2" "$W/t-relay-unit.json" 2>"$W/relay-tunnel.log" && relay_tunnel_rc=0
  fi
  {
    echo "# systemctl start tunnel-relay: exit $relay_rc; $(systemctl show tunnel-relay -P ActiveState)/$(systemctl show tunnel-relay -P SubState), enabled: $(systemctl is-enabled tunnel-relay 2>&1)"
    cat "$W/relay-start.log"
    echo "ready line in the journal: ${relay_ready:-none}"
    local opened
    if ((relay_tunnel_rc == 0)); then opened="tunnel $(json_get "$W/t-relay-unit.json" 'j["tunnelId"]')"; else opened=$(cat "$W/relay-tunnel.log"); fi
    echo "wss on ${RELAY2:-?}; MainPID's uid: ${relay_uid:-?} (DynamicUser=yes); POST /tunnels on ${ADMIN2:-?}: $opened"
    echo "systemd-analyze security: $(systemd-analyze security tunnel-relay 2>/dev/null | tail -1)"
  } | show
  systemctl stop tunnel-relay
  if [[ $relay_rc -eq 0 && -n $relay_ready && -n $relay_uid && $relay_uid != 0 && $relay_tunnel_rc -eq 0 ]]; then
    pass "relay unit: tunnel-relay.service (installed disabled) starts with its credentials as a dynamic user and opens tunnels"
  else
    fail "relay unit: start exit $relay_rc, ready '$relay_ready', uid '$relay_uid', POST /tunnels exit $relay_tunnel_rc"
  fi

  # -------------------------------------------------------------- journal
  journalctl -u tunneld -b -o json --no-pager >"$W/journal.json"
  local journal_out journal_rc=0
  journal_out=$(python3 - "$W/journal.json" "$DST_ID" "$SRC_ID" "$RELAY" <<'PY'
import json, sys
path, dst_id, src_id, relay = sys.argv[1:5]
entries = [json.loads(line) for line in open(path) if line.strip()]
ok = True
for name, sid, mode in (("check-dst", dst_id, "destination"), ("check-src", src_id, "source")):
    mine = [e for e in entries if e.get("TUNNEL_SESSION_NAME") == name]
    want = {"TUNNEL_SESSION_ID": sid, "TUNNEL_MODE": mode, "TUNNEL_ENDPOINT": relay,
            "SYSLOG_IDENTIFIER": "tunneld", "_SYSTEMD_UNIT": "tunneld.service"}
    bad = [e for e in mine if any(e.get(k) != v for k, v in want.items())
           or not e.get("TUNNEL_LOGGER") or "PRIORITY" not in e]
    print(f"{name}: {len(mine)} entries with TUNNEL_SESSION_NAME={name}, {len(bad)} without the expected fields")
    if not mine or bad:
        ok = False
        for e in (bad or [])[:3]:
            print("  bad:", {k: v for k, v in e.items() if not k.startswith("__")})
    channel = [e for e in mine if e.get("TUNNEL_CHANNEL_ID")]
    print(f"  of which {len(channel)} carry TUNNEL_CHANNEL_ID")
    if not any(e["MESSAGE"].startswith("[session " + name + "] connected to") and e in channel
               for e in mine):
        ok = False
        print("  no 'connected to' entry with TUNNEL_CHANNEL_ID")
    if mine:
        e = mine[-1]
        for k in sorted(e):
            if k.startswith("TUNNEL_") or k in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "_SYSTEMD_UNIT", "_UID"):
                print(f"  {k}={e[k]}")
sys.exit(0 if ok else 1)
PY
  ) || journal_rc=$?
  local leaked=0
  if journalctl -b -o export --no-pager | grep -F -e "$SRC_TOKEN" -e "$DST_TOKEN" >/dev/null; then leaked=1; fi
  {
    echo "# journalctl -u tunneld TUNNEL_SESSION_NAME=check-dst -o verbose -n 1 (fields)"
    journalctl -u tunneld TUNNEL_SESSION_NAME=check-dst -o verbose -n 1 --no-pager |
      grep -E '^ *(MESSAGE|PRIORITY|SYSLOG_IDENTIFIER|TUNNEL_[A-Z_]*|_SYSTEMD_UNIT|_UID)=' || true
    echo "# journalctl -F TUNNEL_SESSION_NAME"
    journalctl -F TUNNEL_SESSION_NAME 2>&1
    echo "# every entry of both sessions checked:"
    echo "$journal_out"
    echo "access tokens in the journal (journalctl -b -o export): $([[ $leaked -eq 1 ]] && echo FOUND || echo none)"
  } | show
  if [[ $journal_rc -eq 0 && $leaked -eq 0 ]]; then
    pass "journal: journalctl -u tunneld shows the sessions' TUNNEL_SESSION_ID/NAME, TUNNEL_MODE, TUNNEL_ENDPOINT, TUNNEL_CHANNEL_ID once connected (unit tunneld.service); no token"
  else
    fail "journal: structured fields missing or wrong (exit $journal_rc), token leaked: $leaked"
  fi

  # --------------------------------------------------------------- reload
  # docs/systemd.md: SIGHUP re-reads the config; sessions from the file are
  # added or removed, sessions opened with tunnelctl stay (with their
  # connections). A second tunnel for a [[session]] in the file:
  hold_connection "$SRC_PORT" "$W/hold1"
  wait_file "$W/hold1/ready" 15 || true
  new_tunnel "$ADMIN" "$W/t2.json"
  json_get "$W/t2.json" 'j["destinationAccessToken"]' >"$W/cfg.token"
  install -m 0600 -o tunneld -g tunneld "$W/cfg.token" /etc/tunneld/check-cfg.token
  # With a client token the session can reconnect after a restart (access
  # tokens are single use; docs/tunneld-config.md), as in the watchdog case.
  python3 -c 'import secrets; print(secrets.token_hex(20))' >"$W/cfg.client"
  install -m 0600 -o tunneld -g tunneld "$W/cfg.client" /etc/tunneld/check-cfg.client
  cat >"$W/tunneld.toml" <<TOML
[log]
level = "info"

[[session]]
name = "check-cfg"
mode = "destination"
endpoint = "wss://$RELAY"
cafile = "check-ca.pem"
target = "127.0.0.1:$ECHO"
access_token_file = "check-cfg.token"
client_token_file = "check-cfg.client"
TOML
  install -m 0640 -g tunneld "$W/tunneld.toml" /etc/tunneld/tunneld.toml
  local before_dst before_src reload_rc=0 reload_ms cfg_src_out cfg_src_rc=0 CFG_SRC_PORT
  before_dst="$(session_field check-dst id) $(session_field check-dst reconnects)"
  before_src="$(session_field check-src id) $(session_field check-src reconnects)"
  local cursor
  cursor=$(journalctl -u tunneld -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
  t0=$(date +%s%N)
  systemctl reload tunneld >"$W/reload.log" 2>&1 || reload_rc=$?
  t1=$(date +%s%N)
  reload_ms=$(((t1 - t0) / 1000000))
  local cfg_connected=0 cfg_transfer="not run" cfg_transfer_rc=1
  wait_state check-cfg connected 15 && cfg_connected=1
  # Its source end, opened with tunnelctl, proves the config session carries data.
  cfg_src_out=$(AWSIOT_TUNNEL_ACCESS_TOKEN=$(json_get "$W/t2.json" 'j["sourceAccessToken"]') \
    as_member tunnelctl open -e "wss://$RELAY" --cafile "$CA" -s 127.0.0.1:0 --name check-cfg-src 2>&1) ||
    cfg_src_rc=$?
  CFG_SRC_PORT=$(sed -n 's/^listening on \([0-9]*\).*/\1/p' <<<"$cfg_src_out")
  if [[ $cfg_src_rc -eq 0 ]] && wait_state check-cfg-src connected 15; then
    cfg_transfer=$(echo_through "$CFG_SRC_PORT" 65536 2>&1) && cfg_transfer_rc=0
  fi
  touch "$W/hold1/go"
  wait_file "$W/hold1/result" 15 || true
  local hold_result after_dst after_src
  hold_result=$(cat "$W/hold1/result" 2>/dev/null || echo "no result: $(cat "$W/hold1/log")")
  after_dst="$(session_field check-dst id) $(session_field check-dst reconnects)"
  after_src="$(session_field check-src id) $(session_field check-src reconnects)"
  {
    echo "# systemctl reload tunneld   (exit $reload_rc, ${reload_ms} ms; [[session]] check-cfg added)"
    cat "$W/reload.log"
    echo "# journalctl -u tunneld since the reload (systemd's and tunneld's lines)"
    journalctl -u tunneld --after-cursor="$cursor" -o cat --no-pager | head -12
    echo "# systemctl show: $(prop ActiveState)/$(prop SubState), MainPID $(prop MainPID), NRestarts $(prop NRestarts)"
    echo "# tunnelctl list"
    tunnelctl list 2>&1
    echo "check-dst id/reconnects before $before_dst, after $after_dst"
    echo "check-src id/reconnects before $before_src, after $after_src"
    echo "connection through check-src opened before the reload: $hold_result"
    echo "check-cfg (from the file) via check-cfg-src: $cfg_transfer"
  } | show
  if [[ $reload_rc -eq 0 && $(prop ActiveState) == active && $cfg_connected -eq 1 && $cfg_transfer_rc -eq 0 &&
    $before_dst == "$after_dst" && $before_src == "$after_src" && $hold_result == ok* ]]; then
    pass "reload: systemctl reload tunneld started the added [[session]]; tunnelctl sessions and their open connection survived"
  else
    fail "reload: exit $reload_rc, check-cfg connected=$cfg_connected carried=$((cfg_transfer_rc == 0)), sessions before/after '$before_dst'/'$after_dst' '$before_src'/'$after_src', held connection '$hold_result'"
  fi

  # A broken file: reported, nothing changes, the service stays active.
  local pid_before broken_rc=0 broken_line
  pid_before=$(prop MainPID)
  printf '[log]\nlevel = \n' >"$W/broken.toml"
  install -m 0640 -g tunneld "$W/broken.toml" /etc/tunneld/tunneld.toml
  systemctl reload tunneld >"$W/reload2.log" 2>&1 || broken_rc=$?
  broken_line=$(wait_journal tunneld 'reload failed' 10) || true
  local sessions_after
  sessions_after=$(tunnelctl list --json 2>/dev/null | python3 -c 'import json,sys; print(sorted(s["name"] for s in json.load(sys.stdin)["sessions"]))')
  {
    echo "# systemctl reload tunneld with a broken tunneld.toml: exit $broken_rc"
    echo "$broken_line"
    echo "state $(prop ActiveState)/$(prop SubState), MainPID $pid_before -> $(prop MainPID), sessions $sessions_after"
  } | show
  if [[ -n $broken_line && $(prop ActiveState) == active && $(prop MainPID) == "$pid_before" &&
    $sessions_after == *check-cfg* ]]; then
    pass "reload: a broken tunneld.toml is reported in the journal and changes nothing"
  else
    fail "reload: broken file: journal line '$broken_line', state $(prop ActiveState), sessions $sessions_after"
  fi
  install -m 0640 -g tunneld "$W/tunneld.toml" /etc/tunneld/tunneld.toml
  systemctl reload tunneld

  # -------------------------------------------------------------- upgrade
  # Version N+1 over N, with four sessions up and the configuration edited
  # (the reload check left its [[session]] in it): the postinst restarts
  # tunneld (debhelper's restart after upgrade), every session comes back
  # from the state directory or the file, and dpkg keeps the edited conffile
  # without asking (the packaged one did not change).
  local up_rc=0 up_ms pid_up conf_before conf_after ids_before ids_after
  pid_up=$(prop MainPID)
  conf_before=$(sha256sum </etc/tunneld/tunneld.toml)
  # Sessions opened with tunnelctl keep their id (the state directory);
  # [[session]] tables get a new one at every start.
  ids_before=$(for n in check-src check-dst check-cfg-src; do echo -n "$n=$(session_field $n id) "; done)
  cursor=$(journalctl -u tunneld -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
  t0=$(date +%s%N)
  DEBIAN_FRONTEND=noninteractive apt-get install -y "$SHARE"/debs/n1/*.deb >"$W/upgrade.log" 2>&1 || up_rc=$?
  t1=$(date +%s%N)
  up_ms=$(((t1 - t0) / 1000000))
  local up_restored=0 up_data="not run" up_data_rc=1 name
  for name in check-src check-dst check-cfg check-cfg-src; do
    wait_state "$name" connected 20 && up_restored=$((up_restored + 1))
  done
  ids_after=$(for n in check-src check-dst check-cfg-src; do echo -n "$n=$(session_field $n id) "; done)
  conf_after=$(sha256sum </etc/tunneld/tunneld.toml)
  SRC_PORT=$(local_port check-src)
  if ((up_restored == 4)); then
    up_data=$(echo_through "$SRC_PORT" 65536 2>&1) && up_data_rc=0
  fi
  local up_version dpkg_left
  up_version=$(dpkg-query -W -f='${Version}' tunneld)
  dpkg_left=$(ls /etc/tunneld/*.dpkg-* 2>/dev/null || true)
  {
    echo "# apt-get install -y ./*_${VERSION_N1}_amd64.deb over $VERSION_N: exit $up_rc, ${up_ms} ms"
    grep -E '^(Preparing to unpack|Unpacking|Setting up)' "$W/upgrade.log"
    echo "# journalctl -u tunneld (systemd's lines since the upgrade began)"
    journalctl -u tunneld --after-cursor="$cursor" -o cat --no-pager | grep -v '^\[' | head -6
    echo "dpkg: tunneld $up_version; MainPID $pid_up -> $(prop MainPID), $(prop ActiveState)/$(prop SubState)"
    echo "/etc/tunneld/tunneld.toml: sha256 ${conf_before%% *} -> ${conf_after%% *}, [[session]] check-cfg still in it: $(grep -c 'name = "check-cfg"' /etc/tunneld/tunneld.toml); dpkg leftovers: ${dpkg_left:-none}"
    echo "tunnelctl sessions' ids before: $ids_before"
    echo "tunnelctl sessions' ids after:  $ids_after"
    echo "sessions connected again: $up_restored of 4; 64 KiB through check-src: $up_data"
  } | show
  if [[ $up_rc -eq 0 && $up_version == "$VERSION_N1" && $(prop MainPID) != "$pid_up" && $(prop ActiveState) == active &&
    $conf_before == "$conf_after" && -z $dpkg_left && $up_restored -eq 4 && $ids_before == "$ids_after" && $up_data_rc -eq 0 ]]; then
    pass "upgrade: $VERSION_N -> $VERSION_N1 restarted tunneld (${up_ms} ms), all 4 sessions restored and carry data, the edited tunneld.toml kept"
  else
    fail "upgrade: exit $up_rc, version $up_version, MainPID $pid_up -> $(prop MainPID), config kept: $([[ $conf_before == "$conf_after" ]] && echo yes || echo no), leftovers '${dpkg_left}', $up_restored of 4 sessions, ids kept: $([[ $ids_before == "$ids_after" ]] && echo yes || echo no), data: $up_data"
  fi

  # ------------------------------------------------------------- watchdog
  # WATCHDOG=1 updates WatchdogTimestamp; over more than WatchdogSec the
  # service must stay up with the same pid, and every sample must find a
  # recent ping.
  local wd_usec pid samples=0 stale=0 max_age=0 restarts_before first_ts last_ts ts age now
  wd_usec=$(prop WatchdogUSec)
  pid=$(prop MainPID)
  restarts_before=$(prop NRestarts)
  first_ts=$(prop WatchdogTimestampMonotonic)
  # What systemd handed to tunneld (sd_watchdog_enabled(3)): WATCHDOG_USEC/PID.
  local wd_env wd_secs
  wd_env=$(tr '\0' '\n' <"/proc/$pid/environ" | grep -E '^WATCHDOG_(USEC|PID)=' | paste -sd' ')
  wd_secs=$(sed -n 's/.*WATCHDOG_USEC=\([0-9]*\).*/\1/p' <<<"$wd_env")
  wd_secs=$((${wd_secs:-0} / 1000000))
  local until=$((SECONDS + wd_secs + 5))
  while ((SECONDS < until)); do
    sleep 2.5
    ts=$(prop WatchdogTimestampMonotonic)
    now=$(mono_usec)
    age=$(((now - ts) / 1000))
    samples=$((samples + 1))
    ((age > max_age)) && max_age=$age
    ((age > wd_secs * 500)) && stale=$((stale + 1)) # older than WatchdogSec/2
    [[ $(prop MainPID) == "$pid" && $(prop ActiveState) == active ]] || stale=$((stale + 100))
  done
  last_ts=$(prop WatchdogTimestampMonotonic)
  {
    echo "WatchdogUSec=$wd_usec; tunneld's environment: $wd_env"
    echo "over $((wd_secs + 5)) s: $samples samples of WatchdogTimestampMonotonic, oldest ping seen ${max_age} ms old, $stale stale"
    echo "WatchdogTimestamp $(systemctl show tunneld -P WatchdogTimestamp) (monotonic $first_ts -> $last_ts)"
    echo "MainPID $pid -> $(prop MainPID), NRestarts $restarts_before -> $(prop NRestarts), $(prop ActiveState)/$(prop SubState)"
  } | show
  if ((wd_secs > 0)) && [[ $stale -eq 0 && $last_ts -gt $first_ts && $(prop NRestarts) == "$restarts_before" ]]; then
    pass "watchdog: WatchdogSec=$wd_usec honoured: pings seen throughout $((wd_secs + 5)) s (oldest ${max_age} ms), no restart"
  else
    fail "watchdog: WatchdogUSec=$wd_usec, $stale stale samples, timestamp $first_ts -> $last_ts"
  fi

  if [[ $quick != 1 ]]; then
    # A stuck event loop (SIGSTOP) must be killed by the watchdog and the
    # service restarted (Restart=on-failure), sessions restored from the state
    # directory.
    cursor=$(journalctl -u tunneld -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
    pid=$(prop MainPID)
    restarts_before=$(prop NRestarts)
    t0=$SECONDS
    kill -STOP "$pid"
    local new_pid="" i
    for ((i = 0; i < (wd_secs + 30) * 2; i++)); do
      sleep 0.5
      new_pid=$(prop MainPID)
      [[ $new_pid != "$pid" && $new_pid != 0 && $(prop ActiveState) == active ]] && break
    done
    local took=$((SECONDS - t0)) restored=0 name
    for name in check-src check-dst check-cfg check-cfg-src; do
      wait_state "$name" connected 20 && restored=$((restored + 1))
    done
    # check-src was opened with -s 127.0.0.1:0: the restart bound a new port.
    SRC_PORT=$(local_port check-src)
    CFG_SRC_PORT=$(local_port check-cfg-src)
    local after_restart="not run" after_restart_rc=1
    if ((restored == 4)); then
      after_restart=$(echo_through "$SRC_PORT" 65536 2>&1) &&
        after_restart="check-src: $after_restart; check-cfg-src: $(echo_through "$CFG_SRC_PORT" 65536 2>&1)" &&
        [[ $after_restart != *MISMATCH* ]] && after_restart_rc=0
    fi
    {
      echo "# kill -STOP $pid (tunneld's event loop stops pinging)"
      journalctl -u tunneld --after-cursor="$cursor" -o cat --no-pager | grep -v '^\[' | head -8
      echo "MainPID $pid -> $new_pid after ${took} s, NRestarts $restarts_before -> $(prop NRestarts), $(prop ActiveState)/$(prop SubState)"
      echo "# tunnelctl list"
      tunnelctl list 2>&1
      echo "sessions connected again: $restored of 4; 64 KiB through each tunnel: $after_restart"
    } | show
    if [[ $new_pid != "$pid" && $(prop NRestarts) -gt $restarts_before && $took -ge $((wd_secs - 2)) &&
      $restored -eq 4 && $after_restart_rc -eq 0 ]] &&
      journalctl -u tunneld --after-cursor="$cursor" -o cat --no-pager | grep -q -i 'watchdog timeout'; then
      pass "watchdog: a stuck loop is killed (SIGABRT) after WatchdogSec and restarted (${took} s); all 4 sessions reconnect and carry data"
    else
      fail "watchdog: after SIGSTOP: MainPID $pid -> $new_pid in ${took} s, NRestarts $(prop NRestarts), $restored of 4 sessions connected, data: $after_restart"
    fi
  fi

  # ----------------------------------------------------------------- stop
  SRC_PORT=$(local_port check-src)
  hold_connection "$SRC_PORT" "$W/hold2"
  local held=0
  wait_file "$W/hold2/ready" 15 && held=1
  local stop_rc=0 stop_ms nsessions
  nsessions=$(tunnelctl list --json 2>/dev/null | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sessions"]))')
  cursor=$(journalctl -u tunneld -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p')
  t0=$(date +%s%N)
  timeout 30 systemctl stop tunneld >"$W/stop.log" 2>&1 || stop_rc=$?
  t1=$(date +%s%N)
  stop_ms=$(((t1 - t0) / 1000000))
  touch "$W/hold2/go"
  wait_file "$W/hold2/result" 5 || true
  {
    echo "# systemctl stop tunneld with $nsessions sessions and an open connection: exit $stop_rc, ${stop_ms} ms"
    cat "$W/stop.log"
    journalctl -u tunneld --after-cursor="$cursor" -o cat --no-pager | tail -6
    echo "ActiveState=$(prop ActiveState) Result=$(prop Result) ExecMainCode=$(prop ExecMainCode) ExecMainStatus=$(prop ExecMainStatus)"
    echo "/run/tunneld: $(ls -d /run/tunneld 2>&1)"
    echo "the connection through check-src open during the stop: $(cat "$W/hold2/result" 2>/dev/null || echo 'no result')"
  } | show
  if [[ $stop_rc -eq 0 && $held -eq 1 && $stop_ms -lt 5000 && $(prop ActiveState) == inactive && $(prop Result) == success &&
    $(prop ExecMainStatus) == 0 ]]; then
    pass "stop: systemctl stop tunneld completed in ${stop_ms} ms (< 5 s), exit 0, Result=success"
  else
    fail "stop: exit $stop_rc in ${stop_ms} ms, connection held: $held, $(prop ActiveState), Result=$(prop Result), status $(prop ExecMainStatus)"
  fi

  # ------------------------------------------------------- remove, purge
  # Remove stops the service and keeps configuration, state and the user;
  # purge removes those too (and the alternative, the enable state).
  systemctl start tunneld
  local rm_rc=0 procs kept_conf kept_state
  DEBIAN_FRONTEND=noninteractive apt-get remove -y tunneld tunneld-localproxy tunnel-relay >"$W/remove.log" 2>&1 || rm_rc=$?
  procs=$(find /proc -mindepth 1 -maxdepth 1 -user tunneld -regex '/proc/[0-9]+' 2>/dev/null | wc -l)
  kept_conf=$(find /etc/tunneld -mindepth 1 -printf '%f ' 2>&1)
  kept_state=$(find /var/lib/tunneld -mindepth 1 -printf '%f ' 2>&1)
  local rm_status rm_conf_sha
  rm_status=$(dpkg-query -W -f='${db:Status-Abbrev}' tunneld 2>&1)
  rm_conf_sha=$(sha256sum </etc/tunneld/tunneld.toml 2>&1)
  {
    echo "# apt-get remove -y tunneld tunneld-localproxy tunnel-relay: exit $rm_rc"
    grep -E '^(Removing|Stopping)' "$W/remove.log"
    if ((rm_rc)); then tail -15 "$W/remove.log"; fi
    echo "dpkg: tunneld '$rm_status'; tunneld.service $(prop LoadState)/$(prop ActiveState); processes of user tunneld: $procs"
    echo "/etc/tunneld: $kept_conf (tunneld.toml unchanged: $([[ $rm_conf_sha == "$conf_after" ]] && echo yes || echo no))"
    echo "/var/lib/tunneld: $kept_state"
    echo "getent passwd tunneld: $(getent passwd tunneld); /usr/bin/localproxy: $(ls /usr/bin/localproxy 2>&1)"
  } | show
  if [[ $rm_rc -eq 0 && $rm_status == "rc " && $(prop ActiveState) == inactive && $procs -eq 0 &&
    $rm_conf_sha == "$conf_after" && $kept_state == *.session* && -n $(getent passwd tunneld) && ! -e /usr/bin/localproxy ]]; then
    pass "remove: the running service stopped; /etc/tunneld (edited tunneld.toml), /var/lib/tunneld (sessions) and user tunneld kept"
  else
    fail "remove: exit $rm_rc, dpkg '$rm_status', service $(prop ActiveState), $procs processes, /etc/tunneld '$kept_conf', /var/lib/tunneld '$kept_state'"
  fi

  # tunneld-localproxy has no conffiles: remove already took all of it, and
  # apt no longer knows the name. The other two are in state "rc".
  local purge_rc=0 left="" lp_state
  lp_state=$(dpkg-query -W -f='${db:Status-Abbrev}' tunneld-localproxy 2>/dev/null | tr -d ' ')
  [[ -z $lp_state || $lp_state == un ]] || left+="tunneld-localproxy in state $lp_state "
  DEBIAN_FRONTEND=noninteractive apt-get purge -y tunneld tunnel-relay >"$W/purge.log" 2>&1 || purge_rc=$?
  [[ -e /etc/tunneld ]] && left+="/etc/tunneld "
  [[ -e /var/lib/tunneld ]] && left+="/var/lib/tunneld "
  getent passwd tunneld >/dev/null && left+="user tunneld "
  getent group tunneld >/dev/null && left+="group tunneld "
  [[ -e /etc/alternatives/localproxy ]] && left+="/etc/alternatives/localproxy "
  [[ -e /etc/systemd/system/multi-user.target.wants/tunneld.service ]] && left+="the enable symlink "
  local purged_status
  purged_status=$(dpkg-query -W -f='${db:Status-Abbrev}' tunneld 2>/dev/null | tr -d ' ')
  [[ -z $purged_status || $purged_status == un ]] || left+="dpkg status $purged_status "
  purged_status=$(dpkg-query -W -f='${db:Status-Abbrev}' tunnel-relay 2>/dev/null | tr -d ' ')
  [[ -z $purged_status || $purged_status == un ]] || left+="tunnel-relay in state $purged_status "
  [[ -e /etc/default/tunnel-relay ]] && left+="/etc/default/tunnel-relay "
  {
    echo "# apt-get purge -y tunneld tunnel-relay: exit $purge_rc"
    grep -E '^Purging' "$W/purge.log"
    echo "left behind: ${left:-nothing}"
    if ((purge_rc)); then tail -15 "$W/purge.log"; fi
  } | show
  if [[ $purge_rc -eq 0 && -z $left ]]; then
    pass "purge: /etc/tunneld, /var/lib/tunneld, user and group tunneld removed"
  else
    fail "purge: exit $purge_rc, left behind: $left"
  fi

  systemctl stop check-relay check-echo 2>/dev/null || true
  echo "$npass passed, $nfail failed"
  ((nfail == 0))
}

if [[ ${1:-} == --inside ]]; then
  inside "${2:-0}" "${3:?}" "${4:?}"
  exit
fi

# ======================================================================= host
cd "$(dirname "$(readlink -f "$0")")/.."
REPO=$PWD
ROOT=${SYSTEMD_CHECK_ROOT:-/var/cache/tunneld-systemd-check/debian12}
# The tree's packages on top of minbase (which has no procps, so no
# /bin/kill): systemd; exactly the runtime packages docs/systemd.md lists for
# tunneld, tunnelctl and tunnel-relay, which the .deb files depend on (the
# container has no network: apt install must find them there; ldd checks
# them too); and what the checks themselves use (openssl for the throwaway
# CA, python3, iproute2 for `ip`, dbus).
RUNTIME_PACKAGES=libuv1,libprotobuf-lite32,libssl3,libspdlog1.10,libfmt9,libtomlplusplus3,libmosquitto1
ROOT_PACKAGES=systemd,systemd-sysv,dbus,openssl,python3,iproute2,$RUNTIME_PACKAGES

quick=0
keep=0
for arg in "$@"; do
  case $arg in
    --quick) quick=1 ;;
    --keep) keep=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "systemd-check.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

skip() { echo "SKIP $SUITE: $*"; exit 77; }
die() { echo "FAIL $SUITE: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || skip "needs root (debootstrap, systemd-nspawn): sudo $0"
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v nsenter >/dev/null || need+=(util-linux)
if ((${#need[@]})); then
  command -v apt-get >/dev/null || skip "missing ${need[*]} and no apt-get to install them"
  echo "installing ${need[*]}"
  # Without recommends: libnss-mymachines would add itself to nsswitch.conf.
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tunneld-systemd-check.XXXXXX")
chmod 0755 "$WORK"
NSPAWN_PID=
LEADER=
CHECK_PID=
TAIL_PID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$?
  trap '' INT TERM # a second ^C must not cut the teardown short
  if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
    # SIGTERM: nspawn asks the container's systemd for an orderly shutdown
    # (SIGRTMIN+3). A PID 1 that has no handler yet (early boot) never sees
    # it; then SIGKILL to the container's PID 1 ends its whole PID namespace,
    # and nspawn exits. Killing nspawn alone would leave the container running.
    kill -TERM "$NSPAWN_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$NSPAWN_PID" 2>/dev/null; then
      [[ -n $LEADER ]] && kill -KILL "$LEADER" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$NSPAWN_PID" 2>/dev/null || true
    fi
    wait "$NSPAWN_PID" 2>/dev/null || true
  fi
  # nsenter waits for the checks it started in the container. systemd's
  # shutdown SIGSTOPs every process there before killing it, and nsenter then
  # stops itself as well (it mirrors its child's stops) and would wait for a
  # SIGCONT forever: wake it and end it.
  if [[ -n $CHECK_PID ]]; then
    kill -CONT "$CHECK_PID" 2>/dev/null || true
    kill -TERM "$CHECK_PID" 2>/dev/null || true
    wait "$CHECK_PID" 2>/dev/null || true
  fi
  if [[ -n $TAIL_PID ]]; then
    kill "$TAIL_PID" 2>/dev/null || true
    wait "$TAIL_PID" 2>/dev/null || true
  fi
  if ((rc != 0 || keep)); then
    echo "work dir kept: $WORK (boot.log: the container's console)"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------- packages
# Version N: the .deb files of DEBS_DIR, or built here by scripts/build-deb.sh.
# Version N+1: the same tree rebuilt as N+check1 (a version dpkg orders after
# N), which the upgrade check installs over N.
mkdir -p "$WORK/share/debs/n" "$WORK/share/debs/n1"
if [[ -n ${DEBS_DIR:-} ]]; then
  cp "$DEBS_DIR"/tunneld_*_amd64.deb "$DEBS_DIR"/tunneld-localproxy_*_amd64.deb \
    "$DEBS_DIR"/tunnel-relay_*_amd64.deb "$WORK/share/debs/n/" || die "DEBS_DIR=$DEBS_DIR lacks the three .deb files"
else
  echo "building the packages (scripts/build-deb.sh; log: $WORK/build-n.log)"
  "$REPO/scripts/build-deb.sh" --out "$WORK/share/debs/n" >"$WORK/build-n.log" 2>&1 ||
    { tail -30 "$WORK/build-n.log"; die "scripts/build-deb.sh failed"; }
fi
version_n=$(dpkg-deb -f "$(ls "$WORK"/share/debs/n/tunneld_*_amd64.deb)" Version)
version_n1="$version_n+check1"
echo "building the same tree as $version_n1 (log: $WORK/build-n1.log)"
"$REPO/scripts/build-deb.sh" --version "$version_n1" --out "$WORK/share/debs/n1" >"$WORK/build-n1.log" 2>&1 ||
  { tail -30 "$WORK/build-n1.log"; die "scripts/build-deb.sh --version $version_n1 failed"; }
# The -dbgsym packages debhelper also builds are not what a user installs.
rm -f "$WORK"/share/debs/n/*-dbgsym_*.deb "$WORK"/share/debs/n1/*-dbgsym_*.deb
install -m 0755 "$REPO/scripts/systemd-check.sh" "$WORK/share/systemd-check.sh"
echo "packages:"
(cd "$WORK/share/debs" && find n n1 -name '*.deb' | sort | sed 's/^/    /')

# ---------------------------------------------------------------- rootfs
stamp="$ROOT/.tunneld-systemd-check"
if [[ ! -f $stamp || $(cat "$stamp") != "$ROOT_PACKAGES" ]]; then
  mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
    grep -v '^[[:space:]]*#' | grep -o -E 'https?://[^ ]+/debian/?( |$)' | head -1 | tr -d ' ' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  # Only a tree this script made (or an empty directory) is ever replaced.
  if [[ -d $ROOT && ! -f $stamp && -n $(ls -A "$ROOT") ]]; then
    die "$ROOT exists and was not made by this script; remove it or set SYSTEMD_CHECK_ROOT"
  fi
  echo "debootstrap bookworm into $ROOT from $mirror (once; ~300 MB)"
  rm -rf "$ROOT"
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase --include="$ROOT_PACKAGES" bookworm "$ROOT" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  echo tunneld-check >"$ROOT/etc/hostname"
  echo "$ROOT_PACKAGES" >"$stamp"
fi

# ------------------------------------------------------------------ boot
# --volatile=overlay: the tree stays pristine, every run starts from a fresh
# boot. --register=no: no systemd-machined needed. On a host whose PID 1 is
# not systemd there is no system bus to create a scope unit with ("Failed to
# open system bus"): --keep-unit runs the container in nspawn's own cgroup.
nspawn=(systemd-nspawn --boot --quiet --register=no --private-network --volatile=overlay
  --directory="$ROOT" --machine="tunneld-check-$$" --bind-ro="$WORK/share:$SHARE" --console=read-only)
if [[ ! -d /run/systemd/system ]]; then
  nspawn+=(--keep-unit)
fi
echo "booting: ${nspawn[*]}"
"${nspawn[@]}" </dev/null >"$WORK/boot.log" 2>&1 &
NSPAWN_PID=$!
# The container's PID 1 is a child of nspawn whose innermost pid is 1.
for _ in $(seq 150); do
  for c in $(pgrep -P "$NSPAWN_PID" || true); do
    if [[ $(awk '/^NSpid:/ { print $NF }' "/proc/$c/status" 2>/dev/null) == 1 ]]; then LEADER=$c; fi
  done
  [[ -n $LEADER ]] && break
  kill -0 "$NSPAWN_PID" 2>/dev/null || break
  sleep 0.2
done
if [[ -z $LEADER ]]; then
  sleep 0.5
  cat "$WORK/boot.log" >&2
  die "the container did not boot (systemd-nspawn's output above)"
fi
echo "container PID 1 is host pid $LEADER"

status=0
# In the background, so that a signal to this script runs the cleanup at once
# (stopping the container ends everything started inside it); tail shows the
# output as it comes.
nsenter --target "$LEADER" --mount --uts --ipc --net --pid -- \
  /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb \
  /bin/bash "$SHARE/systemd-check.sh" --inside "$quick" "$version_n" "$version_n1" >"$WORK/check.log" 2>&1 &
CHECK_PID=$!
tail -n +1 -f --pid="$CHECK_PID" "$WORK/check.log" &
TAIL_PID=$!
wait "$CHECK_PID" || status=$?
CHECK_PID=
wait "$TAIL_PID" || true
TAIL_PID=
if ! grep -q -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/check.log"; then
  echo "FAIL $SUITE: the checks inside the container did not finish (exit $status)"
  status=1
fi
exit "$status"
