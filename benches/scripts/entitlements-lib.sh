# Shared by the entitlement bench scripts (sourced): the release binaries, the config that
# packs customers after 30 s, a server started on a free port, and the `checks` setup of N
# customers × 3 metered entitlements. Expects BIN (the binaries' directory) and W (the work
# directory, created by the caller).

require_binaries() {
  for bin in metron checks; do
    [ -x "$BIN/$bin" ] || { echo "no $BIN/$bin: cargo build --release -p metron-api -p metron-benches --bins" >&2; exit 1; }
  done
}

# Idle customers are packed after 30 s and never passivated during a run.
write_config() {
  printf 'entitlements:\n  idleAfter: 2h\n  packAfter: 30s\n' > "$W/c.yaml"
}

# Anonymous resident memory of a process, KiB.
anon() { awk '/RssAnon/{print $2}' "/proc/$1/status"; }

# Starts a server with its data in DIR; sets PID and ADDR.
start() {
  "$BIN/metron" serve --config "$W/c.yaml" --listen 127.0.0.1:0 --data-dir "$1/data" --port-file "$1/addr" > "$1/log" 2>&1 &
  PID=$!
  for _ in $(seq 50); do [ -s "$1/addr" ] && break; sleep 0.2; done
  ADDR=$(cat "$1/addr")
}

# Sets up N customers × 3 metered entitlements and their events on the server at ADDR (the
# run's output in DIR/setup.out, shown too); sets RUN, the id later phases reuse.
setup_customers() {
  "$BIN/checks" --url "http://$ADDR" --customers "$2" --entitlements-per-customer 3 --setup-connections 8 \
    --connections 8 --seconds 1 --phases closed --server-pid "$PID" | tee "$1/setup.out"
  RUN=$(awk '/^run /{print $2}' "$1/setup.out")
}
