# Shared by the scripts that run several servers on one topic (sourced: standby.sh,
# standby-sql.sh). Expects `bin` (the binaries' directory) and STREAM and DATABASE from the
# caller. Sourcing it checks them, makes the work directory `work` (removed at exit, with the
# servers stopped); the caller writes `$work/config.yaml`.

: "${STREAM:?STREAM=kafka://... or fluvio://...}" "${DATABASE:?DATABASE=postgres://...}"
for b in "$bin/metron" "$bin/loadgen"; do
    [ -x "$b" ] || { echo "missing $b" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

# start NAME: a server with its own data directory `$work/NAME`, its address in `$work/NAME.addr`
# and its log in `$work/NAME.log`; prints its pid.
start() {
    RUST_LOG=warn "$bin/metron" serve --listen 127.0.0.1:0 --data-dir "$work/$1" \
        --config "$work/config.yaml" --port-file "$work/$1.addr" >>"$work/$1.log" 2>&1 &
    echo $!
}

# wait_ready NAME: until the server answers /readyz.
wait_ready() {
    for _ in $(seq 300); do [ -s "$work/$1.addr" ] && break; sleep 0.1; done
    until curl -sf "http://$(cat "$work/$1.addr")/readyz" >/dev/null; do sleep 0.1; done
}
