#!/usr/bin/env bash
# Alternating A/B of two builds (docs/PERFORMANCE.md, "2026-12-06"): queries under writes, CaptureLead
# and the lag bench. BASE and NEW hold release binaries crm-server, command-load and
# crm-projection-bench; /tmp/pb-300k is a base from `crm-projection-bench generate`.
set -u
BASE=$1 NEW=$2 ROUNDS=${ROUNDS:-3}
for r in $(seq $ROUNDS); do for b in "$BASE" "$NEW"; do
  echo "$(date +%T) query+w500 $b load $(cut -d' ' -f1 /proc/loadavg)"
  "$b/crm-projection-bench" query --dir /tmp/pb-300k --clients 32 --seconds 15 --rate 0 --write-rate 500 --server-bin "$b/crm-server" 2>&1 | tail -4
done; done
for r in $(seq $ROUNDS); do for b in "$BASE" "$NEW"; do
  rm -rf /tmp/crm-cmd; "$b/crm-server" --data-dir /tmp/crm-cmd --listen 127.0.0.1:50062 --log warn > /tmp/ab-srv.log 2>&1 & sp=$!; sleep 4
  c0=$(awk '{print $14+$15}' /proc/$sp/stat)
  "$b/command-load" --server http://127.0.0.1:50062 --admin-token-file /tmp/crm-cmd/bootstrap-admin-token --clients 64 --commands 30000 > /tmp/ab-cl.tmp 2>&1
  c1=$(awk '{print $14+$15}' /proc/$sp/stat); kill $sp; wait $sp
  echo "$(date +%T) capture $b load $(cut -d' ' -f1 /proc/loadavg) server_cpu_us_per_cmd=$(( (c1-c0)*10000/30000 )) $(tail -1 /tmp/ab-cl.tmp)"
done; done
for r in $(seq 2); do for b in "$BASE" "$NEW"; do
  echo "$(date +%T) lag $b load $(cut -d' ' -f1 /proc/loadavg)"
  "$b/crm-projection-bench" lag --dir /tmp/pb-300k --rate 5000 --seconds 20 2>&1 | tail -9
done; done
echo DONE
