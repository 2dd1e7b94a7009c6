#!/bin/bash
# Every headline benchmark of docs/PERFORMANCE.md in one sequential run, for a quiet machine.
# Build first: cargo build --release -p crm-server -p crm-benches -p crm-matching --bins --examples
# and generate the 1M matching fixture: target/release/gen-fixtures --records 1000000 --seed 7 --out /tmp/fx/1m
# Usage: benches/scripts/measure-all.sh <outdir>   (summary.txt gets one line per measurement)
set -u
O=$(realpath -m "$1"); mkdir -p "$O"; cd "$(dirname "$0")/../.."; R=target/release
log(){ echo "$(date +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a $O/summary.txt; }
al(){ rm -rf /tmp/crm-load; $R/append-load --writers $1 --events $2 --data-dir /tmp/crm-load > $O/al.tmp 2>&1; tail -1 $O/al.tmp >> $O/append-$1.jsonl; log "append w=$1 $(tail -1 $O/al.tmp)"; }
for i in 1 2 3; do al 64 200000; al 1 3000; done
cl(){ rm -rf /tmp/crm-cmd; $R/crm-server --data-dir /tmp/crm-cmd --listen 127.0.0.1:50062 > $O/srv.log 2>&1 & sp=$!; sleep 4; c0=$(awk '{print $14+$15}' /proc/$sp/stat); $R/command-load --server http://127.0.0.1:50062 --admin-token-file /tmp/crm-cmd/bootstrap-admin-token --clients 64 --commands 40000 > $O/cl.tmp 2>&1; c1=$(awk '{print $14+$15}' /proc/$sp/stat); kill $sp; wait $sp; tail -1 $O/cl.tmp >> $O/command.jsonl; log "command server_cpu_ticks=$((c1-c0)) $(tail -1 $O/cl.tmp)"; }
for i in 1 2 3; do cl; done
log "matching re-scan 1M"; /usr/bin/time -f "user=%U sys=%S wall=%e maxrss_kb=%M" $R/evaluate --fixture /tmp/fx/1m > $O/rescan.txt 2>&1; log "rescan $(tail -3 $O/rescan.txt | tr '\n' ' ')"
$R/measure-lookup --fixture /tmp/fx/1m --lookups 20000 --repeat 3 > $O/lookup.txt 2>&1; log "lookup $(tail -4 $O/lookup.txt | tr '\n' ' ')"
$R/examples/intake-load sync --batches 80 --runs 3 > $O/sync.txt 2>&1; log "sync $(tail -2 $O/sync.txt | tr '\n' ' ')"
$R/examples/intake-load subscribe --events 300000 --runs 3 > $O/sub.txt 2>&1; log "subscribe $(tail -2 $O/sub.txt | tr '\n' ' ')"
B=$R/crm-projection-bench; rm -rf /tmp/pb-300k
$B generate --dir /tmp/pb-300k --commands 300000 > $O/gen.txt 2>&1; log "generate $(tail -1 $O/gen.txt)"
$B query --dir /tmp/pb-300k --clients 32 --seconds 20 --server-bin $R/crm-server > $O/query.txt 2>&1; log "query $(tail -4 $O/query.txt | tr '\n' ' ')"
$B lag --dir /tmp/pb-300k --rate 5000 --seconds 30 > $O/lag.txt 2>&1; log "lag $(tail -6 $O/lag.txt | tr '\n' ' ')"
log DONE
