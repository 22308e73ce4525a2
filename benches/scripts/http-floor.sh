#!/bin/bash
# The floor of an HTTP answer on this machine (issue 13, item 5): nginx (Debian's package,
# installed by this script if missing) answering every `/api/` request with a fixed 200 and a
# value-check-shaped JSON body, driven by the same load generator (`checks`, closed loop and
# open loop at RATE checks/s over 16 connections, 10 s each, ROUNDS rounds) as
# `entitlements-cpu.sh` drives Metron. Prints the CPU of nginx's workers per request, from
# /proc (utime + stime of every nginx process over each loop). No request reaches Metron:
# this is what the kernel and a minimal HTTP server cost per request here, with the client on
# the same cores.
# WORKERS sets nginx's worker_processes (default 2). PIN=1 pins nginx to CPU 0 and the load
# generator to CPU 1.
# Usage: benches/scripts/http-floor.sh [work dir]   (release `checks` in BIN, default target/release)
set -uo pipefail
W=${1:-/tmp/metron-http-floor}
BIN=${BIN:-target/release}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-20000}
WORKERS=${WORKERS:-2}
PIN=${PIN:-0}
PORT=${PORT:-18999}
[ -x "$BIN/checks" ] || { echo "no $BIN/checks: cargo build --release -p metron-benches --bin checks"; exit 1; }
if ! command -v nginx > /dev/null && [ ! -x /usr/sbin/nginx ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q nginx-light > /dev/null || exit 1
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
rm -rf "$W" && mkdir -p "$W/logs"
# The body is what Metron answers to a value check of a metered entitlement.
BODY='{"balance":958.0,"config":null,"hasAccess":true,"overage":0.0,"usage":42.0}'
cat > "$W/nginx.conf" <<CONF
worker_processes $WORKERS;
pid $W/nginx.pid;
error_log $W/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  client_body_temp_path $W/body;
  proxy_temp_path $W/proxy;
  fastcgi_temp_path $W/fastcgi;
  uwsgi_temp_path $W/uwsgi;
  scgi_temp_path $W/scgi;
  server {
    listen 127.0.0.1:$PORT;
    default_type application/json;
    location /api/ { return 200 '$BODY'; }
  }
}
CONF
"$NGINX" -p "$W" -c "$W/nginx.conf" || exit 1
sleep 0.5
MASTER=$(cat "$W/nginx.pid")
pids() { echo "$MASTER"; pgrep -P "$MASTER"; }
ticks() { local t=0; for p in $(pids); do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$t"; }
CLIENT=()
if [ "$PIN" = 1 ]; then for p in $(pids); do taskset -p -c 0 "$p" > /dev/null; done; CLIENT=(taskset -c 1); fi
echo "nginx $($NGINX -v 2>&1 | sed 's/.*\///'), $WORKERS workers, at 127.0.0.1:$PORT"
T0=$(ticks); sleep 10; T1=$(ticks)
echo "nginx CPU at rest: $(( (T1 - T0) * 10 )) ms over 10 s"
loop() { # $1: phase
  local t0 t1 out n
  t0=$(ticks)
  out=$("${CLIENT[@]}" "$BIN/checks" --url "http://127.0.0.1:$PORT" --customers 300 --connections 16 \
    --rate "$RATE" --seconds 10 --warmup-seconds 0 --phases "$1" --reuse-run floor 2>&1 | grep -vE "^run ")
  t1=$(ticks)
  echo "$out"
  n=$(echo "$out" | grep -oE '[0-9]+ ok' | head -1 | grep -oE '[0-9]+')
  if [ -n "$n" ] && [ "$n" -gt 0 ]; then
    echo "nginx CPU: $(( (t1 - t0) * 10 )) ms for $n requests = $(awk -v t=$(( (t1 - t0) * 10 )) -v n="$n" 'BEGIN{printf "%.1f", t*1000/n}') µs per request"
  fi
}
for i in $(seq "$ROUNDS"); do
  echo "round $i"; loop closed; sleep 2; loop open; sleep 2
done
kill -QUIT "$MASTER"
