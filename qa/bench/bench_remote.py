#!/usr/bin/python3
"""Benchmark moves between clusters (issue 27): the module against a librbd loop and the CLI.

One run boots two Tentacle clusters side by side (qa/standalone/cluster.py, one memstore
OSD each, Ceph's DEFAULT mon and stats timings unless ``--fast-timings``; the settings are
printed), loads the module in the destination's mgr and registers the other cluster with
``ceph rbd livemigrate remote add`` (a ``profile rbd`` user of the remote).  The remote
holds, written once with random bytes:

big   one ``--big-size`` image (``rbd/big``);
pool  a pool ``bpool`` of ``--pool-images`` images of ``--pool-image-size`` each.

Each workload is moved, ``--repeat`` times, on the same clusters in the same run, by:

module-off   ``add east:rbd/big rbd/big --verify off`` (``add-pool east:bpool rbd`` for the
             pool): seconds from the command to the last task committed (the mgr log's
             'committed' line; the module's snapshot is then gone from both ends);
module       the same with the default verify (``verify_default``);
loop         a Python process in the Tentacle root with the same kind of conf/keyring files
             the module writes (its own ConfFiles): per image, snapshot on the remote,
             ``migration_prepare_import`` of the native spec, ``migration_execute``,
             ``migration_commit``, snapshot removed from the destination and the remote.
             Sequential; for the pool also on ``max_concurrent`` threads (the module's
             concurrency, default 2: ``loop-conc``);
cli          ``rbd -c <remote conf> export pool/img - | rbd import - rbd/img``, image after
             image.

Ratios module/loop (the pool: against loop-conc) and module/cli, median [min-max] over the
runs.  Between runs every destination image is removed; nothing may be left in either trash
and no snapshot on the remote images.  The first run checks every method's destination
checksums (HEAD, sha256) against the remote's.  The module's phases come from its log:
gate (add -> snapshot taken: the scheduler, the remote's watchers), prepare, execute,
verify, end (commit, the snapshot removed from both ends).

Run (the shared lock, one run at a time)::

    flock /tmp/lm-integ.lock /usr/bin/python3 qa/bench/bench_remote.py --repeat 3

Needs the Tentacle root (``LM_RELEASE`` is not read: the clusters are always Tentacle,
``qa/standalone/release_root.py --release tentacle`` builds it).  Everything that talks to
the clusters runs inside the root (``bench_remote.py worker ...``, Tentacle's librbd).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

HERE = os.path.abspath(__file__)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(REPO, 'qa', 'standalone'))

MIB = 1 << 20
RELEASE = 'tentacle'
REMOTE = 'east'
CLIENT = 'client.lmbench'
BIG_POOL = 'rbd'
BIG_IMAGE = 'big'
SRC_POOL = 'bpool'
DEST_POOL = 'rbd'
METHODS = ('module-off', 'module', 'loop', 'loop-conc', 'cli')
WORKLOADS = ('big', 'pool')
LOG_POLL_SECONDS = 0.1       # the mgr log read for the tasks' ends (no cluster load)
FALLBACK_POLL_SECONDS = 15.0
LOG_TS = re.compile(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d{4}) ')
MGR_LINE = re.compile(r'\[rbd_livemigrate \w+ [\w.]+\] (.*)$')
TASK_LINE = re.compile(r'(?:PROBE task|added task|task) (\w+):? (.*)$')
CLK_TCK = os.sysconf('SC_CLK_TCK')


def log(msg: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


# ============================================================================================
# the worker: runs inside the Tentacle root (Tentacle's rados/rbd), prints one JSON object

def _connect(conf: str, name: Optional[str] = None) -> Any:
    import rados
    c = rados.Rados(conffile=conf, name=name) if name else rados.Rados(conffile=conf)
    c.connect(timeout=30)
    return c


def _split(spec: str) -> Tuple[str, str]:
    pool, image = spec.split('/')
    return pool, image


def w_create(a: Dict[str, Any]) -> Dict[str, Any]:
    """Create and fully write the remote's images (random bytes, 4 MiB writes)."""
    import rbd
    c = _connect(a['conf'])
    buf = os.urandom(4 * MIB)
    t0 = time.monotonic()
    try:
        def one(spec: str) -> None:
            pool, name = _split(spec)
            io = c.open_ioctx(pool)
            try:
                rbd.RBD().create(io, name, a['size'], old_format=False)
                with rbd.Image(io, name) as img:
                    off = 0
                    while off < a['size']:
                        n = min(len(buf), a['size'] - off)
                        img.write(buf[:n] if off % (8 * MIB) else os.urandom(n), off)
                        off += n
            finally:
                io.close()
        with ThreadPoolExecutor(max_workers=2) as ex:
            list(ex.map(one, a['images']))
    finally:
        c.shutdown()
    return {'seconds': round(time.monotonic() - t0, 2)}


