#!/usr/bin/env bash
# CaptureLead through gRPC, 64 clients, alternating two builds (docs/PERFORMANCE.md,
# "2026-12-06 (second session)"). BASE and NEW are directories holding the release binaries
# crm-server and command-load. A fresh server (empty data directory) per run; prints the
# commands/s, the p99, the server's CPU per command (user + sys from /proc) and the load
# generator's CPU.
#   ROUNDS=5 COMMANDS=60000 benches/scripts/ab-capture.sh /tmp/base /tmp/new
set -euo pipefail
BASE=$1 NEW=$2 ROUNDS=${ROUNDS:-5} N=${COMMANDS:-60000}
run(){
  rm -rf /tmp/crm-cmd
  "$1/crm-server" --data-dir /tmp/crm-cmd --listen 127.0.0.1:50062 --log warn > /tmp/ab-srv.log 2>&1 & sp=$!
  sleep 4
  c0=$(awk '{print $14+$15}' /proc/$sp/stat); l=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -o /tmp/ab-client-time -f "client_cpu_s=%U+%S" "$1/command-load" --server http://127.0.0.1:50062 \
    --admin-token-file /tmp/crm-cmd/bootstrap-admin-token --clients 64 --commands "$N" > /tmp/ab-cl.tmp 2>&1
  c1=$(awk '{print $14+$15}' /proc/$sp/stat); kill $sp; wait $sp || true
  echo "$(date +%T) $1 load=$l server_cpu_us_per_cmd=$(( (c1-c0)*10000/N )) $(cat /tmp/ab-client-time) $(tail -1 /tmp/ab-cl.tmp)"
}
for r in $(seq "$ROUNDS"); do run "$BASE"; run "$NEW"; done
