#!/usr/bin/python3
"""
Load soak: batches of small images through ``add-pool`` at max_concurrent 8 while the
active mgr is killed (kill -9, then started again), an OSD is frozen (SIGSTOP, a few seconds,
SIGCONT) and an OSD is marked down, at random moments; repeated for N rounds, at Ceph's
default timings (the harness's fast paxos settings are put back to the defaults).

    /usr/bin/python3 qa/soak/soak_load.py --rounds 10 [--images 200] [--seed 21] [--dir DIR]

Each round migrates a fresh set of images in one layout, rotating cross-pool (a -> b),
namespace (a/ns1 -> b/ns2) and in place (c -> c, --object-size 8M), and checks:

- every image of the round got a task, and every task committed (failed, aborted, still
  running after the deadline, or never added: each counted);
- no trash entry in any pool or namespace (a, b, c, a/ns1, b/ns2);
- every destination's checksums (head, and no snapshot: none was taken, so a protective
  snapshot left behind counts) equal its source's before the round; no orphan in ``ls``;
- no ``ls`` poll (about one a second, all round long) claimed ``committed`` for a task
  whose headers say otherwise at that moment (source id gone from its pool and trash,
  destination name resolving to the task's dest_image_id without a migration header),
  and no task that a poll showed committed was later shown in another state.

Prints one line per round and a Markdown table at the end; exits 1 if any round failed.
Not part of CI (one round is a few hundred migrations).
"""

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'standalone'))

from cluster import DEFAULT_MODULE, REPO, Cluster  # noqa: E402
import rbdtools  # noqa: E402
from lmcli import Livemigrate  # noqa: E402

import rados  # noqa: E402
import rbd  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20

# (name, source pool spec, destination pool spec, extra add-pool arguments)
LAYOUTS: List[Tuple[str, str, str, Tuple[str, ...]]] = [
    ('cross-pool', 'a', 'b', ()),
    ('namespace', 'a/ns1', 'b/ns2', ()),
    ('in-place', 'c', 'c', ('--object-size', '8M')),
]
ALL_POOLS = ['a', 'b', 'c', 'a/ns1', 'b/ns2']

# what cluster.py shortens for tests, at Ceph's own defaults (see Cluster._conf_text)
DEFAULT_TIMINGS = {
    'paxos propose interval': ('paxos_propose_interval', '1.0', 'mon'),
    'mgr stats period': ('mgr_stats_period', '5', 'mgr'),
    'mon mgr beacon grace': ('mon_mgr_beacon_grace', '30', 'mon'),
}


def module_snapshot() -> str:
    """The module as committed (``git archive HEAD``), in a folder of its own: a mgr
    restarted by the soak loads the module again, and must not pick up a working tree
    that is being edited meanwhile."""
    out = tempfile.mkdtemp(prefix='lm-soak-module-', dir='/tmp')
    rel = os.path.relpath(DEFAULT_MODULE, REPO)
    archive = subprocess.run(['git', '-C', REPO, 'archive', 'HEAD', rel], check=True,
                             stdout=subprocess.PIPE).stdout
    subprocess.run(['tar', '-x', '-C', out], input=archive, check=True)
    return os.path.join(out, rel)


def default_timings(c: Cluster) -> None:
    """Put the timings cluster.py shortens back to Ceph's defaults: out of the conf file
    (daemons started later read it) and at runtime in the running monitor."""
    with open(c.conf) as f:
        lines = f.read().splitlines()
    kept = [ln for ln in lines if ln.strip().split(' = ')[0] not in DEFAULT_TIMINGS]
    with open(c.conf, 'w') as f:
        f.write('\n'.join(kept) + '\n')
    for name, value, who in DEFAULT_TIMINGS.values():
        if who == 'mon':
            c.ceph('tell', 'mon.a', 'config', 'set', name, value)
    got = c.ceph('tell', 'mon.a', 'config', 'get', 'paxos_propose_interval').stdout
    assert '1' in got, got


# -- raw reads of librbd's metadata (no image opens, no watches) ------------------------------

