"""
``ceph rbd livemigrate import``: an import through the queue.

An import is a task like any other (priority, throttle, windows, retries,
progress, cancel), whose prepare is ``migration_prepare_import`` of a
source-spec instead of ``migration_prepare`` of an image; ``planner``
judges it from the destination's migration header alone.  This module
checks the spec and what it names before anything is queued, moves s3
credentials into the module's store (librbd reads them back through
``config://``), and removes them once the task is over.

``add <remote>:<pool>[/<ns>]/<image>[@<snap>] <pool>/<image>`` (issue 27) is
an import too (``add_remote``): its spec is the ``native`` one
``remote_sources`` builds (no secret in it), checked against the remote
image at add time, and taken on by the runner's import gate
(``RemoteSources.before_prepare``) and end hook (``after_end``).
"""

import errno
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from . import remote_spec, source_spec
from .access import Access
from .adding import Adder
from .errors import (AlreadyExists, Busy, CommandResult, InvalidArgument, LiveMigrateError,
                     NotAuthorized, NotFound)
from .formatting import dump
from .handles import SchedulerHandle
from .import_guard import ImportGuard
from .interface import RbdPort
from .request import AddRequest
from .source_probe import ConfigGet, probe
from .spec import ImageSpec, Layout
from .table import TaskTable
from .task import IMPORT_TASK_VERSION, Task
from .views import Views, import_dry_run_report

if TYPE_CHECKING:
    from .remote_sources import RemoteSources

log = logging.getLogger(__name__)

SWEEP_SECONDS = 10.0

Probe = Callable[[source_spec.Stream, ConfigGet], int]


def _comparable(spec: Dict[str, Any]) -> Dict[str, Any]:
    """A spec with every credential field blanked (literal or config://)."""
    out = source_spec.redact(spec)
    for s in source_spec.streams(out):
        for f in source_spec.CREDENTIAL_FIELDS:
            if f in s.stream:
                s.stream[f] = source_spec.REDACTED
    return out