def w_sums(a: Dict[str, Any]) -> Dict[str, Any]:
    """{spec: {'sha256': HEAD digest, 'snaps': [...]}} of every image in a['images']."""
    import rbd
    c = _connect(a['conf'])
    out: Dict[str, Any] = {}
    try:
        for spec in a['images']:
            pool, name = _split(spec)
            io = c.open_ioctx(pool)
            try:
                with rbd.Image(io, name, read_only=True) as img:
                    h = hashlib.sha256()
                    size = img.size()
                    off = 0
                    while off < size:
                        n = min(16 * MIB, size - off)
                        h.update(img.read(off, n))
                        off += n
                    out[spec] = {'sha256': h.hexdigest(), 'size': size,
                                 'snaps': sorted(s['name'] for s in img.list_snaps())}
            finally:
                io.close()
    finally:
        c.shutdown()
    return out


def w_state(a: Dict[str, Any]) -> Dict[str, Any]:
    """What is left: images, trash and remote snapshots."""
    import rbd
    out: Dict[str, Any] = {}
    for label, conf, pools in (('dest', a['dest_conf'], a['dest_pools']),
                               ('remote', a['remote_conf'], a['remote_pools'])):
        c = _connect(conf)
        try:
            for pool in pools:
                io = c.open_ioctx(pool)
                try:
                    names = sorted(rbd.RBD().list(io))
                    trash = [t['name'] for t in rbd.RBD().trash_list(io)]
                    snaps = {}
                    if label == 'remote':
                        for n in names:
                            with rbd.Image(io, n, read_only=True) as img:
                                s = [x['name'] for x in img.list_snaps()]
                            if s:
                                snaps[n] = s
                    out[f'{label}:{pool}'] = {'images': names, 'trash': trash,
                                              'snaps': snaps}
                finally:
                    io.close()
        finally:
            c.shutdown()
    return out


def w_clean(a: Dict[str, Any]) -> Dict[str, Any]:
    """Remove every destination image (and a snapshot a failed run left), purge trash."""
    import rbd
    c = _connect(a['dest_conf'])
    removed = []
    try:
        for pool in a['dest_pools']:
            io = c.open_ioctx(pool)
            try:
                for name in rbd.RBD().list(io):
                    try:
                        with rbd.Image(io, name) as img:
                            for s in list(img.list_snaps()):
                                img.remove_snap(s['name'])
                    except rbd.Error:
                        pass
                    rbd.RBD().remove(io, name)
                    removed.append(f'{pool}/{name}')
                for t in rbd.RBD().trash_list(io):
                    rbd.RBD().trash_remove(io, t['id'], force=True)
            finally:
                io.close()
    finally:
        c.shutdown()
    return {'removed': len(removed)}


