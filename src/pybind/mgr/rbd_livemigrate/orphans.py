"""
Migrations librbd has that no task knows (orphans), and ``adopt``.

An orphan is found in the image headers and the trash (``scan``, every
``ORPHAN_SCAN_SECONDS`` and at start), judged by the planner (a live
migration, or a prepare, commit or abort cut short), listed by ``ls`` with
the one command that ends it, and made a task by ``adopt``.
"""

import logging
from typing import Any, Callable, Dict, List

from .access import Access
from .adding import Adder
from .errors import CommandResult, InvalidArgument, LiveMigrateError, NotFound
from .handles import SchedulerHandle
from .interface import HeaderType, MigrationRef, MigState, OrphanKind, RbdPort
from .planner import Phase, judge, state_of
from .preflight import PoolInfo
from .request import verify_mode
from .spec import ImageSpec
from .table import TaskTable
from .task import State, Task
from .views import Views, orphan_entry

log = logging.getLogger(__name__)

_ORPHAN_KINDS = {Phase.ABORTING: OrphanKind.HALF_ABORTED,
                 Phase.HALF_PREPARED: OrphanKind.HALF_PREPARED,
                 Phase.HALF_COMMITTED: OrphanKind.HALF_COMMITTED}


class Orphans:
    def __init__(self, *, table: TaskTable, scheduler: SchedulerHandle, adapter: RbdPort,
                 access: Access, adder: Adder, views: Views,
                 pools: Callable[[], Dict[str, PoolInfo]], clock: Callable[[], float]) -> None:
        self.table = table
        self.scheduler = scheduler
        self.adapter = adapter
        self.access = access
        self.adder = adder
        self.views = views
        self.pools = pools
        self.clock = clock
        self.refs: List[MigrationRef] = []

    def scan(self) -> None:
        """Migrations in the image headers that no task knows, with their kind."""
        pools = [p.name for p in self.pools().values() if p.is_rbd]
        known = {t.source_image_id for t in self.table.all() if not t.terminal}
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
        self.refs = orphans
        if orphans:
            log.warning('found %d migration(s) without a task: %s', len(orphans),
                        ', '.join('{} -> {} ({})'.format(r.source, r.destination or '?', r.kind)
                                  for r in orphans))

    def entries(self) -> List[Dict[str, Any]]:
        """The orphans the caller may see, as ``ls`` entries."""
        if not self.refs:
            return []           # the usual case: no walk over every task
        known = {t.source_image_id for t in self.table.all() if not t.terminal}
        return [orphan_entry(ref) for ref in self.refs
                if ref.source_image_id not in known and all(
                    self.access.allowed(s.pool, s.namespace)
                    for s in {ImageSpec.parse(x) for x in (ref.source, ref.destination) if x})]

    def adopt(self, image_spec: str) -> CommandResult:
        """Make a task of a migration that librbd has but no task knows.

        The task finishes the migration the way librbd started it: a live
        migration continues to commit, a half-committed one is committed,
        a half-aborted or half-prepared one is aborted (the operator's own
        layout for it is unknown: the source is restored).
        """
        self.table.check_loaded()
        dest = ImageSpec.parse(image_spec)
        self.access.authorize(dest.pool, dest.namespace)
        for t in self.table.all():
            if not t.terminal and t.destination == str(dest):
                self.access.authorize_task(t)
                return 0, self.views.task_json(t), ''
        ref = self._find_migration(dest)
        source = ImageSpec.parse(ref.source)
        self.access.authorize(source.pool, source.namespace)
        dest = ImageSpec.parse(ref.destination)         # another name for a source's abort
        self.access.authorize(dest.pool, dest.namespace)
        for t in self.table.all():
            # a failed task still owns its migration: retry it, never a second task
            if not t.terminal and t.source_image_id == ref.source_image_id:
                self.access.authorize_task(t)
                return 0, self.views.task_json(t), ''
        obs = self.adapter.observe(source, dest, ref.source_image_id, ref.dest_image_id or None)
        verdict = judge(obs, source, dest)
        state = state_of(verdict.phase)
        if state is None:
            raise InvalidArgument("the migration of '{}' to '{}' is {}: nothing to adopt{}".format(
                source, dest, verdict.phase.value,
                ' ({})'.format(verdict.detail) if verdict.detail else ''))
        now = self.clock()
        task = Task(id=self.adder.new_id(), source=str(source), destination=str(dest),
                    state=state, cancel_requested=state == State.ABORTING,
                    # librbd re-linked any clones when it was prepared by hand
                    allow_descendants=True,
                    source_image_id=ref.source_image_id, dest_image_id=obs.dest.image_id,
                    created=now, started=now, adopted=True,
                    verify=verify_mode(None, self.scheduler.options.verify_default),
                    size_bytes=self.adapter.size_of(dest) or self.adapter.size_of(source),
                    added_by=self.adder.added_by(None, source, dest))
        self.table.put(task)
        self.refs = [r for r in self.refs if r.source_image_id != ref.source_image_id]
        self.scheduler.kick()
        log.info('adopted %s -> %s (%s) as task %s', source, dest, verdict.phase.value, task.id)
        return 0, self.views.task_json(task), ''

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
                self.scan()
            for ref in self.refs:
                if ref.destination == str(dest):
                    return ref
                if (not ref.destination and ref.kind == OrphanKind.HALF_PREPARED
                        and ref.source == str(dest)):
                    # a source a cut prepare left in the trash before it named
                    # the destination: adopted in place, to be put back
                    return ref._replace(destination=ref.source)
        raise NotFound("'{}' is not the target of a migration: see rbd status {} and "
                       'ceph rbd livemigrate ls'.format(dest, dest))
