"""
What each command does.  ``module.py`` declares the commands and calls one
method here per command; results are ``(retval, stdout, stderr)``.
"""

import errno
import json
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .batch import Batch, BatchState
from .batches import Allowed, BatchCommands
from .request import AddRequest
from .errors import (AlreadyExists, Blocked, Busy, CommandResult, InvalidArgument,
                     LiveMigrateError, NotAuthorized, NotFound, TryAgain, WrongState)
from .formatting import batch_text, check_format, dump, status_text, task_rows
from .preflight import (MIN_BANDWIDTH_BYTES, PoolInfo, find_blockers, reusable,
                        validate_layout, watchers_reason)
from .interface import HeaderType, MigrationRef, MigState, OrphanKind, RbdPort
from .hold import HoldKind
from .planner import Phase, judge, state_of
from .scheduler import Worker
from .source_spec import import_view
from .spec import ImageSpec, PoolSpec, parse_bytes
from .task import Layout, State, Task, VerifyMode

log = logging.getLogger(__name__)

# a command waits this long for a change to show, then returns (see status)
CANCEL_WAIT_SECONDS = 1.0
COMMIT_WAIT_SECONDS = 1.0
# a cutover is one prepare: the command waits for it (an orchestrator
# scripts stop / cutover / start around it)
CUTOVER_WAIT_SECONDS = 30.0
MAX_PRIORITY = 1000
# 1 TiB/s: faster than any cluster copies one image; more is a typo (10P)
MAX_BANDWIDTH_BYTES = 1 << 40


def _blockers_json(blockers: List[Blocked]) -> List[Dict[str, Any]]:
    return [{'errno': -b.errno, 'error': errno.errorcode.get(b.errno, str(b.errno)),
             'message': str(b), 'can_wait': b.wait} for b in blockers]


