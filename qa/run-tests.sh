#!/usr/bin/env bash
# README command 2: run every test on a fresh Debian 12 or 13 machine (as root).
# Installs Ceph from Debian's packages (the host's release: Pacific on 12, Reef
# on 13), builds a cached root for each other release (Debian 12: Reef from
# trixie and Tentacle from forky), installs tox, then runs the unit tests,
# linters and docs build, the whole real-cluster suite on the host's release
# and its release-sensitive part on each other release.
#
#   LM_OTHER_RELEASES  the other releases to run (default: every one the host
#                      does not carry, e.g. "reef tentacle"); "none" for none
#   LM_OTHER_TESTS     files run on every other release (default below: the
#                      release-sensitive part on the newest, Tentacle, a core of
#                      it on an older one); "all" for the whole suite, "none" to
#                      skip the other releases
#   TOXENV             the fast envs to run (default py3,flake8,mypy,docs)
#
# The whole suite on Tentacle alone (after its root is built, e.g. by this script):
#   LM_RELEASE=tentacle tox -e integration
set -euo pipefail
cd "$(dirname "$0")/.."
others=${LM_OTHER_RELEASES:-$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, "qa/standalone")
import release_root as r
print(" ".join(x for x in r.RELEASES if x != r.host_release()))')}
[ "${LM_OTHER_TESTS:-}" = none ] && others=none
[ "$others" = none ] && others=
/usr/bin/python3 qa/standalone/cluster.py install --dashboard
for rel in $others; do
    /usr/bin/python3 qa/standalone/cluster.py install --release "$rel" --dashboard
done
if ! command -v tox >/dev/null 2>&1; then
    python3 -m pip install --quiet 'tox>=4'
fi
tox -e "${TOXENV:-py3,flake8,mypy,docs}"
t=qa/standalone/rbd_livemigrate
# Four heavy files test interrupted librbd steps (lifecycle, faults, the kill -9
# partial-state sample, reconciliation). To keep CI near 35 minutes on 2 cores, each
# submission runs three of them: two on the host's release, one on the newest, chosen by
# the commit (printed below), so every one runs on both within four submissions.
# All of them everywhere: LM_ALL_HEAVY=1 bash qa/run-tests.sh; the whole suite on one
# release: LM_RELEASE=tentacle tox -e integration (the host's: tox -e integration).
heavy=(test_lifecycle.py test_faults.py test_partial_states.py test_reconcile.py)
rev=$(git rev-parse --short=8 HEAD 2>/dev/null || echo 0)
at=$(( 16#${rev:0:4} % ${#heavy[@]} ))
pick=${heavy[$at]}
host_heavy="${heavy[$(( (at + 1) % 4 ))]} ${heavy[$(( (at + 2) % 4 ))]}"
if [ -n "${LM_ALL_HEAVY:-}" ]; then
    host_heavy="${heavy[*]}"
fi
if [ $# -gt 0 ]; then
    tox -e integration -- "$@"
else
    host_tests=$(for f in "$t"/test_*.py; do
        b=$(basename "$f")
        case " ${heavy[*]} " in *" $b "*) case " $host_heavy " in *" $b "*) echo "$f";; esac;;
                                        *) echo "$f";; esac
    done)
    echo "== host: heavy files this submission: $host_heavy (newest release: $pick)"
    # shellcheck disable=SC2086
    tox -e integration -- $host_tests
fi
# the newest release gets the release-sensitive part; an older one that is not the host's
# (Reef on Debian 12) a core of it.
newest_heavy=$t/$pick
if [ -n "${LM_ALL_HEAVY:-}" ]; then
    newest_heavy=$(printf "$t/%s " "${heavy[@]}")
fi
newest="$t/test_acceptance.py $newest_heavy $t/test_caps.py
    $t/test_security.py $t/test_import_security.py
    $t/test_cut_abort.py $t/test_verify.py $t/test_batch_verify.py
    $t/test_cutover.py $t/test_import.py $t/test_dashboard.py $t/test_remote.py
    $t/test_remote_faults.py"
core="$t/test_acceptance.py $t/test_caps.py $t/test_dashboard.py"
last=$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, "qa/standalone")
import release_root as r
print(r.RELEASES[-1])')
for rel in $others; do
    if [ -n "${LM_OTHER_TESTS:-}" ]; then tests=$LM_OTHER_TESTS
    elif [ "$rel" = "$last" ]; then tests=$newest
    else tests=$core
    fi
    [ "$tests" = all ] && tests=$t
    echo "== $rel: $(echo $tests | wc -w) path(s): $(echo $tests | tr ' ' '\n' | xargs -n1 basename | tr '\n' ' ')"
    # shellcheck disable=SC2086
    LM_RELEASE=$rel tox -e integration -- $tests
done