def w_loop(a: Dict[str, Any]) -> Dict[str, Any]:
    """The in-process librbd import loop: per image snapshot, prepare_import, execute,
    commit, the snapshot removed from both ends; ``threads`` images at a time."""
    import rbd
    sys.path.insert(0, os.path.join(REPO, 'src', 'pybind', 'mgr'))
    os.environ['UNITTEST'] = '1'
    from rbd_livemigrate import remote_spec
    from rbd_livemigrate.remotes import ConfFiles, Remote
    with open(a['keyring']) as f:
        key = remote_spec.parse_keyring(f.read(), CLIENT)[1]
    files = ConfFiles(a['conf_dir'], op_timeout_seconds=a['op_timeout'])
    t_start = time.monotonic()
    files.write(Remote(REMOTE, a['mon_host'], CLIENT, '', time.time()), key)
    conf = files.paths(REMOTE)[0]
    local = _connect(a['dest_conf'])
    remote = _connect(conf, CLIENT)
    per: Dict[str, Dict[str, float]] = {}
    try:
        def one(spec: str) -> None:
            pool, name = _split(spec)
            snap = 'bench-' + os.urandom(4).hex()
            t: Dict[str, float] = {}
            t0 = time.monotonic()
            rio = remote.open_ioctx(pool)
            dio = local.open_ioctx(DEST_POOL)
            try:
                with rbd.Image(rio, name) as img:
                    img.create_snap(snap)
                t['snapshot'] = time.monotonic() - t0
                src = remote_spec.build_source_spec(a['conf_dir'], REMOTE, CLIENT, pool, '',
                                                    name, snap)
                r = rbd.RBD()
                t1 = time.monotonic()
                r.migration_prepare_import(json.dumps(src), dio, name)
                t2 = time.monotonic()
                r.migration_execute(dio, name)
                t3 = time.monotonic()
                r.migration_commit(dio, name)
                t4 = time.monotonic()
                with rbd.Image(dio, name) as img:
                    img.remove_snap(snap)
                with rbd.Image(rio, name) as img:
                    img.remove_snap(snap)
                t5 = time.monotonic()
                t.update(prepare=t2 - t1, execute=t3 - t2, commit=t4 - t3, end=t5 - t4,
                         total=t5 - t0)
            finally:
                dio.close()
                rio.close()
            per[spec] = {k: round(v, 3) for k, v in t.items()}
        with ThreadPoolExecutor(max_workers=a['threads']) as ex:
            list(ex.map(one, a['images']))
    finally:
        remote.shutdown()
        local.shutdown()
        files.remove(REMOTE)
    return {'seconds': round(time.monotonic() - t_start, 3), 'images': per}


def w_cli(a: Dict[str, Any]) -> Dict[str, Any]:
    """``rbd export | rbd import``, image after image."""
    per: Dict[str, float] = {}
    t_start = time.monotonic()
    for spec in a['images']:
        _, name = _split(spec)
        cmd = ('set -o pipefail; rbd -c {rc} --name {cl} export {src} - --no-progress | '
               'rbd -c {dc} import - {dp}/{name} --no-progress').format(
                   rc=a['remote_conf'], cl=CLIENT, src=spec, dc=a['dest_conf'],
                   dp=DEST_POOL, name=name)
        t0 = time.monotonic()
        p = subprocess.run(['/bin/bash', '-c', cmd], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise RuntimeError(f'{cmd}: exit {p.returncode}: {p.stderr[-2000:]}')
        per[spec] = round(time.monotonic() - t0, 3)
    return {'seconds': round(time.monotonic() - t_start, 3), 'images': per}


def w_module(a: Dict[str, Any]) -> Dict[str, Any]:
    """``add``/``add-pool`` through librados' mgr_command, then the mgr log read until every
    task has ended; wall-clock start (for the mgr log) and the statuses.

    No command is polled meanwhile: the mgr sends every command it handles to the cluster
    log (audit), each a monitor commit, and an OSDMap change (the snapshots librbd copies
    or removes) waits up to a paxos interval after the last commit: polling ``status``
    every 0.25 s slowed the module's prepare by up to 1 s at the default timings.  A
    ``status`` every ``FALLBACK_POLL_SECONDS`` only notices a task that ended without a
    log line."""
    c = _connect(a['dest_conf'])

    def mgr(prefix: str, **kw: Any) -> Any:
        ret, out, err = c.mgr_command(json.dumps(dict(kw, prefix=prefix, format='json')), b'')
        if ret != 0:
            raise RuntimeError(f'{prefix} {kw}: {ret} {err}')
        return json.loads(out) if out.strip() else None

    def ended(st: Any) -> bool:
        return bool(st.get('finished')) if a['pool'] else \
            st['state'] in ('committed', 'aborted', 'failed')
    extra = {'verify': a['verify']} if a['verify'] else {}
    offset = os.path.getsize(a['mgr_log'])
    added: set = set()
    over: set = set()
    try:
        wall0 = time.time()
        t0 = time.monotonic()
        if a['pool']:
            made = mgr('rbd livemigrate add-pool', source_pool_spec=a['source'],
                       dest_pool_spec=DEST_POOL, **extra)
        else:
            made = mgr('rbd livemigrate add', source_spec=a['source'],
                       dest_spec=a['dest'], **extra)
        answered = time.monotonic() - t0
        deadline = t0 + a['wait_seconds']
        next_poll = t0 + FALLBACK_POLL_SECONDS
        st: Any = None
        while True:
            with open(a['mgr_log'], 'rb') as f:
                f.seek(offset)
                chunk = f.read()
            cut = chunk.rfind(b'\n') + 1
            offset += cut
            for line in chunk[:cut].decode(errors='replace').splitlines():
                m = MGR_LINE.search(line)
                tm = TASK_LINE.match(m.group(1)) if m else None
                if not m or not tm:
                    continue
                if m.group(1).startswith('added task'):
                    added.add(tm.group(1))
                elif tm.group(2).endswith(' committed') or \
                        tm.group(2).startswith(('failed', 'aborted')):
                    over.add(tm.group(1))
            if len(over & added) >= a['count']:
                break
            if time.monotonic() >= next_poll:
                next_poll = time.monotonic() + FALLBACK_POLL_SECONDS
                st = mgr('rbd livemigrate status', task_or_image=made['id'])
                if ended(st):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f'not committed within {a["wait_seconds"]} s: {st}')
            time.sleep(LOG_POLL_SECONDS)
        seen = time.monotonic() - t0
        st = mgr('rbd livemigrate status', task_or_image=made['id'])
        tasks = [t for t in mgr('rbd livemigrate ls')
                 if (t.get('batch_id') == made['id'] if a['pool'] else t['id'] == made['id'])]
        full = [mgr('rbd livemigrate status', task_or_image=t['id']) for t in tasks]
    finally:
        c.shutdown()
    return {'wall0': wall0, 'answered': round(answered, 3), 'seen': round(seen, 3),
            'id': made['id'], 'status': st, 'tasks': full}


