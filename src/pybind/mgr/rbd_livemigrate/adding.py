"""
``add``: an image's checks and its new task.

``Adder.add_one`` is the one place a migration task is made from a request:
``add`` calls it for one image, a batch (``batches.py``) for each image it
lists, and the importer (``importer.py``) shares its lock, ids and caller
record.  The request is parsed once (``request.parse``) by the command that
received it.
"""

import json
import logging
import threading
from typing import Any, Callable, Dict, List, Optional

from .access import Access, Allowed, caller_text
from .errors import AlreadyExists, Blocked, Busy, CommandResult, NotAuthorized
from .formatting import dump
from .handles import SchedulerHandle
from .hold import HoldKind
from .interface import RbdPort
from .preflight import PoolInfo, find_blockers, reusable
from .request import AddRequest, Request, parse
from .spec import ImageSpec, Layout
from .table import TaskTable
from .task import Task
from .views import Views, dry_run_report

log = logging.getLogger(__name__)


class Adder:
    def __init__(self, *, table: TaskTable, scheduler: SchedulerHandle, adapter: RbdPort,
                 access: Access, views: Views, pools: Callable[[], Dict[str, PoolInfo]],
                 clock: Callable[[], float]) -> None:
        self.table = table
        self.scheduler = scheduler
        self.adapter = adapter
        self.access = access
        self.views = views
        self.pools = pools
        self.clock = clock
        # covers looking for a task of the same images again and making the new one
        self.add_lock = threading.Lock()

    def parse(self, given: AddRequest) -> Request:
        """The request checked and typed (``--verify`` else ``verify_default``)."""
        return parse(given, self.scheduler.options.verify_default)

    def add(self, source_spec: str, dest_spec: Optional[str],
            given: AddRequest) -> CommandResult:
        self.table.check_loaded()
        source = ImageSpec.parse(source_spec)
        dest = ImageSpec.parse(dest_spec) if dest_spec else source
        req = self.parse(given)
        self.access.authorize(source.pool, source.namespace)
        self.access.authorize(dest.pool, dest.namespace)
        if req.layout.data_pool is not None:
            self.access.authorize(req.layout.data_pool, dest.namespace)
        r, out, err = self.add_one(source, dest, req, self.access.allowed, self.pools())
        self.scheduler.kick()
        return r, out, err

    def add_one(self, source: ImageSpec, dest: ImageSpec, req: Request, allowed: Allowed,
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
                self._same_request(existing, req)
            return 0, self.views.task_json(existing), ''
        blockers, info = find_blockers(self.adapter, pools, source, dest, req.layout,
                                       req.allow_descendants, quick=quick and not req.dry_run)
        if info is not None:
            self.authorize_touched(source, dest, req.layout, info.descendants, allowed,
                                   pool_conf)
        if req.dry_run:
            report = dump(dry_run_report(source, dest, req.layout, blockers, info), 'json')
            if blockers:
                return (-blockers[0].errno, report, '{} blocker(s): {}'.format(
                    len(blockers), '; '.join(str(b) for b in blockers)))
            return 0, report, ''
        hard = [b for b in blockers if not b.wait]
        if hard:
            more = (' (and {} more: see --dry-run)'.format(len(hard) - 1)
                    if len(hard) > 1 else '')
            raise Blocked(str(hard[0]) + more, hard[0].errno)
        assert info is not None
        now = self.clock()
        waiting = [b for b in blockers if b.wait]
        # a manual cutover expects the clients: it waits for the operator
        held = bool(waiting) and not req.manual_cutover
        with self.add_lock:
            existing = self._existing(source, dest, allowed)
            if existing is not None:           # added meanwhile
                if batch_id is not None and existing.batch_id != batch_id:
                    raise AlreadyExists('{} already has task {}'.format(source, existing.id))
                return 0, self.views.task_json(existing), ''
            task = Task(id=self.new_id(), source=str(source), destination=str(dest),
                        layout=req.layout, manual_commit=req.manual_commit,
                        allow_descendants=req.allow_descendants, priority=req.priority,
                        bandwidth_limit_bytes=req.bandwidth_limit, source_image_id=info.id,
                        size_bytes=info.size, created=now, batch_id=batch_id, paused=paused,
                        manual_cutover=req.manual_cutover, verify=req.verify,
                        blocked_reason=str(waiting[0]) if held else None,
                        blocked_kind=HoldKind.WATCHERS.value if held else None,
                        blocked_since=now if held else None,
                        added_by=self.added_by(batch_id, source, dest))
            # a batch's tasks are written behind: listing again after a crash
            # adds what was not stored
            self.table.put(task, wait=batch_id is None,
                           seen=None if waiting else reusable(info))
        log.info('added task %s: %s -> %s', task.id, task.source, task.destination)
        if quick:
            return 0, '', ''            # a batch's listing shows no task on its own
        return 0, self.views.task_json(task), ''

    def authorize_touched(self, source: ImageSpec, dest: ImageSpec, layout: Layout,
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
            if not (allowed or self.access.allowed)(c.pool, c.namespace):
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
                self.access.authorize(pool, dest.namespace, allowed)

    def new_id(self) -> str:
        while True:
            task_id = Task.new_id()
            if self.table.find(task_id) is None:
                return task_id

    def added_by(self, batch_id: Optional[str], source: ImageSpec, dest: ImageSpec) -> str:
        """Who asked, as far as the mgr tells a module: the caller's rights
        (a batch's task: those kept with the batch, its caller is gone)."""
        batch = self.table.batches.get(batch_id) if batch_id else None
        if batch is not None:
            return caller_text(batch.allowed)
        return caller_text(self.access.rights(source.pool_spec, dest.pool_spec))

    def _existing(self, source: ImageSpec, dest: ImageSpec,
                  allowed: Optional[Allowed] = None) -> Optional[Task]:
        for t in self.table.naming(str(source), str(dest)):
            if t.done:
                continue
            if not self.access.may(t, allowed):
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

    @staticmethod
    def _same_request(task: Task, req: Request) -> None:
        """An add repeated for a live task returns it only when it asks for
        the same; options that differ are refused, never silently dropped."""
        asked: Dict[str, Any] = {
            'layout': req.layout.to_json(), 'manual_commit': req.manual_commit,
            'allow_descendants': req.allow_descendants, 'priority': req.priority,
            'bandwidth_limit': req.bandwidth_limit, 'manual_cutover': req.manual_cutover}
        has: Dict[str, Any] = {
            'layout': task.layout.to_json(), 'manual_commit': task.manual_commit,
            'allow_descendants': task.allow_descendants, 'priority': task.priority,
            'bandwidth_limit': task.bandwidth_limit_bytes,
            'manual_cutover': task.manual_cutover}
        if req.given.verify is not None:
            asked['verify'] = req.verify.value
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