def _str(buf: bytes, off: int = 0) -> str:
    (n,) = struct.unpack_from('<I', buf, off)
    return buf[off + 4:off + 4 + n].decode()


def _omap(io: rados.Ioctx, oid: str, key: str) -> Optional[bytes]:
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals_by_keys(op, (key,))
        try:
            io.operate_read_op(op, oid)
        except rados.ObjectNotFound:
            return None
        for _, v in it:
            return bytes(v)
    return None


def dir_id(io: rados.Ioctx, name: str) -> Optional[str]:
    v = _omap(io, 'rbd_directory', 'name_' + name)
    return _str(v) if v is not None else None


def header_exists(io: rados.Ioctx, image_id: str) -> bool:
    try:
        io.stat('rbd_header.' + image_id)
        return True
    except rados.ObjectNotFound:
        return False


def migrating(io: rados.Ioctx, image_id: str) -> bool:
    try:
        io.execute('rbd_header.' + image_id, 'rbd', 'migration_get', b'')
        return True
    except (rados.ObjectNotFound, rados.InvalidArgumentError):
        return False


def in_trash(io: rados.Ioctx, image_id: str) -> bool:
    return _omap(io, 'rbd_trash', 'id_' + image_id) is not None


def trash_ids(io: rados.Ioctx) -> List[str]:
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals(op, '', 'id_', 10000)
        try:
            io.operate_read_op(op, 'rbd_trash')
        except rados.ObjectNotFound:
            return []
        return [k[3:] for k, _ in it]


class Headers:
    """One rados client and an ioctx per pool[/namespace], for the truth checks."""

    def __init__(self, conf: str) -> None:
        self.handle = rados.Rados(conffile=conf)
        self.handle.connect(timeout=30)
        self.ios: Dict[str, rados.Ioctx] = {}
        self.lock = threading.Lock()

    def io(self, pool_spec: str) -> rados.Ioctx:
        if pool_spec not in self.ios:
            pool, _, ns = pool_spec.partition('/')
            io = self.handle.open_ioctx(pool)
            io.set_namespace(ns)
            self.ios[pool_spec] = io
        return self.ios[pool_spec]

    def committed_lie(self, task: Dict[str, Any]) -> Optional[str]:
        """Why a ``committed`` claim for ``task`` is false now (None: it holds)."""
        src_pool, _, _ = task['source'].rpartition('/')
        dst_pool, _, dst_name = task['destination'].rpartition('/')
        sid, did = task.get('source_image_id'), task.get('dest_image_id')
        with self.lock:
            sio, dio = self.io(src_pool), self.io(dst_pool)
            if not did:
                return 'committed without a dest_image_id'
            if sid and sid != did and (header_exists(sio, sid) or in_trash(sio, sid)):
                return 'source id {} still {}'.format(
                    sid, 'in the trash' if in_trash(sio, sid) else 'has a header')
            named = dir_id(dio, dst_name)
            if named != did:
                return '{} resolves to {}, not {}'.format(task['destination'], named, did)
            if migrating(dio, did):
                return 'destination {} still has a migration header'.format(did)
        return None

    def trash_left(self) -> Dict[str, List[str]]:
        with self.lock:
            out = {p: trash_ids(self.io(p)) for p in ALL_POOLS}
        return {p: ids for p, ids in out.items() if ids}

    def close(self) -> None:
        for io in self.ios.values():
            io.close()
        self.handle.shutdown()


# -- one round --------------------------------------------------------------------------------

