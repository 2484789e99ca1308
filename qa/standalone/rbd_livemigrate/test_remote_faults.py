"""
Remote moves (issue 27) through the module under faults, on two Tentacle
clusters (the fixtures of test_remote.py: ``pair`` = (destination running
the module, remote), ``registered`` = the remote ``east`` added):

- a clone on the remote arrives flattened, equal to the clone's HEAD;
- the destination's mgr killed -9 mid-copy: the task commits on its own;
- the remote's OSD stopped mid-copy: the task is retried, not committed,
  and commits once the remote is back.

Every image is small and throttled (``--bandwidth-limit``) so that the
copy lasts a few seconds.  Run:

    LM_RELEASE=tentacle flock /tmp/lm-integ.lock tox -e integration -- \
        qa/standalone/rbd_livemigrate/test_remote_faults.py
"""

import json
import os
import stat
import time
from typing import Any, Dict, List, Tuple

from conftest import rbdtools
from cluster import Cluster, wait_for
from test_remote import Seen, _snaps_on, pair, registered, rw_user, sums, tentacle

__all__ = ['pair', 'registered', 'rw_user']     # fixtures used here, by name

MiB = 1 << 20
CONF_FILES = ('east.conf', 'east.keyring')


def conf_dir(dest: Cluster) -> str:
    """The module's remote_conf_dir (its default: <run_dir>/rbd_livemigrate)."""
    return os.path.join(dest.run_dir, 'rbd_livemigrate')


def files(dest: Cluster) -> Dict[str, str]:
    """{name: mode} of what is in the remote conf dir."""
    d = conf_dir(dest)
    try:
        names = sorted(os.listdir(d))
    except FileNotFoundError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = oct(stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode))
        except FileNotFoundError:
            pass
    return out


def restart_mgr(dest: Cluster) -> None:
    """kill -9 the destination's (only) mgr and start it again."""
    active = dest.active_mgr() or dest.mgr_ids[0]
    dest.kill_mgr(active)
    dest.start_mgr(active)
    dest.wait_module_ready(timeout=90)


class Watch:
    """``status`` of one task polled until a condition, everything it said kept
    (None while the mgr does not answer)."""

    def __init__(self, seen: Seen, task_id: str, dest: Cluster) -> None:
        self.seen = seen
        self.task_id = task_id
        self.dest = dest
        self.said: List[Dict[str, Any]] = []
        self.last: Dict[str, Any] = {}
        # the remote conf dir listed just before each answer that was not
        # terminal (the task was live then: its files must have been there)
        self.files_while_live: List[Dict[str, str]] = []

    def poll(self) -> Dict[str, Any]:
        before = files(self.dest)
        rc, out, _ = self.seen.lm.run('status', self.task_id, '--format', 'json', timeout=30)
        if rc == 0:
            self.last = json.loads(out)
            self.said.append(self.last)
            if self.last['state'] not in ('committed', 'aborted', 'failed'):
                self.files_while_live.append(before)
        return self.last

    def until(self, pred: Any, timeout: float, what: str) -> Dict[str, Any]:
        wait_for(lambda: bool(pred(self.poll())), timeout, what, 0.3)
        return self.last

    def states(self) -> List[str]:
        out: List[str] = []
        for s in self.said:
            if not out or out[-1] != s['state']:
                out.append(s['state'])
        return out


def copying(t: Dict[str, Any]) -> bool:
    return t.get('state') == 'executing' and (t.get('bytes_copied') or 0) > 0


@tentacle
def test_remote_clone_moved_flattened(pair: Tuple[Cluster, Cluster],
                                      registered: Seen) -> None:
    """A clone on the remote (parent with data and a protected snapshot, the
    clone with writes of its own) moved by the module: the destination has
    no parent and equals the clone's HEAD; parent and clone unchanged, no
    module snapshot on either end, nothing in either trash."""
    dest, remote = pair
    seen = registered
    rbdtools.create_image(remote.conf, 'rbd/fgold', 16 * MiB, 12 * MiB, seed='fgold')
    remote.rbd('snap', 'create', 'rbd/fgold@base')
    remote.rbd('snap', 'protect', 'rbd/fgold@base')
    remote.rbd('clone', 'rbd/fgold@base', 'p2/fclone')
    with rbdtools.opened(remote.conf, 'p2/fclone') as img:
        rbdtools.write(img, 2 * MiB, 3 * MiB, 'fclone-own')       # over the parent's data
        rbdtools.write(img, 13 * MiB, 2 * MiB, 'fclone-new')      # where the parent has none
    parent_before = sums(remote, 'rbd/fgold')
    clone_before = sums(remote, 'p2/fclone')
    assert clone_before['HEAD'] != parent_before['base']
    task = seen.ok('add', 'east:p2/fclone', 'rbd/fclone', '--format', 'json')
    done = seen.lm.wait(task['id'], timeout=120)
    assert done['state'] == 'committed'
    assert rbdtools.parent_of(dest.conf, 'rbd/fclone') is None
    assert sums(dest, 'rbd/fclone') == {'HEAD': clone_before['HEAD']}
    assert _snaps_on(dest, 'rbd/fclone') == []
    assert _snaps_on(remote, 'p2/fclone') == []
    assert sums(remote, 'p2/fclone') == clone_before
    assert rbdtools.parent_of(remote.conf, 'p2/fclone') == 'rbd/fgold@base'
    assert sums(remote, 'rbd/fgold') == parent_before
    assert _snaps_on(remote, 'rbd/fgold') == ['base']
    for c, pool in ((dest, 'rbd'), (remote, 'rbd'), (remote, 'p2')):
        assert rbdtools.trash_names(c.conf, pool) == [], (c.dir, pool)


