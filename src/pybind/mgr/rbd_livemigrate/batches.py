"""
``add-pool`` batches: checked at once, then listed and added in the
background by a few threads, each image through the same check as ``add``
(``adding.Adder.add_one``).

``BatchCommands`` is given narrow doors: the task table, a scheduler
handle, the librbd port, the caller's rights (``access.Access``) and the
one-image ``add``, never the ``Commands`` that owns it.

``add-pool <remote>:<pool>[/<ns>] <pool>[/<ns>]`` (issue 27) is a batch too:
its source names a registered remote, whose images are listed through
``remotes`` and each added by the importer's ``add_remote`` (set by
module.py); operator-wide, like every remote command.
"""

import errno
import fnmatch
import json
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

from .access import Access, Allowed, kept
from .adding import Adder
from .batch import Batch, BatchState
from .errors import (CommandResult, InvalidArgument, LiveMigrateError, NotAuthorized, NotFound,
                     WrongState)
from .formatting import dump
from .handles import SchedulerHandle
from .interface import RbdPort
from .preflight import PoolInfo
from .request import AddRequest, Request
from .spec import ImageSpec, PoolSpec
from .table import TaskTable
from .task import State
from .remote_spec import RemoteImageSpec, RemotePoolSpec
from .views import Views, refusal_entry

if TYPE_CHECKING:
    from .remote_sources import RemoteSources

log = logging.getLogger(__name__)

POOLS_REFRESH_SECONDS = 5.0
KICK_EVERY_IMAGES = 20
EXPAND_THREADS = 4

__all__ = ['Allowed', 'BatchCommands']