@dataclass
class Round:
    index: int
    layout: str
    images: int
    tasks: int = 0
    committed: int = 0
    failed: List[str] = field(default_factory=list)
    not_done: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)       # images without a task
    leftovers: List[str] = field(default_factory=list)
    bad_checksums: List[str] = field(default_factory=list)
    lies: List[str] = field(default_factory=list)
    faults: Dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ('mgr-kill', 'osd-freeze', 'osd-down'), 0))
    seconds: float = 0.0
    polls: int = 0

    @property
    def ok(self) -> bool:
        return not (self.failed or self.not_done or self.missing or self.leftovers
                    or self.bad_checksums or self.lies) and self.committed == self.images

    def line(self) -> str:
        return ('round {:2d} {:10s} images {} tasks {} committed {} failed {} not-done {} '
                'missing {} leftovers {} bad-checksums {} untruthful-polls {} ({} polls) | '
                'kills {} freezes {} downs {} | {:.0f}s{}').format(
            self.index, self.layout, self.images, self.tasks, self.committed, len(self.failed),
            len(self.not_done), len(self.missing), len(self.leftovers),
            len(self.bad_checksums), len(self.lies), self.polls, self.faults['mgr-kill'],
            self.faults['osd-freeze'], self.faults['osd-down'], self.seconds,
            '' if self.ok else '  FAIL')


class Faults(threading.Thread):
    """Random faults while the round runs: mgr kill -9 (then start), OSD SIGSTOP/SIGCONT,
    OSD marked down.  At most ``kills``/``freezes``/``downs`` of each per round."""

    def __init__(self, c: Cluster, rng: random.Random, r: Round, kills: int, freezes: int,
                 downs: int, spread: float) -> None:
        super().__init__(daemon=True)
        self.c, self.rng, self.r = c, rng, r
        self.stop = threading.Event()
        plan = (['mgr-kill'] * kills + ['osd-freeze'] * freezes + ['osd-down'] * downs)
        self.plan = sorted((rng.uniform(1.0, spread), what) for what in plan)
        self.errors: List[str] = []

    def run(self) -> None:
        t0 = time.monotonic()
        for at, what in self.plan:
            if self.stop.wait(max(0.0, t0 + at - time.monotonic())):
                return
            try:
                self._do(what)
                self.r.faults[what] += 1
            except Exception as e:
                self.errors.append('{}: {}'.format(what, e))

    def _do(self, what: str) -> None:
        c = self.c
        if what == 'mgr-kill':
            active = c.active_mgr()
            c.kill_mgr(active)
            c.start_mgr(active)
        elif what == 'osd-freeze':
            osd = self.rng.randrange(c.osds)
            c.stop_osd(osd)
            try:
                time.sleep(self.rng.uniform(2.0, 6.0))
            finally:
                c.cont_osd(osd)
        else:
            osd = self.rng.randrange(c.osds)
            c.ceph('osd', 'down', str(osd))


def make_images(c: Cluster, pool_spec: str, prefix: str, count: int, size: int,
                rng: random.Random) -> Dict[str, Dict[str, str]]:
    """``count`` images of ``size`` bytes, each with a few written extents; name -> its
    checksums (head and snapshots: none, so a snapshot left behind shows)."""
    out = {}
    with rbdtools.connect(c.conf) as cluster:
        pool, _, ns = pool_spec.partition('/')
        io = cluster.open_ioctx(pool)
        io.set_namespace(ns)
        try:
            for i in range(count):
                name = '{}{:04d}'.format(prefix, i)
                rbd.RBD().create(io, name, size, old_format=False)
                with rbd.Image(io, name) as image:
                    for _ in range(rng.randint(1, 3)):
                        off = rng.randrange(0, size - 64 * KiB, 4 * KiB)
                        rbdtools.write(image, off, 64 * KiB, name)
                out[name] = rbdtools.checksums(c.conf, '{}/{}'.format(pool_spec, name))
        finally:
            io.close()
    return out