WORKER = {'create': w_create, 'sums': w_sums, 'state': w_state, 'clean': w_clean,
          'loop': w_loop, 'cli': w_cli, 'module': w_module}


def worker_main(action: str, arg: str) -> int:
    print(json.dumps(WORKER[action](json.loads(arg))))
    return 0


# ============================================================================================
# the host side

def cpu_seconds(pid: int) -> float:
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def parse_ts(text: str) -> float:
    return datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%S.%f%z').timestamp()


def fmt_spread(vals: Sequence[float], digits: int = 2) -> str:
    if not vals:
        return '-'
    med = statistics.median(vals)
    if len(vals) == 1:
        return f'{med:.{digits}f}'
    return f'{med:.{digits}f} [{min(vals):.{digits}f}-{max(vals):.{digits}f}]'


def mgr_events(path: str, offset: int) -> Dict[str, Dict[str, float]]:
    """{task id: {event: wall time}} from the mgr log after ``offset``."""
    out: Dict[str, Dict[str, float]] = {}
    with open(path, 'rb') as f:
        f.seek(offset)
        text = f.read().decode(errors='replace')
    for line in text.splitlines():
        m = MGR_LINE.search(line)
        ts = LOG_TS.match(line)
        if not m or not ts:
            continue
        tm = TASK_LINE.match(m.group(1))
        if not tm:
            continue
        tid, msg = tm.group(1), tm.group(2)
        t = parse_ts(ts.group(1))
        ev = out.setdefault(tid, {})
        if m.group(1).startswith('PROBE '):         # a probe build's extra timing lines
            ev.setdefault('p:' + msg, t)
        elif m.group(1).startswith('added task'):
            ev['added'] = t
        elif msg.startswith('took snapshot'):
            ev['snapshot'] = t
        elif msg.startswith('prepared'):
            ev['prepared'] = t
        elif msg.startswith('executed in'):
            ev['executed'] = t
        elif msg.startswith('verified'):
            ev['verified'] = t
        elif msg.startswith('removed snapshot') and 'from remote' in msg:
            ev['remote_snap_removed'] = t
        elif msg.endswith(' committed'):
            ev['committed'] = t
        elif 'watcher' in msg or 'waits' in msg:
            ev.setdefault('held', t)
    return out


