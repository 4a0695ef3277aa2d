#!/usr/bin/env bash
# A guided tour of tunneld on loopback: installs what is missing, builds, then
# runs a whole tunnel (our relay + tunneld hosting the destination session,
# opened with tunnelctl, in front of a tiny web server + a reference-compatible
# localproxy as the source) and fetches a page through it, explaining each
# step. Everything it starts is stopped on exit, even on ^C.
#
#   scripts/demo.sh                 # BUILD_DIR=build by default
#   BUILD_DIR=build-x scripts/demo.sh
set -euo pipefail

cd "$(dirname "$(readlink -f "$0")")/.."
BUILD_DIR=${BUILD_DIR:-build}
PY=/usr/bin/python3

if [[ -t 1 ]]; then B=$'\e[1m'; G=$'\e[32m'; R=$'\e[31m'; N=$'\e[0m'; else B= G= R= N=; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
say()  { printf '    %s\n' "$*"; }
die()  { printf '%sdemo failed: %s%s\n' "$R" "$*" "$N" >&2; exit 1; }

WORK=
pids=()
cleanup() {
  local rc=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    if ((rc != 0)); then
      printf '\nLogs of this run (kept for you): %s\n' "$WORK"
      for f in "$WORK"/*.log; do [[ -s "$f" ]] && { echo "--- $f"; tail -n 15 "$f"; }; done
    else
      rm -rf "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_line FILE REGEX SECONDS: prints the first matching line (bounded wait).
wait_line() {
  local file=$1 re=$2 secs=$3 i line
  for ((i = 0; i < secs * 10; i++)); do
    line=$(grep -m1 -E -- "$re" "$file" 2>/dev/null || true)
    if [[ -n "$line" ]]; then printf '%s\n' "$line"; return 0; fi
    sleep 0.1
  done
  return 1
}

# wait_exit PID SECONDS: sets EXIT_STATUS, or returns 1 if still running.
wait_exit() {
  local pid=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      EXIT_STATUS=0; wait "$pid" || EXIT_STATUS=$?
      return 0
    fi
    sleep 0.1
  done
  return 1
}

step "1. Installing missing Debian packages (if any)"
./scripts/setup-deps.sh

step "2. Building with meson into $BUILD_DIR/"
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  meson setup "$BUILD_DIR" >/dev/null || die "meson setup failed (run: meson setup $BUILD_DIR)"
fi
# Only the programs the demo runs: quicker than a full build.
build_log=$BUILD_DIR/meson-logs/demo-compile.log
meson compile -C "$BUILD_DIR" relay/tunnel-relay:executable ctl/localproxy:executable \
  daemon/tunneld:executable ctl/tunnelctl:executable >"$build_log" 2>&1 \
  || { tail -n 30 "$build_log"; die "build failed (full log: $build_log)"; }
RELAY=$BUILD_DIR/relay/tunnel-relay
LOCALPROXY=$BUILD_DIR/ctl/localproxy
TUNNELD=$BUILD_DIR/daemon/tunneld
TUNNELCTL=$BUILD_DIR/ctl/tunnelctl
say "built $RELAY, $TUNNELD, $TUNNELCTL and $LOCALPROXY"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tunneld-demo.XXXXXX")
chmod 700 "$WORK"

step "3. Making a throwaway certificate authority and a server certificate"
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout ca.key -out ca.pem -days 1 -subj "/CN=tunneld demo CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -out server.pem -days 1 -extfile server.ext 2>/dev/null
) || die "openssl could not make the demo certificates"
say "CA: $WORK/ca.pem   server certificate for 127.0.0.1 / localhost"

step "4. Starting the relay (our stand-in for the cloud tunneling service)"
"$RELAY" --listen 127.0.0.1:0 --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" \
  --admin 127.0.0.1:0 >"$WORK/relay.out" 2>"$WORK/relay.log" &
pids+=($!)
ready=$(wait_line "$WORK/relay.out" '"event" *: *"ready"' 10) || die "the relay did not get ready in 10 s"
read -r RELAY_ADDR ADMIN_ADDR < <($PY -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["listen"], r["admin"])' "$ready")
say "relay: wss://$RELAY_ADDR   admin API: http://$ADMIN_ADDR"

step "5. Opening a tunnel through the admin API (like the cloud's OpenTunnel)"
$PY - "$ADMIN_ADDR" "$WORK/tunnel.json" <<'PY' || die "POST /tunnels failed"
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
read -r TUNNEL_ID SRC_TOKEN DST_TOKEN < <($PY -c 'import json,sys; t=json.load(open(sys.argv[1])); print(t["tunnelId"], t["sourceAccessToken"], t["destinationAccessToken"])' "$WORK/tunnel.json")
say "tunnel $TUNNEL_ID: one access token for each end (kept out of argv and logs;"
say "they reach each localproxy in AWSIOT_TUNNEL_ACCESS_TOKEN)"

step "6. Starting a tiny web server on the 'device' side"
mkdir -p "$WORK/www"
echo "Hello from the far end of the tunnel ($(date -u +%H:%M:%S) UTC)" >"$WORK/www/hello.txt"
$PY -u -m http.server --bind 127.0.0.1 --directory "$WORK/www" 0 >"$WORK/http.log" 2>&1 &
pids+=($!)
line=$(wait_line "$WORK/http.log" 'port [0-9]+' 10) || die "the web server did not start"
HTTP_PORT=$(sed -E 's/.*port ([0-9]+).*/\1/' <<<"$line")
say "web server: http://127.0.0.1:$HTTP_PORT/hello.txt"

step "7. tunneld, the daemon, with its control socket and state directory in $WORK"
"$TUNNELD" --socket "$WORK/run/control.sock" --state-dir "$WORK/state" --log stderr \
  >"$WORK/tunneld.log" 2>&1 &
TUNNELD_PID=$!
pids+=("$TUNNELD_PID")
wait_line "$WORK/tunneld.log" 'ready' 10 >/dev/null || die "tunneld did not get ready (see $WORK/tunneld.log)"
export TUNNELD_SOCKET=$WORK/run/control.sock
say "tunneld --socket $TUNNELD_SOCKET --state-dir $WORK/state   (pid $TUNNELD_PID)"

step "8. tunnelctl open: a destination session in tunneld, in front of the web server"
say "the token travels to tunneld over the control socket only (not in argv)"
AWSIOT_TUNNEL_ACCESS_TOKEN=$DST_TOKEN "$TUNNELCTL" open -d "127.0.0.1:$HTTP_PORT" \
  -e "wss://$RELAY_ADDR" --cafile "$WORK/ca.pem" --name web | sed 's/^/    /' \
  || die "tunnelctl open failed (see $WORK/tunneld.log)"
for _ in $(seq 50); do
  "$TUNNELCTL" status web 2>/dev/null | grep -qi 'state.*connected' && break
  sleep 0.1
done
"$TUNNELCTL" list | sed 's/^/    /'

step "9. Source: the reference-compatible localproxy connects to the relay, then listens"
AWSIOT_TUNNEL_ACCESS_TOKEN=$SRC_TOKEN "$LOCALPROXY" -e "$RELAY_ADDR" --cafile "$WORK/ca.pem" \
  -s 0 -b 127.0.0.1 >"$WORK/source.log" 2>&1 &
SRC_PID=$!
pids+=("$SRC_PID")
line=$(wait_line "$WORK/source.log" 'listening on [^ ]+:[0-9]+' 15) \
  || die "the source localproxy did not start listening (see $WORK/source.log)"
SRC_PORT=$(sed -E 's/.*listening on [^ ]+:([0-9]+).*/\1/' <<<"$line")
say "localproxy -e $RELAY_ADDR --cafile ca.pem -s 0 -b 127.0.0.1   (pid $SRC_PID)"
say "it listens on 127.0.0.1:$SRC_PORT"

step "10. Fetching http://127.0.0.1:$SRC_PORT/hello.txt: client -> source -> relay -> destination -> web server"
body=$($PY - "$SRC_PORT" <<'PY'
import sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
last = None
for _ in range(20):
    try:
        with opener.open(f"http://127.0.0.1:{sys.argv[1]}/hello.txt", timeout=5) as r:
            sys.stdout.write(r.read().decode())
            sys.exit(0)
    except OSError as e:
        last = e
        time.sleep(0.25)
sys.exit(f"no answer through the tunnel: {last}")
PY
) || die "fetching through the tunnel failed"
printf '    %sgot: %s%s\n' "$G" "$body" "$N"
"$TUNNELCTL" status web | sed 's/^/    /'

step "11. Closing the tunnel through the admin API (like CloseTunnel)"
$PY - "$ADMIN_ADDR" "$TUNNEL_ID" <<'PY' || die "DELETE /tunnels failed"
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(f"http://{sys.argv[1]}/tunnels/{sys.argv[2]}", method="DELETE")
opener.open(req, timeout=10).read()
PY
if wait_exit "$SRC_PID" 5; then
  say "source localproxy exited with status $EXIT_STATUS (0 = the service closed the tunnel)"
else
  die "source localproxy still running 5 s after the tunnel was closed"
fi
for _ in $(seq 50); do
  "$TUNNELCTL" status web 2>/dev/null | grep -qiE 'state.*closed' && break
  sleep 0.1
done
say "tunneld's session saw it too:"
"$TUNNELCTL" list | sed 's/^/    /'

step "12. Stopping tunneld (SIGTERM: graceful, exit 0)"
kill -TERM "$TUNNELD_PID"
if wait_exit "$TUNNELD_PID" 5; then
  say "tunneld exited with status $EXIT_STATUS"
else
  die "tunneld still running 5 s after SIGTERM"
fi

step "Done. Everything ran on 127.0.0.1 and is being cleaned up."
say "Try it by hand: see README.md; logs of each process were in $WORK (now removed)."