class Commands:
    def __init__(self, worker: Worker, adapter: RbdPort,
                 pools: Callable[[], Dict[str, PoolInfo]],
                 authorized: Callable[[str, str], bool],
                 clock: Callable[[], float],
                 unscoped: Callable[[], bool] = lambda: True) -> None:
        """``authorized(pool, namespace)`` and ``unscoped()`` answer for the
        caller of the command being run (``MgrModule.is_authorized``, which
        checks the permission the command needs: r for reads, rw for
        changes); ``unscoped`` is true when no pool constraint limits it."""
        self.worker = worker
        self.adapter = adapter
        self.pools = pools
        self.authorized = authorized
        self.unscoped = unscoped
        self.clock = clock
        self.add_lock = threading.Lock()
        self.batches = BatchCommands(
            worker=worker, adapter=adapter, pools=lambda: self.pools(),
            # the caller of the command being run, asked at call time
            authorized=lambda pool, ns: self.authorized(pool, ns),
            unscoped=lambda: self.unscoped(), clock=clock, ready=self._ready,
            authorize=self._authorize,
            build_layout=self.build_layout, check_request=self.check_request,
            verify_mode=self.verify_mode, add_one=self._add_one,
            start=lambda batch_id: self.start_expansion(batch_id))
        self.orphans: List[MigrationRef] = []
        self.listings = 0               # ls calls answered (heap.HeapKeeper's activity)
        # ls --format json: task id -> (record, what ls adds, its text)
        self._ls_cache: Dict[str, Tuple[Task, Tuple[bool, Optional[str], Optional[str]],
                                        str]] = {}

    # -- helpers -------------------------------------------------------

    def _ready(self) -> None:
        if not self.worker.loaded:
            raise TryAgain('rbd_livemigrate is still loading its tasks; try again in a moment')

    def _authorize(self, pool: str, namespace: str,
                   allowed: Optional[Allowed] = None) -> None:
        if not (allowed or self.authorized)(pool, namespace):
            where = '{}/{}'.format(pool, namespace) if namespace else pool
            raise NotAuthorized("not authorized on pool '{}': the caller's mgr caps do not "
                                'allow it'.format(where))

    def _may(self, task: Task, allowed: Optional[Allowed] = None) -> bool:
        """The caller may see and act on ``task``: every pool it touches
        (source, destination, data pool) is within the caller's caps."""
        return all((allowed or self.authorized)(pool, ns) for pool, ns in task_pools(task))

    def _authorize_task(self, task: Task) -> None:
        if not self._may(task):
            raise NotAuthorized('not authorized on task {}: it touches a pool or namespace '
                                "that the caller's mgr caps do not allow".format(task.id))

    def view(self, task: Task, running: Optional[Set[str]] = None,
             waiting: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        """A task as ls/status show it; ``running``/``waiting`` from one snapshot."""
        if running is None or waiting is None:
            running, waiting = self.worker.run_state()
        v = task.view()
        if task.import_spec is not None:
            import_view(v)
        v['orphan'] = False
        v['running'] = task.id in running
        reason = None if v['running'] else self.worker.why(task, running, waiting)
        v['waiting_reason'] = reason
        block = self.worker.current_block
        if not v['blocked_reason'] and reason and block is not None and reason == str(block):
            v['blocked_reason'] = reason
        return v

    def _find_task(self, text: str) -> Task:
        task = self.worker.find(text)
        if task is not None:
            return task
        if '/' in text:
            spec = str(ImageSpec.parse(text))
            matches = self.worker.naming(spec)
            matches = [t for t in matches if self._may(t)] or matches
            if matches:
                live = [t for t in matches if not t.done]
                return (live or matches)[-1]
            raise NotFound("no task for image '{}': see ceph rbd livemigrate ls".format(spec))
        raise NotFound('no task {!r}: see ceph rbd livemigrate ls'.format(text))

    # -- add -----------------------------------------------------------

    @staticmethod
    def build_layout(req: AddRequest) -> Layout:
        feats: Optional[List[str]] = None
        if req.features is not None:
            feats = sorted({f.strip() for f in req.features.split(',') if f.strip()})
            if not feats:
                raise InvalidArgument('--features is empty: give a comma list such as '
                                      'layering,exclusive-lock')
        layout = Layout(object_size=parse_bytes('object size', req.object_size),
                        stripe_unit=parse_bytes('stripe unit', req.stripe_unit),
                        stripe_count=req.stripe_count, features=feats,
                        data_pool=req.data_pool, flatten=bool(req.flatten))
        validate_layout(layout)
        return layout

    @staticmethod
    def check_request(req: AddRequest) -> Optional[int]:
        """Validate the non-layout options; the bandwidth limit in bytes/s."""
        if not -MAX_PRIORITY <= req.priority <= MAX_PRIORITY:
            raise InvalidArgument('priority {} is out of range: use -{} to {}'.format(
                req.priority, MAX_PRIORITY, MAX_PRIORITY))
        limit = parse_bytes('bandwidth limit', req.bandwidth_limit, MAX_BANDWIDTH_BYTES)
        if limit and limit < MIN_BANDWIDTH_BYTES:
            raise InvalidArgument('bandwidth limit {} B/s is below the floor of 1M/s, at which a '
                                  '100 GiB image already takes over a day: give at least 1M, '
                                  'or 0 for no limit'.format(limit))
        return limit

    def verify_mode(self, req: AddRequest) -> VerifyMode:
        """``--verify``, else the ``verify_default`` option."""
        text = req.verify if req.verify is not None else self.worker.options.verify_default
        try:
            return VerifyMode(text.strip().lower())
        except ValueError:
            raise InvalidArgument('verify mode {!r} is not one of full, auto, off'.format(text))

    def add(self, source_spec: str, dest_spec: Optional[str], req: AddRequest) -> CommandResult:
        self._ready()
        source = ImageSpec.parse(source_spec)
        dest = ImageSpec.parse(dest_spec) if dest_spec else source
        layout = self.build_layout(req)
        bandwidth_limit = self.check_request(req)
        self.verify_mode(req)
        self._authorize(source.pool, source.namespace)
        self._authorize(dest.pool, dest.namespace)
        if layout.data_pool is not None:
            self._authorize(layout.data_pool, dest.namespace)
        r, out, err = self._add_one(source, dest, req, layout, bandwidth_limit,
                                    self.authorized, self.pools())
        self.worker.kick()
        return r, out, err

    def _add_one(self, source: ImageSpec, dest: ImageSpec, req: AddRequest, layout: Layout,
                 bandwidth_limit: Optional[int], allowed: Allowed,
                 pools: Dict[str, PoolInfo], batch_id: Optional[str] = None,
                 paused: bool = False, pool_conf: Optional[Dict[str, str]] = None,
                 quick: bool = False) -> CommandResult:
        """One image of add or add-pool: the existing task, a dry-run report,
        or a new task; refusals raise.  The checks run unlocked (a batch
        checks several images at once); ``add_lock`` covers looking for a
        task of the same images again and making the new one."""
        existing = self._existing(source, dest, allowed)
        if existing is not None:
            if batch_id is not None and existing.batch_id != batch_id:
                raise AlreadyExists('{} already has task {}'.format(source, existing.id))
            if batch_id is None:
                self._same_request(existing, req, layout, bandwidth_limit)
            return 0, dump(self.view(existing), 'json'), ''
        blockers, info = find_blockers(self.adapter, pools, source, dest, layout,
                                       req.allow_descendants, quick=quick and not req.dry_run)
        if info is not None:
            self._authorize_touched(source, dest, layout, info.descendants, allowed,
                                    pool_conf)
        if req.dry_run:
            report = {'dry_run': True, 'source': str(source), 'destination': str(dest),
                      'layout': layout.to_json(), 'blockers': _blockers_json(blockers),
                      'ok': not blockers}
            if info is not None:
                report['size_bytes'] = info.size
                report['used_bytes'] = info.used_bytes
            if blockers:
                return (-blockers[0].errno, dump(report, 'json'),
                        '{} blocker(s): {}'.format(len(blockers),
                                                   '; '.join(str(b) for b in blockers)))
            return 0, dump(report, 'json'), ''
        hard = [b for b in blockers if not b.wait]
        if hard:
            more = (' (and {} more: see --dry-run)'.format(len(hard) - 1)
                    if len(hard) > 1 else '')
            raise Blocked(str(hard[0]) + more, hard[0].errno)
        assert info is not None
        now = self.clock()
        waiting = [b for b in blockers if b.wait]
        # a manual cutover expects the clients: it waits for the operator
        watch = not req.manual_cutover
        with self.add_lock:
            existing = self._existing(source, dest, allowed)
            if existing is not None:           # added meanwhile
                if batch_id is not None and existing.batch_id != batch_id:
                    raise AlreadyExists('{} already has task {}'.format(source, existing.id))
                return 0, dump(self.view(existing), 'json'), ''
            task = Task(id=self._new_id(), source=str(source), destination=str(dest),
                        layout=layout, manual_commit=req.manual_commit,
                        allow_descendants=req.allow_descendants, priority=req.priority,
                        bandwidth_limit_bytes=bandwidth_limit, source_image_id=info.id,
                        size_bytes=info.size, created=now, batch_id=batch_id, paused=paused,
                        manual_cutover=req.manual_cutover, verify=self.verify_mode(req),
                        blocked_reason=str(waiting[0]) if waiting and watch else None,
                        blocked_kind=HoldKind.WATCHERS.value if waiting and watch else None,
                        blocked_since=now if waiting and watch else None,
                        added_by=self._added_by(batch_id, source, dest))
            # a batch's tasks are written behind: listing again after a crash
            # adds what was not stored
            self.worker.put(task, wait=batch_id is None,
                            seen=None if waiting else reusable(info))
        log.info('added task %s: %s -> %s', task.id, task.source, task.destination)
        if quick:
            return 0, '', ''            # a batch's listing shows no task on its own
        return 0, dump(self.view(task), 'json'), ''

    def _authorize_touched(self, source: ImageSpec, dest: ImageSpec, layout: Layout,
                           clones: List[str], allowed: Optional[Allowed] = None,
                           conf: Optional[Dict[str, str]] = None) -> None:
        """The pools librbd writes besides the two ends and ``--data-pool``:
        the clones' (prepare, commit and abort re-link their parent), and the
        data and journal pools the destination pool's own rbd options give a
        new image when ``--data-pool`` is not given (measured: librbd applies
        ``rbd_default_data_pool`` set on the pool; it does not keep the
        source's data pool)."""
        for spec in clones:
            c = ImageSpec.parse(spec)
            if not (allowed or self.authorized)(c.pool, c.namespace):
                raise NotAuthorized(
                    "'{}' has clones in a pool or namespace that the caller's mgr caps do not "
                    'allow (librbd re-links them): ask an operator with caps on every pool to '
                    'migrate it'.format(source))
        if conf is None:
            conf = self.adapter.pool_config(dest.pool_spec)
        implied = [conf.get('rbd_journal_pool', '')]
        if layout.data_pool is None:
            implied.append(conf.get('rbd_default_data_pool', ''))
        for pool in implied:
            if pool:
                self._authorize(pool, dest.namespace, allowed)

    def _new_id(self) -> str:
        while True:
            task_id = Task.new_id()
            if self.worker.find(task_id) is None:
                return task_id

    def _existing(self, source: ImageSpec, dest: ImageSpec,
                  allowed: Optional[Allowed] = None) -> Optional[Task]:
        for t in self.worker.naming(str(source), str(dest)):
            if t.done:
                continue
            if not self._may(t, allowed):
                # another tenant's task: say no more than that it exists
                raise Busy("'{}' or '{}' belongs to a task outside the caller's mgr caps: "
                           'ask an operator'.format(source, dest))
            if t.source == str(source):
                if t.destination != str(dest):
                    raise Busy("image '{}' is already being migrated to '{}' by task {}: "
                               'cancel it first'.format(source, t.destination, t.id))
                return t
            if t.destination == str(dest):
                raise AlreadyExists("'{}' is already the destination of task {}".format(
                    dest, t.id))
            if t.destination == str(source):
                raise Busy("image '{}' is the destination of running task {}: wait for it "
                           'to finish'.format(source, t.id))
            if t.source == str(dest):
                raise Busy("image '{}' is the source of task {}: its cancel needs the name "
                           'back; choose another destination'.format(dest, t.id))
        return None

    # -- batches (batches.py) -------------------------------------------

    def add_pool(self, source_pool: str, dest_pool: str, pattern: Optional[str],
                 req: AddRequest) -> CommandResult:
        return self.batches.add_pool(source_pool, dest_pool, pattern, req)

    def start_expansion(self, batch_id: str) -> None:
        self.batches.start_expansion(batch_id)

    def resume_batches(self) -> None:
        self.batches.resume()

    def _expand(self, batch_id: str) -> None:
        self.batches.expand(batch_id)

    def _batch(self, batch_id: str) -> Batch:
        return self.batches.get(batch_id)

    def batch_view(self, batch: Batch) -> Dict[str, Any]:
        return self.batches.view(batch)

    def _rights(self, src: PoolSpec, dst: PoolSpec) -> List[str]:
        return self.batches.rights(src, dst)

    def _added_by(self, batch_id: Optional[str], source: ImageSpec, dest: ImageSpec) -> str:
        """Who asked, as far as the mgr tells a module: the caller's rights
        (a batch's task: those kept with the batch, its caller is gone)."""
        batch = self.worker.batches.get(batch_id) if batch_id else None
        if batch is not None:
            return caller_text(batch.allowed)
        return caller_text(self._rights(source.pool_spec, dest.pool_spec))

    def _same_request(self, task: Task, req: AddRequest, layout: Layout,
                      bandwidth_limit: Optional[int]) -> None:
        """An add repeated for a live task returns it only when it asks for
        the same; options that differ are refused, never silently dropped."""
        asked: Dict[str, Any] = {
            'layout': layout.to_json(), 'manual_commit': req.manual_commit,
            'allow_descendants': req.allow_descendants, 'priority': req.priority,
            'bandwidth_limit': bandwidth_limit, 'manual_cutover': req.manual_cutover}
        has: Dict[str, Any] = {
            'layout': task.layout.to_json(), 'manual_commit': task.manual_commit,
            'allow_descendants': task.allow_descendants, 'priority': task.priority,
            'bandwidth_limit': task.bandwidth_limit_bytes,
            'manual_cutover': task.manual_cutover}
        if req.verify is not None:
            asked['verify'] = self.verify_mode(req).value
            has['verify'] = task.verify.value
        if task.adopted:        # its options were never asked for: only new ones count
            asked = {k: v for k, v in asked.items() if v not in (None, False, 0, {})}
        diff = ['{} {} (asked {})'.format(k, json.dumps(has[k], sort_keys=True),
                                          json.dumps(v, sort_keys=True))
                for k, v in sorted(asked.items()) if has[k] != v]
        if diff:
            raise AlreadyExists('task {} already migrates {} -> {} with other options: {}: '
                                'cancel it first to change them'.format(
                                    task.id, task.source, task.destination, '; '.join(diff)))

    # -- reads ---------------------------------------------------------

    def ls(self, fmt: Optional[str]) -> CommandResult:
        fmt = check_format(fmt)
        self._ready()
        self.listings += 1
        tasks, running, waiting = self.worker.snapshot()
        every = self.unscoped()         # no pool limit: no check per task
        if fmt == 'json':
            return 0, self._ls_json([t for t in tasks if every or self._may(t)], running,
                                    waiting), ''
        views = [self.view(t, running, waiting) for t in tasks if every or self._may(t)]
        views += self.orphan_views()
        if fmt == 'plain':
            text = task_rows(views)
            for b in self.worker.all_batches():
                try:
                    v = self.batch_view(self._batch(b.id))
                except LiveMigrateError:
                    continue
                if not v['finished']:
                    text += 'batch {}: {} -> {}: {} task(s), {} committed, {} refused{} ' \
                        '(status {})\n'.format(b.id, b.source, b.destination, v['tasks'],
                                               v['committed'], v['refused_count'],
                                               ', listing' if b.state == BatchState.EXPANDING
                                               else '', b.id)
            return 0, text, ''
        return 0, dump(views, fmt), ''

    def _ls_json(self, tasks: List[Task], running: Set[str], waiting: Dict[str, str]) -> str:
        """``ls --format json``, each task's text kept until its record or
        what ls adds to it changes: at 10,000 tasks, polled every second by
        a dashboard or a script, the module would otherwise spend most of a
        core re-encoding records that did not change."""
        block = self.worker.current_block
        shown = str(block) if block is not None else None
        cache: Dict[str, Tuple[Task, Tuple[bool, Optional[str], Optional[str]], str]] = {}
        parts = []
        for t in tasks:
            run = t.id in running
            key = (run, None if run else self.worker.why(t, running, waiting), shown)
            hit = self._ls_cache.get(t.id)
            if hit is not None and hit[0] is t and hit[1] == key:
                text = hit[2]
            else:
                text = dump(self.view(t, running, waiting), 'json')
            cache[t.id] = (t, key, text)
            parts.append(text)
        parts += [dump(v, 'json') for v in self.orphan_views()]
        self._ls_cache = cache
        if not parts:
            return '[]'
        # one allocation of the whole text (megabytes at 10,000 tasks)
        parts[0] = '[' + parts[0]
        parts[-1] = parts[-1] + ']'
        return ', '.join(parts)

    def orphan_views(self) -> List[Dict[str, Any]]:
        if not self.orphans:
            return []           # the usual case: no walk over every task
        known = {t.source_image_id for t in self.worker.all() if not t.terminal}
        out = []
        for ref in self.orphans:
            if ref.source_image_id in known or not all(
                    self.authorized(s.pool, s.namespace)
                    for s in {ImageSpec.parse(x) for x in (ref.source, ref.destination) if x}):
                continue
            out.append({'id': None, 'orphan': True, 'orphan_kind': ref.kind.value,
                        'source': ref.source, 'destination': ref.destination or None,
                        'source_image_id': ref.source_image_id,
                        'dest_image_id': ref.dest_image_id or None,
                        'state': 'orphan', 'progress': 0.0, 'error': None, 'created': None,
                        'started': None, 'finished': None,
                        'blocked_reason': _ORPHAN_TEXT[ref.kind],
                        'next_command': orphan_command(ref)})
        return out

    def status(self, target: str, fmt: Optional[str]) -> CommandResult:
        fmt = check_format(fmt)
        self._ready()
        if Batch.is_id(target):
            v = self.batch_view(self._batch(target))
            if fmt == 'plain':
                return 0, batch_text(v), ''
            return 0, dump(v, fmt), ''
        task = self._find_task(target)
        self._authorize_task(task)
        v = self.view(task)
        if fmt == 'plain':
            return 0, status_text(v), ''
        return 0, dump(v, fmt), ''

    # -- changes -------------------------------------------------------

    def cancel(self, task_id: str) -> CommandResult:
        self._ready()
        if Batch.is_id(task_id):
            return self.batches.cancel(task_id)
        task = self._find_task(task_id)
        self._authorize_task(task)
        before = task.state

        def request_cancel(t: Task) -> Task:
            # under the table lock: the runner's move to committing checks the
            # same flag, so an accepted cancel is never followed by a commit
            if t.state == State.COMMITTING:
                raise Busy('task {} is committing: a commit cannot be cancelled; wait for '
                           'it'.format(t.id))
            if t.terminal:
                raise WrongState('task {} is already {}: nothing to cancel'.format(
                    t.id, t.state))
            return t.evolve(cancel_requested=True, paused=False, next_retry=None)
        self.worker.update(task.id, request_cancel)
        self.worker.interrupt(task.id)
        self.worker.kick()
        # the runner clears the flag when the cancel ends (aborted or failed)
        self.worker.wait_for(lambda: not self.worker.get(task.id).cancel_requested,
                             CANCEL_WAIT_SECONDS)
        task = self.worker.get(task.id)
        v = self.view(task)
        if task.state == State.ABORTED:
            v['action'] = ('removed from the queue' if before in (State.QUEUED, State.FAILED)
                           and task.error == 'cancelled before prepare'
                           else 'import aborted; {} removed'.format(task.destination)
                           if task.import_spec is not None
                           else 'migration aborted; {} restored'.format(task.source))
        elif task.state == State.COMMITTED:
            v['action'] = 'too late: the migration was committed'
        else:
            v['action'] = 'cancel in progress (state {}); see status'.format(task.state)
        return 0, dump(v, 'json'), ''

    def commit(self, task_id: str) -> CommandResult:
        self._ready()
        task = self._find_task(task_id)
        self._authorize_task(task)
        if task.terminal or task.state == State.COMMITTING:
            raise WrongState('task {} is already {}: nothing to commit'.format(
                task.id, task.state))
        if not task.manual_commit:
            raise WrongState('task {} commits by itself (it was not added with '
                             '--manual-commit)'.format(task.id))

        def request_commit(t: Task) -> Task:
            if t.cancel_requested:
                raise Busy('task {} is being cancelled: it will not be committed; see '
                           'status'.format(t.id))
            if t.state != State.EXECUTED:
                raise WrongState('task {} is {}: commit needs it executed; see status'.format(
                    t.id, t.state))
            return t.evolve(commit_requested=True)
        self.worker.update(task.id, request_commit)
        self.worker.kick()
        self.worker.wait_for(lambda: self.worker.get(task.id).state != State.EXECUTED,
                             COMMIT_WAIT_SECONDS)
        return 0, dump(self.view(self.worker.get(task.id)), 'json'), ''

    def cutover(self, task_id: str) -> CommandResult:
        """Prepare now (the one moment of downtime), and return the task
        with ``cutover_ms``; EBUSY naming the clients that still have the
        source open.  Any queued task may be cut over: it takes no slot."""
        self._ready()
        task = self._find_task(task_id)
        self._authorize_task(task)
        if task.import_spec is not None:
            raise WrongState('task {} is an import: no client holds its source, it prepares '
                             'by itself'.format(task.id))
        if task.state not in (State.QUEUED, State.PREPARING):
            if task.cutover_ms is not None and not task.done:
                v = self.view(task)
                v['action'] = 'already cut over'
                return 0, dump(v, 'json'), ''
            raise WrongState('task {} is {}: a cutover needs a queued task; see '
                             'status'.format(task.id, task.state))
        if task.paused:
            raise Busy('task {} is paused: resume it first'.format(task.id))
        if task.cancel_requested:
            raise Busy('task {} is being cancelled'.format(task.id))
        dest = ImageSpec.parse(task.destination)
        if task.state == State.QUEUED and dest != ImageSpec.parse(task.source) and \
                self.adapter.image_exists(dest):
            raise AlreadyExists("destination '{}' exists: remove or rename it, then cut over "
                                'again'.format(dest))
        clients = self.adapter.watchers(ImageSpec.parse(task.source))
        if clients:
            raise Busy(watchers_reason(task.source, clients, 'then cut over again'))
        seen = self.clock()

        def request(t: Task) -> Task:
            if t.state not in (State.QUEUED, State.PREPARING) or t.cancel_requested:
                raise Busy('task {} changed meanwhile ({}); see status'.format(t.id, t.state))
            return t.evolve(cutover_requested=True, clients_gone_at=seen, cutover_ms=None,
                            next_retry=None, blocked_reason=None, blocked_kind=None,
                            blocked_since=None)
        self.worker.update(task.id, request, wait=False)
        self.worker.kick()

        def settled() -> bool:
            t = self.worker.get(task.id)
            return (t.cutover_ms is not None or not t.cutover_requested
                    or t.state not in (State.QUEUED, State.PREPARING))
        self.worker.wait_for(settled, CUTOVER_WAIT_SECONDS)
        task = self.worker.get(task.id)
        if task.cutover_ms is not None:
            v = self.view(task)
            v['action'] = 'cut over in {:.0f} ms'.format(task.cutover_ms)
            return 0, dump(v, 'json'), ''
        if task.state == State.FAILED:
            raise LiveMigrateError('task {} failed at cutover: {}'.format(task.id, task.error))
        if not task.cutover_requested:
            why = (task.blocked_reason or 'the source could not be prepared').replace(
                '; the task waits until they close', '')
            raise Busy('task {} was not cut over: {}; then cut over again'.format(task.id, why))
        v = self.view(task)
        v['action'] = 'cutover still under way after {:.0f}s; see status'.format(
            CUTOVER_WAIT_SECONDS)
        return 0, dump(v, 'json'), ''

    def retry(self, task_id: str) -> CommandResult:
        self._ready()
        task = self._find_task(task_id)
        self._authorize_task(task)
        if task.state != State.FAILED:
            raise WrongState('task {} is {}: only failed tasks can be retried'.format(
                task.id, task.state))
        for t in self.worker.all():
            if (t.id != task.id and not t.done and task.source_image_id is not None
                    and t.source_image_id == task.source_image_id):
                raise Busy('task {} now runs the migration of {}: see its status'.format(
                    t.id if self._may(t) else 'outside the caller\'s caps', task.source))
        now = self.clock()
        task = self.worker.update(task.id, lambda t: t.moved_to(
            State.QUEUED, now, attempts=0, error=None, next_retry=None, cancel_requested=False,
            blocked_reason=None, blocked_since=None))
        self.worker.kick()
        return 0, dump(self.view(task), 'json'), ''

    def pause(self, task_id: Optional[str], paused: bool) -> CommandResult:
        self._ready()
        if task_id is None:
            if not self.unscoped():
                raise NotAuthorized(
                    'pausing or resuming the whole queue needs mgr caps on every pool '
                    "(not limited with pool=...): give a task id to {} one of yours".format(
                        'pause' if paused else 'resume'))
            self.worker.set_queue_paused(paused)
            return 0, dump({'queue_paused': paused}, 'json'), ''
        if Batch.is_id(task_id):
            return self.batches.pause(task_id, paused)
        task = self._find_task(task_id)
        self._authorize_task(task)
        if task.done:
            raise WrongState('task {} is {}: nothing to {}'.format(
                task.id, task.state, 'pause' if paused else 'resume'))
        if not paused and not task.paused:
            raise WrongState('task {} is not paused: nothing to resume{}'.format(
                task.id, ' (the whole queue is paused: ceph rbd livemigrate resume)'
                if self.worker.queue_paused else ''))
        # a paused copy moves no bytes: its rate and time left are no longer true
        task = self.worker.update(task.id, lambda t: t.evolve(
            paused=paused, next_retry=None if not paused else t.next_retry,
            rate_bytes_per_sec=None if paused else t.rate_bytes_per_sec))
        self.worker.kick()
        return 0, dump(self.view(task), 'json'), ''

    def forget(self, target: Optional[str], finished: bool) -> CommandResult:
        """``rm``: take finished tasks out of the history (``ls``, ``status``)
        before ``max_history`` would: one task, a finished batch with its
        tasks, or with ``--finished`` every finished task the caller may see.
        A failed task still owns its migration: it is cancelled or retried,
        never forgotten."""
        self._ready()
        if (target is None) == (not finished):
            raise InvalidArgument('give a task or batch id, or --finished for every committed '
                                  'or aborted task')
        if target is None:
            every = self.unscoped()
            drop = [t for t in self.worker.all()
                    if t.terminal and (every or self._may(t))]
        elif Batch.is_id(target):
            batch = self._batch(target)
            tasks = self.worker.batch_tasks(batch.id)
            for t in tasks:
                self._authorize_task(t)
            live = [t for t in tasks if not t.terminal]
            if live or batch.state == BatchState.EXPANDING:
                raise Busy('batch {} is not finished ({} task(s) not committed or aborted): '
                           'wait, or cancel it first'.format(batch.id, len(live)))
            self._drop(tasks)
            self.worker.remove_batch(batch.id)
            return 0, dump({'removed_tasks': len(tasks), 'removed_batch': batch.id}, 'json'), ''
        else:
            task = self._find_task(target)
            self._authorize_task(task)
            if not task.terminal:
                raise Busy('task {} is {}: only committed or aborted tasks leave the history; '
                           '{}'.format(task.id, task.state,
                                       'retry or cancel it first' if task.state == State.FAILED
                                       else 'wait, or cancel it first'))
            drop = [task]
        self._drop(drop)
        return 0, dump({'removed_tasks': len(drop)}, 'json'), ''

    def _drop(self, tasks: List[Task]) -> None:
        """Forget finished tasks; their batches keep counting them."""
        gone: Dict[str, List[str]] = {}
        for t in tasks:
            if t.batch_id and self.worker.batches.get(t.batch_id) is not None:
                gone.setdefault(t.batch_id, []).append(t.state.value)
            self.worker.progress.forget(t)
        for batch_id, states in gone.items():
            self.worker.update_batch(batch_id, _pruned(states))
        self.worker.remove([t.id for t in tasks])

    def adopt(self, image_spec: str) -> CommandResult:
        """Make a task of a migration that librbd has but no task knows.

        The task finishes the migration the way librbd started it: a live
        migration continues to commit, a half-committed one is committed,
        a half-aborted or half-prepared one is aborted (the operator's own
        layout for it is unknown: the source is restored).
        """
        self._ready()
        dest = ImageSpec.parse(image_spec)
        self._authorize(dest.pool, dest.namespace)
        for t in self.worker.all():
            if not t.terminal and t.destination == str(dest):
                self._authorize_task(t)
                return 0, dump(self.view(t), 'json'), ''
        ref = self._find_migration(dest)
        source = ImageSpec.parse(ref.source)
        self._authorize(source.pool, source.namespace)
        dest = ImageSpec.parse(ref.destination)         # another name for a source's abort
        self._authorize(dest.pool, dest.namespace)
        for t in self.worker.all():
            # a failed task still owns its migration: retry it, never a second task
            if not t.terminal and t.source_image_id == ref.source_image_id:
                self._authorize_task(t)
                return 0, dump(self.view(t), 'json'), ''
        obs = self.adapter.observe(source, dest, ref.source_image_id, ref.dest_image_id or None)
        verdict = judge(obs, source, dest)
        state = state_of(verdict.phase)
        if state is None:
            raise InvalidArgument("the migration of '{}' to '{}' is {}: nothing to adopt{}".format(
                source, dest, verdict.phase.value,
                ' ({})'.format(verdict.detail) if verdict.detail else ''))
        now = self.clock()
        task = Task(id=self._new_id(), source=str(source), destination=str(dest),
                    state=state, cancel_requested=state == State.ABORTING,
                    # librbd re-linked any clones when it was prepared by hand
                    allow_descendants=True,
                    source_image_id=ref.source_image_id, dest_image_id=obs.dest.image_id,
                    created=now, started=now, adopted=True,
                    verify=self.verify_mode(AddRequest()),
                    size_bytes=self.adapter.size_of(dest) or self.adapter.size_of(source),
                    added_by=self._added_by(None, source, dest))
        self.worker.put(task)
        self.orphans = [r for r in self.orphans if r.source_image_id != ref.source_image_id]
        self.worker.kick()
        log.info('adopted %s -> %s (%s) as task %s', source, dest, verdict.phase.value, task.id)
        return 0, dump(self.view(task), 'json'), ''

    def _find_migration(self, dest: ImageSpec) -> MigrationRef:
        """The migration whose destination is ``dest``: from the header at that
        name, else from the sources parked in the trash (rescanned)."""
        end = self.adapter.read_image(dest)
        header = end.header
        if header is not None and header.kind == HeaderType.SRC and \
                header.state == MigState.ABORTING and end.trash is None:
            # an abort cut at its last write: the source back under its name,
            # the destination gone (no destination name or trash entry to find)
            target = ImageSpec(self.adapter.pool_name(header.pool_id), header.namespace,
                               header.image_name)
            return MigrationRef(str(dest), str(target), end.image_id or '', header.image_id,
                                OrphanKind.HALF_ABORTED)
        if header is not None:
            if header.kind != HeaderType.DST:
                raise InvalidArgument("'{}' is the source of a migration: adopt it by its "
                                      'destination image spec'.format(dest))
            source = ImageSpec(self.adapter.pool_name(header.pool_id), header.namespace,
                               header.image_name)
            return MigrationRef(str(source), str(dest), header.image_id, end.image_id or '')
        for rescan in (False, True):
            if rescan:
                self.scan_orphans()
            for ref in self.orphans:
                if ref.destination == str(dest):
                    return ref
                if (not ref.destination and ref.kind == OrphanKind.HALF_PREPARED
                        and ref.source == str(dest)):
                    # a source a cut prepare left in the trash before it named
                    # the destination: adopted in place, to be put back
                    return ref._replace(destination=ref.source)
        raise NotFound("'{}' is not the target of a migration: see rbd status {} and "
                       'ceph rbd livemigrate ls'.format(dest, dest))

    def scan_orphans(self) -> None:
        """Migrations in the image headers that no task knows, with their kind."""
        pools = [p.name for p in self.pools().values() if p.is_rbd]
        known = {t.source_image_id for t in self.worker.all() if not t.terminal}
        orphans = []
        for ref in self.adapter.find_migrations(pools):
            if ref.source_image_id in known:
                continue
            if ref.destination:
                try:
                    source, dest = ImageSpec.parse(ref.source), ImageSpec.parse(ref.destination)
                    obs = self.adapter.observe(source, dest, ref.source_image_id,
                                               ref.dest_image_id or None)
                    ref = ref._replace(kind=_ORPHAN_KINDS.get(judge(obs, source, dest).phase,
                                                              OrphanKind.MIGRATION))
                except LiveMigrateError as e:
                    log.warning('cannot inspect migration %s -> %s: %s', ref.source,
                                ref.destination, e)
            orphans.append(ref)
        self.orphans = orphans
        if orphans:
            log.warning('found %d migration(s) without a task: %s', len(orphans),
                        ', '.join('{} -> {} ({})'.format(r.source, r.destination or '?', r.kind)
                                  for r in orphans))


def _pruned(states: List[str]) -> Callable[[Batch], Batch]:
    return lambda b: b.with_pruned(states)


def caller_text(rights: List[str]) -> str:
    """``added_by``: a caller's rights ('*' or pool[/namespace] entries) in words."""
    if '*' in rights:
        return 'a caller with mgr caps on every pool'
    return 'a caller with mgr caps on {}'.format(', '.join(rights) or 'no pool')


def task_pools(task: Task) -> List[Tuple[str, str]]:
    """Every (pool, namespace) a task reads or writes: its ends and the
    destination's data pool (data objects keep the image's namespace)."""
    src, dst = ImageSpec.parse(task.source), ImageSpec.parse(task.destination)
    out = [(src.pool, src.namespace), (dst.pool, dst.namespace)]
    if task.layout.data_pool:
        out.append((task.layout.data_pool, dst.namespace))
    return out


_ORPHAN_KINDS = {Phase.ABORTING: OrphanKind.HALF_ABORTED,
                 Phase.HALF_PREPARED: OrphanKind.HALF_PREPARED,
                 Phase.HALF_COMMITTED: OrphanKind.HALF_COMMITTED}

_ORPHAN_TEXT = {
    OrphanKind.MIGRATION: 'a migration without a task: adopt it to run it to commit',
    OrphanKind.HALF_PREPARED: 'a prepare cut short: adopt it to undo it (restores the source)',
    OrphanKind.HALF_COMMITTED: 'a commit cut short (the source is left in the trash): adopt it '
                               'to finish the commit',
    OrphanKind.HALF_ABORTED: 'an abort cut short: adopt it to finish the abort (restores the '
                             'source)',
}


def orphan_command(ref: MigrationRef) -> str:
    """The one command that finishes an orphan."""
    if ref.destination:
        return 'ceph rbd livemigrate adopt {}'.format(ref.destination)
    if ref.kind == OrphanKind.HALF_PREPARED:
        return 'ceph rbd livemigrate adopt {}'.format(ref.source)
    # a commit cut after the source's header went: only the trash entry is left
    pool, ns, _ = ImageSpec.parse(ref.source)
    return 'rbd trash rm {}'.format('/'.join(x for x in (pool, ns, ref.source_image_id) if x))