def phases(ev: Dict[str, float]) -> Dict[str, float]:
    """Seconds per phase of one task from its log events."""
    out: Dict[str, float] = {}
    steps = [('queue+gate+snapshot', 'added', 'snapshot'), ('prepare', 'snapshot', 'prepared'),
             ('execute', 'prepared', 'executed')]
    if 'verified' in ev:
        steps += [('verify', 'executed', 'verified'), ('end', 'verified', 'committed')]
    else:
        steps += [('end', 'executed', 'committed')]
    for name, a, b in steps:
        if a in ev and b in ev:
            out[name] = round(ev[b] - ev[a], 3)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        from cluster import Cluster
        self.args = args
        timing = 'fast' if args.fast_timings else 'default'
        self.module_dir = args.module or os.path.join(args.dir + '-module', 'rbd_livemigrate')
        self.dest = Cluster(args.dir + '-dst', osds=1, mgrs=1, osd_bytes=args.osd_bytes,
                            module=self.module_dir, pools=[DEST_POOL], release=RELEASE,
                            timing=timing)
        self.remote = Cluster(args.dir + '-src', osds=1, mgrs=1, osd_bytes=args.osd_bytes,
                              module=None, pools=[BIG_POOL, SRC_POOL], release=RELEASE,
                              timing=timing)
        self.started: List[Any] = []
        self.results: Dict[str, Any] = {
            'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'), 'argv': sys.argv,
            'options': dict(vars(args)), 'runs': [], 'checks': {},
            'host': {'nproc': os.cpu_count(), 'loadavg_start': os.getloadavg()},
            'timing': {'timing': timing,
                       'paxos_propose_interval': 0.1 if args.fast_timings else 1.0,
                       'mgr_stats_period': 1 if args.fast_timings else 5}}
        self.keyring = ''
        self.remote_sums: Dict[str, Any] = {}

    # -- plumbing ------------------------------------------------------

    def work(self, action: str, timeout: float = 3600, **kw: Any) -> Any:
        p = self.dest.python(HERE, 'worker', action, json.dumps(kw), check=False,
                             timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f'worker {action}: exit {p.returncode}: {p.stderr[-3000:]}')
        return json.loads(p.stdout.strip().splitlines()[-1])

    def images(self, workload: str) -> List[str]:
        if workload == 'big':
            return [f'{BIG_POOL}/{BIG_IMAGE}']
        return [f'{SRC_POOL}/p{i:02d}' for i in range(self.args.pool_images)]

    def dest_images(self, workload: str) -> List[str]:
        return [f'{DEST_POOL}/{s.split("/")[1]}' for s in self.images(workload)]

    def quiesce(self, max_wait: float = 30.0, threshold: float = 0.2) -> None:
        """Until both clusters' daemons use under ``threshold`` cores over a second."""
        pids = list(self.dest.running_daemons().values()) + \
            list(self.remote.running_daemons().values())
        t0 = time.monotonic()
        while time.monotonic() - t0 < max_wait:
            c0 = sum(cpu_seconds(p) for p in pids)
            time.sleep(1.0)
            if sum(cpu_seconds(p) for p in pids) - c0 < threshold:
                return

    def setup(self) -> None:
        a = self.args
        if not a.module:
            # the module as committed (others edit the tree meanwhile)
            top = os.path.dirname(self.module_dir)
            if os.path.isdir(top):
                shutil.rmtree(top)
            os.makedirs(top)
            archive = subprocess.run(['git', '-C', REPO, 'archive', 'HEAD',
                                      'src/pybind/mgr/rbd_livemigrate'],
                                     stdout=subprocess.PIPE, check=True).stdout
            subprocess.run(['tar', '-x', '-C', top, '--strip-components=3',
                            '--exclude=*/tests/*'], input=archive, check=True)
        self.results['module'] = {'path': self.module_dir, 'git_head': subprocess.run(
            ['git', '-C', REPO, 'rev-parse', 'HEAD'], text=True,
            stdout=subprocess.PIPE).stdout.strip(), 'uncommitted': subprocess.run(
            ['git', '-C', REPO, 'status', '--porcelain', '--', 'src/pybind/mgr/rbd_livemigrate'],
            text=True, stdout=subprocess.PIPE).stdout.split('\n')[:20]}
        t = self.results['timing']
        log(f"two Tentacle clusters, timings: {t['timing']} (paxos propose interval "
            f"{t['paxos_propose_interval']} s, mgr stats period {t['mgr_stats_period']} s); "
            f'1 mon, 1 mgr, 1 memstore OSD ({a.osd_bytes >> 20} MiB) each')
        for c in (self.remote, self.dest):
            if c.running_daemons():
                raise RuntimeError(f'{c.dir} holds a running cluster: stop it first')
            self.started.append(c)
            c.start()
        self.keyring, _ = self.remote.create_user(CLIENT, {'mon': 'profile rbd',
                                                           'osd': 'profile rbd'})
        p = self.dest.ceph('rbd', 'livemigrate', 'remote', 'add', REMOTE, self.remote.mon_host,
                           '--client-name', CLIENT, '-i', self.keyring, '--format', 'json')
        self.results['remote'] = json.loads(p.stdout)
        opts = {}
        for name in ('max_concurrent', 'verify_default', 'remote_op_timeout_seconds',
                     'blocked_recheck_seconds'):
            opts[name] = self.dest.ceph('config', 'get', 'mgr',
                                        f'mgr/rbd_livemigrate/{name}').stdout.strip()
        self.results['module_options'] = opts
        self.concurrency = int(opts['max_concurrent'] or 2)
        self.op_timeout = int(opts['remote_op_timeout_seconds'] or 0)
        log(f'module options: {opts}')
        wants = [w for w in WORKLOADS if w in a.workloads]
        for w in wants:
            size = a.big_size if w == 'big' else a.pool_image_size
            r = self.work('create', conf=self.remote.conf, images=self.images(w), size=size)
            log(f'{w}: {len(self.images(w))} x {size >> 20} MiB written on the remote in '
                f"{r['seconds']} s")
            self.remote_sums.update(self.work('sums', conf=self.remote.conf,
                                              images=self.images(w)))

    def teardown(self) -> None:
        if self.args.keep:
            log(f'clusters kept: {self.dest.dir} {self.remote.dir}')
            return
        for c in self.started:
            c.stop(purge=True)
        if not self.args.module:
            shutil.rmtree(os.path.dirname(self.module_dir), ignore_errors=True)

    # -- one measurement -----------------------------------------------

    def measure(self, workload: str, method: str) -> Dict[str, Any]:
        imgs = self.images(workload)
        pool = workload == 'pool'
        out: Dict[str, Any] = {'workload': workload, 'method': method}
        if method.startswith('module'):
            mgr_log = self.dest.mgr_log(self.dest.mgr_ids[0])
            offset = os.path.getsize(mgr_log)
            r = self.work('module', dest_conf=self.dest.conf, pool=pool, mgr_log=mgr_log,
                          count=len(imgs),
                          source=(f'{REMOTE}:{SRC_POOL}' if pool else f'{REMOTE}:{imgs[0]}'),
                          dest=self.dest_images(workload)[0],
                          verify='off' if method == 'module-off' else None,
                          wait_seconds=self.args.timeout)
            time.sleep(0.5)             # the log line is flushed after the state
            events = mgr_events(mgr_log, offset)
            ids = [t['id'] for t in r['tasks']]
            states = sorted({t['state'] for t in r['tasks']})
            if states != ['committed'] or len(ids) != len(imgs):
                raise RuntimeError(f'{method} {workload}: tasks {states} ({len(ids)}): '
                                   f"{[t.get('error') for t in r['tasks']]}")
            ends = [events.get(i, {}).get('committed') for i in ids]
            if all(ends):
                out['seconds'] = round(max(e for e in ends if e) - r['wall0'], 3)
            else:
                out['seconds'] = r['seen']
                out['end_from'] = 'poll'
            out['poll_seconds'] = r['seen']
            out['answered'] = r['answered']
            out['execute_seconds'] = [t.get('execute_seconds') for t in r['tasks']]
            out['verify'] = sorted({str(t.get('verify')) for t in r['tasks']})
            out['verification'] = [t.get('verification') for t in r['tasks']][:3]
            out['phases'] = {i: phases(events.get(i, {})) for i in ids}
            out['events'] = {i: {k: round(v - r['wall0'], 3) for k, v in
                                 events.get(i, {}).items()} for i in ids}
        elif method.startswith('loop'):
            threads = self.concurrency if method == 'loop-conc' else 1
            r = self.work('loop', dest_conf=self.dest.conf, keyring=self.keyring,
                          mon_host=self.remote.mon_host, images=imgs, threads=threads,
                          conf_dir=os.path.join(self.dest.run_dir, 'bench-loop'),
                          op_timeout=self.op_timeout)
            out.update(seconds=r['seconds'], threads=threads, per_image=r['images'])
        else:
            conf_dir = os.path.join(self.dest.run_dir, 'bench-cli')
            os.makedirs(conf_dir, mode=0o700, exist_ok=True)
            conf = os.path.join(conf_dir, REMOTE + '.conf')
            with open(conf, 'w') as f:
                f.write(f'[global]\n\tmon_host = {self.remote.mon_host}\n'
                        f'\tkeyring = {self.keyring}\n')
            r = self.work('cli', remote_conf=conf, dest_conf=self.dest.conf, images=imgs)
            out.update(seconds=r['seconds'], per_image=r['images'])
        return out

    def check(self, workload: str, method: str) -> Dict[str, Any]:
        """The destination's HEAD digests against the remote's; no snapshot left."""
        got = self.work('sums', conf=self.dest.conf, images=self.dest_images(workload))
        bad = []
        for src, dst in zip(self.images(workload), self.dest_images(workload)):
            if got[dst]['sha256'] != self.remote_sums[src]['sha256'] or got[dst]['snaps']:
                bad.append({'image': dst, 'snaps': got[dst]['snaps'],
                            'equal': got[dst]['sha256'] == self.remote_sums[src]['sha256']})
        return {'images': len(got), 'bad': bad}

    def clean(self) -> Dict[str, Any]:
        self.work('clean', dest_conf=self.dest.conf, dest_pools=[DEST_POOL])
        st = self.work('state', dest_conf=self.dest.conf, dest_pools=[DEST_POOL],
                       remote_conf=self.remote.conf, remote_pools=[BIG_POOL, SRC_POOL])
        left = {k: v for k, v in st.items()
                if v['trash'] or v['snaps'] or (k.startswith('dest:') and v['images'])}
        if left:
            raise RuntimeError(f'left after a run: {left}')
        return st

    def run(self) -> None:
        a = self.args
        self.setup()
        self.clean()
        for rep in range(a.repeat):
            for workload in [w for w in WORKLOADS if w in a.workloads]:
                for method in a.methods:
                    if method == 'loop-conc' and workload != 'pool':
                        continue
                    log(f'run {rep + 1}/{a.repeat}: {workload} by {method}')
                    self.quiesce()
                    one = self.measure(workload, method)
                    one['run'] = rep + 1
                    if rep == 0:
                        one['check'] = self.check(workload, method)
                        self.results['checks'][f'{workload}/{method}'] = one['check']
                        if one['check']['bad']:
                            log(f"WRONG COPY: {one['check']['bad'][:3]}")
                    self.clean()
                    log(f"  {one['seconds']:.2f} s")
                    self.results['runs'].append(one)
                    self.save()
        self.results['host']['loadavg_end'] = os.getloadavg()

    def save(self) -> None:
        with open(self.args.json, 'w') as f:
            json.dump(self.results, f, indent=1, default=str)


