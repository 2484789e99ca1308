#!/usr/bin/env bash
# README command 2: run every test on a fresh Debian 12 or 13 machine (as root).
# Installs Ceph from Debian's packages (the host's release: Pacific on 12, Reef
# on 13), builds a cached root for the other release, installs tox, then runs
# the unit tests, linters and docs build, the whole real-cluster suite on the
# host's release and its release-sensitive part on the other release.
#
#   LM_OTHER_TESTS   files run on the other release (default below); "all" for
#                    the whole suite, "none" to skip the other release
#   TOXENV           the fast envs to run (default py3,flake8,mypy,docs)
set -euo pipefail
cd "$(dirname "$0")/.."
other=$(/usr/bin/python3 -c 'import sys; sys.path.insert(0, "qa/standalone")
import release_root as r
print({"pacific": "reef", "reef": "pacific"}.get(r.host_release() or "", ""))')
/usr/bin/python3 qa/standalone/cluster.py install --dashboard
if [ -n "$other" ] && [ "${LM_OTHER_TESTS:-}" != none ]; then
    /usr/bin/python3 qa/standalone/cluster.py install --release "$other" --dashboard
fi
if ! command -v tox >/dev/null 2>&1; then
    python3 -m pip install --quiet 'tox>=4'
fi
tox -e "${TOXENV:-py3,flake8,mypy,docs}"
if [ $# -gt 0 ]; then
    tox -e integration -- "$@"
else
    tox -e integration                  # `--` with nothing after would drop the default paths
fi
if [ -n "$other" ] && [ "${LM_OTHER_TESTS:-}" != none ]; then
    t=qa/standalone/rbd_livemigrate
    tests=${LM_OTHER_TESTS:-"$t/test_lifecycle.py $t/test_faults.py $t/test_caps.py
        $t/test_dashboard.py $t/test_reconcile.py $t/test_security.py $t/test_bad_inputs.py
        $t/test_verify.py $t/test_cutover.py $t/test_import.py"}
    [ "$tests" = all ] && tests=$t
    # shellcheck disable=SC2086
    LM_RELEASE=$other tox -e integration -- $tests
fi
