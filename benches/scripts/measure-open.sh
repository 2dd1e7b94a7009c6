#!/bin/bash
# The benchmarks behind the open targets of issues 2, 3, 4 and 7, one after another, for a
# quiet machine (measure-all.sh adds the duplicate-matching runs of issue 5).
# Build first: cargo build --release -p crm-server -p crm-benches --bins --examples
# Usage: benches/scripts/measure-open.sh <outdir>   (summary.txt gets one line per measurement)
set -u
O=$(realpath -m "$1"); mkdir -p "$O"; cd "$(dirname "$0")/../.."; R=target/release
log(){ echo "$(date +%H:%M:%S) load $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a $O/summary.txt; }
al(){ rm -rf /tmp/crm-load; $R/append-load --writers $1 --events $2 --data-dir /tmp/crm-load > $O/al.tmp 2>&1; tail -1 $O/al.tmp >> $O/append-$1.jsonl; log "append w=$1 $(tail -1 $O/al.tmp)"; }
for i in 1 2 3; do al 64 200000; al 1 3000; done
cl(){ rm -rf /tmp/crm-cmd; $R/crm-server --data-dir /tmp/crm-cmd --listen 127.0.0.1:50062 --log warn > $O/srv.log 2>&1 & sp=$!; sleep 4; c0=$(awk '{print $14+$15}' /proc/$sp/stat); $R/command-load --server http://127.0.0.1:50062 --admin-token-file /tmp/crm-cmd/bootstrap-admin-token --clients 64 --commands 40000 > $O/cl.tmp 2>&1; c1=$(awk '{print $14+$15}' /proc/$sp/stat); kill $sp; wait $sp; tail -1 $O/cl.tmp >> $O/command.jsonl; log "command server_cpu_us_per_cmd=$(( (c1-c0)*10000/40000 )) $(tail -1 $O/cl.tmp)"; }
for i in 1 2 3; do cl; done
$R/examples/intake-load sync --batches 80 --runs 3 > $O/sync.txt 2>&1; log "sync $(tail -4 $O/sync.txt | tr '\n' ' ')"
$R/examples/intake-load subscribe --events 300000 --runs 3 > $O/sub.txt 2>&1; log "subscribe $(tail -4 $O/sub.txt | tr '\n' ' ')"
B=$R/crm-projection-bench; rm -rf /tmp/pb-300k
$B generate --dir /tmp/pb-300k --commands 300000 > $O/gen.txt 2>&1; log "generate $(tail -1 $O/gen.txt)"
for rate in 0 2000 1000; do
  $B query --dir /tmp/pb-300k --clients 32 --seconds 20 --rate $rate --server-bin $R/crm-server > $O/query-$rate.txt 2>&1; log "query rate=$rate $(tail -4 $O/query-$rate.txt | tr '\n' ' ')"
done
$B lag --dir /tmp/pb-300k --rate 5000 --seconds 30 > $O/lag.txt 2>&1; log "lag $(tail -9 $O/lag.txt | tr '\n' ' ')"
log DONE