def run_round(c: Cluster, lm: Livemigrate, headers: Headers, rng: random.Random, index: int,
              args: argparse.Namespace) -> Round:
    layout, src, dst, extra = LAYOUTS[index % len(LAYOUTS)]
    prefix = 'r{:02d}-'.format(index)
    shas = make_images(c, src, prefix, args.images, args.size_kib * KiB, rng)
    r = Round(index, layout, len(shas))
    t0 = time.monotonic()
    batch = lm.ok('add-pool', src, dst, prefix + '*', *extra, '--format', 'json')
    batch_id = batch['id']
    faults = Faults(c, rng, r, args.kills, args.freezes, args.downs, args.fault_spread)
    faults.start()
    claimed: Dict[str, Dict[str, Any]] = {}
    deadline = time.monotonic() + args.round_timeout
    mine: Dict[str, Dict[str, Any]] = {}
    while True:
        time.sleep(args.poll_seconds)
        rc, out, err = lm.run('ls', '--format', 'json', timeout=60)
        if rc != 0:
            continue                         # the mgr is down or failing over
        try:
            rows = json.loads(out)
        except ValueError:
            continue                         # cut short by a failover (seen once: 64 KiB)
        r.polls += 1
        mine = {t['id']: t for t in rows if t.get('batch_id') == batch_id}
        for t in mine.values():
            was = claimed.get(t['id'])
            if was is not None and t['state'] != 'committed':
                r.lies.append('{} shown {} after committed'.format(t['id'], t['state']))
            if t['state'] == 'committed' and was is None:
                claimed[t['id']] = t
                why = headers.committed_lie(t)
                if why is not None:
                    r.lies.append('{} ({}) committed: {}'.format(t['id'], t['source'], why))
        done = [t for t in mine.values() if t['state'] in ('committed', 'aborted', 'failed')]
        listed = _batch_listed(lm, batch_id)
        if listed and len(done) >= len(shas) and len(mine) >= len(shas) \
                and not faults.is_alive():
            break
        if listed and len(mine) >= len(shas) and all(
                t['state'] in ('committed', 'aborted', 'failed') for t in mine.values()) \
                and time.monotonic() > deadline - args.round_timeout / 2 \
                and not faults.is_alive():
            break
        if time.monotonic() > deadline:
            break
    faults.stop.set()
    faults.join()
    r.seconds = time.monotonic() - t0
    by_source = {t['source'].rsplit('/', 1)[-1]: t for t in mine.values()}
    r.tasks = len(mine)
    for name, sha in sorted(shas.items()):
        t = by_source.get(name)
        if t is None:
            r.missing.append(name)
            continue
        if t['state'] == 'committed':
            r.committed += 1
        elif t['state'] == 'failed':
            r.failed.append('{} {}: {}'.format(t['id'], name, t.get('error')))
        else:
            r.not_done.append('{} {}: {} {}'.format(t['id'], name, t['state'],
                                                    t.get('blocked_reason') or ''))
        spec = '{}/{}'.format(dst, name)
        try:
            got: Any = rbdtools.checksums(c.conf, spec)
        except Exception as e:
            got = 'unreadable: {}'.format(e)
        if got != sha:
            r.bad_checksums.append('{}: {}'.format(spec, got))
    left = headers.trash_left()
    r.leftovers = ['{}: {}'.format(p, ', '.join(ids)) for p, ids in left.items()]
    rows = []
    for _ in range(5):
        rc, out, _ = lm.run('ls', '--format', 'json', timeout=60)
        try:
            rows = json.loads(out) if rc == 0 else None
        except ValueError:
            rows = None
        if rows is not None:
            break
        time.sleep(2)
    r.leftovers += ['orphan {} -> {} ({})'.format(o['source'], o['destination'],
                                                  o['orphan_kind'])
                    for o in rows or [] if o.get('orphan')]
    r.lies += ['fault thread: {}'.format(e) for e in faults.errors]
    # free the memstore for the next round
    for name in shas:
        c.rbd('rm', '--no-progress', '{}/{}'.format(dst, name), check=False)
    return r


