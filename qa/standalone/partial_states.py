#!/usr/bin/python3
"""
Partial-state corpus for rbd_livemigrate: kill -9 whoever runs a migration step at a grid of
moments through the step, and check that the migration still ends where it should, with the
same data, nothing left behind, and a ``status`` that told the truth all along.

Grid: step (prepare, execute, commit, abort) x killer x layout x moment.

- killer ``mgr``: the active ceph-mgr, which runs the module's task; it is restarted at once
  (``Cluster.kill_mgr`` / ``start_mgr`` / ``wait_module_ready``) and the task carries on.
  prepare: a watcher holds the source so the task waits; the kill is timed from closing it.
  execute: the task copies under ``--bandwidth-limit``.  commit: a ``--manual-commit`` task,
  killed after ``ceph rbd livemigrate commit``.  abort: ``ceph rbd livemigrate cancel`` of an
  executed ``--manual-commit`` task.
- killer ``cli``: an operator's ``rbd migration <step>`` process (the earlier steps done by the
  CLI too).  Afterwards the module takes over: ``ceph rbd livemigrate adopt <dest>`` while
  librbd holds any migration state, ``add`` if the prepare was killed before it changed
  anything, nothing if the step had already finished.
- layouts: cross-pool a/img -> b/img, in-place a/img (--object-size 8M), cross-namespace
  a/ns1/img -> b/ns2/img.  The image (64 MiB) has 2 snapshots and a clone of snap1 in the
  source pool/namespace (``--allow-descendants``).
- moments are anchored on what the harness sees happen: ``start`` (seconds after the watcher
  closed / the command was issued / the CLI was spawned), ``change`` (seconds after librbd's
  on-disk state first changed, read with raw rados reads every few ms), ``executing`` (seconds
  after the destination entered the executing state) and ``percent`` (the CLI printed that
  much progress).  The phase the kill actually hit is read back from the headers right after
  the killed process died and is shown in the matrix, e.g. ``ok(committing 43%)``.

Expected: a killed prepare, execute or commit ends ``committed``; a killed abort ends
``aborted`` with the source restored.  Checked for every case: the end state; head and every
snapshot checksum-equal to before (destination when committed, source when aborted); the
clone's checksum unchanged and its parent the surviving image; no trash entry for the images in
either pool or namespace; the image opens under its expected name (and id), the other name does
not exist; no migration left; and every ``status`` poll (about every 0.2 s, during and after
the kill) truthful: ``committed`` only when the source is gone from the trash, the destination
has no migration and its name resolves to the status's ``dest_image_id``; ``aborted`` only when
the source name opens with the status's ``source_image_id`` and has no migration; a terminal
state never changes again.

CLI (boots its own throwaway cluster; run with /usr/bin/python3 for rados/rbd)::

    /usr/bin/python3 qa/standalone/partial_states.py [--sample | --full]
        [--steps prepare,execute,commit,abort] [--killers mgr,cli]
        [--layouts cross-pool,in-place,cross-ns] [--moments LABEL,...] [--offset N]
        [--dir DIR] [--keep] [-v]

``--sample`` (the default; CI): each step x killer once, layouts and moments rotated
deterministically (``--offset`` shifts the rotation).  ``--full``: every combination.
Prints a matrix (rows step x killer x layout, columns moment -> outcome) and exits 1 on any
failure.

Library::

    corpus = Corpus(start_cluster('/tmp/ps'))
    result = corpus.run(case)       # Result.ok, .cell(), .describe()
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from cluster import RELEASES, Cluster  # noqa: E402
import rbdtools  # noqa: E402
from lmcli import json_args  # noqa: E402

import rados  # noqa: E402
import rbd  # noqa: E402

MiB = 1 << 20
IMAGE_BYTES = 64 * MiB
SNAPS = 2
# module copy rate for the execute kills (64 MiB in 2 s) and behind the prepare kills (1 s)
EXECUTE_BANDWIDTH = 32 * MiB
PREPARE_BANDWIDTH = 64 * MiB
EXECUTE_SECONDS = IMAGE_BYTES / EXECUTE_BANDWIDTH
POLL_SECONDS = 0.2
STATUS_TIMEOUT = 8.0
FINISH_TIMEOUT = 240.0
ANCHOR_TIMEOUT = 60.0
# A killed CLI keeps its watches (and so its image locks) until the OSDs time them out; the
# default is 30 s.  10 s keeps the run short while the module still has to ride it out (the
# clients ping every objecter_tick_interval, 5 s).
WATCH_TIMEOUT_SECONDS = 10

# The killed CLI step works on one object at a time, so its progress (and the kill) moves in
# steps of one object instead of bursts of ten.
CLI_STEP_OPTIONS = ('--rbd-concurrent-management-ops', '1')

STEPS = ('prepare', 'execute', 'commit', 'abort')
KILLERS = ('mgr', 'cli')
TERMINAL = ('committed', 'aborted', 'failed')


# --------------------------------------------------------------------------------------------
# the grid

@dataclass(frozen=True)
class Layout:
    name: str
    src_pool: str
    src_ns: str
    dst_pool: str
    dst_ns: str
    options: Tuple[str, ...] = ()

    @property
    def in_place(self) -> bool:
        return (self.src_pool, self.src_ns) == (self.dst_pool, self.dst_ns)

    @staticmethod
    def _spec(pool: str, ns: str, image: str) -> str:
        return '/'.join(p for p in (pool, ns, image) if p)

    def src(self, image: str) -> str:
        return self._spec(self.src_pool, self.src_ns, image)

    def dst(self, image: str) -> str:
        return self._spec(self.dst_pool, self.dst_ns, image)


LAYOUTS: Dict[str, Layout] = {
    'cross-pool': Layout('cross-pool', 'a', '', 'b', ''),
    'in-place': Layout('in-place', 'a', '', 'a', '', ('--object-size', '8M')),
    'cross-ns': Layout('cross-ns', 'a', 'ns1', 'b', 'ns2'),
}
POOLS = ('a', 'b')
NAMESPACES = ('a/ns1', 'b/ns2')


@dataclass(frozen=True)
class Moment:
    """When to kill: ``value`` seconds after the anchor, or at ``value`` percent printed."""
    label: str
    anchor: str        # start | change | executing | percent
    value: float


def _ms(label: str, anchor: str, ms: float) -> Moment:
    return Moment(label, anchor, ms / 1000.0)


# Columns of the matrix per (step, killer), in time order.  The module prepares, commits and
# aborts within ~0.05-0.3 s, so those kills are timed from the first change librbd shows.
GRIDS: Dict[Tuple[str, str], Tuple[Moment, ...]] = {
    ('prepare', 'mgr'): (
        _ms('queued', 'start', 0), _ms('chg+0', 'change', 0), _ms('chg+10ms', 'change', 10),
        _ms('chg+30ms', 'change', 30), _ms('chg+100ms', 'change', 100),
        _ms('chg+600ms', 'change', 600)),
    ('prepare', 'cli'): (
        _ms('spawn+0', 'start', 0), _ms('chg+0', 'change', 0), _ms('chg+5ms', 'change', 5),
        _ms('chg+15ms', 'change', 15), _ms('chg+40ms', 'change', 40)),
    ('execute', 'mgr'): tuple(
        Moment('{:.0f}%'.format(f * 100), 'executing', f * EXECUTE_SECONDS)
        for f in (0.0, 0.25, 0.5, 0.75, 0.95)),
    ('execute', 'cli'): (
        _ms('chg+0', 'change', 0), Moment('25%', 'percent', 25), Moment('50%', 'percent', 50),
        Moment('75%', 'percent', 75), Moment('100%', 'percent', 100)),
    ('commit', 'mgr'): (
        _ms('issued', 'start', 0), _ms('chg+0', 'change', 0), _ms('chg+30ms', 'change', 30),
        _ms('chg+80ms', 'change', 80), _ms('chg+150ms', 'change', 150),
        _ms('chg+300ms', 'change', 300)),
    ('commit', 'cli'): (
        _ms('chg+0', 'change', 0), Moment('10%', 'percent', 10), Moment('50%', 'percent', 50),
        Moment('90%', 'percent', 90), Moment('100%', 'percent', 100)),
    ('abort', 'mgr'): (
        _ms('issued', 'start', 0), _ms('chg+0', 'change', 0), _ms('chg+30ms', 'change', 30),
        _ms('chg+80ms', 'change', 80), _ms('chg+150ms', 'change', 150),
        _ms('chg+300ms', 'change', 300)),
    ('abort', 'cli'): (
        _ms('chg+0', 'change', 0), Moment('25%', 'percent', 25), Moment('50%', 'percent', 50),
        Moment('75%', 'percent', 75), Moment('100%', 'percent', 100)),
}


@dataclass(frozen=True)
class Case:
    step: str
    killer: str
    layout: str
    moment: Moment

    @property
    def name(self) -> str:
        return '{}-{}-{}-{}'.format(self.step, self.killer, self.layout, self.moment.label)

    @property
    def expected(self) -> str:
        return 'aborted' if self.step == 'abort' else 'committed'


def full_cases(steps: Sequence[str] = STEPS, killers: Sequence[str] = KILLERS,
               layouts: Sequence[str] = tuple(LAYOUTS),
               moments: Optional[Sequence[str]] = None) -> List[Case]:
    out = []
    for step in steps:
        for killer in killers:
            for layout in layouts:
                for m in GRIDS[(step, killer)]:
                    if moments is None or m.label in moments:
                        out.append(Case(step, killer, layout, m))
    return out


def sample_cases(steps: Sequence[str] = STEPS, killers: Sequence[str] = KILLERS,
                 layouts: Sequence[str] = tuple(LAYOUTS), offset: int = 0) -> List[Case]:
    """Each step x killer once; layout and moment rotate with the pair's index (+ offset).

    The layout turns with every offset, the moment with every ``len(layouts)``-th: over
    ``len(layouts) * len(grid)`` successive offsets every (layout, moment) cell of every
    step x killer runs once.  The moment index starts at 1: the first column of every
    grid is the least interesting (before the step changed anything).
    """
    out = []
    i = 0
    for step in STEPS:
        for killer in KILLERS:
            grid = GRIDS[(step, killer)]
            if step in steps and killer in killers:
                layout = layouts[(i + offset) % len(layouts)]
                moment = grid[(i + 1 + offset // len(layouts)) % len(grid)]
                out.append(Case(step, killer, layout, moment))
            i += 1
    return out


# --------------------------------------------------------------------------------------------
# reading librbd's on-disk state (raw rados reads: a few ms, no image opens, no watches)

MIGRATION_STATES = {0: 'error', 1: 'preparing', 2: 'prepared', 3: 'executing', 4: 'executed',
                    5: 'aborting'}
HEADER_TYPE_SRC = 1
HEADER_TYPE_DST = 2


def decode_migration_state(buf: bytes) -> Tuple[int, str]:
    """(header type, state) of an encoded cls::rbd::MigrationSpec (``migration_get``)."""
    off = 6                                   # ENCODE_START: version, compat, length
    header_type = buf[off]
    off += 1 + 8                              # header type, pool id
    for _ in range(3):                        # namespace, image name, image id
        (n,) = struct.unpack_from('<I', buf, off)
        off += 4 + n
    (count,) = struct.unpack_from('<I', buf, off)
    off += 4 + 16 * count                     # snap_seqs map<u64, u64>
    off += 8 + 1 + 1                          # overlap, flatten, mirroring
    state = buf[off]
    return header_type, MIGRATION_STATES.get(state, 'state{}'.format(state))


@dataclass(frozen=True)
class Observation:
    src_named: bool              # the source name resolves to the source image id
    src_in_dir: bool             # rbd_directory still maps the source name to its id
    dest_id: Optional[str]       # the image id the destination name resolves to (if not src)
    src_in_trash: bool           # rbd_trash holds the source image id
    src_header: bool             # the source's header object exists
    src_state: Optional[str]     # migration state on the source header
    dst_state: Optional[str]     # migration state on the destination header
    # read only with detail=True (after the kill)
    src_snaps: Optional[int] = None
    dst_snaps: Optional[int] = None
    clone_on: str = ''           # which image the clone's parent spec names: source/dest

    def detail(self) -> str:
        """The snapshots left on each side and the clone's parent, e.g. 'snaps 2/0,
        clone on source' (halfway through an abort: the destination's snapshots removed)."""
        def n(v: Optional[int]) -> str:
            return '-' if v is None else str(v)
        return 'snaps {}/{}, clone on {}'.format(n(self.src_snaps), n(self.dst_snaps),
                                                 self.clone_on or '?')

    def phase(self) -> str:
        """Where the migration is, in one word (plus what is odd about it)."""
        if self.dst_state is not None:
            return self.dst_state
        if self.dest_id is not None:
            if self.src_state == 'preparing':
                return 'preparing(dest without header)'
            if self.src_in_trash or self.src_header:
                return 'committing'
            return 'committed'
        if self.src_in_trash:
            if (self.src_named or self.src_in_dir) and not self.src_state:
                # librbd's trash move: trash entry, then the id object, then the directory
                return 'trashing(name left: {})'.format(
                    'id+dir' if self.src_named and self.src_in_dir
                    else 'id' if self.src_named else 'dir')
            return '{}(no dest)'.format(self.src_state or 'trashed')
        if self.src_named:
            return '{}(source relinked)'.format(self.src_state) if self.src_state else 'untouched'
        return 'lost'


class Probe:
    """Reads the headers, ids and trash of one migration with the harness's rados client."""

    def __init__(self, handle: rados.Rados, layout: Layout, image: str, src_id: str,
                 child_id: str) -> None:
        self.layout = layout
        self.image = image
        self.src_id = src_id
        self.child_id = child_id
        self.src_io = handle.open_ioctx(layout.src_pool)
        self.src_io.set_namespace(layout.src_ns)
        self.dst_io = handle.open_ioctx(layout.dst_pool)
        self.dst_io.set_namespace(layout.dst_ns)
        self.lock = threading.Lock()
        self.seen_ids = {src_id}

    def close(self) -> None:
        self.src_io.close()
        self.dst_io.close()

    @staticmethod
    def named_id(io: rados.Ioctx, name: str) -> Optional[str]:
        try:
            data = io.read('rbd_id.' + name)
        except rados.ObjectNotFound:
            return None
        (n,) = struct.unpack_from('<I', data, 0)
        return bytes(data[4:4 + n]).decode()

    @staticmethod
    def dir_id(io: rados.Ioctx, name: str) -> Optional[str]:
        """The id rbd_directory maps ``name`` to."""
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals_by_keys(op, ('name_' + name,))
            try:
                io.operate_read_op(op, 'rbd_directory')
            except rados.ObjectNotFound:
                return None
            values = [bytes(v) for _, v in it]
        if not values:
            return None
        (n,) = struct.unpack_from('<I', values[0], 0)
        return values[0][4:4 + n].decode()

    @staticmethod
    def migration_state(io: rados.Ioctx, image_id: str) -> Optional[str]:
        try:
            _, out = io.execute('rbd_header.' + image_id, 'rbd', 'migration_get', b'')
        except (rados.ObjectNotFound, rados.InvalidArgumentError):
            return None             # no header / a header without a migration
        try:
            return decode_migration_state(bytes(out))[1]
        except (IndexError, struct.error):
            return 'undecodable'

    @staticmethod
    def header_exists(io: rados.Ioctx, image_id: str) -> bool:
        try:
            io.stat('rbd_header.' + image_id)
            return True
        except rados.ObjectNotFound:
            return False

    @staticmethod
    def in_trash(io: rados.Ioctx, image_id: str) -> bool:
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals_by_keys(op, ('id_' + image_id,))
            try:
                io.operate_read_op(op, 'rbd_trash')
            except rados.ObjectNotFound:
                return False
            return bool(list(it))

    @staticmethod
    def snapshots(io: rados.Ioctx, image_id: str) -> Optional[int]:
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, '', 'snapshot_', 1000)
            try:
                io.operate_read_op(op, 'rbd_header.' + image_id)
            except rados.ObjectNotFound:
                return None
            return len(list(it))

    @staticmethod
    def parent_id(io: rados.Ioctx, image_id: str) -> Optional[str]:
        """The image id in a (format 2) clone's parent spec."""
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals_by_keys(op, ('parent',))
            try:
                io.operate_read_op(op, 'rbd_header.' + image_id)
            except rados.ObjectNotFound:
                return None
            values = [bytes(v) for _, v in it]
        if not values:
            return None
        buf = values[0]
        off = 6 + 8                               # ENCODE_START, pool id
        (n,) = struct.unpack_from('<I', buf, off)     # namespace
        off += 4 + n
        (n,) = struct.unpack_from('<I', buf, off)
        return buf[off + 4:off + 4 + n].decode()

    def observe(self, detail: bool = False) -> Observation:
        with self.lock:
            src_named_id = self.named_id(self.src_io, self.image)
            dst_named_id = (src_named_id if self.layout.in_place
                            else self.named_id(self.dst_io, self.image))
            dest_id = dst_named_id if dst_named_id != self.src_id else None
            if dest_id:
                self.seen_ids.add(dest_id)
            src_header = self.header_exists(self.src_io, self.src_id)
            src_state = self.migration_state(self.src_io, self.src_id) if src_header else None
            dst_state = self.migration_state(self.dst_io, dest_id) if dest_id else None
            obs = Observation(src_named=src_named_id == self.src_id,
                              src_in_dir=self.dir_id(self.src_io, self.image) == self.src_id,
                              dest_id=dest_id,
                              src_in_trash=self.in_trash(self.src_io, self.src_id),
                              src_header=src_header, src_state=src_state,
                              dst_state=dst_state)
            if not detail:
                return obs
            parent = self.parent_id(self.src_io, self.child_id)
            clone_on = {self.src_id: 'source', dest_id: 'dest'}.get(parent, str(parent))
            return replace(obs, src_snaps=self.snapshots(self.src_io, self.src_id),
                           dst_snaps=self.snapshots(self.dst_io, dest_id) if dest_id else None,
                           clone_on=clone_on)

    def phase(self) -> str:
        return self.observe().phase()


