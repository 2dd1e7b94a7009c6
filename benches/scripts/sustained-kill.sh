#!/usr/bin/env bash
# Sustained command load with a kill -9 of the server in the middle, then an offline check
# that every acknowledged command survived (issue 6's target: 2,000 commands/s for 60 s).
#
#   benches/scripts/sustained-kill.sh [rate] [seconds] [dir]
set -euo pipefail
rate=${1:-2000}
seconds=${2:-60}
dir=${3:-/tmp/crm-sustained}
cd "$(dirname "$0")/../.."
cargo build --release -p crm-server -p crm-benches --bins >/dev/null
rm -rf "$dir" && mkdir -p "$dir"
start_server() {
  target/release/crm-server --data-dir "$dir/data" --listen 127.0.0.1:50071 --log warn >>"$dir/server.log" 2>&1 &
  echo $! >"$dir/server.pid"
  for _ in $(seq 1 100); do [ -s "$dir/data/bootstrap-admin-token" ] && grep -q listening "$dir/server.log" && return; sleep 0.1; done
}
start_server
target/release/command-load --server http://127.0.0.1:50071 --admin-token-file "$dir/data/bootstrap-admin-token" \
  --clients 64 --rate "$rate" --seconds "$seconds" --acked-out "$dir/acked.txt" >"$dir/load.json" 2>"$dir/load.err" &
load=$!
sleep $((seconds / 2))
kill -9 "$(cat "$dir/server.pid")"
echo "killed the server at $((seconds / 2)) s" >&2
sleep 1
start_server
wait $load
kill -TERM "$(cat "$dir/server.pid")"; sleep 2
tail -1 "$dir/load.json"
target/release/verify-acked --data-dir "$dir/data" --acked "$dir/acked.txt"