class BatchCommands:
    def __init__(self, *, table: TaskTable, scheduler: SchedulerHandle, adapter: RbdPort,
                 access: Access, adder: Adder, views: Views,
                 pools: Callable[[], Dict[str, PoolInfo]], clock: Callable[[], float]) -> None:
        """``start`` starts a batch's listing (``start_expansion`` unless a
        test holds it)."""
        self.table = table
        self.scheduler = scheduler
        self.adapter = adapter
        self.access = access
        self.adder = adder
        self.views = views
        self.pools = pools
        self.clock = clock
        self.start: Callable[[str], None] = self.start_expansion
        # remote sources (issue 27): set by module.py
        self.remotes: Optional['RemoteSources'] = None
        self.add_remote: Optional[Callable[..., CommandResult]] = None

    def add_pool(self, source_pool: str, dest_pool: str, pattern: Optional[str],
                 given: AddRequest) -> CommandResult:
        """A batch, at once; its images are listed and added in the background
        (``--dry-run`` checks every image now and adds nothing)."""
        self.table.check_loaded()
        src = PoolSpec.parse(source_pool)
        dst = PoolSpec.parse(dest_pool)
        req = self.adder.parse(given)
        self.access.authorize(src.pool, src.namespace)
        self.access.authorize(dst.pool, dst.namespace)
        if given.data_pool is not None:
            self.access.authorize(given.data_pool, dst.namespace)
        self._check_pools(src, dst, given)
        if given.dry_run:
            return self._dry_run_pool(src, dst, pattern, req)
        batch = Batch(id=self._new_batch_id(), source=str(src), destination=str(dst),
                      pattern=pattern, request=given._asdict(),
                      allowed=self.access.rights(src, dst), created=self.clock())
        self.table.put_batch(batch)
        self.start(batch.id)
        log.info('batch %s: %s -> %s%s', batch.id, src, dst,
                 ' ({})'.format(pattern) if pattern else '')
        return 0, self.views.batch_json(batch), ''

    # -- a remote pool (issue 27) -------------------------------------------

    def add_remote_pool(self, src: RemotePoolSpec, dest_pool: str, pattern: Optional[str],
                        given: AddRequest) -> CommandResult:
        """``add-pool <remote>:<pool>[/<ns>] <dest_pool>``: one batch; each
        image ``<remote>:<pool>/<image>`` -> ``<dest_pool>/<image>``."""
        assert self.add_remote is not None
        self.table.check_loaded()
        if not self.access.unscoped():
            raise NotAuthorized('moving images from another cluster needs mgr caps on every '
                                'pool (not limited with pool=...): ask an operator')
        dst = PoolSpec.parse(dest_pool)
        self.adder.parse(given)
        if not self.adapter.pool_exists(dst.pool):
            raise NotFound("destination pool '{}' does not exist: check the pool spec (ceph "
                           'osd pool ls)'.format(dst.pool))
        if dst.namespace and not self.adapter.namespace_exists(dst.pool, dst.namespace):
            raise NotFound("destination namespace '{}' does not exist in pool '{}'".format(
                dst.namespace, dst.pool))
        images = self._remote_images(src, pattern)         # the remote answers (or not)
        if given.dry_run:
            results: List[Dict[str, Any]] = []
            worst = 0
            for image in images:
                s = RemoteImageSpec(src.remote, src.pool, src.namespace, image, None)
                d = ImageSpec(dst.pool, dst.namespace, image)
                try:
                    r, out, err = self.add_remote(s, str(d), given)
                except LiveMigrateError as e:
                    r, out, err = e.to_result()
                results.append(json.loads(out) if out else {
                    'source': str(s), 'destination': str(d), 'errno': r, 'message': err})
                worst = worst or r
            if worst:
                return worst, dump(results, 'json'), 'some image(s) blocked; see the JSON'
            return 0, dump(results, 'json'), ''
        batch = Batch(id=self._new_batch_id(), source=str(src), destination=str(dst),
                      pattern=pattern, request=given._asdict(), allowed=['*'],
                      created=self.clock())
        self.table.put_batch(batch)
        self.start(batch.id)
        log.info('batch %s: %s -> %s%s', batch.id, src, dst,
                 ' ({})'.format(pattern) if pattern else '')
        return 0, self.views.batch_json(batch), ''

    def _remote_images(self, src: RemotePoolSpec, pattern: Optional[str]) -> List[str]:
        assert self.remotes is not None
        images = self.remotes.pool_images(src)
        if pattern is not None:
            images = [i for i in images if fnmatch.fnmatchcase(i, pattern)]
        return images

    def _remote_of(self, batch: Batch) -> Optional[RemotePoolSpec]:
        if self.remotes is None or ':' not in batch.source:
            return None
        return self.remotes.pool_source(batch.source)

    def _expand_remote(self, batch: Batch, src: RemotePoolSpec) -> None:
        """A remote pool's images, one by one (each check connects to the
        remote; the copies do not wait for the listing)."""
        assert self.add_remote is not None
        dst = PoolSpec.parse(batch.destination)
        given = AddRequest(**batch.request)._replace(dry_run=False)
        images = self._remote_images(src, batch.pattern)
        self.table.update_batch(batch.id, lambda b: b.evolve(images=len(images)))
        have = {t.destination for t in self.table.batch_tasks(batch.id)}
        refused = {str(r.get('source')) for r in batch.refused}
        for n, image in enumerate(images):
            current = self.table.get_batch(batch.id)
            if current.state != BatchState.EXPANDING or self.table.stopping:
                return
            s = RemoteImageSpec(src.remote, src.pool, src.namespace, image, None)
            d = ImageSpec(dst.pool, dst.namespace, image)
            if str(d) in have or str(s) in refused:
                continue
            try:
                self.add_remote(s, str(d), given, batch_id=batch.id, paused=current.paused)
            except LiveMigrateError as e:
                err = e
                self.table.update_batch(batch.id, lambda b: b.with_refusal(
                    str(s), err.errno, str(err)))
            if n % KICK_EVERY_IMAGES == 0:
                self.scheduler.kick()
        self.table.update_batch(batch.id, lambda b: b.evolve(
            state=BatchState.EXPANDED, expanded=self.clock())
            if b.state == BatchState.EXPANDING else b)
        self.scheduler.kick()
        log.info('batch %s: %d remote image(s) listed', batch.id, len(images))

    def _check_pools(self, src: PoolSpec, dst: PoolSpec, req: AddRequest) -> None:
        """What ``add-pool`` can check at once, before a batch exists: the
        pools and namespaces, and that the request changes something."""
        for what, p in (('source', src), ('destination', dst)):
            if not self.adapter.pool_exists(p.pool):
                raise NotFound("{} pool '{}' does not exist: check the pool spec (ceph osd "
                               'pool ls)'.format(what, p.pool))
            if p.namespace and not self.adapter.namespace_exists(p.pool, p.namespace):
                raise NotFound("{} namespace '{}' does not exist in pool '{}': create it with "
                               'rbd namespace create {}'.format(what, p.namespace, p.pool, p))
        if req.data_pool is not None and not self.adapter.pool_exists(req.data_pool):
            raise NotFound("data pool '{}' does not exist".format(req.data_pool))
        changes = [req.object_size, req.stripe_unit, req.stripe_count, req.features,
                   req.data_pool]
        if src == dst and all(c is None for c in changes) and not req.flatten:
            raise InvalidArgument("'{}' to itself with no layout option changes nothing: give "
                                  'another pool or namespace, or a layout option such as '
                                  '--object-size'.format(src))

    def _dry_run_pool(self, src: PoolSpec, dst: PoolSpec, pattern: Optional[str],
                      req: Request) -> CommandResult:
        pools = self.pools()
        conf = self.adapter.pool_config(dst)
        results: List[Dict[str, Any]] = []
        worst = 0
        for image in self._images(src, pattern):
            s, d = ImageSpec(src.pool, src.namespace, image), ImageSpec(
                dst.pool, dst.namespace, image)
            try:
                r, out, err = self.adder.add_one(s, d, req, self.access.allowed, pools,
                                                 pool_conf=conf)
            except LiveMigrateError as e:
                r, out, err = e.to_result()
            results.append(json.loads(out) if out else refusal_entry(s, d, r, err))
            worst = worst or r
        failed = [r for r in results if r.get('errno') or r.get('ok') is False]
        if worst and failed:
            return worst, dump(results, 'json'), '{} of {} image(s) blocked; see the JSON'.format(
                len(failed), len(results))
        return 0, dump(results, 'json'), ''

    def _images(self, src: PoolSpec, pattern: Optional[str]) -> List[str]:
        images = self.adapter.list_images(src)
        if pattern is not None:
            images = [i for i in images if fnmatch.fnmatchcase(i, pattern)]
        return images

    def _new_batch_id(self) -> str:
        while True:
            batch_id = Batch.new_id()
            if batch_id not in self.table.batches:
                return batch_id

    def start_expansion(self, batch_id: str) -> None:
        threading.Thread(target=self.expand, args=(batch_id,), daemon=True,
                         name='rbd_livemigrate.{}'.format(batch_id)).start()

    def resume(self) -> None:
        """After a restart: go on listing the batches that were being listed."""
        for b in self.table.all_batches():
            if b.state == BatchState.EXPANDING:
                self.start(b.id)

    def expand(self, batch_id: str) -> None:
        try:
            self._expand_batch(batch_id)
        except Exception as e:
            log.exception('batch %s: listing its images failed', batch_id)
            why = 'listing stopped: {}: {}'.format(type(e).__name__, e)
            self.table.update_batch(batch_id, lambda b: b.with_refusal(
                b.source, errno.EIO, why).evolve(state=BatchState.EXPANDED,
                                                 expanded=self.clock()))

    def _expand_batch(self, batch_id: str) -> None:
        batch = self.table.get_batch(batch_id)
        remote = self._remote_of(batch)
        if remote is not None:
            self._expand_remote(batch, remote)
            return
        src, dst = PoolSpec.parse(batch.source), PoolSpec.parse(batch.destination)
        req = self.adder.parse(AddRequest(**batch.request)._replace(dry_run=False))
        allowed = kept(batch.allowed)
        images = self._images(src, batch.pattern)
        self.table.update_batch(batch_id, lambda b: b.evolve(images=len(images)))
        seen = {t.source for t in self.table.batch_tasks(batch_id)}
        seen |= {str(r.get('source')) for r in batch.refused}
        pools, pools_at = self.pools(), self.clock()
        conf = self.adapter.pool_config(dst)
        todo = iter(enumerate(images))
        lock = threading.Lock()
        cache: Dict[str, Any] = {'pools': pools, 'at': pools_at}

        def one_by_one() -> None:
            while True:
                with lock:
                    n, image = next(todo, (-1, ''))
                    if n < 0:
                        return
                    if self.clock() - cache['at'] > POOLS_REFRESH_SECONDS:
                        cache['pools'], cache['at'] = self.pools(), self.clock()
                    now_pools = cache['pools']
                batch = self.table.get_batch(batch_id)
                if batch.state != BatchState.EXPANDING or self.table.stopping:
                    return
                s, d = ImageSpec(src.pool, src.namespace, image), ImageSpec(
                    dst.pool, dst.namespace, image)
                if str(s) in seen:
                    continue
                try:
                    # a plain image is read, not opened: a source with
                    # clients is found by its prepare, and then waits
                    self.adder.add_one(s, d, req, allowed, now_pools, batch_id=batch_id,
                                       paused=batch.paused, pool_conf=conf, quick=True)
                except LiveMigrateError as e:
                    err = e
                    self.table.update_batch(batch_id, lambda b: b.with_refusal(
                        str(s), err.errno, str(err)))
                if n % KICK_EVERY_IMAGES == 0:
                    self.scheduler.kick()
        # a few images are checked at once: a check mostly waits on the OSDs,
        # and the copies must not wait for the listing
        threads = [threading.Thread(target=one_by_one, daemon=True,
                                    name='rbd_livemigrate.{}.{}'.format(batch_id, i))
                   for i in range(EXPAND_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.table.update_batch(batch_id, lambda b: b.evolve(
            state=BatchState.EXPANDED, expanded=self.clock())
            if b.state == BatchState.EXPANDING else b)
        self.scheduler.kick()
        log.info('batch %s: %d image(s) listed', batch_id, len(images))

    def get(self, batch_id: str) -> Batch:
        batch = self.table.get_batch(batch_id)
        src, dst = PoolSpec.parse(batch.source), PoolSpec.parse(batch.destination)
        data_pool = batch.request.get('data_pool')
        pools = [(src.pool, src.namespace), (dst.pool, dst.namespace)]
        if data_pool:
            pools.append((data_pool, dst.namespace))
        if not all(self.access.allowed(p, ns) for p, ns in pools):
            raise NotAuthorized('not authorized on batch {}: it touches a pool or namespace '
                                "that the caller's mgr caps do not allow".format(batch.id))
        return batch

    def pause(self, batch_id: str, paused: bool) -> CommandResult:
        batch = self.table.update_batch(self.get(batch_id).id,
                                        lambda b: b.evolve(paused=paused))
        for t in self.table.batch_tasks(batch.id):
            if not t.done and t.paused != paused:
                # the batch's own record carries this over a restart
                self.table.update(t.id, lambda x: x if x.done else x.evolve(
                    paused=paused, next_retry=None if not paused else x.next_retry),
                    wait=False)
        self.scheduler.kick()
        return 0, self.views.batch_json(batch), ''

    def cancel(self, batch_id: str) -> CommandResult:
        """Stop listing, and cancel every live task of the batch (a commit
        under way finishes); returns at once: see status."""
        current = self.get(batch_id)
        if current.state == BatchState.CANCELLED:
            raise WrongState('batch {} is already cancelled; see status {}'.format(
                current.id, current.id))
        if self.views.batch(current)['finished']:
            raise WrongState('batch {} is finished: nothing to cancel; see status {}'.format(
                current.id, current.id))
        batch = self.table.update_batch(current.id, lambda b: b.evolve(
            state=BatchState.CANCELLED, paused=False))
        for t in self.table.batch_tasks(batch.id):
            if t.done or t.state == State.COMMITTING:
                continue
            try:
                # the batch's own record carries this over a restart
                self.table.update(t.id, lambda x: x if (x.done or x.state == State.COMMITTING)
                                  else x.evolve(cancel_requested=True, paused=False,
                                                next_retry=None), wait=False)
            except LiveMigrateError:
                continue
            self.scheduler.interrupt(t.id)
        self.scheduler.kick()
        live = self.views.batch(batch)['live']
        return 0, self.views.batch_json(batch, 'cancel in progress for {} task(s); see status '
                                               '{}'.format(live, batch.id)), ''