# --------------------------------------------------------------------------------------------
# helpers around processes

class CaseFailure(Exception):
    """The case failed; the message is the reason shown in the matrix."""


PERCENT_RE = re.compile(rb'(\d+)% complete')


class CliStep:
    """An ``rbd migration <step>`` process whose progress output is followed."""

    def __init__(self, cluster: Cluster, args: Sequence[str]) -> None:
        self.args = ['rbd', 'migration'] + list(args)
        # the release's own rbd (chroot'ed into its root if the host does not carry it;
        # the same pid either way, so the kill reaches the rbd process itself)
        self.proc = subprocess.Popen(cluster.wrap_argv(self.args), env=cluster.env,
                                     stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.started = time.monotonic()
        self.percent = -1
        self.output = b''
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        while True:
            chunk = os.read(stream.fileno(), 4096)
            with self.cond:
                if not chunk:
                    self.cond.notify_all()
                    return
                self.output += chunk
                found = PERCENT_RE.findall(self.output[-200:])
                if found:
                    self.percent = max(self.percent, int(found[-1]))
                self.cond.notify_all()

    def wait_percent(self, percent: float, timeout: float) -> bool:
        """Until the CLI printed ``percent``% (True) or exited (False)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.percent < percent:
                if self.proc.poll() is not None or time.monotonic() >= deadline:
                    return self.percent >= percent
                self.cond.wait(0.005)
        return True

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> bool:
        """SIGKILL it (it is our child); True if it was still running."""
        alive = self.proc.poll() is None
        if alive:
            self.proc.kill()
        self.proc.wait()
        self.reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return alive

    def tail(self) -> str:
        text = self.output.decode(errors='replace').replace('\r', '\n')
        return ' | '.join(line.strip() for line in text.splitlines()[-3:] if line.strip())


class Background:
    """A ``ceph`` command running in the background (our child), e.g. a blocking cancel."""

    def __init__(self, cluster: Cluster, args: Sequence[str]) -> None:
        self.args = ['ceph'] + list(args)
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cluster.wrap_argv(self.args), env=cluster.env,
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def kill(self) -> Optional[int]:
        """SIGKILL it if still running; its exit code if it had finished by itself."""
        rc = self.proc.poll()
        if rc is None:
            self.proc.kill()
        self.proc.wait()
        return rc

    def output(self) -> str:
        self.out.seek(0)
        return self.out.read().decode(errors='replace').strip()


# --------------------------------------------------------------------------------------------
# status polling and the truthfulness checks

@dataclass
class Poll:
    at: float
    state: str                   # a task state, or 'unavailable'
    view: Optional[Dict[str, Any]] = None


class StatusPoller:
    """Polls ``status <id> --format json`` about every 0.2 s and checks each terminal answer
    against librbd right away."""

    def __init__(self, corpus: 'Corpus', ctx: 'CaseContext', task_id: str) -> None:
        self.corpus = corpus
        self.ctx = ctx
        self.task_id = task_id
        self.polls: List[Poll] = []
        self.violations: List[str] = []
        self.stop_event = threading.Event()
        self.cond = threading.Condition()
        self.terminal_seen: Optional[str] = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name='status-' + task_id)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                self._poll_once()
            except Exception as e:        # never let the poller die silently
                self.violations.append('poller error: {}: {}'.format(type(e).__name__, e))
            self.stop_event.wait(max(0.0, POLL_SECONDS - (time.monotonic() - t0)))

    def _poll_once(self) -> None:
        rc, out, _ = self.corpus.livemigrate('status', self.task_id, '--format', 'json',
                                             timeout=STATUS_TIMEOUT)
        now = time.monotonic()
        if rc != 0:
            poll = Poll(now, 'unavailable')
        else:
            view = json.loads(out)
            poll = Poll(now, str(view.get('state')), view)
            if poll.state in ('committed', 'aborted'):
                problem = self.corpus.check_terminal_claim(self.ctx, view)
                if problem:
                    self.violations.append('status said {} at +{:.1f}s but {}'.format(
                        poll.state, now - self.ctx.t0, problem))
                if self.terminal_seen is None:
                    self.terminal_seen = poll.state
            if self.terminal_seen is not None and poll.state != self.terminal_seen:
                self.violations.append('status went from {} back to {} at +{:.1f}s'.format(
                    self.terminal_seen, poll.state, now - self.ctx.t0))
        with self.cond:
            self.polls.append(poll)
            self.cond.notify_all()

    def last(self) -> Optional[Poll]:
        with self.cond:
            avail = [p for p in self.polls if p.view is not None]
            return avail[-1] if avail else None

    def wait(self, pred: Callable[[Poll], bool], timeout: float) -> Optional[Poll]:
        """The first poll from now on that satisfies ``pred`` (None on timeout)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            seen = len(self.polls)
            while True:
                for p in self.polls[seen:]:
                    if pred(p):
                        return p
                seen = len(self.polls)
                left = deadline - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    return None
                self.cond.wait(min(left, 1.0))

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(STATUS_TIMEOUT + 5)

    def timeline(self) -> str:
        """'queued x3 -> unavailable x9 -> executing x4 -> committed x6'."""
        runs: List[List[Any]] = []
        for p in self.polls:
            if runs and runs[-1][0] == p.state:
                runs[-1][1] += 1
            else:
                runs.append([p.state, 1])
        return ' -> '.join('{}x{}'.format(s, n) if n > 1 else s for s, n in runs)


# --------------------------------------------------------------------------------------------
# one case

@dataclass
class CaseContext:
    case: Case
    layout: Layout
    image: str
    t0: float = field(default_factory=time.monotonic)
    src_id: str = ''
    before: Dict[str, str] = field(default_factory=dict)
    child_before: Dict[str, str] = field(default_factory=dict)
    probe: Optional[Probe] = None
    poller: Optional[StatusPoller] = None
    task_id: Optional[str] = None
    phase: str = '?'
    # what the module's task must end as, when it differs from the case's
    # (an adopted half-done prepare is undone: its layout is not known)
    expected: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    failures: List[str] = field(default_factory=list)
    log: List[str] = field(default_factory=list)

    @property
    def src(self) -> str:
        return self.layout.src(self.image)

    @property
    def dst(self) -> str:
        return self.layout.dst(self.image)

    @property
    def child(self) -> str:
        return self.layout.src(self.image + '-child')

    def note(self, text: str) -> None:
        self.log.append('+{:6.2f}s {}'.format(time.monotonic() - self.t0, text))


@dataclass
class Result:
    case: Case
    phase: str
    failures: List[str]
    notes: List[str]
    seconds: float
    log: List[str]
    timeline: str = ''

    @property
    def ok(self) -> bool:
        return not self.failures

    def cell(self) -> str:
        phase = self.phase + (', ' + ', '.join(self.notes) if self.notes else '')
        if self.ok:
            return 'ok({})'.format(phase)
        return 'FAIL({}): {}'.format(phase, self.failures[0])

    def describe(self) -> str:
        lines = ['{}: {} in {:.1f}s'.format(self.case.name, self.cell(), self.seconds)]
        lines += ['  failure: ' + f for f in self.failures]
        if self.timeline:
            lines.append('  status polls: ' + self.timeline)
        lines += ['  ' + entry for entry in self.log]
        return '\n'.join(lines)


class Corpus:
    """Runs cases on one cluster (pools a, b; namespaces a/ns1, b/ns2; see start_cluster)."""

    def __init__(self, cluster: Cluster, verbose: bool = False) -> None:
        self.cluster = cluster
        self.conf = cluster.conf
        self.verbose = verbose
        self.handle = rados.Rados(conffile=self.conf)
        self.handle.connect(timeout=30)
        self.counter = 0

    def close(self) -> None:
        self.handle.shutdown()

    # ---- commands -----------------------------------------------------------------------

    def livemigrate(self, *args: str, timeout: float = 60) -> Tuple[int, str, str]:
        try:
            p = self.cluster.ceph('rbd', 'livemigrate', *json_args(args), check=False,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return -110, '', 'timed out after {}s'.format(timeout)
        return p.returncode, p.stdout, p.stderr

    def lm_json(self, *args: str, timeout: float = 60) -> Dict[str, Any]:
        rc, out, err = self.livemigrate(*args, timeout=timeout)
        if rc != 0:
            raise CaseFailure('ceph rbd livemigrate {} -> {}: {}'.format(
                args[0], rc, (err or out).strip()[:200]))
        return json.loads(out)  # type: ignore[no-any-return]

    def rbd_cli(self, *args: str, timeout: float = 120) -> 'subprocess.CompletedProcess[str]':
        return self.cluster.rbd(*args, check=False, timeout=timeout)

    def rbd_ok(self, *args: str, timeout: float = 120) -> str:
        p = self.rbd_cli(*args, timeout=timeout)
        if p.returncode != 0:
            raise CaseFailure('rbd {} -> {}: {}'.format(' '.join(args), p.returncode,
                                                        p.stderr.strip()[-200:]))
        return p.stdout

    def ioctx(self, pool: str, ns: str) -> rados.Ioctx:
        io = self.handle.open_ioctx(pool)
        io.set_namespace(ns)
        return io

    # ---- truthfulness of one terminal status ----------------------------------------------

    def check_terminal_claim(self, ctx: CaseContext, view: Dict[str, Any]) -> Optional[str]:
        """What is wrong with a status that says committed/aborted (None: it is true)."""
        lay = ctx.layout
        state = view.get('state')
        src_io = self.ioctx(lay.src_pool, lay.src_ns)
        dst_io = self.ioctx(lay.dst_pool, lay.dst_ns)
        try:
            if state == 'committed':
                src_id = view.get('source_image_id') or ctx.src_id
                if Probe.in_trash(src_io, src_id) or Probe.in_trash(src_io, ctx.src_id):
                    return 'the source is still in the trash'
                problem = _migration_left(dst_io, ctx.image)
                if problem:
                    return 'the destination ' + problem
                dest_id = view.get('dest_image_id')
                named = Probe.named_id(dst_io, ctx.image)
                if not dest_id:
                    return 'the status has no dest_image_id (destination is {})'.format(named)
                if named != dest_id:
                    return 'the destination name resolves to {}, not dest_image_id {}'.format(
                        named, dest_id)
                if dest_id == ctx.src_id:
                    return 'dest_image_id is the source image id'
            elif state == 'aborted':
                src_id = view.get('source_image_id')
                if src_id != ctx.src_id:
                    return 'its source_image_id {} is not the source {}'.format(
                        src_id, ctx.src_id)
                try:
                    with rbd.Image(src_io, ctx.image, read_only=True) as image:
                        opened = image.id()
                except rbd.Error as e:
                    return 'the source does not open: {}'.format(e)
                if opened != src_id:
                    return 'the source name opens image {}, not {}'.format(opened, src_id)
                problem = _migration_left(src_io, ctx.image)
                if problem:
                    return 'the source ' + problem
            return None
        finally:
            src_io.close()
            dst_io.close()

    # ---- the case ---------------------------------------------------------------------------

    def run(self, case: Case) -> Result:
        self.counter += 1
        image = 'ps{:03d}-{}-{}'.format(self.counter, case.step[:4], case.killer)
        ctx = CaseContext(case=case, layout=LAYOUTS[case.layout], image=image)
        procs: List[Any] = []
        try:
            self._create(ctx)
            if case.killer == 'mgr':
                self._mgr_case(ctx, procs)
            else:
                self._cli_case(ctx, procs)
            self._finish(ctx)
        except CaseFailure as e:
            ctx.failures.append(str(e))
            self._where_is_the_data(ctx)
        except Exception as e:
            ctx.failures.append('harness error: {}: {}'.format(type(e).__name__, e))
            ctx.note(traceback.format_exc())
        finally:
            for p in procs:
                p.kill()
            timeline = ''
            if ctx.poller is not None:
                ctx.poller.stop()
                timeline = ctx.poller.timeline()
                ctx.failures += [v for v in ctx.poller.violations if v not in ctx.failures]
            try:
                self._cleanup(ctx)
            except Exception as e:
                ctx.note('cleanup failed: {}: {}'.format(type(e).__name__, e))
            if ctx.probe is not None:
                ctx.probe.close()
        result = Result(case, ctx.phase, ctx.failures, ctx.notes,
                        time.monotonic() - ctx.t0, ctx.log, timeline)
        if self.verbose:
            print(result.describe(), flush=True)
        return result

    def _create(self, ctx: CaseContext) -> None:
        rbdtools.create_image(self.conf, ctx.src, IMAGE_BYTES, seed=ctx.image, snaps=SNAPS)
        self.rbd_ok('snap', 'protect', ctx.src + '@snap1')
        # format 2: Pacific's librbd asserts (SIGABRT) moving the parent of a format 1
        # clone that lives in a namespace (cls_client::remove_child)
        self.rbd_ok('clone', '--rbd-default-clone-format', '2', ctx.src + '@snap1', ctx.child)
        ctx.before = rbdtools.checksums(self.conf, ctx.src)
        ctx.child_before = rbdtools.checksums(self.conf, ctx.child)
        io = self.ioctx(ctx.layout.src_pool, ctx.layout.src_ns)
        try:
            src_id = Probe.named_id(io, ctx.image)
            child_id = Probe.named_id(io, ctx.image + '-child')
        finally:
            io.close()
        assert src_id and child_id
        ctx.src_id = src_id
        ctx.probe = Probe(self.handle, ctx.layout, ctx.image, src_id, child_id)
        ctx.note('created {} (id {}) with {} snapshots and clone {}'.format(
            ctx.src, src_id, SNAPS, ctx.child))

    def _add_args(self, ctx: CaseContext, *extra: str) -> List[str]:
        args = ['add', ctx.src]
        if not ctx.layout.in_place:
            args.append(ctx.dst)
        return args + list(ctx.layout.options) + ['--allow-descendants'] + list(extra)

    def _start_polling(self, ctx: CaseContext, task_id: str) -> None:
        ctx.task_id = task_id
        ctx.poller = StatusPoller(self, ctx, task_id)

    def _wait_state(self, ctx: CaseContext, states: Sequence[str], timeout: float) -> Poll:
        assert ctx.poller is not None
        last = ctx.poller.last()
        if last is not None and last.state in states:
            return last
        p = ctx.poller.wait(lambda p: p.state in states or p.state in TERMINAL, timeout)
        if p is None:
            last = ctx.poller.last()
            raise CaseFailure('task not {} within {:.0f}s (last: {})'.format(
                '/'.join(states), timeout, _brief(last.view) if last else 'no answer'))
        if p.state not in states:
            raise CaseFailure('task ended {} ({}) while waiting for {}'.format(
                p.state, (p.view or {}).get('error'), '/'.join(states)))
        return p

    # ---- timing the kill ------------------------------------------------------------------

    def _await_moment(self, ctx: CaseContext, moment: Moment, t_start: float,
                      initial: str, cli: Optional[CliStep] = None) -> None:
        """Return at the kill moment; notes what happened on the way."""
        assert ctx.probe is not None
        probe = ctx.probe
        deadline = time.monotonic() + ANCHOR_TIMEOUT
        if moment.anchor == 'start':
            _sleep_until(t_start + moment.value)
            return
        if moment.anchor == 'percent':
            assert cli is not None
            if not cli.wait_percent(moment.value, ANCHOR_TIMEOUT):
                ctx.note('the CLI exited (or stalled) at {}% before {}%'.format(
                    cli.percent, moment.value))
                ctx.notes.append('CLI had exited' if cli.exited() else 'anchor timeout')
            return
        # change / executing: watch the headers
        while True:
            phase = probe.phase()
            if moment.anchor == 'change' and phase != initial:
                break
            if moment.anchor == 'executing' and phase == 'executing':
                break
            if moment.anchor == 'executing' and phase in ('executed', 'committing',
                                                          'committed'):
                ctx.notes.append('executing missed')
                break
            if cli is not None and cli.exited():
                ctx.note('the CLI exited before librbd changed ({})'.format(phase))
                ctx.notes.append('CLI had exited')
                return
            if time.monotonic() > deadline:
                raise CaseFailure('anchor not reached: librbd stayed {} for {:.0f}s'.format(
                    phase, ANCHOR_TIMEOUT))
            time.sleep(0.001)
        anchor = time.monotonic()
        ctx.note('anchor: librbd {} -> {}'.format(initial, phase))
        _sleep_until(anchor + moment.value)
        ctx.note('kill {:.0f} ms after the anchor (wanted {:.0f})'.format(
            (time.monotonic() - anchor) * 1000, moment.value * 1000))

    def _read_phase(self, ctx: CaseContext, extra: str = '') -> str:
        assert ctx.probe is not None
        obs = ctx.probe.observe(detail=True)
        phase = obs.phase()
        if phase == 'untouched' and ctx.case.step != 'prepare':
            phase = 'aborted'
        label = phase
        if extra and phase in ('executing', 'committing', 'aborting'):
            label += ' ' + extra
        if phase not in ('untouched', 'aborted', 'committed', 'executing', 'executed',
                         'prepared'):
            label += ' [{}]'.format(obs.detail())
        ctx.phase = label
        ctx.note('phase after the kill: {} ({})'.format(label, obs))
        return phase

    # ---- killer: the mgr ------------------------------------------------------------------

    def _mgr_case(self, ctx: CaseContext, procs: List[Any]) -> None:
        case = ctx.case
        cl = self.cluster
        watcher: Optional[Tuple[rados.Rados, rados.Ioctx, rbd.Image]] = None
        if case.step == 'prepare':
            watcher = _open_watcher(self.conf, ctx.layout, ctx.image)
            task = self.lm_json(*self._add_args(ctx, '--bandwidth-limit',
                                                str(PREPARE_BANDWIDTH)))
        elif case.step == 'execute':
            task = self.lm_json(*self._add_args(ctx, '--bandwidth-limit',
                                                str(EXECUTE_BANDWIDTH)))
        else:
            task = self.lm_json(*self._add_args(ctx, '--manual-commit'))
        self._start_polling(ctx, task['id'])
        ctx.note('task {} added ({})'.format(task['id'], task['state']))
        command: Optional[Background] = None
        try:
            if case.step == 'prepare':
                p = self._wait_state(ctx, ('queued',), 30)
                if not (p.view or {}).get('blocked_reason'):
                    ctx.note('queued without a blocked_reason: {}'.format(_brief(p.view)))
                phase0 = ctx.probe.phase() if ctx.probe else '?'
                if phase0 != 'untouched':
                    raise CaseFailure('librbd is {} while a watcher holds the source'.format(
                        phase0))
            elif case.step in ('commit', 'abort'):
                self._wait_state(ctx, ('executed',), 120)
            active = cl.active_mgr()
            initial = ctx.probe.phase() if ctx.probe else '?'
            t_start = time.monotonic()
            if watcher is not None:
                _close_watcher(watcher)
                watcher = None
                ctx.note('watcher closed')
            elif case.step == 'commit':
                command = Background(cl, ['rbd', 'livemigrate', 'commit', task['id'],
                                          '--format', 'json'])
            elif case.step == 'abort':
                command = Background(cl, ['rbd', 'livemigrate', 'cancel', task['id'],
                                          '--format', 'json'])
            if command is not None:
                procs.append(command)
                ctx.note('issued ' + ' '.join(command.args[1:]))
            self._await_moment(ctx, case.moment, t_start, initial)
            t_kill = time.monotonic()
            cl.kill_mgr(active)
            ctx.note('killed mgr.{} ({:.0f} ms after the step was started)'.format(
                active, (t_kill - t_start) * 1000))
        finally:
            if watcher is not None:
                _close_watcher(watcher)
        extra = ''
        last = ctx.poller.last() if ctx.poller else None
        if last is not None and last.view and last.view.get('state') == 'executing':
            size = last.view.get('size_bytes') or IMAGE_BYTES
            extra = '~{:.0f}%'.format(100.0 * (last.view.get('bytes_copied') or 0) / size)
        phase = self._read_phase(ctx, extra)
        if command is not None:
            rc = command.kill()
            ctx.note('{} {}: {}'.format(' '.join(command.args[1:4]),
                                        'exited {}'.format(rc) if rc is not None
                                        else 'killed', command.output()[-200:]))
        cl.start_mgr(active)
        cl.wait_module_ready(timeout=90)
        ctx.note('mgr.{} restarted, module ready'.format(active))
        if case.step in ('commit', 'abort') and phase == 'executed':
            self._reissue(ctx, task['id'])

    def _reissue(self, ctx: CaseContext, task_id: str) -> None:
        """The kill came before librbd started the step: if the module has not recorded the
        request either, the operator repeats the command that never answered."""
        view = self.lm_json('status', task_id, '--format', 'json', timeout=30)
        flag = 'commit_requested' if ctx.case.step == 'commit' else 'cancel_requested'
        if view.get('state') == 'executed' and not view.get(flag):
            verb = 'commit' if ctx.case.step == 'commit' else 'cancel'
            rc, out, err = self.livemigrate(verb, task_id, timeout=120)
            ctx.notes.append(verb + ' re-issued')
            ctx.note('re-issued {}: rc {} {}'.format(verb, rc, (err or out).strip()[:200]))
            if rc != 0:
                raise CaseFailure('re-issued {} -> {}: {}'.format(verb, rc, err.strip()))

    # ---- killer: the rbd CLI ----------------------------------------------------------------

    def _cli_case(self, ctx: CaseContext, procs: List[Any]) -> None:
        case = ctx.case
        prepare = ['prepare'] + list(ctx.layout.options) + [ctx.src, ctx.dst]
        steps = {'prepare': prepare, 'execute': ['execute', ctx.dst],
                 'commit': ['commit', '--force', ctx.dst], 'abort': ['abort', ctx.dst]}
        before = {'prepare': [], 'execute': ['prepare'], 'commit': ['prepare', 'execute'],
                  'abort': ['prepare', 'execute']}[case.step]
        for s in before:
            self.rbd_ok('migration', *steps[s])
        assert ctx.probe is not None
        initial = ctx.probe.phase()
        ctx.note('operator ran {}; librbd {}'.format(', '.join(before) or 'nothing', initial))
        cli = CliStep(self.cluster, steps[case.step] + list(CLI_STEP_OPTIONS))
        procs.append(cli)
        self._await_moment(ctx, case.moment, cli.started, initial, cli)
        was_running = cli.kill()
        ctx.note('{} {} (rc {}): {}'.format(
            'killed' if was_running else 'already exited:', ' '.join(cli.args),
            cli.proc.returncode, cli.tail()))
        if not was_running and 'CLI had exited' not in ctx.notes:
            ctx.notes.append('CLI had exited')
        pct = '{}%'.format(cli.percent) if cli.percent >= 0 else ''
        phase = self._read_phase(ctx, pct)
        if phase == 'untouched':
            task = self.lm_json(*self._add_args(ctx))
            ctx.notes.append('added')
        elif phase in ('committed', 'aborted'):
            ctx.notes.append('nothing to adopt')
            ctx.note('librbd holds no migration: nothing for the module to do')
            return
        else:
            task = self._adopt(ctx)
            ctx.notes.append('adopted')
            if task.get('cancel_requested') and case.step != 'abort':
                ctx.expected = 'aborted'
                ctx.note('the module undoes the half-done {}: expecting aborted'.format(
                    case.step))
            if case.step == 'abort' and phase == 'executed':
                # the abort never started: the operator still wants it
                self.lm_json('cancel', task['id'], timeout=120)
                ctx.notes.append('cancelled')
        ctx.note('module task {} ({})'.format(task['id'], task.get('state')))
        self._start_polling(ctx, task['id'])

    def _adopt(self, ctx: CaseContext) -> Dict[str, Any]:
        """Adopt by the destination; a prepare cut before it named the destination
        is found by its source in ``ls``, whose ``next_command`` finishes it."""
        rc, out, err = self.livemigrate('adopt', ctx.dst, timeout=120)
        if rc == 0:
            return dict(json.loads(out))
        rows = json.loads(self.livemigrate('ls', '--format', 'json')[1] or '[]')
        row = next((r for r in rows if r.get('orphan') and r.get('source') == ctx.src), None)
        if row is None:
            raise CaseFailure('adopt {} -> {}: {}; and no orphan for {} in ls'.format(
                ctx.dst, rc, err.strip(), ctx.src))
        ctx.note('orphan {} ({}): {}'.format(row['source'], row.get('orphan_kind'),
                                             row.get('next_command')))
        return self.lm_json(*row['next_command'].split()[3:], timeout=120)

    # ---- the end ----------------------------------------------------------------------------

    def _finish(self, ctx: CaseContext) -> None:
        expected = ctx.expected or ctx.case.expected
        if ctx.poller is not None:
            p = self._wait_state(ctx, (expected,), FINISH_TIMEOUT)
            ctx.note('task {} ({})'.format(p.state, (p.view or {}).get('error')))
            # a few more polls after the end: a terminal state must stay put
            ctx.poller.wait(lambda p: False, 3 * POLL_SECONDS)
        problems = self._check_end(ctx, expected)
        ctx.failures += problems

    def _check_end(self, ctx: CaseContext, expected: str) -> List[str]:
        out: List[str] = []
        lay = ctx.layout
        keep, other = (ctx.dst, ctx.src) if expected == 'committed' else (ctx.src, ctx.dst)
        info = self.rbd_cli('info', '--format', 'json', keep, timeout=60)
        if info.returncode != 0:
            return ['{} does not open: {}'.format(keep, info.stderr.strip()[-200:])]
        image_id = json.loads(info.stdout)['id']
        if expected == 'aborted' and image_id != ctx.src_id:
            out.append('{} is image {}, not the source {}'.format(keep, image_id, ctx.src_id))
        if expected == 'committed' and image_id == ctx.src_id:
            out.append('{} is still the source image {}'.format(keep, image_id))
        if ctx.poller is not None and expected == 'committed':
            last = ctx.poller.last()
            dest_id = (last.view or {}).get('dest_image_id') if last else None
            if dest_id != image_id:
                out.append('status dest_image_id {} but {} is {}'.format(
                    dest_id, keep, image_id))
        if not lay.in_place:
            gone = self.rbd_cli('info', other, timeout=60)
            if gone.returncode == 0:
                out.append('{} still exists'.format(other))
            elif 'No such file' not in gone.stderr and 'not found' not in gone.stderr:
                out.append('rbd info {}: {}'.format(other, gone.stderr.strip()[-200:]))
        if expected == 'committed':
            pool, ns = lay.dst_pool, lay.dst_ns
        else:
            pool, ns = lay.src_pool, lay.src_ns
        io = self.ioctx(pool, ns)
        try:
            problem = _migration_left(io, ctx.image)
        finally:
            io.close()
        if problem:
            out.append('{} {}'.format(keep, problem))
        sums = rbdtools.checksums(self.conf, keep)
        if sums != ctx.before:
            diff = sorted(k for k in set(sums) | set(ctx.before)
                          if sums.get(k) != ctx.before.get(k))
            out.append('{} data differs from before in {}'.format(keep, ', '.join(diff)))
        if rbdtools.checksums(self.conf, ctx.child) != ctx.child_before:
            out.append('the clone {} changed'.format(ctx.child))
        parent = rbdtools.parent_of(self.conf, ctx.child)
        if parent != keep + '@snap1':
            out.append('the clone\'s parent is {}, not {}@snap1'.format(parent, keep))
        ids = {ctx.src_id, image_id}
        for where in self._trash_places():
            entries = json.loads(self.rbd_ok('trash', 'ls', '--all', '--format', 'json',
                                             where) or '[]')
            mine = [e for e in entries
                    if e.get('id') in ids or e.get('name') in (ctx.image, ctx.image + '-child')]
            if mine:
                out.append('trash of {} holds {}'.format(
                    where, ', '.join('{}({})'.format(e.get('name'), e.get('id')) for e in mine)))
        return out

    def _where_is_the_data(self, ctx: CaseContext) -> None:
        """After a failure: note which name still reads the original data, if any."""
        if not ctx.before:
            return
        found = []
        for spec in dict.fromkeys((ctx.dst, ctx.src)):
            try:
                if rbdtools.checksums(self.conf, spec) == ctx.before:
                    found.append(spec)
            except Exception as e:
                ctx.note('after the failure {} does not read: {}'.format(spec, e))
        ctx.note('after the failure the original data (head and snapshots) reads at: {}'.format(
            ', '.join(found) or 'NEITHER NAME'))
        if not found:
            ctx.failures.append('the original data reads under neither name')

    def _trash_places(self) -> List[str]:
        places = list(POOLS)
        for pool in POOLS:
            listed = json.loads(self.rbd_ok('namespace', 'ls', '--format', 'json', pool)
                                or '[]')
            places += ['{}/{}'.format(pool, n['name']) for n in listed]
        return places

    def _cleanup(self, ctx: CaseContext) -> None:
        """Delete the case's images, also after a failure: let librbd finish a half-done
        step, remove the images, and wipe whatever of ours is left at the rados level."""
        if ctx.task_id is not None:
            rc, out, _ = self.livemigrate('status', ctx.task_id, '--format', 'json',
                                          timeout=30)
            if rc == 0 and json.loads(out).get('state') not in TERMINAL:
                ctx.note('cleanup: cancelling task {}'.format(ctx.task_id))
                self.livemigrate('cancel', ctx.task_id, timeout=90)
                # cancel returns at once: let the abort end before touching the images
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    rc, out, _ = self.livemigrate('status', ctx.task_id, '--format', 'json',
                                                  timeout=30)
                    if rc != 0 or json.loads(out).get('state') in TERMINAL:
                        break
                    time.sleep(0.5)
        if ctx.probe is None:
            return
        phase = ctx.probe.phase()
        if phase == 'committing':
            self._rbd_patient(ctx, 'migration', 'commit', '--force', ctx.dst)
        elif phase not in ('committed', 'untouched', 'lost'):
            self._rbd_patient(ctx, 'migration', 'abort', ctx.dst)
        for spec in (ctx.child, ctx.dst, ctx.src):
            if self.rbd_cli('info', spec, timeout=60).returncode != 0:
                continue
            self.rbd_cli('snap', 'unprotect', spec + '@snap1', timeout=60)
            self.rbd_cli('snap', 'purge', spec, timeout=120)
            self._rbd_patient(ctx, 'rm', '--no-progress', spec)
        left = self._purge_raw(ctx)
        if left:
            ctx.note('cleanup: wiped {} leftover object(s)/key(s) at the rados level ({})'.format(
                len(left), ', '.join(x for x in left if not x.startswith('rbd_data.'))))

    def _rbd_patient(self, ctx: CaseContext, *args: str) -> bool:
        """An rbd command, retried while a killed client's watch or lock is still around."""
        deadline = time.monotonic() + WATCH_TIMEOUT_SECONDS + 20
        while True:
            p = self.rbd_cli(*args, timeout=120)
            if p.returncode == 0:
                return True
            busy = p.returncode == 16 or 'watchers' in p.stderr or 'busy' in p.stderr
            if not busy or time.monotonic() > deadline:
                ctx.note('cleanup: rbd {} -> {}: {}'.format(
                    ' '.join(args), p.returncode, _last_line(p.stderr)))
                return False
            time.sleep(1)

    def _purge_raw(self, ctx: CaseContext) -> List[str]:
        """Remove every rados object and omap entry of this case's images that is left."""
        assert ctx.probe is not None
        names = (ctx.image, ctx.image + '-child')
        places = {(ctx.layout.src_pool, ctx.layout.src_ns),
                  (ctx.layout.dst_pool, ctx.layout.dst_ns)}
        removed: List[str] = []
        for pool, ns in sorted(places):
            io = self.ioctx(pool, ns)
            try:
                ids = set(ctx.probe.seen_ids)
                for name in names:
                    image_id = Probe.named_id(io, name)
                    if image_id:
                        ids.add(image_id)
                        _remove_object(io, 'rbd_id.' + name, removed)
                _remove_keys(io, 'rbd_trash', ['id_' + i for i in ids], removed)
                _remove_keys(io, 'rbd_directory', ['id_' + i for i in ids]
                             + ['name_' + n for n in names], removed)
                prefixes = tuple('{}.{}'.format(kind, i) for i in ids
                                 for kind in ('rbd_data', 'rbd_header', 'rbd_object_map'))
                for obj in list(io.list_objects()):
                    if obj.key.startswith(prefixes):
                        _remove_object(io, obj.key, removed)
            finally:
                io.close()
        return removed


# --------------------------------------------------------------------------------------------
# small helpers

def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace('\r', '\n').splitlines() if line.strip()]
    return lines[-1] if lines else ''


def _sleep_until(t: float) -> None:
    left = t - time.monotonic()
    if left > 0:
        time.sleep(left)


def _brief(view: Optional[Dict[str, Any]]) -> str:
    if not view:
        return '-'
    keys = ('state', 'error', 'blocked_reason', 'waiting_reason', 'attempts')
    return ', '.join('{}={}'.format(k, view.get(k)) for k in keys if view.get(k) is not None)


def _migration_left(io: rados.Ioctx, name: str) -> Optional[str]:
    """None if image ``name`` is not migrating; else what librbd says."""
    try:
        st = rbd.RBD().migration_status(io, name)
    except rbd.InvalidArgument:
        return None
    except rbd.ImageNotFound:
        return 'does not exist'
    except rbd.Error as e:
        return 'cannot be read for its migration state: {}'.format(e)
    return 'still has a migration ({} -> {}, state {})'.format(
        st.get('source_image_id'), st.get('dest_image_id'),
        MIGRATION_STATES.get(st.get('state', -1), st.get('state')))


def _remove_object(io: rados.Ioctx, name: str, removed: List[str]) -> None:
    try:
        io.remove_object(name)
        removed.append(name)
    except rados.ObjectNotFound:
        pass


def _remove_keys(io: rados.Ioctx, obj: str, keys: List[str], removed: List[str]) -> None:
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals_by_keys(op, tuple(keys))
        try:
            io.operate_read_op(op, obj)
        except rados.ObjectNotFound:
            return
        present = [k for k, _ in it]
    if present:
        with rados.WriteOpCtx() as wop:
            io.remove_omap_keys(wop, tuple(present))
            io.operate_write_op(wop, obj)
        removed += ['{}[{}]'.format(obj, k) for k in present]


def _open_watcher(conf: str, layout: Layout, image: str
                  ) -> Tuple[rados.Rados, rados.Ioctx, rbd.Image]:
    """Open the source read-write on a client of its own: a watcher the module waits for."""
    handle = rados.Rados(conffile=conf)
    handle.connect(timeout=30)
    io = handle.open_ioctx(layout.src_pool)
    io.set_namespace(layout.src_ns)
    return handle, io, rbd.Image(io, image)


def _close_watcher(watcher: Tuple[rados.Rados, rados.Ioctx, rbd.Image]) -> None:
    handle, io, image = watcher
    image.close()
    io.close()
    handle.shutdown()


# --------------------------------------------------------------------------------------------
# the cluster

def start_cluster(dir: str, release: Optional[str] = None) -> Cluster:
    """Boot a throwaway cluster for the corpus (2 OSDs with 3 GiB memstore, 2 mgrs) of
    ``release`` (None: the host's own packages)."""
    c = Cluster(dir, osds=2, mgrs=2, osd_bytes=3 << 30, pools=list(POOLS), release=release)
    c.start()
    try:
        for spec in NAMESPACES:
            pool, ns = spec.split('/')
            c.rbd('namespace', 'create', '--pool', pool, '--namespace', ns)
        for opt, value in (('blocked_recheck_seconds', '1'), ('retry_backoff_seconds', '1'),
                           ('retry_backoff_max_seconds', '5')):
            c.ceph('config', 'set', 'mgr', 'mgr/rbd_livemigrate/' + opt, value)
        c.ceph('config', 'set', 'osd', 'osd_client_watch_timeout', str(WATCH_TIMEOUT_SECONDS))
    except BaseException:
        c.stop()
        raise
    return c


# --------------------------------------------------------------------------------------------
# the matrix

def matrix(results: Sequence[Result]) -> str:
    """One table per step x killer: rows are layouts, columns the grid's moments."""
    out: List[str] = []
    groups: Dict[Tuple[str, str], List[Result]] = {}
    for r in results:
        groups.setdefault((r.case.step, r.case.killer), []).append(r)
    for (step, killer), rs in sorted(groups.items(),
                                     key=lambda kv: (STEPS.index(kv[0][0]),
                                                     KILLERS.index(kv[0][1]))):
        labels = [m.label for m in GRIDS[(step, killer)]
                  if any(r.case.moment == m for r in rs)]
        rows = [name for name in LAYOUTS if any(r.case.layout == name for r in rs)]
        cells: Dict[Tuple[str, str], str] = {}
        for r in rs:
            cell = r.cell()
            # failure reasons are listed in full below the matrix
            cells[(r.case.layout, r.case.moment.label)] = cell if r.ok or len(cell) <= 60 \
                else cell[:57] + '...'
        width = {lab: max([len(lab)] + [len(cells.get((row, lab), '')) for row in rows])
                 for lab in labels}
        head = '{:<22}'.format('{} / {}'.format(step, killer)) + '  '.join(
            '{:<{}}'.format(lab, width[lab]) for lab in labels)
        out.append(head)
        for row in rows:
            out.append('{:<22}'.format('  ' + row) + '  '.join(
                '{:<{}}'.format(cells.get((row, lab), '.'), width[lab]) for lab in labels))
        out.append('')
    return '\n'.join(out)


MODULE_DIR = os.path.join(os.path.dirname(os.path.dirname(HERE)), 'src', 'pybind', 'mgr',
                          'rbd_livemigrate')


def module_version(module_dir: str = MODULE_DIR) -> str:
    """'<commit>' or '<commit>+dirty:<hash of the module files>'.  Every mgr restart loads
    the working copy as it is then, so a run that spans edits tests several versions."""
    import hashlib
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=module_dir,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '.'], cwd=module_dir,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head, dirty = '?', ''
    if not dirty:
        return head or '?'
    h = hashlib.sha1()
    for root, _, files in sorted(os.walk(module_dir)):
        for name in sorted(files):
            if name.endswith('.py'):
                with open(os.path.join(root, name), 'rb') as f:
                    h.update(f.read())
    return '{}+dirty:{}'.format(head, h.hexdigest()[:8])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or '').strip().split('\n')[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--sample', action='store_true', help='each step x killer once (CI)')
    mode.add_argument('--full', action='store_true', help='every combination')
    parser.add_argument('--steps', default=','.join(STEPS))
    parser.add_argument('--killers', default=','.join(KILLERS))
    parser.add_argument('--layouts', default=','.join(LAYOUTS))
    parser.add_argument('--moments', default=None, help='only these moment labels (--full)')
    parser.add_argument('--offset', type=int, default=0, help='rotation of --sample')
    parser.add_argument('--dir', default=None, help='cluster directory (default: a new '
                        '/tmp/partial-states-*)')
    parser.add_argument('--keep', action='store_true', help='keep the cluster directory')
    parser.add_argument('--release', choices=RELEASES, default=None,
                        help="Ceph release (default: the host's own packages)")
    parser.add_argument('-v', '--verbose', action='store_true', help='log of every case')
    args = parser.parse_args(argv)

    def pick(text: str, known: Sequence[str], what: str) -> List[str]:
        items = [x for x in text.split(',') if x]
        bad = [x for x in items if x not in known]
        if bad:
            parser.error('unknown {}: {} (known: {})'.format(
                what, ', '.join(bad), ', '.join(known)))
        return items

    steps = pick(args.steps, STEPS, 'step')
    killers = pick(args.killers, KILLERS, 'killer')
    layouts = pick(args.layouts, tuple(LAYOUTS), 'layout')
    if args.full:
        moments = args.moments.split(',') if args.moments else None
        cases = full_cases(steps, killers, layouts, moments)
    else:
        cases = sample_cases(steps, killers, layouts, args.offset)
    if not cases:
        parser.error('no case matches')

    t0 = time.monotonic()
    base = args.dir or tempfile.mkdtemp(prefix='partial-states-', dir='/tmp')
    version = module_version()
    print('booting a cluster in {} for {} case(s); module {}'.format(base, len(cases), version),
          flush=True)
    cluster = start_cluster(base, args.release)
    results: List[Result] = []
    failed = True
    try:
        corpus = Corpus(cluster, verbose=args.verbose)
        try:
            for i, case in enumerate(cases, 1):
                r = corpus.run(case)
                results.append(r)
                if not args.verbose:
                    print('[{}/{}] {:.0f}s {}: {}'.format(
                        i, len(cases), r.seconds, case.name, r.cell()), flush=True)
        finally:
            corpus.close()
        failed = any(not r.ok for r in results)
    finally:
        cluster.stop()
        if args.keep or failed:
            print('cluster directory kept: {}'.format(base))
        else:
            shutil.rmtree(base, ignore_errors=True)
    print()
    print(matrix(results))
    bad = [r for r in results if not r.ok]
    for r in bad:
        print(r.describe())
        print()
    print('{} case(s), {} failed, {:.0f}s; module {}'.format(
        len(results), len(bad), time.monotonic() - t0, version))
    if module_version() != version:
        print('warning: the module changed during the run (now {}): cases ran on different '
              'versions'.format(module_version()))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
