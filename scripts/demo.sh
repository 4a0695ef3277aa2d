#!/usr/bin/env bash
# A guided tour of tunneld on loopback: installs what is missing, builds, then
# runs the whole AWS flow on one machine: an MQTT broker (mosquitto, TLS with
# client certificates), our relay standing in for the tunneling service, and
# tunneld on the "device" with [notify]. Opening a tunnel for the thing through
# the relay's admin API publishes the tunnel notification; tunneld starts the
# destination session by itself (no tunnelctl call on the device), in front of
# a tiny web server, and a reference-compatible localproxy as the source
# fetches a page through it. Everything it starts is stopped on exit, even on ^C.
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

step "3. Making a throwaway certificate authority, a server certificate and two client certificates"
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
  printf 'extendedKeyUsage=clientAuth\n' >client.ext
  for who in device relay; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$who.key" -out "$who.csr" -subj "/CN=$who" 2>/dev/null
    openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
      -out "$who.pem" -days 1 -extfile client.ext 2>/dev/null
  done
  chmod 600 ./*.key
) || die "openssl could not make the demo certificates"
say "CA: $WORK/ca.pem   server certificate for 127.0.0.1 / localhost"
say "client certificates: device.pem (tunneld), relay.pem (the relay's publisher)"

step "4. Starting an MQTT broker (mosquitto) on loopback: TLS, client certificates required"
MQTT_PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{
  echo "per_listener_settings false"
  echo "allow_anonymous true"
  echo "persistence false"
  echo "log_dest stderr"
  # As root, mosquitto would drop to a user that cannot read $WORK.
  if [[ $(id -u) -eq 0 ]]; then echo "user root"; fi
  echo "listener $MQTT_PORT 127.0.0.1"
  echo "cafile $WORK/ca.pem"
  echo "certfile $WORK/server.pem"
  echo "keyfile $WORK/server.key"
  echo "require_certificate true"
} >"$WORK/mosquitto.conf"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
pids+=($!)
wait_line "$WORK/mosquitto.log" 'running' 10 >/dev/null || die "mosquitto did not start"
say "broker: mqtts://127.0.0.1:$MQTT_PORT (where the cloud would publish)"

step "5. Starting the relay (our stand-in for the cloud tunneling service and its MQTT publisher)"
"$RELAY" --listen 127.0.0.1:0 --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" \
  --admin 127.0.0.1:0 --notify-broker "127.0.0.1:$MQTT_PORT" --notify-cafile "$WORK/ca.pem" \
  --notify-cert "$WORK/relay.pem" --notify-key "$WORK/relay.key" \
  >"$WORK/relay.out" 2>"$WORK/relay.log" &
pids+=($!)
ready=$(wait_line "$WORK/relay.out" '"event" *: *"ready"' 10) || die "the relay did not get ready in 10 s"
read -r RELAY_ADDR ADMIN_ADDR < <($PY -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["listen"], r["admin"])' "$ready")
say "relay: wss://$RELAY_ADDR   admin API: http://$ADMIN_ADDR"

step "6. Starting a tiny web server on the 'device' side"
mkdir -p "$WORK/www"
echo "Hello from the far end of the tunnel ($(date -u +%H:%M:%S) UTC)" >"$WORK/www/hello.txt"
$PY -u -m http.server --bind 127.0.0.1 --directory "$WORK/www" 0 >"$WORK/http.log" 2>&1 &
pids+=($!)
line=$(wait_line "$WORK/http.log" 'port [0-9]+' 10) || die "the web server did not start"
HTTP_PORT=$(sed -E 's/.*port ([0-9]+).*/\1/' <<<"$line")
say "web server: http://127.0.0.1:$HTTP_PORT/hello.txt"

step "7. tunneld on the device, with [notify]: it subscribes to its thing's notify topic"
cat >"$WORK/tunneld.toml" <<TOML
[notify]
broker = "127.0.0.1:$MQTT_PORT"
thing_name = "demo-device"
cert_file = "device.pem"
key_file = "device.key"               # mode 0600, or tunneld refuses to start
ca_file = "ca.pem"
tunnel_endpoint = "wss://$RELAY_ADDR"  # the demo relay instead of the region's endpoint
tunnel_cafile = "ca.pem"

[notify.services]
HTTP = "127.0.0.1:$HTTP_PORT"
TOML
sed 's/^/    /' "$WORK/tunneld.toml"
"$TUNNELD" --config "$WORK/tunneld.toml" --socket "$WORK/run/control.sock" \
  --state-dir "$WORK/state" --log stderr >"$WORK/tunneld.log" 2>&1 &
TUNNELD_PID=$!
pids+=("$TUNNELD_PID")
wait_line "$WORK/tunneld.log" 'ready' 10 >/dev/null || die "tunneld did not get ready (see $WORK/tunneld.log)"
wait_line "$WORK/tunneld.log" 'MQTT link up' 10 >/dev/null \
  || die "tunneld's MQTT link did not come up (see $WORK/tunneld.log)"
export TUNNELD_SOCKET=$WORK/run/control.sock
say "tunneld --config tunneld.toml --socket $TUNNELD_SOCKET --state-dir $WORK/state   (pid $TUNNELD_PID)"

step "8. Opening a tunnel for thing demo-device through the admin API (OpenTunnel with destinationConfig)"
$PY - "$ADMIN_ADDR" "$WORK/tunnel.json" <<'PY' || die "POST /tunnels failed"
import json, os, sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
req = urllib.request.Request(f"http://{sys.argv[1]}/tunnels", data=b'{"services":["HTTP"],"thingName":"demo-device"}', method="POST",
                             headers={"Content-Type": "application/json"})
with opener.open(req, timeout=10) as r:
    t = json.load(r)
fd = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump(t, f)
PY
read -r TUNNEL_ID SRC_TOKEN DST_TOKEN < <($PY -c 'import json,sys; t=json.load(open(sys.argv[1])); print(t["tunnelId"], t["sourceAccessToken"], t["destinationAccessToken"])' "$WORK/tunnel.json")
say "tunnel $TUNNEL_ID: the relay published the destination's token on"
say "\$aws/things/demo-device/tunnels/notify; the source token stays here (not in argv or logs)"
say "on the device nobody runs tunnelctl open: tunneld reacts to the notification"
for _ in $(seq 100); do
  "$TUNNELCTL" status notify-demo-device-1 2>/dev/null | grep -qi 'state.*connected' && break
  sleep 0.1
done
"$TUNNELCTL" status notify-demo-device-1 2>/dev/null | grep -qi 'state.*connected' \
  || die "tunneld did not open the notified session (see $WORK/tunneld.log)"
"$TUNNELCTL" list | sed 's/^/    /'
say "the MQTT link, with tunnelctl status (no session):"
"$TUNNELCTL" status | sed 's/^/    /'



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
"$TUNNELCTL" status notify-demo-device-1 | sed 's/^/    /'

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
  "$TUNNELCTL" status notify-demo-device-1 >/dev/null 2>&1 || break
  sleep 0.1
done
"$TUNNELCTL" status notify-demo-device-1 >/dev/null 2>&1 \
  && die "tunneld still has the notified session 5 s after the tunnel was closed"
say "tunneld's session saw it too: it ended and was forgotten (tunnelctl list):"
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