# -- the report ---------------------------------------------------------------------------

def secs(results: Dict[str, Any], workload: str, method: str) -> List[float]:
    return [r['seconds'] for r in results['runs']
            if r['workload'] == workload and r['method'] == method]


def ratios(results: Dict[str, Any], workload: str, num: str, den: str) -> List[float]:
    """Per run: num's seconds / den's seconds of the same run."""
    out = []
    for run in sorted({r['run'] for r in results['runs']}):
        a = [r['seconds'] for r in results['runs'] if r['run'] == run
             and r['workload'] == workload and r['method'] == num]
        b = [r['seconds'] for r in results['runs'] if r['run'] == run
             and r['workload'] == workload and r['method'] == den]
        if a and b and b[0] > 0:
            out.append(a[0] / b[0])
    return out


def phase_table(results: Dict[str, Any], workload: str, method: str) -> str:
    per: Dict[str, List[float]] = {}
    for r in results['runs']:
        if r['workload'] == workload and r['method'] == method:
            for ph in r.get('phases', {}).values():
                for k, v in ph.items():
                    per.setdefault(k, []).append(v)
    return ', '.join(f'{k} {fmt_spread(v)}' for k, v in per.items())


def loop_table(results: Dict[str, Any], workload: str, method: str) -> str:
    per: Dict[str, List[float]] = {}
    for r in results['runs']:
        if r['workload'] == workload and r['method'] == method:
            for ph in r.get('per_image', {}).values():
                for k, v in ph.items():
                    if k != 'total':
                        per.setdefault(k, []).append(v)
    return ', '.join(f'{k} {fmt_spread(v)}' for k, v in per.items())