class Importer:
    def __init__(self, *, table: TaskTable, scheduler: SchedulerHandle, adapter: RbdPort,
                 access: Access, adder: Adder, views: Views, clock: Callable[[], float],
                 set_store: Callable[[str, Optional[str]], None],
                 get_store_prefix: Callable[[str], Dict[str, str]],
                 config_get: ConfigGet, guard: ImportGuard,
                 probe_stream: Probe = probe,
                 remotes: Optional['RemoteSources'] = None) -> None:
        """``adder``: add's lock, task ids and caller record, shared with it."""
        self.table = table
        self.scheduler = scheduler
        self.adapter = adapter
        self.access = access
        self.adder = adder
        self.views = views
        self.clock = clock
        self.set_store = set_store
        self.get_store_prefix = get_store_prefix
        self.config_get = config_get
        self.probe = probe_stream
        self.guard = guard
        self.remotes = remotes
        self.lock = threading.Lock()        # credentials written vs swept

    # -- add -----------------------------------------------------------

    def add(self, dest_spec: str, inbuf: Optional[str], given: AddRequest) -> CommandResult:
        self.table.check_loaded()
        dest = ImageSpec.parse(dest_spec)
        spec = source_spec.parse(inbuf or '')
        if given.flatten or given.allow_descendants:
            raise InvalidArgument('--flatten and --allow-descendants do not apply to an import')
        req = self.adder.parse(given)
        layout = req.layout
        self.access.authorize(dest.pool, dest.namespace)
        if layout.data_pool is not None:
            self.access.authorize(layout.data_pool, dest.namespace)
        self._check_dest(dest, layout)
        self.adder.authorize_touched(dest, dest, layout, [])
        # what librbd would open inside the mgr, judged before anything is
        # probed or sent (file paths come back resolved)
        spec = self.guard.check(spec, dest)
        existing = self._existing(dest, spec)
        if existing is not None:
            return 0, self.views.task_json(existing), ''
        if self.adapter.image_exists(dest) or self.adapter.trashed_source(dest):
            raise AlreadyExists("destination image '{}' exists: choose another name or remove "
                                'it'.format(dest))
        sizes = {s.label: self.probe(s, self.config_get) for s in source_spec.streams(spec)}
        size = sizes['head']
        if req.dry_run:
            report = import_dry_run_report(dest, source_spec.redact(spec), layout, sizes)
            return 0, dump(report, 'json'), ''
        now = self.clock()
        with self.adder.add_lock, self.lock:
            existing = self._existing(dest, spec)
            if existing is not None:            # added meanwhile
                return 0, self.views.task_json(existing), ''
            task_id = self.adder.new_id()
            stored, secrets = source_spec.move_credentials(spec, task_id)
            task = Task(id=task_id, source=str(dest), destination=str(dest), layout=layout,
                        manual_commit=req.manual_commit, priority=req.priority,
                        bandwidth_limit_bytes=req.bandwidth_limit, size_bytes=size, created=now,
                        import_spec=source_spec.dumps(stored), version=IMPORT_TASK_VERSION,
                        added_by=self.adder.added_by(None, dest, dest))
            for key, value in secrets.items():
                self.set_store(key, value)
            try:
                self.table.put(task)
            except Exception:
                for key in secrets:
                    self.set_store(key, None)
                raise
        log.info('added task %s: import %s -> %s', task.id, source_spec.summary(
            task.import_spec), task.destination)
        self.scheduler.kick()
        return 0, self.views.task_json(task), ''

    # -- add of a remote image (issue 27) -------------------------------

    def add_remote(self, src: remote_spec.RemoteImageSpec, dest_spec: Optional[str],
                   given: AddRequest, batch_id: Optional[str] = None,
                   paused: bool = False) -> CommandResult:
        """``add <remote>:<pool>[/<ns>]/<image>[@<snap>] <pool>/<image>``: an
        import task whose spec names the remote image at ``@snap``, or at the
        snapshot the module takes when the task starts (``rbd_livemigrate-<id>``).
        Operator-wide, like the remote's registration: the remote's key is
        not the caller's (a batch's images: its caller was checked)."""
        assert self.remotes is not None
        self.table.check_loaded()
        if batch_id is None and not self.access.unscoped():
            raise NotAuthorized('moving an image from another cluster needs mgr caps on every '
                                'pool (not limited with pool=...): ask an operator')
        if dest_spec is None:
            raise InvalidArgument('a remote source needs a destination: add <remote>:<pool>/'
                                  '<image> <pool>/<image>')
        dest = ImageSpec.parse(dest_spec)
        if given.flatten or given.allow_descendants:
            raise InvalidArgument('--flatten and --allow-descendants do not apply: a remote '
                                  'clone is always flattened by the import')
        if given.manual_cutover:
            raise InvalidArgument('--manual-cutover does not apply to a remote source: the '
                                  'task waits until the remote image has no clients')
        req = self.adder.parse(given)
        layout = req.layout
        self._check_dest(dest, layout)
        existing = self._existing_remote(dest, src)
        if existing is not None:
            if batch_id is not None and existing.batch_id != batch_id:
                raise AlreadyExists('{} already has task {}'.format(dest, existing.id))
            return 0, self.views.task_json(existing), ''
        if self.adapter.image_exists(dest) or self.adapter.trashed_source(dest):
            raise AlreadyExists("destination image '{}' exists: choose another name or remove "
                                'it'.format(dest))
        info = self.remotes.check_image(src)      # ENOENT image or snapshot
        if req.dry_run:
            report = {'dry_run': True, 'source': str(src), 'destination': str(dest),
                      'ok': True, 'layout': layout.to_json(), 'size_bytes': info['size'],
                      'snapshots': info['snaps'], 'remote_watchers': len(info['watchers'])}
            return 0, dump(report, 'json'), ''
        now = self.clock()
        with self.adder.add_lock:
            existing = self._existing_remote(dest, src)
            if existing is not None:            # added meanwhile
                return 0, self.views.task_json(existing), ''
            task_id = self.adder.new_id()       # the module's snapshot is named by it
            spec = self.remotes.spec_for(src, task_id)
            remote_spec.check_no_secret(spec)
            task = Task(id=task_id, source=str(dest), destination=str(dest), layout=layout,
                        manual_commit=req.manual_commit, priority=req.priority,
                        bandwidth_limit_bytes=req.bandwidth_limit, size_bytes=info['size'],
                        created=now, import_spec=source_spec.dumps(spec), verify=req.verify,
                        version=IMPORT_TASK_VERSION, batch_id=batch_id, paused=paused,
                        added_by=self.adder.added_by(batch_id, dest, dest))
            self.table.put(task)
        log.info('added task %s: import %s -> %s', task.id, remote_spec.summary(spec),
                 task.destination)
        self.scheduler.kick()
        return 0, self.views.task_json(task), ''

    def _existing_remote(self, dest: ImageSpec,
                         src: remote_spec.RemoteImageSpec) -> Optional[Task]:
        """The live task moving the same remote image (and snapshot) into
        ``dest``, returned again; a refusal when another task uses the name."""
        from .remote_sources import own_snap, spec_of
        for t in self.table.naming(str(dest)):
            if t.done:
                continue
            theirs = spec_of(t.import_spec)
            if theirs is not None and t.destination == str(dest):
                same = (remote_spec.remote_of_spec(theirs) == src.remote
                        and theirs.get('pool_name') == src.pool
                        and (theirs.get('pool_namespace') or '') == src.namespace
                        and theirs.get('image_name') == src.image
                        and (theirs.get('snap_name') == src.snap if src.snap
                             else own_snap(t.id, theirs)))
                if same:
                    return t
                raise AlreadyExists("'{}' is already the destination of import task {} (from "
                                    '{}): cancel it first'.format(
                                        dest, t.id, remote_spec.summary(theirs)))
            if t.destination == str(dest):
                raise AlreadyExists("'{}' is already the destination of task {}".format(
                    dest, t.id))
            raise Busy("image '{}' is the source of task {}: choose another destination".format(
                dest, t.id))
        return None

    def _check_dest(self, dest: ImageSpec, layout: Layout) -> None:
        """The destination's pool, data pool and namespace exist (ENOENT)."""
        if not self.adapter.pool_exists(dest.pool):
            raise NotFound("pool '{}' does not exist: create it or check the spec".format(
                dest.pool))
        if layout.data_pool is not None and not self.adapter.pool_exists(layout.data_pool):
            raise NotFound("data pool '{}' does not exist".format(layout.data_pool))
        if not self.adapter.namespace_exists(dest.pool, dest.namespace):
            raise NotFound("namespace '{}' does not exist in pool '{}': create it with rbd "
                           'namespace create'.format(dest.namespace, dest.pool))

    def _existing(self, dest: ImageSpec, spec: Dict[str, Any]) -> Optional[Task]:
        """The live import of the same spec into ``dest`` (returned again), or
        a refusal when another task uses the name."""
        for t in self.table.naming(str(dest)):
            if t.done:
                continue
            if not self.access.may(t):
                raise Busy("'{}' belongs to a task outside the caller's mgr caps: ask an "
                           'operator'.format(dest))
            if t.import_spec is not None and t.destination == str(dest):
                try:
                    theirs = source_spec.check(json.loads(t.import_spec))
                except (ValueError, LiveMigrateError):
                    theirs = {}
                if _comparable(theirs) == _comparable(spec):
                    return t
                raise AlreadyExists("'{}' is already the destination of import task {} (from "
                                    'another source-spec): cancel it first'.format(dest, t.id))
            if t.destination == str(dest):
                raise AlreadyExists("'{}' is already the destination of task {}".format(
                    dest, t.id))
            raise Busy("image '{}' is the source of task {}: choose another destination".format(
                dest, t.id))
        return None

    # -- credentials ---------------------------------------------------

    def credential_keys(self) -> Dict[str, List[str]]:
        """Stored credential keys by task id."""
        out: Dict[str, List[str]] = {}
        for key in self.get_store_prefix(source_spec.KEY_PREFIX):
            task_id = source_spec.task_of_key(key)
            if task_id is not None:
                out.setdefault(task_id, []).append(key)
        return out

    def sweep(self) -> None:
        """Remove the credentials of imports that are over (committed,
        aborted, or no longer kept); a failed one keeps them for retry."""
        with self.lock:
            for task_id, keys in self.credential_keys().items():
                task = self.table.find(task_id)
                if task is not None and not task.terminal:
                    continue
                for key in keys:
                    try:
                        self.set_store(key, None)
                    except Exception as e:
                        log.warning('cannot remove import credential key %s: %s', key, e)
                        continue
                log.info('task %s: removed %d stored import credential(s)', task_id, len(keys))


def config_key_getter(mon_command: Callable[[Dict[str, Any]], Any]) -> ConfigGet:
    """``config://`` references as librbd resolves them: ``config-key get``."""
    def get(key: str) -> Optional[str]:
        r, out, err = mon_command({'prefix': 'config-key get', 'key': key})
        if r == -errno.ENOENT:
            return None
        if r != 0:
            raise LiveMigrateError('cannot read config-key {!r}: {}'.format(key, err), -r)
        return str(out)
    return get
