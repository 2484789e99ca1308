#!/usr/bin/python3
"""Benchmark rbd_livemigrate against the rbd CLI and rbd_support on one throwaway cluster.

One run boots one cluster (qa/standalone/cluster.py, memstore OSDs), runs the selected
sections ``--repeat`` times each, prints a table of ratios (module time / reference time,
median and min-max over the runs) and writes every raw number to a JSON file.  The cluster
is stopped and deleted at the end (also on failure or Ctrl-C) unless ``--keep``.

Sections (``--sections``, comma list, default all):

verify    one ``--big-size`` written image per run, added with ``--verify full``: the
          comparison's time (status ``verification.seconds``) against the same task's
          execute (``execute_seconds``).
cutover   ``--cutover-runs`` times per mode (auto, ``--manual-cutover`` + ``cutover``): a
          client (this process) holds the source open, closes it, and opens the destination
          as soon as it exists: that gap from outside, median and worst, beside the module's
          own ``cutover_ms``.
fleet     ``--fleet-images`` empty and ``--fleet-written`` (default as many) written 4 MiB
          images: one module ``add-pool`` (a batch) at max_concurrent ``--fleet-concurrency``
          until all are committed, with ``ls`` and ``status <batch>`` timed every second
          meanwhile through librados, and every ``--fleet-cli-probe-seconds`` through the
          ``ceph`` CLI (process start included, as an operator types it), mgr RSS (peak
          sampled every second) and store writes per task (mon log); then the same images
          moved by a plain in-process librbd loop on as many threads, each with its own
          rados client (the limit), and a sample (``--fleet-cli-sample``) by the
          sequential ``rbd migration`` CLI loop.
pool      ``--images`` images of ``--image-size`` written data: module ``add-pool`` until all
          are committed (``ls --format json`` polled), versus (a) a sequential
          ``rbd migration prepare/execute/commit`` CLI loop over identical images and (b)
          rbd_support: ``rbd migration prepare`` (CLI) for every image, then every
          ``rbd task add migration execute`` queued at once, wait until ``rbd task list``
          has none left, then every ``rbd task add migration commit``, wait again.  The
          rbd_support commands and all polls go through the librados binding
          (``mgr_command``), not one ``ceph`` process each, which is the fastest fair way.
big       one ``--big-size`` fully written image: module ``add`` until committed, and its
          execute phase alone (mgr log: 'prepared' -> 'executed' lines), versus
          ``rbd migration execute`` alone on an identical prepared image.
throttle  ``add --bandwidth-limit`` on a ``--throttle-size`` image: rate = bytes / execute
          time (mgr log), error against the limit.  With a ``total_bandwidth_limit_bytes``
          module option, also the rate of two tasks together under that limit.
scale     ``--scale-tasks`` paused task records written straight into the config-key store
          (``mgr/rbd_livemigrate/task/<id>``, ``Task.dumps()`` of task.py), then
          ``ceph mgr fail``: reload time (fail -> first ``ls`` answering with all of them),
          ``ls`` latency, RSS growth of the mgr taking over, largest stored value.  A
          failover with the store (nearly) empty first gives the fixed cost to subtract.

Example::

    /usr/bin/python3 qa/bench/bench_livemigrate.py --dir /tmp/bench-lm \\
        --sections pool,big,throttle,scale --repeat 3

Needs Debian's python3-rados/python3-rbd (run with /usr/bin/python3) and the Ceph packages
(``qa/standalone/cluster.py install``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import rados
import rbd

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, 'qa', 'standalone'))

from cluster import Cluster, parse_bytes  # noqa: E402

MIB = 1 << 20
SECTIONS = ('pool', 'big', 'throttle', 'scale', 'fleet', 'verify', 'cutover')
SRC_POOL = 'bsrc'
DST_POOL = 'bdst'
# Completion polls: every poll of `ls` renders every task in the mgr, so poll gently and take
# the end time from the mgr log (ms resolution, same host clock) when it has it.
POLL_SECONDS = 0.25
STALL_SECONDS = 120.0       # a run with no task changing state/progress this long failed
FLEET_SETTLE_SECONDS = 10.0  # fleet: the mgr RSS read again this long after the batch ended
MODULE = 'rbd_livemigrate'
TASK_KEY_PREFIX = 'mgr/rbd_livemigrate/task/'
CLK_TCK = os.sysconf('SC_CLK_TCK')

LOG_TS = re.compile(r'^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+[+-]\d{4}) ')
MGR_LINE = re.compile(r'\[rbd_livemigrate (?:INFO|WARNING|ERROR|DEBUG) '
                      r'rbd_livemigrate\.(\w+)\] (.*)$')
MON_SET = re.compile(r'config-key set, key=mgr/rbd_livemigrate/task/(\w+)\}')


def log(msg: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', file=sys.stderr, flush=True)


def parse_ts(text: str) -> float:
    return datetime.datetime.strptime(text, '%Y-%m-%dT%H:%M:%S.%f%z').timestamp()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float('nan')


def spread(values: Sequence[float]) -> Dict[str, Any]:
    vals = [float(v) for v in values]
    if not vals:
        return {'n': 0}
    return {'n': len(vals), 'median': median(vals), 'min': min(vals), 'max': max(vals),
            'values': vals}


# --------------------------------------------------------------------------------------------
# process accounting

def read_rss_kib(pid: int) -> int:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise RuntimeError(f'no VmRSS for pid {pid}')


def cpu_seconds(pid: Optional[int]) -> float:
    if pid is None:
        return 0.0
    try:
        with open(f'/proc/{pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def host_cpu() -> Tuple[float, float]:
    """(busy, total) jiffies of the whole host from /proc/stat."""
    with open('/proc/stat') as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = float(sum(parts[:8]))
    return total - idle, total


class CpuMeter:
    """CPU seconds used by the cluster's daemons between start() and stop(), and how busy
    the whole host was (other clusters share these cores)."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.start_values: Dict[str, Tuple[Optional[int], float]] = {}
        self.host0 = (0.0, 0.0)

    def start(self) -> None:
        self.start_values = {}
        for name, pid in self.cluster.running_daemons().items():
            self.start_values[name] = (pid, cpu_seconds(pid))
        self.host0 = host_cpu()

    def stop(self, wall: float) -> Dict[str, Any]:
        used: Dict[str, float] = {}
        for name, (pid, before) in self.start_values.items():
            used[name] = round(cpu_seconds(pid) - before, 3)
        total = sum(used.values())
        busy, tot = host_cpu()
        host = (busy - self.host0[0]) / (tot - self.host0[1]) if tot > self.host0[1] else None
        return {'cpu_seconds': used, 'cpu_total_seconds': round(total, 3),
                'cores_busy': round(total / wall, 2) if wall > 0 else None,
                'host_busy_fraction': round(host, 3) if host is not None else None,
                'loadavg_1m': os.getloadavg()[0]}


# --------------------------------------------------------------------------------------------
# logs

class LogCursor:
    """Reads what a set of log files gained since the cursor was made."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.offsets = {}
        for p in paths:
            try:
                self.offsets[p] = os.path.getsize(p)
            except OSError:
                self.offsets[p] = 0

    def lines(self) -> Iterator[str]:
        for path, off in self.offsets.items():
            try:
                with open(path, 'rb') as f:
                    f.seek(off)
                    data = f.read().decode(errors='replace')
            except OSError:
                continue
            yield from data.splitlines()


def module_events(lines: Iterator[str]) -> Dict[str, Dict[str, float]]:
    """{task id: {'added'|'prepared'|'executed'|'committed'|'executed_logged': ts}}."""
    out: Dict[str, Dict[str, float]] = {}
    for line in lines:
        m = MGR_LINE.search(line)
        ts = LOG_TS.match(line)
        if not m or not ts:
            continue
        msg = m.group(2)
        t = parse_ts(ts.group(1))
        ev = re.match(r'added task (\w+):', msg)
        if ev:
            out.setdefault(ev.group(1), {})['added'] = t
            continue
        ev = re.match(r'task (\w+): (prepared |executed in ([\d.]+)s|.* committed$)', msg)
        if not ev:
            continue
        rec = out.setdefault(ev.group(1), {})
        if ev.group(2).startswith('prepared'):
            rec['prepared'] = t
        elif ev.group(2).startswith('executed'):
            rec['executed'] = t
            rec['executed_logged'] = float(ev.group(3))
        else:
            rec['committed'] = t
    return out


def store_writes(lines: Iterator[str]) -> Dict[str, List[float]]:
    """{task id: [timestamps of config-key set of its record]} from the mon log."""
    out: Dict[str, List[float]] = {}
    for line in lines:
        m = MON_SET.search(line)
        ts = LOG_TS.match(line)
        if m and ts:
            out.setdefault(m.group(1), []).append(parse_ts(ts.group(1)))
    return out


def phase_summary(events: Dict[str, Dict[str, float]], writes: Dict[str, List[float]],
                  ids: Sequence[str]) -> Dict[str, Any]:
    """Per-phase seconds over tasks: queue+preflight, prepare, execute, commit; writes."""
    phases: Dict[str, List[float]] = {'added_to_prepared': [], 'prepared_to_executed': [],
                                      'executed_to_committed': [], 'added_to_committed': [],
                                      'first_write_to_preparing_write': [],
                                      'preparing_write_to_prepared': []}
    nwrites: List[int] = []
    for tid in ids:
        e = events.get(tid, {})
        if 'added' in e and 'prepared' in e:
            phases['added_to_prepared'].append(e['prepared'] - e['added'])
        if 'prepared' in e and 'executed' in e:
            phases['prepared_to_executed'].append(e['executed'] - e['prepared'])
        if 'executed' in e and 'committed' in e:
            phases['executed_to_committed'].append(e['committed'] - e['executed'])
        if 'added' in e and 'committed' in e:
            phases['added_to_committed'].append(e['committed'] - e['added'])
        w = sorted(writes.get(tid, []))
        nwrites.append(len(w))
        if len(w) >= 2:
            phases['first_write_to_preparing_write'].append(w[1] - w[0])
            if 'prepared' in e:
                phases['preparing_write_to_prepared'].append(e['prepared'] - w[1])
    out: Dict[str, Any] = {k: ({'mean': round(statistics.mean(v), 4),
                                'median': round(median(v), 4), 'max': round(max(v), 4)}
                               if v else None) for k, v in phases.items()}
    out['store_writes_per_task'] = ({'min': min(nwrites), 'max': max(nwrites),
                                     'mean': round(statistics.mean(nwrites), 2)}
                                    if nwrites else None)
    return out


def fleet_written(args: argparse.Namespace) -> int:
    """Written images of the fleet: ``--fleet-written``, else as many as empty."""
    return args.fleet_images if args.fleet_written is None else args.fleet_written


def fleet_names(empty: int, written: int) -> List[str]:
    """The fleet's images: ``fe-*`` empty, then ``fw-*`` written."""
    return [f'fe-{i:05d}' for i in range(empty)] + [f'fw-{i:05d}' for i in range(written)]


