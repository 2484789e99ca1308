#!/usr/bin/env bash
# README command 1: live-migrate an RBD image between pools through
# `ceph rbd livemigrate add`, inside a real ceph-mgr, on a throwaway cluster.
#
#   DEMO_DIR   where the cluster lives      (default /tmp/rbd_livemigrate-demo)
#   DEMO_MB    MiB of data written          (default 512)
#   DEMO_RATE  copy rate limit, e.g. 200M   (default 256M, so the bar can be seen)
#   DEMO_RELEASE  pacific, reef or tentacle  (default: the host's own packages)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${DEMO_DIR:-/tmp/rbd_livemigrate-demo}
MB=${DEMO_MB:-512}
RATE=${DEMO_RATE:-256M}
PY=/usr/bin/python3
REL=()
[ -n "${DEMO_RELEASE:-}" ] && REL=(--release "$DEMO_RELEASE")

$PY qa/standalone/cluster.py install "${REL[@]}"
if [ -f "$DIR/pids" ]; then
    $PY qa/standalone/cluster.py stop --dir "$DIR" --purge >/dev/null 2>&1 || true
fi
rm -rf "$DIR"
$PY qa/standalone/cluster.py start --dir "$DIR" --pools pool-a,pool-b --osds 2 \
    --osd-bytes $(( (MB * 3 / 2 + 512) ))M "${REL[@]}"
export CEPH_CONF=$DIR/ceph.conf
# the cluster's own release's ceph and rbd (chroot'ed into its root when the host
# does not carry it; the host's own binaries otherwise)
ceph() { $PY qa/standalone/cluster.py exec --dir "$DIR" -- ceph "$@"; }
rbd() { $PY qa/standalone/cluster.py exec --dir "$DIR" -- rbd "$@"; }

echo "== writing $MB MiB of recognisable data into pool-a/vm-disk (plus a snapshot)"
PYTHONPATH=qa/standalone $PY - "$CEPH_CONF" "$MB" <<'PYEOF'
import sys
import rbdtools
conf, mb = sys.argv[1], int(sys.argv[2])
rbdtools.create_image(conf, 'pool-a/vm-disk', 2 * mb << 20, written=mb << 20,
                      seed='rbd_livemigrate-demo', snaps=1)
PYEOF
checksums() {
    PYTHONPATH=qa/standalone $PY -c 'import json, sys, rbdtools
print(json.dumps(rbdtools.checksums(sys.argv[1], sys.argv[2]), sort_keys=True))' "$CEPH_CONF" "$1"
}
SRC_SUM=$(checksums pool-a/vm-disk)
echo "   source checksums (head and snapshot): $SRC_SUM"

echo "== ceph rbd livemigrate add pool-a/vm-disk pool-b/vm-disk --bandwidth-limit $RATE"
ceph rbd livemigrate add pool-a/vm-disk pool-b/vm-disk --bandwidth-limit "$RATE" | sed 's/^/   /'
TASK=$(ceph rbd livemigrate status pool-b/vm-disk --format json)
ID=$($PY -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$TASK")

echo "== progress (ceph rbd livemigrate status $ID; ceph progress)"
STATE=queued
while :; do
    S=$(ceph rbd livemigrate status "$ID" --format json)
    read -r STATE LINE < <($PY -c 'import json, sys
t = json.loads(sys.argv[1])
bar = "#" * int(t["progress"] * 40)
rate = "%.0f MiB/s" % (t["rate_bytes_per_sec"] / 2**20) if t["rate_bytes_per_sec"] else "-"
print(t["state"], "[%-40s] %5.1f%%  %-10s %s" % (bar, t["progress"] * 100, t["state"], rate))' "$S")
    printf '\r   %s   ' "$LINE"
    case $STATE in committed|failed|aborted) break;; esac
    sleep 0.5
done
echo
ceph progress

if [ "$STATE" != committed ]; then
    echo "migration ended $STATE:"; ceph rbd livemigrate status "$ID"; exit 1
fi
DST_SUM=$(checksums pool-b/vm-disk)
echo "== destination checksums: $DST_SUM"
[ "$SRC_SUM" = "$DST_SUM" ] || { echo "CHECKSUM MISMATCH"; exit 1; }
echo "   identical to the source (head and snapshot)"
if rbd ls pool-a | grep -qx vm-disk; then echo "source still in pool-a"; exit 1; fi
echo "   rbd ls pool-a: $(rbd ls pool-a | tr '\n' ' ')(vm-disk is gone)"
ceph progress json | $PY -c 'import json, sys
d = json.load(sys.stdin)
ev = [e for e in d["completed"] if e.get("refs", {}).get("origin") == "rbd_livemigrate"]
assert ev, "no completed progress event"
print("   ceph progress json: completed event:", ev[-1]["message"])'
echo
echo "OK. The cluster is still running in $DIR:"
echo "   export CEPH_CONF=$DIR/ceph.conf; ceph rbd livemigrate ls"
echo "Tear it down with:"
echo "   /usr/bin/python3 qa/standalone/cluster.py stop --dir $DIR --purge"
