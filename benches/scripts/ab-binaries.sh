#!/usr/bin/env bash
# Alternating A/B of two builds on the same disk in the same minutes (docs/PERFORMANCE.md,
# "2026-12-02: the write-ahead file"). Each of BASE and NEW is a directory holding the
# release binaries append-load, crm-server, command-load and examples/intake-load, e.g. a
# copy of target/release made before and after a change.
#   benches/scripts/ab-binaries.sh /tmp/base /tmp/new
set -euo pipefail
BASE=$1 NEW=$2 ROUNDS=${ROUNDS:-3}
j(){ python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print('eps',d['events_per_sec'],'p50',d['p50_us'],'p99',d['p99_us'],'raw/s',d['fdatasync_per_sec'],'rawp99',d['fdatasync_p99_us'],'x',round(d['events_per_sec']/d['fdatasync_per_sec'],1),'p99/raw',round(d['p99_us']/d['fdatasync_p99_us'],2))"; }
cl(){
  rm -rf /tmp/crm-cmd; "$1/crm-server" --data-dir /tmp/crm-cmd --listen 127.0.0.1:50062 --log warn > /tmp/ab-srv.log 2>&1 & sp=$!; sleep 4
  c0=$(awk '{print $14+$15}' /proc/$sp/stat)
  "$1/command-load" --server http://127.0.0.1:50062 --admin-token-file /tmp/crm-cmd/bootstrap-admin-token --clients 64 --commands 30000 > /tmp/ab-cl.tmp 2>&1
  c1=$(awk '{print $14+$15}' /proc/$sp/stat); kill $sp; wait $sp || true
  echo "$(date +%T) capture $1 server_cpu_us_per_cmd=$(( (c1-c0)*10000/30000 )) $(tail -1 /tmp/ab-cl.tmp)"
}
for r in $(seq $ROUNDS); do
  for b in "$BASE" "$NEW"; do
    echo "$(date +%T) w64 $b load $(cut -d' ' -f1 /proc/loadavg) $("$b/append-load" --writers 64 --events 200000 --data-dir /tmp/ab-al 2>/dev/null | j)"; rm -rf /tmp/ab-al
    echo "$(date +%T) w1  $b load $(cut -d' ' -f1 /proc/loadavg) $("$b/append-load" --writers 1 --events 10000 --data-dir /tmp/ab-al 2>/dev/null | j)"; rm -rf /tmp/ab-al
  done
done
for r in $(seq $ROUNDS); do cl "$BASE"; cl "$NEW"; done
for r in $(seq $ROUNDS); do for b in "$BASE" "$NEW"; do
  echo "$(date +%T) sync $b $("$b/examples/intake-load" sync --batches 80 --runs 1 2>&1 | tail -1)"
done; done
