#!/usr/bin/env bash
#
# Workunit for the rbd_livemigrate mgr module (ceph rbd livemigrate ...).
#
# Runs against whatever cluster the ceph/rbd CLIs reach (set CEPH_CONF, or
# CEPH_ARGS, as for any workunit).  Needs only ceph, rbd, python3 (JSON) and
# coreutils; the module must be enabled (ceph mgr module enable rbd_livemigrate).
#
#   POOL       source pool        (default rbd)   created and rbd-initialised if missing
#   DEST_POOL  destination pool   (default rbd2)  created and rbd-initialised if missing
#   WAIT_SECONDS  how long wait_for polls before failing (default 120)
#
# Pools this script creates are deleted at the end (when the monitors allow
# pool deletion); the images it creates (named lmwu-<pid>-*) are always removed.
set -ex
set -o pipefail

POOL=${POOL:-rbd}
DEST_POOL=${DEST_POOL:-rbd2}
WAIT_SECONDS=${WAIT_SECONDS:-120}
PREFIX=lmwu-$$-
CREATED_POOLS=()
TASKS=()
QUEUE_PAUSED=

fail() {
  set +x
  echo "FAIL: $*" >&2
  exit 1
}

setup() {
  trap 'cleanup' EXIT
  trap 'cleanup 130' INT
  trap 'cleanup 143' TERM
  TEMPDIR=$(mktemp -d)

  ceph rbd livemigrate ls >/dev/null ||
    fail "the rbd_livemigrate mgr module does not answer: ceph mgr module enable rbd_livemigrate"

  [[ "${POOL}" != "${DEST_POOL}" ]] || fail "POOL and DEST_POOL must differ (both ${POOL})"
  local pool pools
  pools=$(ceph osd pool ls)
  for pool in "${POOL}" "${DEST_POOL}"; do
    if ! grep -x -- "${pool}" >/dev/null <<<"${pools}"; then
      ceph osd pool create "${pool}" 8
      CREATED_POOLS+=("${pool}")
      rbd pool init "${pool}"
      # the module checks pools against the mgr's copy of the osd map
      wait_for mgr_knows_pool "${pool}" || fail "the mgr does not see pool ${pool}"
    fi
  done
}

