#!/usr/bin/env bash
# An operator's session: reserve -> run workers and a sender -> status -> free.
#
#   EJFAT_URI=ejfat://ADMIN_TOKEN@control-plane:18008/ examples/operator.sh
#
# Without EJFAT_URI it first starts its own `ejlb serve` (control plane + software LB) on loopback
# and stops it at the end, so the whole session runs on one machine. Knobs (environment):
#   EVENTS (default 200)   WORKERS (2)   RATE events/s (200)   SHAPE (128x128)
#   IDLE seconds a worker waits for more events, once they flow, before it stops (3)
#   DATA_PORT (19522)      the software LB's port when this script starts the server
set -euo pipefail

EVENTS=${EVENTS:-200}
WORKERS=${WORKERS:-2}
RATE=${RATE:-200}
SHAPE=${SHAPE:-128x128}
IDLE=${IDLE:-3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK=$(mktemp -d)
PIDS=()
LB_URI=""

cleanup() {
    [ -n "$LB_URI" ] && EJFAT_URI=$LB_URI ejlb free >/dev/null 2>&1 || true
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "${EJFAT_URI:-}" ]; then
    echo "== no EJFAT_URI: starting ejlb serve on loopback"
    ejlb serve --listen 127.0.0.1:0 --controller-period 0.2 --log-level warning \
        --instance "lb_id=0,ipv4=127.0.0.1,ipv6=none,ports=${DATA_PORT:-19522}" \
        --uri-file "$WORK/admin.uri" >/dev/null 2>"$WORK/serve.log" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -s "$WORK/admin.uri" ] && break; sleep 0.1; done
    [ -s "$WORK/admin.uri" ] || { cat "$WORK/serve.log" >&2; exit 1; }
    export EJFAT_URI=$(cat "$WORK/admin.uri")
fi

echo "== reserve"
eval "$(ejlb reserve "operator-$$" --duration 30m --auto-sender --ip-family ipv4 --export)"
LB_URI=$EJFAT_URI
ejlb status

echo "== start $WORKERS workers"
for i in $(seq "$WORKERS"); do
    python "$HERE/hpc_worker.py" --name "op-worker-$i" --idle "$IDLE" >"$WORK/worker-$i.json" &
    PIDS+=($!)
done
# Workers are ready once the controller gave each of them calendar slots.
for _ in $(seq 100); do
    if ejlb --json status | python -c "import json, sys; w = json.load(sys.stdin)['workers']; \
sys.exit(not (len(w) == $WORKERS and all(x['slotsAssigned'] for x in w)))"; then break; fi
    sleep 0.1
done

echo "== send $EVENTS events"
python "$HERE/daq_sender.py" --events "$EVENTS" --rate "$RATE" --shape "$SHAPE"
ejlb status

echo "== wait for the workers to drain and stop"
for pid in "${PIDS[@]: -$WORKERS}"; do wait "$pid"; done
TOTAL=$(cat "$WORK"/worker-*.json | python -c "import json, sys; print(sum(json.loads(l)['events'] for l in sys.stdin))")
cat "$WORK"/worker-*.json

echo "== free"
ejlb free
LB_URI=""
if [ "$TOTAL" -ne "$EVENTS" ]; then
    echo "received $TOTAL of $EVENTS events" >&2
    exit 1
fi
echo "all $EVENTS events received by $WORKERS workers"