@tentacle
def test_remote_move_survives_mgr_kill(pair: Tuple[Cluster, Cluster],
                                       registered: Seen) -> None:
    """kill -9 of the destination's mgr while a remote task copies: the
    restarted module sweeps the files a killed mgr left, writes the task's
    again, and the task commits on its own, never reported failed; the data
    equals the remote's, no module snapshot is left, the files go."""
    dest, remote = pair
    seen = registered
    rbdtools.create_image(remote.conf, 'rbd/kimg', 24 * MiB, 16 * MiB, seed='kimg', snaps=1)
    before = sums(remote, 'rbd/kimg')
    task = seen.ok('add', 'east:rbd/kimg', 'rbd/kimg', '--bandwidth-limit', '4M',
                   '--format', 'json')
    watch = Watch(seen, task['id'], dest)
    watch.until(copying, 90, 'the remote task to copy')
    during = files(dest)
    assert {n: during.get(n) for n in CONF_FILES} == {n: '0o600' for n in CONF_FILES}, during
    # a killed mgr's leftovers (a remote no task uses): swept at start
    for n in ('ghost.conf', 'ghost.keyring'):
        with open(os.path.join(conf_dir(dest), n), 'w') as f:
            f.write('# left by a killed mgr\n')
    live_before = len(watch.files_while_live)
    restart_mgr(dest)
    wait_for(lambda: not any(n.startswith('ghost.') for n in files(dest)), 30,
             'the restarted module to sweep the files of a remote no task uses')
    watch.until(lambda t: t['state'] in ('committed', 'failed', 'aborted'), 120,
                'the task to end after the mgr restart')
    assert 'failed' not in watch.states(), watch.states()
    assert watch.last['state'] == 'committed', watch.last
    # the files were there whenever the task was live, after the restart too
    assert len(watch.files_while_live) > live_before, watch.states()
    for seen_files in watch.files_while_live:
        assert {n: seen_files.get(n) for n in CONF_FILES} == \
            {n: '0o600' for n in CONF_FILES}, seen_files
    assert sums(dest, 'rbd/kimg') == before
    assert _snaps_on(remote, 'rbd/kimg') == ['snap1'] and _snaps_on(dest, 'rbd/kimg') == ['snap1']
    assert rbdtools.trash_names(dest.conf, 'rbd') == []
    left = files(dest)
    assert not any(n.startswith('east.') for n in left), left


@tentacle
def test_remote_osd_stopped_mid_copy(pair: Tuple[Cluster, Cluster],
                                     registered: Seen) -> None:
    """The remote's only OSD stopped (SIGSTOP) while the task copies, with
    remote_op_timeout_seconds 5: the task is not committed, it is retried
    (status shows the error and more than one attempt: no call hangs), and
    once the remote is back it resumes and commits with the data equal."""
    dest, remote = pair
    seen = registered
    lm = seen.lm
    lm.set_option('remote_op_timeout_seconds', '5')     # runtime=False: a restart reads it
    lm.set_option('retry_max_attempts', '20')
    restart_mgr(dest)
    rbdtools.create_image(remote.conf, 'rbd/simg', 32 * MiB, 24 * MiB, seed='simg')
    before = sums(remote, 'rbd/simg')
    task = seen.ok('add', 'east:rbd/simg', 'rbd/simg', '--bandwidth-limit', '4M',
                   '--format', 'json')
    watch = Watch(seen, task['id'], dest)
    watch.until(copying, 90, 'the remote task to copy')
    with open(os.path.join(conf_dir(dest), 'east.conf')) as f:
        assert 'rados_osd_op_timeout = 5' in f.read()
    osd = remote.osd_pid(0)
    assert osd is not None
    remote.stop_osd(0)
    stopped = time.monotonic()
    try:
        # retried: an error shown, and a second attempt (no librbd or remote
        # client call waits for the remote without a bound)
        watch.until(lambda t: (t.get('attempts') or 0) >= 2, 60,
                    'the task to be retried twice while the remote is stopped')
        assert watch.last['error'], watch.last
        assert 'committed' not in watch.states() and 'failed' not in watch.states()
    finally:
        remote.cont_osd(0)
    away = time.monotonic() - stopped
    end = watch.until(lambda t: t['state'] in ('committed', 'failed', 'aborted'), 120,
                      'the task to end once the remote is back')
    assert end['state'] == 'committed', (end, watch.states())
    assert 'failed' not in watch.states()
    assert sums(dest, 'rbd/simg') == before, 'after {:.0f} s away'.format(away)
    assert _snaps_on(remote, 'rbd/simg') == [] and _snaps_on(dest, 'rbd/simg') == []
    assert rbdtools.trash_names(dest.conf, 'rbd') == []