# cleanup [RC]: cancel our live tasks, remove our images and pools; exit RC
# (default: the status of the command that ended the script)
cleanup() {
  local rc=$?
  rc=${1:-${rc}}
  trap - INT TERM EXIT
  set +e
  local task
  ((${#TASKS[@]})) && for task in $(ceph rbd livemigrate ls --format json | python3 -c '
import json, sys
mine = set(sys.argv[1:])
for t in json.load(sys.stdin):
    if t["id"] in mine and t["state"] not in ("committed", "aborted", "failed"):
        print(t["id"])' "${TASKS[@]}"); do
    ceph rbd livemigrate cancel "${task}"
    # cancel returns at once; the abort ends before the images go
    for _ in $(seq 120); do
      task_in_state "${task}" aborted committed failed && break
      sleep 1
    done
  done
  [[ -n "${QUEUE_PAUSED}" ]] && ceph rbd livemigrate resume >/dev/null
  local pool image
  for pool in "${POOL}" "${DEST_POOL}"; do
    [[ " ${CREATED_POOLS[*]} " == *" ${pool} "* ]] && continue    # goes as a whole
    for image in $(rbd ls "${pool}" | grep "^${PREFIX}"); do
      rbd rm --no-progress "${pool}/${image}" 2>/dev/null ||
        { rbd snap purge --no-progress "${pool}/${image}" &&
          rbd rm --no-progress "${pool}/${image}"; }
    done
  done
  for pool in "${CREATED_POOLS[@]}"; do
    ceph osd pool rm "${pool}" "${pool}" --yes-i-really-really-mean-it ||
      echo "WARNING: could not delete pool ${pool} (mon_allow_pool_delete?)" >&2
  done
  rm -rf "${TEMPDIR}"
  exit ${rc}
}

# wait_for FN ARGS...: poll FN every half second for WAIT_SECONDS
wait_for() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    "$@" && return 0
    sleep 0.5
  done
  echo "timed out after ${WAIT_SECONDS}s waiting for: $*" >&2
  return 1
}

# json_get KEY < JSON: print one top-level field (strings bare, others as JSON)
json_get() {
  python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print(
    v if isinstance(v, str) else json.dumps(v))' "$1"
}

mgr_knows_pool() {
  local err
  err=$(ceph rbd livemigrate add "$1/${PREFIX}probe" "$1/${PREFIX}probe2" --dry-run 2>&1 \
    >/dev/null || true)
  ! grep -q "pool '$1' does not exist" <<<"${err}"
}

# ---- images and data ---------------------------------------------------------

# new_image SPEC SIZE: an image full of random data (rbd bench alone would not
# do: it writes one constant byte, so misplaced objects would go unnoticed)
new_image() {
  local spec=$1 size=$2
  head -c "${size}" /dev/urandom | rbd import --no-progress - "${spec}"
}

# snap_and_overwrite SPEC SNAP: snapshot, then overwrite the first MiB so the
# head and the snapshot differ
snap_and_overwrite() {
  local spec=$1 snap=$2
  rbd snap create --no-progress "${spec}@${snap}"
  rbd bench --io-type write --io-size 64K --io-threads 1 --io-total 1M "${spec}" >/dev/null
}

md5() {
  rbd export --no-progress "$@" - | md5sum | cut -d' ' -f1
}

migrating() {
  local out
  out=$(rbd status --format json "$1")
  [[ "${out}" == *'"migration"'* ]]
}

not_migrating() {
  local out
  out=$(rbd status --format json "$1")
  [[ "${out}" != *'"migration"'* ]]
}

image_gone() {
  ! rbd info "$1" >/dev/null 2>&1
}

# ---- tasks ---------------------------------------------------------------------

# add_task ARGS...: ceph rbd livemigrate add ARGS; the new task's id in TASK,
# the task as add printed it in ADDED
add_task() {
  local out
  out=$(ceph rbd livemigrate add "$@" --format json)
  ADDED=${out}
  TASK=$(json_get id <<<"${out}")
  [[ -n "${TASK}" && "${TASK}" != null ]] || fail "add $* printed no task id: ${out}"
  TASKS+=("${TASK}")
}

task_field() {
  ceph rbd livemigrate status "$1" --format json | json_get "$2"
}

task_in_state() {
  local task=$1
  shift
  local state
  state=$(task_field "${task}" state)
  local s
  for s in "$@"; do
    [[ "${state}" == "${s}" ]] && return 0
  done
  case "${state}" in
    committed|aborted|failed) fail "task ${task} ended ${state}, expected $*: $(
      ceph rbd livemigrate status "${task}")" ;;
  esac
  return 1
}

task_copying() {
  local out
  out=$(ceph rbd livemigrate status "$1" --format json)
  python3 -c '
import json, sys
t = json.load(sys.stdin)
sys.exit(0 if t["state"] == "executing" and t["progress"] > 0 else 1)' <<<"${out}"
}

# ---- scenarios -----------------------------------------------------------------

test_migrate_to_pool() {
  echo "test_migrate_to_pool"
  local image=${PREFIX}pool
  new_image "${POOL}/${image}" 16M
  snap_and_overwrite "${POOL}/${image}" snap1
  local head snap
  head=$(md5 "${POOL}/${image}")
  snap=$(md5 --snap snap1 "${POOL}/${image}")
  [[ "${head}" != "${snap}" ]]

  local task
  add_task "${POOL}/${image}" "${DEST_POOL}/${image}"
  task=${TASK}
  wait_for task_in_state "${task}" committed
  [[ "$(task_field "${task}" progress)" == 1.0 ]]

  [[ "$(md5 "${DEST_POOL}/${image}")" == "${head}" ]]
  [[ "$(md5 --snap snap1 "${DEST_POOL}/${image}")" == "${snap}" ]]
  image_gone "${POOL}/${image}"
  # a second add of a committed migration is refused (the source is gone)
  if ceph rbd livemigrate add "${POOL}/${image}" "${DEST_POOL}/${image}"; then
    fail "a second add of a committed migration was accepted"
  fi
}