def _batch_listed(lm: Livemigrate, batch_id: str) -> bool:
    rc, out, _ = lm.run('status', batch_id, '--format', 'json', timeout=60)
    try:
        return rc == 0 and json.loads(out).get('state') != 'expanding'
    except ValueError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=10)
    ap.add_argument('--images', type=int, default=200)
    ap.add_argument('--size-kib', type=int, default=1024)
    ap.add_argument('--max-concurrent', type=int, default=8)
    ap.add_argument('--kills', type=int, default=2, help='mgr kill -9 per round')
    ap.add_argument('--freezes', type=int, default=1, help='OSD SIGSTOP/SIGCONT per round')
    ap.add_argument('--downs', type=int, default=1, help='OSD marked down per round')
    ap.add_argument('--fault-spread', type=float, default=40.0,
                    help='faults fall within this many seconds of the add-pool')
    ap.add_argument('--round-timeout', type=float, default=900.0)
    ap.add_argument('--poll-seconds', type=float, default=1.0)
    ap.add_argument('--fast-timings', action='store_true',
                    help="keep the harness's test timings (paxos 0.1 s) instead of the defaults")
    ap.add_argument('--seed', type=int, default=21)
    ap.add_argument('--dir', default=None)
    ap.add_argument('--keep', action='store_true', help='leave the cluster running')
    ap.add_argument('--module', default='HEAD',
                    help="the module folder the mgrs load: HEAD (default: the last commit, "
                         "copied aside), worktree, or a path")
    args = ap.parse_args()
    module = {'HEAD': None, 'worktree': DEFAULT_MODULE}.get(args.module, args.module)
    snapshot = module is None
    if module is None:
        module = module_snapshot()
    rng = random.Random(args.seed)
    base = args.dir or tempfile.mkdtemp(prefix='lm-soak-load-', dir='/tmp')
    osd_bytes = max(2 << 30, 4 * args.images * args.size_kib * KiB)
    c = Cluster(dir=base, osds=2, mgrs=2, osd_bytes=osd_bytes, pools=['a', 'b', 'c'],
                module=module)
    c.start()
    rounds: List[Round] = []
    headers: Optional[Headers] = None
    try:
        c.rbd('namespace', 'create', 'a/ns1')
        c.rbd('namespace', 'create', 'b/ns2')
        if not args.fast_timings:
            default_timings(c)
        lm = Livemigrate(c)
        lm.set_option('max_concurrent', str(args.max_concurrent))
        lm.set_option('max_history', str(2 * args.images + 50))
        lm.set_option('retry_backoff_seconds', '1')
        headers = Headers(c.conf)
        head = subprocess.run(['git', '-C', REPO, 'rev-parse', '--short', 'HEAD'],
                              stdout=subprocess.PIPE, text=True).stdout.strip()
        print('soak_load: {} round(s) of {} x {} KiB images, max_concurrent {}, {} timings, '
              'module {} ({}), cluster in {}'.format(
                  args.rounds, args.images, args.size_kib, args.max_concurrent,
                  'fast' if args.fast_timings else 'default', module,
                  head if snapshot else 'as found', base), flush=True)
        for i in range(args.rounds):
            try:
                r = run_round(c, lm, headers, rng, i, args)
            except Exception:
                traceback.print_exc()
                r = Round(i, LAYOUTS[i % len(LAYOUTS)][0], args.images)
                r.lies.append('round aborted: {}'.format(traceback.format_exc(limit=1)))
            rounds.append(r)
            print(r.line(), flush=True)
            for what in ('failed', 'not_done', 'missing', 'leftovers', 'bad_checksums',
                         'lies'):
                for item in getattr(r, what)[:10]:
                    print('    {}: {}'.format(what, item), flush=True)
    finally:
        if headers is not None:
            headers.close()
        if not args.keep:
            c.stop()
            if snapshot:
                shutil.rmtree(os.path.dirname(os.path.dirname(os.path.dirname(
                    os.path.dirname(module)))), ignore_errors=True)
    print()
    print('| round | layout | images | committed | failed | not done | missing | trash '
          'leftovers | bad checksums | untruthful polls | mgr kills | OSD freezes | OSDs down '
          '| seconds |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for r in rounds:
        print('| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0f} |'.format(
            r.index, r.layout, r.images, r.committed, len(r.failed), len(r.not_done),
            len(r.missing), len(r.leftovers), len(r.bad_checksums), len(r.lies),
            r.faults['mgr-kill'], r.faults['osd-freeze'], r.faults['osd-down'], r.seconds))
    return 0 if rounds and all(r.ok for r in rounds) else 1


if __name__ == '__main__':
    sys.exit(main())