# --------------------------------------------------------------------------------------------
# the bench

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.module_dir = args.module or os.path.join(args.dir + '-module', MODULE)
        # Ceph's default mon and stats timings unless --fast-timings: a figure is what an
        # operator would see (the harness's fast settings are for tests)
        self.cluster = Cluster(args.dir, osds=args.osds, mgrs=2,
                               osd_bytes=parse_bytes(args.osd_bytes), module=self.module_dir,
                               pools=[SRC_POOL, DST_POOL],
                               timing='fast' if args.fast_timings else 'default')
        self.client: Any = None
        self.results: Dict[str, Any] = {
            'started': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
            'argv': sys.argv, 'options': {k: v for k, v in vars(args).items()},
            'host': {'nproc': os.cpu_count(), 'loadavg_start': os.getloadavg()},
            'cluster_timing': {'timing': 'fast' if args.fast_timings else 'default',
                               'paxos_propose_interval': 0.1 if args.fast_timings else 1.0,
                               'mgr_stats_period': 1 if args.fast_timings else 5},
            'sections': {},
        }
        self.buf = os.urandom(4 * MIB)

    # -- plumbing ------------------------------------------------------

    def connect(self) -> None:
        self.client = rados.Rados(conffile=self.cluster.conf)
        self.client.connect(timeout=30)

    def close(self) -> None:
        if self.client is not None:
            self.client.shutdown()
            self.client = None

    def mon(self, prefix: str, **kw: Any) -> Tuple[int, bytes, str]:
        cmd = dict(kw, prefix=prefix)
        ret, out, err = self.client.mon_command(json.dumps(cmd), b'')
        return int(ret), bytes(out), str(err)

    def mgr(self, prefix: str, timeout: float = 120, **kw: Any) -> Tuple[int, str, str]:
        """mgr_command through librados, given up after ``timeout`` (failover may hang it)."""
        cmd = json.dumps(dict(kw, prefix=prefix))
        box: List[Any] = []

        def call() -> None:
            try:
                box.append(self.client.mgr_command(cmd, b''))
            except Exception as e:      # noqa: BLE001 - reported below
                box.append(e)
        t = threading.Thread(target=call, daemon=True)
        t.start()
        t.join(timeout)
        if not box:
            return -110, '', f'{prefix}: no answer within {timeout:g}s'
        if isinstance(box[0], Exception):
            return -5, '', f'{prefix}: {box[0]}'
        ret, out, err = box[0]
        out_text = out.decode() if isinstance(out, (bytes, bytearray)) else str(out)
        err_text = err.decode() if isinstance(err, (bytes, bytearray)) else str(err)
        return int(ret), out_text, err_text

    def mgr_ok(self, prefix: str, **kw: Any) -> Any:
        kw.setdefault('format', 'json')       # changing commands answer one plain line
        ret, out, err = self.mgr(prefix, **kw)
        if ret != 0:
            raise RuntimeError(f'{prefix} {kw} -> {ret}: {err}')
        return json.loads(out) if out.strip() else None

    def ioctx(self, pool: str) -> Any:
        return self.client.open_ioctx(pool)

    def mgr_logs(self) -> List[str]:
        return [self.cluster.mgr_log(m) for m in self.cluster.mgr_ids]

    def cursors(self) -> Tuple[LogCursor, LogCursor]:
        return LogCursor(self.mgr_logs()), LogCursor([self.cluster.log_file('mon.a')])

    def create_images(self, names: Sequence[str], size: int) -> float:
        """Create the images in SRC_POOL, every byte written; returns seconds taken."""
        t0 = time.monotonic()
        io = self.ioctx(SRC_POOL)
        try:
            def one(name: str) -> None:
                rbd.RBD().create(io, name, size, old_format=False)
                with rbd.Image(io, name) as image:
                    off = 0
                    while off < size:
                        n = min(len(self.buf), size - off)
                        image.write(self.buf[:n], off)
                        off += n
            with ThreadPoolExecutor(max_workers=4) as pool:
                list(pool.map(one, names))
        finally:
            io.close()
        return time.monotonic() - t0

    def remove_images(self, pool: str, names: Sequence[str]) -> None:
        io = self.ioctx(pool)
        try:
            existing = set(rbd.RBD().list(io))
            for name in names:
                if name in existing:
                    rbd.RBD().remove(io, name)
        finally:
            io.close()

    def clean_pools(self) -> None:
        for pool in (SRC_POOL, DST_POOL):
            io = self.ioctx(pool)
            try:
                names = list(rbd.RBD().list(io))
            finally:
                io.close()
            self.remove_images(pool, names)

    def rbd_cli(self, *args: str) -> None:
        self.cluster.rbd(*args, timeout=600)

    def quiesce(self, max_wait: float = 20.0, threshold: float = 0.25) -> float:
        """Wait (at most ``max_wait`` s) until this cluster's daemons use less than
        ``threshold`` cores over one second, e.g. after deleting images; seconds waited."""
        t0 = time.monotonic()
        pids = [p for p in self.cluster.running_daemons().values()]
        while time.monotonic() - t0 < max_wait:
            c0 = sum(cpu_seconds(p) for p in pids)
            time.sleep(1.0)
            if sum(cpu_seconds(p) for p in pids) - c0 < threshold:
                break
        return round(time.monotonic() - t0, 1)

    def module_option_names(self) -> List[str]:
        dump = json.loads(self.mon('mgr dump', format='json')[1])
        for mod in dump.get('available_modules', []):
            if mod.get('name') == MODULE:
                return sorted(mod.get('module_options', {}))
        return []

    def wait_tasks(self, ids: Sequence[str], timeout: float) -> Tuple[float, Dict[str, Any]]:
        """Poll ls until every task is committed; (monotonic time seen, {id: view})."""
        deadline = time.monotonic() + timeout
        want = set(ids)
        last_sig: List[Any] = []
        last_change = time.monotonic()
        while True:
            views = {v['id']: v for v in self.mgr_ok('rbd livemigrate ls', format='json')
                     if v.get('id') in want}
            now = time.monotonic()
            bad = [v for v in views.values() if v['state'] in ('failed', 'aborted')]
            if bad:
                raise RuntimeError(f'task(s) ended badly: {bad[:3]}')
            if len(views) == len(want) and all(v['state'] == 'committed'
                                               for v in views.values()):
                return now, views
            sig = sorted((v['id'], v['state'], round(v.get('progress') or 0, 2))
                         for v in views.values())
            if sig != last_sig:
                last_sig, last_change = sig, now
            if now > deadline or now - last_change > STALL_SECONDS:
                why = sorted({f"{v['state']}: {v.get('blocked_reason') or v.get('waiting_reason')}"
                              for v in views.values() if v['state'] != 'committed'})
                raise RuntimeError(f'tasks not committed (no change for '
                                   f'{now - last_change:.0f}s): {why[:5]}')
            time.sleep(POLL_SECONDS)

    # -- section 1: many small images ---------------------------------

    def run_module_pool(self, tag: str, names: List[str],
                        verify: Optional[str] = 'off') -> Dict[str, Any]:
        """add-pool of ``names``; ``verify`` None: the product's default mode."""
        mgr_cur, mon_cur = self.cursors()
        epoch0 = self.osdmap_epoch()
        cpu = CpuMeter(self.cluster)
        cpu.start()
        t0 = time.monotonic()
        t0_epoch = time.time()
        kw: Dict[str, Any] = {} if verify is None else {'verify': verify}
        batch = self.mgr_ok('rbd livemigrate add-pool', source_pool_spec=SRC_POOL,
                            dest_pool_spec=DST_POOL, pattern=f'{tag}-*', **kw)
        t_added = time.monotonic()
        ids = self.batch_task_ids(batch['id'], len(names))
        t_end, _ = self.wait_tasks(ids, timeout=900)
        polled = t_end - t0
        res: Dict[str, Any] = {'polled_seconds': round(polled, 3),
                               'add_pool_seconds': round(t_added - t0, 3),
                               # OSDMap changes while the batch ran (snapshots are ones)
                               'osdmap_epochs': self.osdmap_epoch() - epoch0}
        res.update(cpu.stop(polled))
        events = module_events(mgr_cur.lines())
        res['phases'] = phase_summary(events, store_writes(mon_cur.lines()), ids)
        committed = [events[i]['committed'] for i in ids if 'committed' in events.get(i, {})]
        added_ts = [events[i]['added'] for i in ids if 'added' in events.get(i, {})]
        if committed and added_ts:
            res['log_first_added_to_last_committed'] = round(max(committed) - min(added_ts), 3)
        # add-pool sent -> last 'committed' line in the mgr log; the poll's time if no log
        res['seconds'] = round(max(committed) - t0_epoch, 3) if len(committed) == len(ids) \
            else round(polled, 3)
        return res

    def batch_task_ids(self, batch_id: str, n: int, timeout: float = 1800) -> List[str]:
        """The ids of a batch's tasks once it has listed its images."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.mgr_ok('rbd livemigrate status', task_or_image=batch_id, format='json')
            if st['state'] != 'expanding':
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f'batch {batch_id} still listing: {st}')
            time.sleep(POLL_SECONDS)
        if st['refused_count']:
            raise RuntimeError(f'batch {batch_id} refused images: {st["refused"][:3]}')
        ids = [v['id'] for v in self.mgr_ok('rbd livemigrate ls', format='json')
               if v.get('batch_id') == batch_id]
        if len(ids) != n:
            raise RuntimeError(f'batch {batch_id} has {len(ids)} tasks for {n} images')
        return ids

    def run_cli_loop(self, names: List[str]) -> Dict[str, Any]:
        cpu = CpuMeter(self.cluster)
        cpu.start()
        per = {'prepare': 0.0, 'execute': 0.0, 'commit': 0.0}
        t0 = time.monotonic()
        for name in names:
            for step in ('prepare', 'execute', 'commit'):
                ts = time.monotonic()
                if step == 'prepare':
                    self.rbd_cli('migration', 'prepare', f'{SRC_POOL}/{name}',
                                 f'{DST_POOL}/{name}')
                else:
                    self.rbd_cli('migration', step, '--no-progress', f'{DST_POOL}/{name}')
                per[step] += time.monotonic() - ts
        wall = time.monotonic() - t0
        res: Dict[str, Any] = {'seconds': round(wall, 3),
                               'step_seconds': {k: round(v, 3) for k, v in per.items()}}
        res.update(cpu.stop(wall))
        return res

    def support_tasks_left(self, names: Sequence[str]) -> List[Dict[str, Any]]:
        want = set(names)
        tasks = self.mgr_ok('rbd task list') or []
        return [t for t in tasks if t.get('refs', {}).get('pool_name') == DST_POOL
                and t.get('refs', {}).get('image_name') in want]

    def run_rbd_support(self, names: List[str]) -> Dict[str, Any]:
        cpu = CpuMeter(self.cluster)
        cpu.start()
        mgr_cur = LogCursor(self.mgr_logs())
        res: Dict[str, Any] = {}
        t0 = time.monotonic()
        t0_epoch = time.time()
        for name in names:
            self.rbd_cli('migration', 'prepare', f'{SRC_POOL}/{name}', f'{DST_POOL}/{name}')
        t_prep = time.monotonic()
        retries = 0
        for action in ('execute', 'commit'):
            ta = time.monotonic()
            for name in names:
                self.mgr_ok(f'rbd task add migration {action}',
                            image_spec=f'{DST_POOL}/{name}')
            res[f'queue_{action}_seconds'] = round(time.monotonic() - ta, 3)
            deadline = time.monotonic() + 900
            while True:
                left = self.support_tasks_left(names)
                if not left:
                    break
                retries = max([retries] + [int(t.get('retry_attempts', 0)) for t in left])
                if time.monotonic() > deadline:
                    raise RuntimeError(f'rbd_support tasks still queued: {left[:2]}')
                time.sleep(POLL_SECONDS)
            res[f'{action}_phase_seconds'] = round(time.monotonic() - ta, 3)
        wall = time.monotonic() - t0
        res.update({'polled_seconds': round(wall, 3), 'seconds': round(wall, 3),
                    'prepare_cli_seconds': round(t_prep - t0, 3),
                    'max_retry_attempts_seen': retries})
        res.update(cpu.stop(wall))
        # rbd_support logs 'remove_task: task=...' when a task is done: the last one
        # ends the run (the poll would add up to POLL_SECONDS)
        removed = [parse_ts(m.group(1)) for line in mgr_cur.lines()
                   if '[rbd_support ' in line and '] remove_task: ' in line
                   for m in [LOG_TS.match(line)] if m]
        if len(removed) >= 2 * len(names):
            res['seconds'] = round(max(removed) - t0_epoch, 3)
        return res

    def section_pool(self) -> Dict[str, Any]:
        a = self.args
        n, size = a.images, parse_bytes(a.image_size)
        runs: List[Dict[str, Any]] = []
        for r in range(a.repeat):
            run: Dict[str, Any] = {}
            variants: List[Tuple[str, str, Callable[[List[str]], Dict[str, Any]]]] = [
                ('module', f'm{r}', functools.partial(self.run_module_pool, f'm{r}')),
                ('module_defaults', f'd{r}',
                 functools.partial(self.run_module_pool, f'd{r}', verify=None)),
                ('cli_loop', f'c{r}', self.run_cli_loop),
                ('rbd_support', f's{r}', self.run_rbd_support),
            ]
            # rotate the order so no variant always runs first (warm caches, drift)
            variants = variants[r % len(variants):] + variants[:r % len(variants)]
            for key, tag, fn in variants:
                names = [f'{tag}-{i:03d}' for i in range(n)]
                mk = self.create_images(names, size)
                waited = self.quiesce()
                log(f'pool run {r + 1}/{a.repeat}: {key} ({n} x {a.image_size}, '
                    f'created in {mk:.1f}s, quiet after {waited:g}s)')
                run[key] = fn(names)
                run[key]['create_images_seconds'] = round(mk, 3)
                run[key]['quiesce_seconds'] = waited
                log(f'  {key}: {run[key]["seconds"]:.2f}s')
                self.remove_images(DST_POOL, names)
                self.remove_images(SRC_POOL, names)
            run['ratio_vs_cli_loop'] = run['module']['seconds'] / run['cli_loop']['seconds']
            run['ratio_defaults_vs_cli_loop'] = (run['module_defaults']['seconds']
                                                 / run['cli_loop']['seconds'])
            run['ratio_vs_rbd_support'] = (run['module']['seconds']
                                           / run['rbd_support']['seconds'])
            runs.append(run)
        opts = self.module_settings()
        conc = opts.get('max_concurrent') or '2 (default)'
        return {
            'images': n, 'image_bytes': size, 'runs': runs,
            # what each row compares (the module's rows differ only in --verify)
            'compares': {
                'module': f'add-pool --verify off at max_concurrent {conc}',
                'module_defaults': f'add-pool at the operator\'s defaults (--verify auto: a '
                                   f'comparison per image, no protective snapshot for '
                                   f'sources without clients; max_concurrent {conc})',
                'cli_loop': 'rbd migration prepare/execute/commit, one image after the other '
                            '(concurrency 1, nothing verified)',
                'rbd_support': 'rbd migration prepare (CLI) for each, then ceph rbd task add '
                               'migration execute and commit (rbd_support\'s own queue)',
            },
            'module_seconds': spread([x['module']['seconds'] for x in runs]),
            'ratio_defaults_vs_verify_off': spread([x['module_defaults']['seconds']
                                                    / x['module']['seconds'] for x in runs]),
            'osdmap_epochs_per_image_defaults': spread([x['module_defaults']['osdmap_epochs'] / n
                                                        for x in runs]),
            'module_defaults_seconds': spread([x['module_defaults']['seconds'] for x in runs]),
            'ratio_defaults_vs_cli_loop': spread([x['ratio_defaults_vs_cli_loop']
                                                  for x in runs]),
            'cli_loop_seconds': spread([x['cli_loop']['seconds'] for x in runs]),
            'rbd_support_seconds': spread([x['rbd_support']['seconds'] for x in runs]),
            'ratio_vs_cli_loop': spread([x['ratio_vs_cli_loop'] for x in runs]),
            'ratio_vs_rbd_support': spread([x['ratio_vs_rbd_support'] for x in runs]),
            'module_options': opts,
        }

    def osdmap_epoch(self) -> int:
        ret, out, err = self.mon('osd dump', format='json')
        if ret != 0:
            raise RuntimeError(f'osd dump: {err}')
        return int(json.loads(out)['epoch'])

    def module_settings(self) -> Dict[str, Optional[str]]:
        out: Dict[str, Optional[str]] = {}
        for opt in ('max_concurrent', 'bandwidth_limit_bytes'):
            ret, val, _ = self.mon('config get', who='mgr', key=f'mgr/{MODULE}/{opt}')
            out[opt] = val.decode().strip() if ret == 0 else None
        return out

    # -- section 2: one big image ---------------------------------------

    def module_one(self, name: str, bandwidth_limit: Optional[str] = None,
                   timeout: float = 900, verify: str = 'off') -> Dict[str, Any]:
        """add one image, wait until committed; times from the poll and from the mgr log."""
        mgr_cur, mon_cur = self.cursors()
        cpu = CpuMeter(self.cluster)
        cpu.start()
        kw: Dict[str, Any] = {'source_spec': f'{SRC_POOL}/{name}',
                              'dest_spec': f'{DST_POOL}/{name}', 'verify': verify}
        if bandwidth_limit:
            kw['bandwidth_limit'] = bandwidth_limit
        t0 = time.monotonic()
        t0_epoch = time.time()
        task = self.mgr_ok('rbd livemigrate add', **kw)
        rates: List[float] = []
        deadline = t0 + timeout
        while True:
            st = self.mgr_ok('rbd livemigrate status', task_or_image=task['id'],
                             format='json')
            if st['state'] == 'executing' and st.get('rate_bytes_per_sec'):
                rates.append(float(st['rate_bytes_per_sec']))
            if st['state'] == 'committed':
                break
            if st['state'] in ('failed', 'aborted') or time.monotonic() > deadline:
                raise RuntimeError(f'task {task["id"]}: {st["state"]} {st.get("error")} '
                                   f'{st.get("blocked_reason") or st.get("waiting_reason")}')
            time.sleep(POLL_SECONDS)
        wall = time.monotonic() - t0
        ev = module_events(mgr_cur.lines()).get(task['id'], {})
        res: Dict[str, Any] = {'id': task['id'], 'polled_seconds': round(wall, 3),
                               'seconds': round(ev['committed'] - t0_epoch, 3)
                               if 'committed' in ev else round(wall, 3)}
        if 'prepared' in ev and 'executed' in ev:
            res['execute_seconds'] = round(ev['executed'] - ev['prepared'], 3)
            res['execute_seconds_logged'] = ev.get('executed_logged')
        if 'added' in ev and 'committed' in ev:
            res['log_added_to_committed'] = round(ev['committed'] - ev['added'], 3)
        if 'added' in ev and 'prepared' in ev:
            res['log_added_to_prepared'] = round(ev['prepared'] - ev['added'], 3)
        if 'executed' in ev and 'committed' in ev:
            res['log_executed_to_committed'] = round(ev['committed'] - ev['executed'], 3)
        res['store_writes'] = len(store_writes(mon_cur.lines()).get(task['id'], []))
        res['status_rates_seen'] = [round(x) for x in rates]
        res['final'] = st
        res.update(cpu.stop(wall))
        return res

    def section_big(self) -> Dict[str, Any]:
        a = self.args
        size = parse_bytes(a.big_size)
        runs: List[Dict[str, Any]] = []
        for r in range(a.repeat):
            run: Dict[str, Any] = {}
            order = ['module', 'cli'] if r % 2 == 0 else ['cli', 'module']
            for key in order:
                name = f'big-{key}-{r}'
                mk = self.create_images([name], size)
                self.quiesce()
                log(f'big run {r + 1}/{a.repeat}: {key} ({a.big_size}, created in {mk:.1f}s)')
                if key == 'module':
                    run[key] = self.module_one(name)
                    # measured as the other side is: around librbd's
                    # migration_execute, in the process that calls it (the
                    # record's execute_seconds); the mgr log's prepared ->
                    # executed span kept apart
                    run[key]['execute_seconds_log'] = run[key].pop('execute_seconds', None)
                    run[key]['execute_seconds'] = run[key]['final']['execute_seconds']
                else:
                    self.rbd_cli('migration', 'prepare', f'{SRC_POOL}/{name}',
                                 f'{DST_POOL}/{name}')
                    self.quiesce()
                    cpu = CpuMeter(self.cluster)
                    cpu.start()
                    # librbd's migration_execute in this process, timed around
                    # the call alone, as the module times its own (no process
                    # start, no CLI); the CLI's wall time is recorded apart
                    io = self.ioctx(DST_POOL)
                    try:
                        t0 = time.monotonic()
                        rbd.RBD().migration_execute(io, name)
                        wall = time.monotonic() - t0
                    finally:
                        io.close()
                    run[key] = {'execute_seconds': round(wall, 3),
                                'how': 'rbd.RBD().migration_execute in the bench process'}
                    run[key].update(cpu.stop(wall))
                    self.rbd_cli('migration', 'commit', '--no-progress', f'{DST_POOL}/{name}')
                log(f'  {key}: {json.dumps({k: v for k, v in run[key].items() if "sec" in k})}')
                self.remove_images(DST_POOL, [name])
                self.remove_images(SRC_POOL, [name])
            cli = run['cli']['execute_seconds']
            run['ratio_total_vs_cli_execute'] = run['module']['seconds'] / cli
            if 'execute_seconds' in run['module']:
                run['ratio_execute_vs_cli_execute'] = run['module']['execute_seconds'] / cli
            runs.append(run)
        return {
            'image_bytes': size, 'runs': runs,
            'execute_measured_as': 'around librbd migration_execute in the calling process, '
                                   'on both sides (module: the record\'s execute_seconds; '
                                   'limit: the bench process)',
            'module_total_seconds': spread([x['module']['seconds'] for x in runs]),
            'module_execute_seconds': spread([x['module']['execute_seconds'] for x in runs
                                              if 'execute_seconds' in x['module']]),
            'cli_execute_seconds': spread([x['cli']['execute_seconds'] for x in runs]),
            'ratio_total_vs_cli_execute': spread([x['ratio_total_vs_cli_execute']
                                                  for x in runs]),
            'ratio_execute_vs_cli_execute': spread([x['ratio_execute_vs_cli_execute']
                                                    for x in runs
                                                    if 'ratio_execute_vs_cli_execute' in x]),
        }

    # -- verify: the comparison before commit against the copy ------------

    def section_verify(self) -> Dict[str, Any]:
        """One ``--big-size`` written image per run added with ``--verify
        full``: the comparison's seconds (status ``verification.seconds``)
        against the same task's execute (``execute_seconds``), in one run."""
        a = self.args
        size = parse_bytes(a.big_size)
        runs: List[Dict[str, Any]] = []
        for r in range(a.repeat):
            name = f'verify-{r}'
            mk = self.create_images([name], size)
            self.quiesce()
            log(f'verify run {r + 1}/{a.repeat}: {a.big_size} (created in {mk:.1f}s)')
            one = self.module_one(name, verify='full')
            v = one['final']['verification']
            run = {'execute_seconds': one['final']['execute_seconds'],
                   'verify_seconds': v['seconds'], 'bytes_compared': v['bytes_compared'],
                   'compared': v['compared'], 'result': v['result']}
            run['ratio_verify_vs_execute'] = run['verify_seconds'] / run['execute_seconds']
            log(f'  {json.dumps(run)}')
            runs.append(run)
            self.remove_images(DST_POOL, [name])
        return {'image_bytes': size, 'runs': runs,
                'execute_seconds': spread([x['execute_seconds'] for x in runs]),
                'verify_seconds': spread([x['verify_seconds'] for x in runs]),
                'ratio_verify_vs_execute': spread([x['ratio_verify_vs_execute']
                                                   for x in runs])}

    # -- cutover: from a client closing the source to the destination opening

    def cutover_once(self, name: str, manual: bool) -> Dict[str, Any]:
        """A client holds the source; the task waits for it (or, manual, for
        ``cutover``); the client closes it, and this process opens the
        destination as soon as it can: that gap, measured from outside."""
        src_io, dst_io = self.ioctx(SRC_POOL), self.ioctx(DST_POOL)
        try:
            image = rbd.Image(src_io, name)
            # the product's default verify mode (its protective snapshot is
            # what an operator's cutover carries)
            kw: Dict[str, Any] = {'source_spec': f'{SRC_POOL}/{name}',
                                  'dest_spec': f'{DST_POOL}/{name}'}
            if manual:
                kw['manual_cutover'] = True
            task = self.mgr_ok('rbd livemigrate add', **kw)
            deadline = time.monotonic() + 60
            while True:
                st = self.mgr_ok('rbd livemigrate status', task_or_image=task['id'],
                                 format='json')
                why = st.get('waiting_reason') or st.get('blocked_reason') or ''
                if ('cutover' in why) if manual else ('open by' in why):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f'task {task["id"]} never waited: {st}')
                time.sleep(0.05)
            # the module settled into watching the clients: its protective
            # snapshot was taken meanwhile (as for a client that runs on for
            # a while after the add); then one paxos interval, so that the
            # snapshot's own monitor commit is not what the cutover meets
            while not st.get('protect_snap'):
                if time.monotonic() > deadline:
                    raise RuntimeError(f'task {task["id"]} took no snapshot: {st}')
                time.sleep(0.05)
                st = self.mgr_ok('rbd livemigrate status', task_or_image=task['id'],
                                 format='json')
            time.sleep(1.5)
            t0 = time.monotonic()
            image.close()
            cut: Optional[Dict[str, Any]] = None
            if manual:
                cut = self.mgr_ok('rbd livemigrate cutover', task_id=task['id'])
            while True:
                try:
                    with rbd.Image(dst_io, name, read_only=True):
                        break
                except rbd.ImageNotFound:
                    if time.monotonic() - t0 > 60:
                        raise RuntimeError(f'{DST_POOL}/{name} never appeared')
                    time.sleep(0.002)
            gap = time.monotonic() - t0
            self.wait_tasks([task['id']], timeout=300)
            st = self.mgr_ok('rbd livemigrate status', task_or_image=task['id'], format='json')
            return {'gap_ms': round(gap * 1000, 1), 'cutover_ms': st['cutover_ms'],
                    'command_cutover_ms': cut['cutover_ms'] if cut else None}
        finally:
            src_io.close()
            dst_io.close()

    def section_cutover(self) -> Dict[str, Any]:
        a = self.args
        res: Dict[str, Any] = {'runs_per_mode': a.cutover_runs, 'verify': 'auto (default)'}
        self.mon('config set', who='mgr', name=f'mgr/{MODULE}/max_concurrent', value='4')
        for manual in (False, True):
            mode = 'manual' if manual else 'auto'
            names = [f'cut-{mode}-{i}' for i in range(a.cutover_runs)]
            self.create_images(names, 16 * MIB)
            self.quiesce()
            runs = []
            for i, name in enumerate(names):
                runs.append(self.cutover_once(name, manual))
                log(f'cutover {mode} {i + 1}/{len(names)}: {json.dumps(runs[-1])}')
            self.remove_images(DST_POOL, names)
            gaps = [r['gap_ms'] for r in runs]
            res[mode] = {'runs': runs, 'gap_ms': spread(gaps),
                         'worst_gap_ms': max(gaps),
                         'cutover_ms': spread([r['cutover_ms'] for r in runs
                                               if r['cutover_ms'] is not None])}
        return res

    # -- section 3: throttle --------------------------------------------

    def section_throttle(self) -> Dict[str, Any]:
        a = self.args
        size = parse_bytes(a.throttle_size)
        limit = parse_bytes(a.throttle_limit)
        runs: List[Dict[str, Any]] = []
        for r in range(a.repeat):
            name = f'thr-{r}'
            mk = self.create_images([name], size)
            self.quiesce()
            log(f'throttle run {r + 1}/{a.repeat}: {a.throttle_size} at {a.throttle_limit}/s '
                f'(created in {mk:.1f}s)')
            res = self.module_one(name, bandwidth_limit=a.throttle_limit)
            if 'execute_seconds' in res:
                res['rate_bytes_per_sec'] = size / res['execute_seconds']
                res['error_percent'] = 100.0 * (res['rate_bytes_per_sec'] - limit) / limit
            log(f'  rate {res.get("rate_bytes_per_sec", 0) / MIB:.1f} MiB/s, '
                f'error {res.get("error_percent", float("nan")):+.1f}%')
            self.remove_images(DST_POOL, [name])
            runs.append(res)
        out: Dict[str, Any] = {
            'image_bytes': size, 'limit_bytes_per_sec': limit, 'runs': runs,
            'rate_bytes_per_sec': spread([x['rate_bytes_per_sec'] for x in runs
                                          if 'rate_bytes_per_sec' in x]),
            'error_percent': spread([x['error_percent'] for x in runs if 'error_percent' in x]),
        }
        options = self.module_option_names()
        out['module_options_seen'] = options
        if 'total_bandwidth_limit_bytes' in options:
            out['total'] = self.throttle_total(size, limit)
        else:
            out['total'] = {'skipped': 'the module has no total_bandwidth_limit_bytes option'}
            log('  total throttle skipped: no total_bandwidth_limit_bytes option')
        return out

    def throttle_total(self, size: int, limit: int) -> Dict[str, Any]:
        a = self.args
        key = f'mgr/{MODULE}/total_bandwidth_limit_bytes'
        runs: List[Dict[str, Any]] = []
        self.cluster.ceph('config', 'set', 'mgr', key, str(limit))
        try:
            for r in range(a.repeat):
                names = [f'thrt-{r}-{i}' for i in range(2)]
                self.create_images(names, size)
                self.quiesce()
                log(f'total throttle run {r + 1}/{a.repeat}: 2 x {a.throttle_size}')
                mgr_cur, _ = self.cursors()
                ids = [self.mgr_ok('rbd livemigrate add', source_spec=f'{SRC_POOL}/{n}',
                                   dest_spec=f'{DST_POOL}/{n}', verify='off')['id']
                       for n in names]
                self.wait_tasks(ids, timeout=900)
                ev = module_events(mgr_cur.lines())
                starts = [ev[i]['prepared'] for i in ids]
                ends = [ev[i]['executed'] for i in ids]
                span = max(ends) - min(starts)
                rate = 2 * size / span
                runs.append({'ids': ids, 'execute_span_seconds': round(span, 3),
                             'rate_bytes_per_sec': rate,
                             'error_percent': 100.0 * (rate - limit) / limit})
                log(f'  total rate {rate / MIB:.1f} MiB/s')
                self.remove_images(DST_POOL, names)
        finally:
            self.cluster.ceph('config', 'rm', 'mgr', key)
        return {'runs': runs,
                'error_percent': spread([x['error_percent'] for x in runs])}

    # -- section 4: scale -----------------------------------------------

    def active_and_standby(self) -> Tuple[str, str]:
        dump = json.loads(self.mon('mgr dump', format='json')[1])
        standbys = [s['name'] for s in dump.get('standbys', [])]
        if not dump.get('available') or not standbys:
            raise RuntimeError('need an active mgr and a standby')
        return str(dump['active_name']), standbys[0]

    def wait_standby(self, name: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dump = json.loads(self.mon('mgr dump', format='json')[1])
            if name in [s['name'] for s in dump.get('standbys', [])]:
                pid = self.cluster.mgr_pid(name)
                if pid is not None:
                    return
            time.sleep(0.2)
        raise RuntimeError(f'mgr.{name} did not come back as a standby')

    def failover(self, want: int) -> Dict[str, Any]:
        """ceph mgr fail the active mgr; measure the standby taking over and loading."""
        active, standby = self.active_and_standby()
        self.wait_standby(standby)
        time.sleep(2)                           # let the standby's RSS settle
        pid = self.cluster.mgr_pid(standby)
        assert pid is not None
        rss_before = read_rss_kib(pid)
        cpu_before = cpu_seconds(pid)
        mgr_cur = LogCursor(self.mgr_logs())
        t0 = time.monotonic()
        ret, _, err = self.mon('mgr fail', who=active)
        if ret != 0:
            raise RuntimeError(f'mgr fail {active}: {err}')
        # only the new active mgr's answer counts: wait for the MgrMap to name it
        while True:
            dump = json.loads(self.mon('mgr dump', format='json')[1])
            if dump.get('active_name') == standby and dump.get('available'):
                break
            if time.monotonic() - t0 > 120:
                raise RuntimeError(f'mgr.{standby} did not become active')
            time.sleep(0.02)
        t_map = time.monotonic()
        first_answer: Optional[float] = None
        last = ''
        count = -1
        while True:
            ret, out, err = self.mgr('rbd livemigrate ls', timeout=30, format='json')
            now = time.monotonic()
            if ret == 0:
                if first_answer is None:
                    first_answer = now
                count = sum(1 for v in json.loads(out) if v.get('id'))
                if count >= want:
                    break
            else:
                last = f'{ret} {err.strip()[:200]}'
            if now - t0 > 300:
                raise RuntimeError(f'ls did not list {want} tasks within 300s '
                                   f'(count {count}, last {last})')
            time.sleep(0.05)
        reload_s = now - t0
        rss_ready = read_rss_kib(pid)
        loaded_line = None
        for line in mgr_cur.lines():
            if 'loaded' in line and 'task(s)' in line and MODULE in line:
                loaded_line = line
        ts_match = LOG_TS.match(loaded_line) if loaded_line else None
        load_ts = parse_ts(ts_match.group(1)) if ts_match else None
        time.sleep(5)
        rss_settled = read_rss_kib(pid)
        # idle CPU of the new active mgr over 10 s (scheduler ticks over every task)
        c0 = cpu_seconds(pid)
        time.sleep(10)
        idle_cpu = cpu_seconds(pid) - c0
        rss_idle = read_rss_kib(pid)
        return {'failed': active, 'new_active': standby, 'pid': pid,
                'reload_seconds': round(reload_s, 3), 'tasks_listed': count,
                'mgrmap_switch_seconds': round(t_map - t0, 3),
                'first_ls_answer_seconds': round((first_answer or now) - t0, 3),
                'loaded_log_line': loaded_line,
                'loaded_log_epoch': load_ts,
                'rss_standby_kib': rss_before, 'rss_ready_kib': rss_ready,
                'rss_settled_kib': rss_settled, 'rss_after_idle_kib': rss_idle,
                'rss_growth_mib': round((rss_settled - rss_before) / 1024, 1),
                'cpu_seconds_to_ready': round(cpu_seconds(pid) - cpu_before - idle_cpu, 2),
                'idle_cpu_fraction_10s': round(idle_cpu / 10, 3)}

    def ls_latency(self, n: int = 5) -> Dict[str, Any]:
        binding: List[float] = []
        size = 0
        for _ in range(n):
            t0 = time.monotonic()
            ret, out, err = self.mgr('rbd livemigrate ls', format='json')
            binding.append(time.monotonic() - t0)
            if ret != 0:
                raise RuntimeError(f'ls: {err}')
            size = len(out)
        cli: List[float] = []
        for _ in range(n):
            t0 = time.monotonic()
            p = subprocess.run(['ceph', 'rbd', 'livemigrate', 'ls', '--format', 'json'],
                               env=self.cluster.env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, timeout=120)
            cli.append(time.monotonic() - t0)
            if p.returncode != 0:
                raise RuntimeError(f'ceph rbd livemigrate ls: {p.stderr!r}')
        return {'binding_seconds': spread(binding), 'cli_seconds': spread(cli),
                'output_bytes': size}

    def write_records(self, count: int) -> Tuple[List[str], float]:
        os.environ.setdefault('UNITTEST', '1')
        sys.path.insert(0, os.path.join(REPO, 'src', 'pybind', 'mgr'))
        task_mod: Any = importlib.import_module('rbd_livemigrate.task')
        now = time.time()
        records: List[Tuple[str, str]] = []
        seen = set()
        for i in range(count):
            tid = task_mod.Task.new_id()
            while tid in seen:
                tid = task_mod.Task.new_id()
            seen.add(tid)
            task = task_mod.Task(
                id=tid, source=f'scale-src/img-{i:05d}', destination=f'scale-dst/img-{i:05d}',
                paused=True, created=now + i * 1e-3, size_bytes=16 * MIB,
                source_image_id=f'{i:012x}')
            records.append((TASK_KEY_PREFIX + tid, task.dumps()))

        def put(chunk: List[Tuple[str, str]]) -> None:
            for key, val in chunk:
                ret, _, err = self.mon('config-key set', key=key, val=val)
                if ret != 0:
                    raise RuntimeError(f'config-key set {key}: {err}')
        threads = self.args.scale_threads
        chunks = [records[i::threads] for i in range(threads)]
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(put, chunks))
        return [k for k, _ in records], time.monotonic() - t0

    def store_value_sizes(self) -> Dict[str, Any]:
        ret, out, err = self.mon('config-key dump', key=f'mgr/{MODULE}/')
        if ret != 0:
            raise RuntimeError(f'config-key dump: {err}')
        values = json.loads(out)
        sizes = sorted(len(str(v).encode()) for v in values.values())
        big = max(values, key=lambda k: len(str(values[k]).encode())) if values else None
        return {'keys': len(values), 'max_value_bytes': sizes[-1] if sizes else 0,
                'largest_key': big, 'median_value_bytes': median(sizes) if sizes else 0,
                'total_bytes': sum(sizes)}

    def section_scale(self) -> Dict[str, Any]:
        a = self.args
        existing = len([v for v in self.mgr_ok('rbd livemigrate ls', format='json')
                        if v.get('id')])
        log(f'scale: baseline failover with {existing} task(s) in the store')
        baseline = self.failover(existing)
        log(f'  reload {baseline["reload_seconds"]:.2f}s, '
            f'RSS +{baseline["rss_growth_mib"]} MiB')
        log(f'scale: writing {a.scale_tasks} paused task records')
        _, write_s = self.write_records(a.scale_tasks)
        log(f'  written in {write_s:.1f}s')
        want = existing + a.scale_tasks
        runs: List[Dict[str, Any]] = []
        for r in range(a.repeat):
            log(f'scale run {r + 1}/{a.repeat}: failover, waiting for ls to list {want}')
            fo = self.failover(want)
            fo['ls'] = self.ls_latency()
            fo['rss_growth_net_mib'] = round(fo['rss_growth_mib'] - baseline['rss_growth_mib'],
                                             1)
            log(f'  reload {fo["reload_seconds"]:.2f}s, ls {fo["ls"]["cli_seconds"]["median"]:.2f}s'
                f' (CLI) / {fo["ls"]["binding_seconds"]["median"]:.2f}s (binding), '
                f'RSS +{fo["rss_growth_mib"]} MiB (net +{fo["rss_growth_net_mib"]})')
            runs.append(fo)
        sizes = self.store_value_sizes()
        return {
            'tasks_written': a.scale_tasks, 'tasks_before': existing,
            'write_seconds': round(write_s, 2), 'baseline_failover': baseline, 'runs': runs,
            'reload_seconds': spread([x['reload_seconds'] for x in runs]),
            'baseline_reload_seconds': baseline['reload_seconds'],
            'ls_cli_seconds': spread([x['ls']['cli_seconds']['median'] for x in runs]),
            'ls_binding_seconds': spread([x['ls']['binding_seconds']['median'] for x in runs]),
            'rss_growth_mib': spread([x['rss_growth_mib'] for x in runs]),
            'rss_growth_net_mib': spread([x['rss_growth_net_mib'] for x in runs]),
            'idle_cpu_fraction': spread([x['idle_cpu_fraction_10s'] for x in runs]),
            'store': sizes,
        }

    # -- section 5: a fleet of small images -------------------------------

    def create_fleet(self, names: Sequence[str], written: bool) -> float:
        """Small images (4 MiB, one 4 KiB write each if ``written``), 8 threads."""
        t0 = time.monotonic()
        io = self.ioctx(SRC_POOL)
        buf = self.buf[:4096]
        try:
            def one(name: str) -> None:
                rbd.RBD().create(io, name, 4 * MIB, old_format=False)
                if written:
                    with rbd.Image(io, name) as image:
                        image.write(buf, 0)
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(one, names))
        finally:
            io.close()
        return time.monotonic() - t0

    def librbd_limit(self, names: List[str], threads: int) -> float:
        """prepare/execute/commit of every image on ``threads`` threads, each with its
        own rados client, no module: what librbd does at this concurrency."""
        todo = list(names)
        lock = threading.Lock()

        def worker() -> None:
            c = rados.Rados(conffile=self.cluster.conf)
            c.connect(timeout=30)
            src, dst = c.open_ioctx(SRC_POOL), c.open_ioctx(DST_POOL)
            try:
                while True:
                    with lock:
                        if not todo:
                            return
                        name = todo.pop()
                    rbd.RBD().migration_prepare(src, name, dst, name)
                    rbd.RBD().migration_execute(dst, name)
                    rbd.RBD().migration_commit(dst, name)
            finally:
                src.close()
                dst.close()
                c.shutdown()
        t0 = time.monotonic()
        ts = [threading.Thread(target=worker) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return time.monotonic() - t0

    def mon_counters(self) -> Dict[str, int]:
        """The mon's session and paxos counters (admin socket)."""
        out = self.cluster.command('ceph', '--admin-daemon',
                                   os.path.join(self.cluster.run_dir, 'mon.a.asok'),
                                   'perf', 'dump', check=False)
        try:
            dump = json.loads(out.stdout)
        except (ValueError, AttributeError):
            return {}
        mon, paxos = dump.get('mon', {}), dump.get('paxos', {})
        return {'session_add': mon.get('session_add', 0), 'paxos_commit':
                paxos.get('commit', 0), 'paxos_begin': paxos.get('begin', 0)}

    def wait_store_settled(self, max_wait: float = 600.0) -> Optional[float]:
        """Seconds until the monitor's commits fall to their idle pace (under
        one a second over 2 s: its own and the mgr's stats); None if not
        within ``max_wait``."""
        t0 = time.monotonic()
        last = self.mon_counters().get('paxos_commit', 0)
        while time.monotonic() - t0 < max_wait:
            time.sleep(2.0)
            now = self.mon_counters().get('paxos_commit', 0)
            if now - last <= 2:
                return round(max(0.0, time.monotonic() - t0 - 2.0), 1)
            last = now
        return None

    def daemon_cpu(self) -> Dict[str, float]:
        """CPU seconds so far of every daemon and of this process (the limit's
        loop runs here)."""
        cpu = {name: cpu_seconds(pid) for name, pid in self.cluster.running_daemons().items()}
        cpu['bench'] = cpu_seconds(os.getpid())
        return cpu

    def cpu_per_image(self, before: Dict[str, float], images: int) -> Dict[str, float]:
        """CPU milliseconds per image spent by each kind of daemon since ``before``."""
        out: Dict[str, float] = {}
        for name, sec in self.daemon_cpu().items():
            kind = name.split('.')[0]
            out[kind] = out.get(kind, 0.0) + sec - before.get(name, sec)
        return {k: round(v * 1000.0 / max(1, images), 1) for k, v in sorted(out.items())}

    def section_fleet(self) -> Dict[str, Any]:
        """``fleet_run`` ``--repeat`` times (module, then limit, in each), the
        CLI loop in the last only: the first run's figures, and the ratio of
        every run (median and range: the limit's own speed varies from run
        to run)."""
        # the order alternates (module first, then the limit first, ...): neither
        # side always gets the fresher cluster
        runs = [self.fleet_run(cli=r == self.args.repeat - 1, limit_first=r % 2 == 1)
                for r in range(self.args.repeat)]
        res = dict(runs[0])
        if len(runs) > 1:
            for key in ('ratio_module_vs_limit', 'module_images_per_second',
                        'limit_images_per_second', 'mgr_rss_settled_growth_mib',
                        'mgr_rss_peak_growth_mib', 'slowest_ls_seconds',
                        'slowest_status_seconds', 'slowest_cli_ls_seconds',
                        'slowest_cli_status_seconds'):
                vals = [r[key] for r in runs if r.get(key) is not None]
                if vals:
                    res[key + '_spread'] = spread(vals)
                if vals and key.startswith('slowest_'):
                    res[key] = max(vals)          # the slowest of every run
            res['cli_probes'] = sum(r.get('cli_probes', 0) for r in runs)
            for key in ('median_cli_ls_seconds', 'median_cli_status_seconds'):
                vals = [r[key] for r in runs if r.get(key) is not None]
                if vals:
                    res[key] = median(vals)
            for key in ('cli_sample', 'cli_images_per_second'):
                if key in runs[-1]:
                    res[key] = runs[-1][key]
            res['runs'] = runs
        return res

    def fleet_run(self, cli: bool = True, limit_first: bool = False) -> Dict[str, Any]:
        """``--fleet-images`` empty and as many written small images moved by one
        add-pool at max_concurrent ``--fleet-concurrency``, against the plain
        librbd loop at the same concurrency (the limit) and the sequential CLI
        loop (on a sample, if ``cli``); command latencies while it runs, mgr
        RSS, store writes per task."""
        a = self.args
        n, conc = a.fleet_images, a.fleet_concurrency
        names = fleet_names(n, fleet_written(a))
        res: Dict[str, Any] = {'images': len(names), 'empty': n,
                               'written': len(names) - n, 'concurrency': conc}
        # every repeat's tasks stay in the history: no repeat pays the deletes
        # of the ones before (a record removed is a monitor commit too)
        settings = {'max_concurrent': str(conc),
                    'max_history': str(min(10000, len(names) * (a.repeat + 1)))}
        for key, value in settings.items():
            self.mon('config set', who='mgr', name=f'mgr/{MODULE}/{key}', value=value)
        self.results.setdefault('module_settings_set', {}).update(settings)
        res['order'] = 'limit, module' if limit_first else 'module, limit'
        limit_s = self.fleet_limit(names, res) if limit_first and not a.fleet_module_only \
            else None
        # module
        mk = self.create_fleet(names[:n], False) + self.create_fleet(names[n:], True)
        self.quiesce()
        log(f'fleet: {len(names)} images ({n} empty, {len(names) - n} written) created in '
            f'{mk:.0f}s; module add-pool')
        # the ceph CLI's own cost (process start, connection, the command
        # table), on the quiet cluster before the batch
        idle = []
        for _ in range(3):
            t = time.monotonic()
            self.cluster.command('ceph', 'rbd', 'livemigrate', 'ls', '--format', 'json',
                                 check=False)
            idle.append(time.monotonic() - t)
        res['cli_idle_ls_seconds'] = round(median(idle), 3)
        pid = self.cluster.mgr_pid(self.active_and_standby()[0])
        rss0 = read_rss_kib(pid) if pid else 0
        mgr_cur, mon_cur = self.cursors()
        cpu0 = self.daemon_cpu()
        mon0 = self.mon_counters()
        lat: Dict[str, List[float]] = {'ls': [], 'status': [], 'cli_ls': [], 'cli_status': []}
        stop = threading.Event()
        box: Dict[str, str] = {}

        peak = [rss0]

        def cli_probe(key: str, *argv: str) -> None:
            # what an operator types: the ceph CLI, its process start included
            t = time.monotonic()
            self.cluster.command('ceph', 'rbd', 'livemigrate', *argv, '--format', 'json',
                                 check=False)
            lat[key].append(time.monotonic() - t)

        def probe() -> None:
            next_cli = time.monotonic()
            while not stop.is_set():
                if pid:
                    peak[0] = max(peak[0], read_rss_kib(pid))
                t = time.monotonic()
                self.mgr('rbd livemigrate ls', format='json')
                lat['ls'].append(time.monotonic() - t)
                if 'batch' in box:
                    t = time.monotonic()
                    self.mgr('rbd livemigrate status', task_or_image=box['batch'],
                             format='json')
                    lat['status'].append(time.monotonic() - t)
                if 'batch' in box and time.monotonic() >= next_cli:
                    next_cli = time.monotonic() + a.fleet_cli_probe_seconds
                    cli_probe('cli_ls', 'ls')
                    cli_probe('cli_status', 'status', box['batch'])
                stop.wait(1.0)
        t0, t0_epoch = time.monotonic(), time.time()
        # the references copy only: the module does too (the verify section
        # measures what comparing costs)
        batch = self.mgr_ok('rbd livemigrate add-pool', source_pool_spec=SRC_POOL,
                            dest_pool_spec=DST_POOL, pattern='f*', verify='off')
        res['add_pool_return_seconds'] = round(time.monotonic() - t0, 3)
        box['batch'] = batch['id']
        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        try:
            deadline = time.monotonic() + 7200
            while True:
                st = self.mgr_ok('rbd livemigrate status', task_or_image=batch['id'],
                                 format='json')
                if st['finished']:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f'batch not finished: {st["by_state"]}')
                time.sleep(1.0)
        finally:
            stop.set()
            prober.join()
        module_s = time.monotonic() - t0
        if st['committed'] != len(names):
            raise RuntimeError(f'batch ended with {st["by_state"]}, refused {st["refused"][:3]}')
        events = module_events(mgr_cur.lines())
        committed = [e['committed'] for e in events.values() if 'committed' in e]
        if len(committed) >= len(names):
            module_s = max(committed) - t0_epoch
        cpu_end = self.cpu_per_image(cpu0, len(names))
        # the records written behind (a task's end goes after the records
        # never stored): how long after the batch's end the store caught up,
        # and what the whole cost, those writes included
        res['store_caught_up_after_seconds'] = self.wait_store_settled()
        writes = store_writes(mon_cur.lines())
        per_task = [len(v) for v in writes.values()]
        res['phases'] = phase_summary(events, writes, sorted(events))
        res['module_cpu_ms_per_image'] = cpu_end
        res['module_cpu_ms_per_image_store_caught_up'] = self.cpu_per_image(cpu0, len(names))
        res['module_mon_counters'] = {k: v - mon0.get(k, 0)
                                      for k, v in self.mon_counters().items()}
        log(f'  CPU ms per image: {res["module_cpu_ms_per_image"]} (until the store caught '
            f'up, {res["store_caught_up_after_seconds"]}s after the end: '
            f'{res["module_cpu_ms_per_image_store_caught_up"]}); mon: '
            f'{res["module_mon_counters"]}')
        res.update(module_seconds=round(module_s, 2),
                   module_images_per_second=round(len(names) / module_s, 1),
                   slowest_ls_seconds=round(max(lat['ls'] or [0]), 3),
                   slowest_status_seconds=round(max(lat['status'] or [0]), 3),
                   median_ls_seconds=round(median(lat['ls']), 3) if lat['ls'] else None,
                   cli_probes=len(lat['cli_ls']),
                   slowest_cli_ls_seconds=round(max(lat['cli_ls'] or [0]), 3),
                   slowest_cli_status_seconds=round(max(lat['cli_status'] or [0]), 3),
                   median_cli_ls_seconds=round(median(lat['cli_ls']), 3)
                   if lat['cli_ls'] else None,
                   median_cli_status_seconds=round(median(lat['cli_status']), 3)
                   if lat['cli_status'] else None,
                   store_writes_per_task={'mean': round(statistics.mean(per_task), 2),
                                          'max': max(per_task)} if per_task else None,
                   mgr_rss_growth_mib=round((read_rss_kib(pid) - rss0) / 1024, 1)
                   if pid else None,
                   mgr_rss_peak_growth_mib=round((peak[0] - rss0) / 1024, 1) if pid else None)
        if pid:
            # what stays: the module gives freed memory back once the copies
            # stop (release_memory), within a few seconds
            time.sleep(FLEET_SETTLE_SECONDS)
            res['mgr_rss_settled_growth_mib'] = round((read_rss_kib(pid) - rss0) / 1024, 1)
        log(f'  module: {module_s:.1f}s ({res["module_images_per_second"]} images/s), '
            f'add-pool returned in {res["add_pool_return_seconds"]}s, slowest ls '
            f'{res["slowest_ls_seconds"]}s (ceph CLI: ls {res["slowest_cli_ls_seconds"]}s, '
            f'status {res["slowest_cli_status_seconds"]}s), RSS +{res["mgr_rss_growth_mib"]} '
            f'MiB (peak '
            f'+{res["mgr_rss_peak_growth_mib"]}, {FLEET_SETTLE_SECONDS:.0f}s later '
            f'+{res.get("mgr_rss_settled_growth_mib")}), store writes '
            f'per task {res["store_writes_per_task"]}')
        self.remove_images(DST_POOL, names)
        if a.fleet_module_only:
            return res
        if limit_s is None:
            limit_s = self.fleet_limit(names, res)
        res['ratio_module_vs_limit'] = round(module_s / limit_s, 3)
        log(f'  limit: {limit_s:.1f}s ({res["limit_images_per_second"]} images/s); '
            f'module/limit {res["ratio_module_vs_limit"]} ({res["order"]})')
        log(f'  CPU ms per image: module {res["module_cpu_ms_per_image"]}, '
            f'limit {res["limit_cpu_ms_per_image"]}')
        if not cli:
            return res
        # the sequential CLI loop, on a sample (half empty, half written when both are)
        half = a.fleet_cli_sample // 2 if len(names) > n else a.fleet_cli_sample
        sample = names[:half] + names[n:n + a.fleet_cli_sample - half]
        self.create_fleet(sample, False)
        self.quiesce()
        loop = self.run_cli_loop(sample)
        res.update(cli_sample=len(sample), cli_images_per_second=round(
            len(sample) / loop['seconds'], 1))
        log(f'  CLI loop: {res["cli_images_per_second"]} images/s ({len(sample)} sampled)')
        self.remove_images(DST_POOL, sample)
        return res

    def fleet_limit(self, names: List[str], res: Dict[str, Any]) -> float:
        """The limit of one fleet run: plain librbd at the same concurrency,
        on a fleet made the same way; its images removed after."""
        n = self.args.fleet_images
        self.create_fleet(names[:n], False)
        if names[n:]:
            self.create_fleet(names[n:], True)
        self.quiesce()
        cpu0 = self.daemon_cpu()
        rss_before = read_rss_kib(os.getpid())
        limit_s = self.librbd_limit(names, self.args.fleet_concurrency)
        res['limit_cpu_ms_per_image'] = self.cpu_per_image(cpu0, len(names))
        # what the same copies cost a plain process in memory (its clients
        # are shut down at the end, like the module's idle ones are not)
        res['limit_rss_growth_mib'] = round((read_rss_kib(os.getpid()) - rss_before) / 1024, 1)
        res.update(limit_seconds=round(limit_s, 2),
                   limit_images_per_second=round(len(names) / limit_s, 1))
        self.remove_images(DST_POOL, names)
        return limit_s

    # -- driver ----------------------------------------------------------

    def snapshot_module(self) -> None:
        """Copy the module as it is now: others edit src/ while the bench runs, and a
        failover re-imports the module from its folder."""
        src = os.path.join(REPO, 'src', 'pybind', 'mgr', MODULE)
        if os.path.isdir(self.module_dir):
            shutil.rmtree(self.module_dir)
        shutil.copytree(src, self.module_dir,
                        ignore=shutil.ignore_patterns('tests', '__pycache__'))
        digest = hashlib.sha256()
        for name in sorted(os.listdir(self.module_dir)):
            path = os.path.join(self.module_dir, name)
            if os.path.isfile(path):
                with open(path, 'rb') as f:
                    digest.update(name.encode() + b'\0' + f.read())
        git = subprocess.run(['git', '-C', REPO, 'rev-parse', 'HEAD'], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        dirty = subprocess.run(['git', '-C', REPO, 'status', '--porcelain', '--', src],
                               text=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.results['module'] = {'snapshot': self.module_dir, 'sha256': digest.hexdigest(),
                                  'git_head': git.stdout.strip(),
                                  'uncommitted_changes': dirty.stdout.split('\n')[:40]}

    def run(self) -> None:
        a = self.args
        if not a.module:
            self.snapshot_module()
        else:
            self.results['module'] = {'path': a.module}
        t = self.results['cluster_timing']
        log(f'starting cluster in {a.dir} (module {self.module_dir}); timings: {t["timing"]} '
            f'(paxos propose interval {t["paxos_propose_interval"]} s, mgr stats period '
            f'{t["mgr_stats_period"]} s)')
        if self.cluster.running_daemons():
            raise RuntimeError(f'{a.dir} holds a running cluster (another run?): stop it '
                               'first; it is left alone')
        self.started = True         # only a cluster this run starts is stopped at the end
        self.cluster.start()
        self.results['cluster'] = {'dir': self.cluster.dir, 'boot_seconds':
                                   round(self.cluster.boot_seconds, 1),
                                   'osds': a.osds, 'osd_bytes': a.osd_bytes}
        self.connect()
        self.results['module_options'] = self.module_option_names()
        for section in a.sections:
            log(f'section {section}')
            t0 = time.monotonic()
            try:
                out = getattr(self, f'section_{section}')()
            except Exception as e:
                log(f'section {section} failed: {e}')
                out = {'error': f'{type(e).__name__}: {e}', 'traceback': traceback.format_exc()}
            out['section_seconds'] = round(time.monotonic() - t0, 1)
            self.results['sections'][section] = out
            self.save()
            if section != 'scale':
                try:
                    self.clean_pools()
                except Exception as e:   # noqa: BLE001 - best effort between sections
                    log(f'cleaning pools failed: {e}')
        self.results['host']['loadavg_end'] = os.getloadavg()

    def save(self) -> None:
        with open(self.args.json, 'w') as f:
            json.dump(self.results, f, indent=1, sort_keys=True, default=str)


# --------------------------------------------------------------------------------------------
# report

def fmt_spread(s: Optional[Dict[str, Any]], unit: str = '', digits: int = 2) -> str:
    if not s or not s.get('n'):
        return '-'
    if s['n'] == 1:
        return f'{s["median"]:.{digits}f}{unit}'
    return f'{s["median"]:.{digits}f}{unit} [{s["min"]:.{digits}f}-{s["max"]:.{digits}f}]'


def verdict(value: Optional[float], limit: float, lower_is_better: bool = True) -> str:
    if value is None or value != value:
        return '?'
    ok = value <= limit if lower_is_better else value >= limit
    return 'ok' if ok else 'MISS'


def report(results: Dict[str, Any]) -> str:
    rows: List[List[str]] = []
    sec = results['sections']
    p = sec.get('pool')
    if p and 'error' not in p:
        n = p['images']
        size = p['image_bytes'] // MIB
        conc = p.get('module_options', {}).get('max_concurrent') or '2'
        rows.append([f'pool {n}x{size}MiB: add-pool --verify off, max_concurrent {conc} / '
                     f'sequential CLI loop (concurrency 1)',
                     fmt_spread(p['module_seconds'], 's'), fmt_spread(p['cli_loop_seconds'], 's'),
                     fmt_spread(p['ratio_vs_cli_loop']), '<= 0.5',
                     verdict(p['ratio_vs_cli_loop']['median'], 0.5)])
        if 'module_defaults_seconds' in p:
            rows.append([f'pool {n}x{size}MiB: add-pool at the defaults (--verify auto, '
                         f'max_concurrent {conc}) / sequential CLI loop',
                         fmt_spread(p['module_defaults_seconds'], 's'),
                         fmt_spread(p['cli_loop_seconds'], 's'),
                         fmt_spread(p['ratio_defaults_vs_cli_loop']), '-', ''])
        rows.append([f'pool {n}x{size}MiB: add-pool --verify off / rbd_support',
                     fmt_spread(p['module_seconds'], 's'),
                     fmt_spread(p['rbd_support_seconds'], 's'),
                     fmt_spread(p['ratio_vs_rbd_support']), '-', ''])
    elif p:
        rows.append(['pool', 'ERROR', p['error'][:60], '', '', ''])
    b = sec.get('big')
    if b and 'error' not in b:
        gib = b['image_bytes'] / (1 << 30)
        rows.append([f'big {gib:g}GiB: librbd migration_execute timed in its caller: '
                     f'module (mgr) / bench process',
                     fmt_spread(b['module_execute_seconds'], 's'),
                     fmt_spread(b['cli_execute_seconds'], 's'),
                     fmt_spread(b['ratio_execute_vs_cli_execute']), '<= 1.05',
                     verdict(b['ratio_execute_vs_cli_execute'].get('median'), 1.05)])
        rows.append([f'big {gib:g}GiB: module add->committed / migration_execute alone',
                     fmt_spread(b['module_total_seconds'], 's'),
                     fmt_spread(b['cli_execute_seconds'], 's'),
                     fmt_spread(b['ratio_total_vs_cli_execute']), '(<= 1.05)',
                     verdict(b['ratio_total_vs_cli_execute'].get('median'), 1.05)])
    elif b:
        rows.append(['big', 'ERROR', b['error'][:60], '', '', ''])
    t = sec.get('throttle')
    if t and 'error' not in t:
        lim = t['limit_bytes_per_sec'] / MIB
        rate = t['rate_bytes_per_sec']
        rate_mib = ({k: (v / MIB if k in ('median', 'min', 'max') else v)
                     for k, v in rate.items() if k != 'values'} if rate.get('n') else None)
        err = t['error_percent']
        worst = max(abs(err['min']), abs(err['max'])) if err.get('n') else None
        rows.append([f'throttle {t["image_bytes"] // MIB}MiB @ {lim:g}MiB/s: error %',
                     fmt_spread(rate_mib, ' MiB/s', 1), f'{lim:g} MiB/s',
                     fmt_spread(err, '%', 1), '|err| <= 10%', verdict(worst, 10.0)])
        tot = t.get('total', {})
        if 'skipped' in tot:
            rows.append(['throttle total (2 tasks)', 'skipped', '', '', '', tot['skipped']])
        elif tot.get('error_percent'):
            e = tot['error_percent']
            w = max(abs(e['min']), abs(e['max'])) if e.get('n') else None
            rows.append(['throttle total (2 tasks): error %', '', f'{lim:g} MiB/s',
                         fmt_spread(e, '%', 1), '|err| <= 10%', verdict(w, 10.0)])
    elif t:
        rows.append(['throttle', 'ERROR', t['error'][:60], '', '', ''])
    s = sec.get('scale')
    if s and 'error' not in s:
        n = s['tasks_written']
        rows.append([f'scale {n}: reload (mgr fail -> ls lists all)',
                     fmt_spread(s['reload_seconds'], 's'),
                     f'{s["baseline_reload_seconds"]:.2f}s (empty)', '', '< 5 s',
                     verdict(s['reload_seconds']['median'], 5.0)])
        rows.append([f'scale {n}: ls --format json (ceph CLI)',
                     fmt_spread(s['ls_cli_seconds'], 's'), '', '', '< 1 s',
                     verdict(s['ls_cli_seconds']['median'], 1.0)])
        rows.append([f'scale {n}: ls --format json (librados)',
                     fmt_spread(s['ls_binding_seconds'], 's'), '', '', '< 1 s',
                     verdict(s['ls_binding_seconds']['median'], 1.0)])
        rows.append([f'scale {n}: mgr RSS growth, net of empty failover',
                     fmt_spread(s['rss_growth_net_mib'], ' MiB', 0),
                     f'raw {fmt_spread(s["rss_growth_mib"], " MiB", 0)}', '', '< 100 MB',
                     verdict(s['rss_growth_net_mib']['median'] * 1.048576, 100.0)])
        rows.append([f'scale {n}: largest config-key value',
                     f'{s["store"]["max_value_bytes"]} B', f'{s["store"]["keys"]} keys', '',
                     '<= 64 KiB', verdict(s['store']['max_value_bytes'], 65536.0)])
        rows.append([f'scale {n}: mgr idle CPU after load',
                     fmt_spread(s['idle_cpu_fraction'], ' cores', 3), '', '', '-', ''])
    elif s:
        rows.append(['scale', 'ERROR', s['error'][:60], '', '', ''])
    f = sec.get('fleet')
    if f and 'error' not in f:
        n = (f'{f["empty"]}+{f["written"]}' if f.get('written') else f'{f["empty"]} empty') \
            if 'empty' in f else f['images']
        rows.append([f'fleet {n}: add-pool returns', f'{f["add_pool_return_seconds"]:.2f}s',
                     '', '', '< 2 s', verdict(f['add_pool_return_seconds'], 2.0)])
        if 'ratio_module_vs_limit_spread' in f:
            r = f['ratio_module_vs_limit_spread']
            rows.append([f'fleet {n}: images/s module / librbd limit (c={f["concurrency"]}, '
                         f'{r["n"]} runs)',
                         fmt_spread(f['module_images_per_second_spread'], '/s', 1),
                         fmt_spread(f['limit_images_per_second_spread'], '/s', 1),
                         fmt_spread(r) + ' (time)', '<= 1.3', verdict(r['median'], 1.3)])
        elif 'limit_images_per_second' in f:
            rows.append([f'fleet {n}: images/s module / librbd limit (c={f["concurrency"]})',
                         f'{f["module_images_per_second"]}/s',
                         f'{f["limit_images_per_second"]}/s',
                         f'{f["ratio_module_vs_limit"]:.2f} (time)', '<= 1.3',
                         verdict(f['ratio_module_vs_limit'], 1.3)])
        else:
            rows.append([f'fleet {n}: images/s module (--fleet-module-only)',
                         f'{f["module_images_per_second"]}/s', '', '', '-', ''])
        for who in ('module', 'limit', 'module_store_caught_up'):
            key = f'{who}_cpu_ms_per_image' if who != 'module_store_caught_up' else \
                'module_cpu_ms_per_image_store_caught_up'
            cpu = f.get(key)
            if cpu:
                what = (f'module CPU ms per image until the store caught up '
                        f'({f.get("store_caught_up_after_seconds")}s after the end)'
                        if who == 'module_store_caught_up' else f'{who} CPU ms per image')
                rows.append([f'fleet {n}: {what} (all daemons)',
                             f'{sum(cpu.values()):.0f}', ', '.join(
                                 f'{k} {v:.0f}' for k, v in cpu.items() if v >= 0.5),
                             '', '-', ''])
        if 'cli_images_per_second' in f:
            rows.append([f'fleet {n}: images/s sequential CLI loop', '',
                         f'{f["cli_images_per_second"]}/s ({f["cli_sample"]} sampled)', '',
                         '-', ''])
        rows.append([f'fleet {n}: slowest ls / status during the run (librados, every 1 s)',
                     f'{f["slowest_ls_seconds"]}s / {f["slowest_status_seconds"]}s', '', '',
                     '< 1 s / < 0.3 s', verdict(max(f['slowest_ls_seconds'],
                                                    f['slowest_status_seconds'] / 0.3), 1.0)])
        if f.get('cli_probes'):
            rows.append([f'fleet {n}: slowest ls / status through the ceph CLI '
                         f'({f["cli_probes"]} probes)',
                         f'{f["slowest_cli_ls_seconds"]}s / {f["slowest_cli_status_seconds"]}s',
                         f'median {f["median_cli_ls_seconds"]}s / '
                         f'{f["median_cli_status_seconds"]}s; ls on the quiet cluster '
                         f'{f.get("cli_idle_ls_seconds")}s', '', '< 1 s / < 0.3 s',
                         verdict(max(f['slowest_cli_ls_seconds'],
                                     f['slowest_cli_status_seconds'] / 0.3), 1.0)])
        w = f.get('store_writes_per_task') or {}
        rows.append([f'fleet {n}: store writes per task', f'{w.get("mean")} (max {w.get("max")})',
                     '', '', '<= 4', verdict(w.get('max'), 4.0)])
        settled = f.get('mgr_rss_settled_growth_mib', f['mgr_rss_growth_mib'])
        peak = f.get('mgr_rss_peak_growth_mib_spread', {}).get(
            'max', f.get('mgr_rss_peak_growth_mib'))
        rows.append([f'fleet {n}: mgr RSS growth at its peak (sampled every second)',
                     f'{peak} MiB',
                     f'at the end {f["mgr_rss_growth_mib"]} MiB, '
                     f'{FLEET_SETTLE_SECONDS:.0f}s after {settled} MiB', '',
                     '< 100 MB', verdict((peak or 0) * 1.048576, 100.0)])
    elif f:
        rows.append(['fleet', 'ERROR', f['error'][:60], '', '', ''])
    v = sec.get('verify')
    if v and 'error' not in v:
        gib = v['image_bytes'] / (1 << 30)
        rows.append([f'verify {gib:g}GiB written: --verify full / its execute',
                     fmt_spread(v['verify_seconds'], 's'), fmt_spread(v['execute_seconds'], 's'),
                     fmt_spread(v['ratio_verify_vs_execute']), '<= 0.6',
                     verdict(v['ratio_verify_vs_execute'].get('median'), 0.6)])
    elif v:
        rows.append(['verify', 'ERROR', v['error'][:60], '', '', ''])
    c = sec.get('cutover')
    if c and 'error' not in c:
        for mode in ('auto', 'manual'):
            m = c.get(mode)
            if not m:
                continue
            rows.append([f'cutover {mode}: client close -> destination opens '
                         f'(n={c["runs_per_mode"]}), median / worst',
                         f'{m["gap_ms"]["median"]:.0f} / {m["worst_gap_ms"]:.0f} ms',
                         f'module cutover_ms {fmt_spread(m["cutover_ms"], "ms", 0)}', '',
                         '<= 250 ms', verdict(m['gap_ms']['median'], 250.0)])
    elif c:
        rows.append(['cutover', 'ERROR', c['error'][:60], '', '', ''])
    headers = ['measurement', 'module', 'reference', 'ratio med [min-max]', 'target', '']
    cells = [headers] + rows
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, '  '.join('-' * w for w in widths))
    busy = collect(results, 'host_busy_fraction')
    host = results.get('host', {})
    lines.append('')
    t = results.get('cluster_timing', {})
    lines.append(f"command: {' '.join(results.get('argv', []))}")
    lines.append(f"cluster timings: {t.get('timing')} (paxos propose interval "
                 f"{t.get('paxos_propose_interval')} s, mgr stats period "
                 f"{t.get('mgr_stats_period')} s); module options set by the bench: "
                 f"{results.get('module_settings_set', {})}")
    lines.append(f"host: {host.get('nproc')} cores; load average at start "
                 f"{host.get('loadavg_start', [0])[0]:.1f}, at end "
                 f"{host.get('loadavg_end', [0])[0]:.1f}; whole-host CPU busy during measured "
                 f"runs: {fmt_spread(spread([100 * b for b in busy]), '%', 0)} "
                 '(other clusters share the cores)')
    return '\n'.join(lines)


def collect(data: Any, key: str) -> List[float]:
    """Every numeric value stored under ``key`` anywhere in ``data``."""
    out: List[float] = []
    if isinstance(data, dict):
        for k, v in data.items():
            if k == key and isinstance(v, (int, float)):
                out.append(float(v))
            else:
                out.extend(collect(v, key))
    elif isinstance(data, list):
        for v in data:
            out.extend(collect(v, key))
    return out


# --------------------------------------------------------------------------------------------

def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split('\n', 2)[2])
    p.add_argument('--dir', default='/tmp/bench-livemigrate',
                   help='cluster directory, must be /tmp/bench-* (default: %(default)s)')
    p.add_argument('--sections', default=','.join(SECTIONS),
                   help='comma list of %s (default: all)' % ', '.join(SECTIONS))
    p.add_argument('--repeat', type=int, default=3, help='runs per section (default 3)')
    p.add_argument('--images', type=int, default=40, help='pool: image count (default 40)')
    p.add_argument('--image-size', default='16M', help='pool: bytes per image (default 16M)')
    p.add_argument('--big-size', default='1G', help='big: image bytes (default 1G)')
    p.add_argument('--throttle-size', default='512M', help='throttle: image bytes')
    p.add_argument('--throttle-limit', default='100M', help='throttle: --bandwidth-limit')
    p.add_argument('--scale-tasks', type=int, default=10000, help='scale: task records')
    p.add_argument('--scale-threads', type=int, default=8,
                   help='scale: threads writing records (default 8)')
    p.add_argument('--fleet-images', type=int, default=10000,
                   help='fleet: empty images, and as many written (default 10000)')
    p.add_argument('--fleet-written', type=int, default=None,
                   help='fleet: written images (default: as many as --fleet-images; 0: '
                        'empty images only)')
    p.add_argument('--fleet-cli-probe-seconds', type=float, default=5.0,
                   help='fleet: ls and status through the ceph CLI this often during the '
                        'run (default 5)')
    p.add_argument('--fleet-module-only', action='store_true',
                   help='fleet: measure the module only (no limit, no CLI loop)')
    p.add_argument('--fleet-concurrency', type=int, default=8,
                   help='fleet: max_concurrent, and threads of the librbd loop (default 8)')
    p.add_argument('--fleet-cli-sample', type=int, default=200,
                   help='fleet: images the sequential CLI loop moves (default 200)')
    p.add_argument('--cutover-runs', type=int, default=20,
                   help='cutover: client-close -> destination-open runs per mode (default 20)')
    p.add_argument('--osds', type=int, default=2)
    p.add_argument('--fast-timings', action='store_true',
                   help="run the cluster with the tests' fast mon and stats timings "
                        "(paxos propose interval 0.1 s, mgr stats period 1 s) instead of "
                        "Ceph's defaults (1 s, 5 s); figures from it are not an operator's")
    p.add_argument('--osd-bytes', default='4G', help='memstore bytes per OSD (default 4G)')
    p.add_argument('--json', default=None,
                   help='raw numbers (default /tmp/bench_livemigrate-<time>.json)')
    p.add_argument('--module', default=None,
                   help='module folder to load (default: a copy of src/pybind/mgr/'
                        'rbd_livemigrate taken at start, next to --dir)')
    p.add_argument('--keep', action='store_true', help='leave the cluster running')
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(',') if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        p.error(f'unknown section(s) {unknown}: use {", ".join(SECTIONS)}')
    if not os.path.abspath(args.dir).startswith('/tmp/bench-'):
        p.error('--dir must be under /tmp/bench-*')
    if args.repeat < 1:
        p.error('--repeat must be at least 1')
    if args.json is None:
        args.json = time.strftime('/tmp/bench_livemigrate-%Y%m%d-%H%M%S.json')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f'signal {signum}')
    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        log('interrupted')
        rc = 130
    except Exception as e:
        log(f'failed: {type(e).__name__}: {e}')
        bench.results['error'] = traceback.format_exc()
        rc = 1
    finally:
        bench.results['finished'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
        bench.save()
        bench.close()
        if args.keep:
            log(f'cluster kept: CEPH_CONF={bench.cluster.conf}; stop it with '
                f'/usr/bin/python3 qa/standalone/cluster.py stop --dir {args.dir} --purge')
        elif not getattr(bench, 'started', False):
            log('no cluster was started: nothing to stop (another run may own the one there)')
        else:
            log('stopping the cluster')
            bench.cluster.stop(purge=True)
            if not args.module:
                shutil.rmtree(os.path.dirname(bench.module_dir), ignore_errors=True)
    print(report(bench.results))
    print(f'\nraw numbers: {args.json}')
    return rc


if __name__ == '__main__':
    sys.exit(main())