test_layout_in_place() {
  echo "test_layout_in_place"
  local image=${POOL}/${PREFIX}layout
  new_image "${image}" 8M
  snap_and_overwrite "${image}" snap1
  local head snap
  head=$(md5 "${image}")
  snap=$(md5 --snap snap1 "${image}")
  [[ "$(rbd info --format json "${image}" | json_get order)" == 22 ]]

  local task
  add_task "${image}" --object-size 1M
  task=${TASK}
  [[ "$(json_get destination <<<"${ADDED}")" == "${image}" ]]
  wait_for task_in_state "${task}" committed

  [[ "$(rbd info --format json "${image}" | json_get order)" == 20 ]]
  [[ "$(md5 "${image}")" == "${head}" ]]
  [[ "$(md5 --snap snap1 "${image}")" == "${snap}" ]]
  # nothing left behind in the trash
  if rbd trash ls --all "${POOL}" | grep -- "${PREFIX}layout"; then
    fail "the migration left the source in the trash"
  fi
}

test_manual_commit() {
  echo "test_manual_commit"
  local image=${PREFIX}manual
  new_image "${POOL}/${image}" 8M
  local head
  head=$(md5 "${POOL}/${image}")

  local task
  add_task "${POOL}/${image}" "${DEST_POOL}/${image}" --manual-commit
  task=${TASK}
  wait_for task_in_state "${task}" executed
  # it stays executed until told
  sleep 1
  [[ "$(task_field "${task}" state)" == executed ]]
  migrating "${DEST_POOL}/${image}"
  # the destination already serves the data
  [[ "$(md5 "${DEST_POOL}/${image}")" == "${head}" ]]

  ceph rbd livemigrate commit "${task}"
  wait_for task_in_state "${task}" committed
  not_migrating "${DEST_POOL}/${image}"
  [[ "$(md5 "${DEST_POOL}/${image}")" == "${head}" ]]
  image_gone "${POOL}/${image}"
  # commit of a committed task is refused
  if ceph rbd livemigrate commit "${task}"; then
    fail "commit of a committed task was accepted"
  fi
}

test_cancel_executing() {
  echo "test_cancel_executing"
  local image=${PREFIX}cancel
  new_image "${POOL}/${image}" 32M
  snap_and_overwrite "${POOL}/${image}" snap1
  local head snap
  head=$(md5 "${POOL}/${image}")
  snap=$(md5 --snap snap1 "${POOL}/${image}")

  local task
  add_task "${POOL}/${image}" "${DEST_POOL}/${image}" --bandwidth-limit 4M
  task=${TASK}
  wait_for task_copying "${task}"
  ceph rbd livemigrate cancel "${task}"
  wait_for task_in_state "${task}" aborted

  image_gone "${DEST_POOL}/${image}"
  not_migrating "${POOL}/${image}"
  [[ "$(md5 "${POOL}/${image}")" == "${head}" ]]
  [[ "$(md5 --snap snap1 "${POOL}/${image}")" == "${snap}" ]]
  # cancelling again is refused
  if ceph rbd livemigrate cancel "${task}"; then
    fail "cancel of an aborted task was accepted"
  fi
}