def report(results: Dict[str, Any]) -> str:
    o = results.get('options', {})
    t = results.get('timing', {})
    lines = [f"settings: two Tentacle clusters (1 mon, 1 mgr, 1 memstore OSD each), "
             f"timings {t.get('timing')} (paxos propose interval "
             f"{t.get('paxos_propose_interval')} s, mgr stats period "
             f"{t.get('mgr_stats_period')} s); module options "
             f"{results.get('module_options')}; repeat {o.get('repeat')}", '']
    rows = [['workload', 'method', 'seconds med [min-max]', 'MiB/s', '/loop', '/cli']]
    for w in WORKLOADS:
        if not any(r['workload'] == w for r in results.get('runs', [])):
            continue
        size = (o.get('big_size', 0) if w == 'big'
                else o.get('pool_images', 0) * o.get('pool_image_size', 0))
        loop = 'loop-conc' if w == 'pool' else 'loop'
        for m in METHODS:
            s = secs(results, w, m)
            if not s:
                continue
            rate = size / MIB / statistics.median(s) if size else 0
            rl = fmt_spread(ratios(results, w, m, loop)) if m.startswith('module') else ''
            rc = fmt_spread(ratios(results, w, m, 'cli')) if m != 'cli' else ''
            rows.append([w, m, fmt_spread(s), f'{rate:.0f}', rl, rc])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        lines.append('  '.join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip())
        if i == 0:
            lines.append('  '.join('-' * wd for wd in widths))
    lines.append('')
    for w in WORKLOADS:
        for m in ('module-off', 'module'):
            if secs(results, w, m):
                lines.append(f'{w} {m} phases (per task, s): {phase_table(results, w, m)}')
                v = sorted({x for r in results['runs'] if r['workload'] == w
                            and r['method'] == m for x in r.get('verify', [])})
                lines.append(f'  task verify field: {v}')
        for m in ('loop', 'loop-conc'):
            if secs(results, w, m):
                lines.append(f'{w} {m} steps (per image, s): {loop_table(results, w, m)}')
    checks = results.get('checks', {})
    bad = {k: v['bad'] for k, v in checks.items() if v['bad']}
    lines.append('')
    lines.append(f"checksums (run 1, every method): {len(checks)} checked, "
                 f"{'all equal to the remote, no snapshot left' if not bad else bad}")
    return '\n'.join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from cluster import parse_bytes
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 2)[2])
    p.add_argument('--dir', default='/tmp/bench-remote',
                   help='cluster directories: DIR-dst, DIR-src (under /tmp/bench-*)')
    p.add_argument('--workloads', default=','.join(WORKLOADS))
    p.add_argument('--methods', default=','.join(METHODS))
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--big-size', default='1G', help='big: image bytes (default 1G)')
    p.add_argument('--pool-images', type=int, default=20)
    p.add_argument('--pool-image-size', default='64M')
    p.add_argument('--osd-bytes', default='4G', help='memstore bytes per OSD (default 4G)')
    p.add_argument('--timeout', type=float, default=1800, help='per module measurement')
    p.add_argument('--fast-timings', action='store_true',
                   help="the tests' fast mon and stats timings instead of Ceph's defaults")
    p.add_argument('--json', default=None)
    p.add_argument('--keep', action='store_true', help='leave the clusters running')
    p.add_argument('--module', default=None,
                   help='module folder to load as it is (default: a copy of src/pybind/mgr/'
                        'rbd_livemigrate taken at start, next to --dir)')
    a = p.parse_args(argv)
    a.big_size = parse_bytes(a.big_size)
    a.pool_image_size = parse_bytes(a.pool_image_size)
    a.osd_bytes = parse_bytes(a.osd_bytes)
    a.workloads = [w for w in a.workloads.split(',') if w]
    a.methods = [m for m in a.methods.split(',') if m]
    if set(a.workloads) - set(WORKLOADS) or set(a.methods) - set(METHODS):
        p.error(f'workloads: {WORKLOADS}; methods: {METHODS}')
    if not os.path.abspath(a.dir).startswith('/tmp/bench-'):
        p.error('--dir must be under /tmp/bench-*')
    if a.json is None:
        a.json = time.strftime('/tmp/bench_remote-%Y%m%d-%H%M%S.json')
    return a


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['worker']:
        return worker_main(argv[1], argv[2])
    args = parse_args(argv)
    bench = Bench(args)
    rc = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        rc = 130
    except Exception as e:
        log(f'failed: {type(e).__name__}: {e}')
        bench.results['error'] = traceback.format_exc()
        rc = 1
    finally:
        bench.results['finished'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
        bench.save()
        bench.teardown()
    print(report(bench.results))
    print(f'\nraw numbers: {args.json}')
    return rc


if __name__ == '__main__':
    sys.exit(main())