test_dry_run() {
  echo "test_dry_run"
  local image=${PREFIX}dry
  new_image "${POOL}/${image}" 4M
  rbd create --size 1M "${DEST_POOL}/${image}"
  local head dest_head
  head=$(md5 "${POOL}/${image}")
  dest_head=$(md5 "${DEST_POOL}/${image}")
  local before
  before=$(ceph rbd livemigrate ls --format json | python3 -c \
    'import json, sys; print(len(json.load(sys.stdin)))')

  # a client holds the source open: rbd watch runs until its stdin closes
  mkfifo "${TEMPDIR}/hold"
  rbd watch "${POOL}/${image}" <"${TEMPDIR}/hold" >/dev/null &
  local watch_pid=$!
  exec 7>"${TEMPDIR}/hold"
  wait_for has_watchers "${POOL}/${image}"

  local rc=0
  ceph rbd livemigrate add "${POOL}/${image}" "${DEST_POOL}/${image}" --object-size 1M \
    --dry-run --format json >"${TEMPDIR}/dry.json" 2>"${TEMPDIR}/dry.err" || rc=$?
  exec 7>&-
  wait ${watch_pid} || true
  cat "${TEMPDIR}/dry.json" "${TEMPDIR}/dry.err"

  [[ ${rc} -ne 0 ]] || fail "a dry run with blockers exited 0"
  python3 - "${TEMPDIR}/dry.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
assert report['dry_run'] is True and report['ok'] is False, report
errors = sorted(b['error'] for b in report['blockers'])
assert errors == ['EBUSY', 'EEXIST'], errors
assert report['layout'] == {'object_size': 1 << 20}, report['layout']
EOF
  grep -q 'blocker' "${TEMPDIR}/dry.err"
  [[ "$(md5 "${DEST_POOL}/${image}")" == "${dest_head}" ]]

  # without blockers: ok, exit 0, and still nothing happens
  rbd rm --no-progress "${DEST_POOL}/${image}"
  ceph rbd livemigrate add "${POOL}/${image}" "${DEST_POOL}/${image}" --dry-run \
    --format json >"${TEMPDIR}/dry.json"
  [[ "$(json_get ok <"${TEMPDIR}/dry.json")" == true ]]

  # nothing changed: no task, no migration, same data, no destination
  [[ "$(ceph rbd livemigrate ls --format json | python3 -c \
    'import json, sys; print(len(json.load(sys.stdin)))')" == "${before}" ]]
  not_migrating "${POOL}/${image}"
  [[ "$(md5 "${POOL}/${image}")" == "${head}" ]]
  image_gone "${DEST_POOL}/${image}"
}

has_watchers() {
  rbd status --format json "$1" | python3 -c '
import json, sys
sys.exit(0 if json.load(sys.stdin).get("watchers") else 1)'
}

test_pause_resume() {
  echo "test_pause_resume"
  local image=${PREFIX}pause
  new_image "${POOL}/${image}" 32M
  local head
  head=$(md5 "${POOL}/${image}")

  # one task: held inside the copy
  local task
  add_task "${POOL}/${image}" "${DEST_POOL}/${image}" --bandwidth-limit 4M
  task=${TASK}
  wait_for task_copying "${task}"
  ceph rbd livemigrate pause "${task}"
  sleep 1
  local p1
  p1=$(task_field "${task}" progress)
  sleep 2
  # held inside the copy: still executing, no progress, blocked_reason paused
  ceph rbd livemigrate status "${task}" --format json | python3 -c '
import json, sys
t = json.load(sys.stdin)
assert t["paused"] is True and t["state"] == "executing", t
assert t["blocked_reason"] == "paused", t["blocked_reason"]
assert t["progress"] == float(sys.argv[1]) < 0.95, (sys.argv[1], t["progress"])' "${p1}"
  ceph rbd livemigrate resume "${task}"
  wait_for task_in_state "${task}" committed
  [[ "$(md5 "${DEST_POOL}/${image}")" == "${head}" ]]

  # the whole queue: a task added while it is paused does not start
  local image2=${PREFIX}qpause
  new_image "${POOL}/${image2}" 4M
  head=$(md5 "${POOL}/${image2}")
  QUEUE_PAUSED=1
  [[ "$(ceph rbd livemigrate pause --format json)" == *'"queue_paused": true'* ]]
  add_task "${POOL}/${image2}" "${DEST_POOL}/${image2}"
  task=${TASK}
  sleep 1
  [[ "$(task_field "${task}" state)" == queued ]]
  local listing
  listing=$(ceph rbd livemigrate ls)
  [[ "$(grep "${task}" <<<"${listing}")" == *'queue paused'* ]]
  [[ "$(ceph rbd livemigrate resume --format json)" == *'"queue_paused": false'* ]]
  QUEUE_PAUSED=
  wait_for task_in_state "${task}" committed
  [[ "$(md5 "${DEST_POOL}/${image2}")" == "${head}" ]]
}

setup
test_migrate_to_pool
test_layout_in_place
test_manual_commit
test_cancel_executing
test_dry_run
test_pause_resume

echo OK
