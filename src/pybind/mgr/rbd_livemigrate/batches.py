"""
``add-pool`` batches: checked at once, then listed and added in the
background by a few threads, each image through the same check as ``add``.

``BatchCommands`` is given narrow doors (the task table, the librbd port,
the caller's rights and the one-image ``add``), never the ``Commands`` that
owns it.
"""

import errno
import fnmatch
import json
import logging
import threading
from typing import Any, Callable, Dict, List, Optional

from .batch import Batch, BatchState
from .errors import (CommandResult, InvalidArgument, LiveMigrateError, NotAuthorized, NotFound,
                     WrongState)
from .formatting import dump
from .interface import RbdPort
from .preflight import PoolInfo
from .request import AddRequest
from .scheduler import Worker
from .spec import ImageSpec, PoolSpec
from .task import Layout, State, VerifyMode

log = logging.getLogger(__name__)

Allowed = Callable[[str, str], bool]
POOLS_REFRESH_SECONDS = 5.0
KICK_EVERY_IMAGES = 20
EXPAND_THREADS = 4


class BatchCommands:
    def __init__(self, *, worker: Worker, adapter: RbdPort,
                 pools: Callable[[], Dict[str, PoolInfo]], authorized: Allowed,
                 unscoped: Callable[[], bool], clock: Callable[[], float],
                 ready: Callable[[], None],
                 authorize: Callable[[str, str], None],
                 build_layout: Callable[[Any], Layout],
                 check_request: Callable[[Any], Optional[int]],
                 verify_mode: Callable[[Any], VerifyMode],
                 add_one: Callable[..., CommandResult],
                 start: Callable[[str], None]) -> None:
        """``add_one`` is ``add``'s check and record of one image; ``start``
        starts a batch's listing (``start_expansion`` unless a test holds it)."""
        self.worker = worker
        self.adapter = adapter
        self.pools = pools
        self.authorized = authorized
        self.unscoped = unscoped
        self.clock = clock
        self._ready = ready
        self._authorize = authorize
        self.build_layout = build_layout
        self.check_request = check_request
        self.verify_mode = verify_mode
        self._add_one = add_one
        self.start = start

    def add_pool(self, source_pool: str, dest_pool: str, pattern: Optional[str],
                 req: AddRequest) -> CommandResult:
        """A batch, at once; its images are listed and added in the background
        (``--dry-run`` checks every image now and adds nothing)."""
        self._ready()
        src = PoolSpec.parse(source_pool)
        dst = PoolSpec.parse(dest_pool)
        self.build_layout(req)
        self.check_request(req)
        self.verify_mode(req)
        self._authorize(src.pool, src.namespace)
        self._authorize(dst.pool, dst.namespace)
        if req.data_pool is not None:
            self._authorize(req.data_pool, dst.namespace)
        self._check_pools(src, dst, req)
        if req.dry_run:
            return self._dry_run_pool(src, dst, pattern, req)
        batch = Batch(id=self._new_batch_id(), source=str(src), destination=str(dst),
                      pattern=pattern, request=req._asdict(),
                      allowed=self.rights(src, dst), created=self.clock())
        self.worker.put_batch(batch)
        self.start(batch.id)
        log.info('batch %s: %s -> %s%s', batch.id, src, dst,
                 ' ({})'.format(pattern) if pattern else '')
        return 0, dump(batch.summary_of({}), 'json'), ''

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
                      req: AddRequest) -> CommandResult:
        layout = self.build_layout(req)
        limit = self.check_request(req)
        pools = self.pools()
        conf = self.adapter.pool_config(dst)
        results: List[Dict[str, Any]] = []
        worst = 0
        for image in self._images(src, pattern):
            s, d = ImageSpec(src.pool, src.namespace, image), ImageSpec(
                dst.pool, dst.namespace, image)
            try:
                r, out, err = self._add_one(s, d, req, layout, limit, self.authorized, pools,
                                            pool_conf=conf)
            except LiveMigrateError as e:
                r, out, err = e.to_result()
            results.append(json.loads(out) if out else {
                'source': str(s), 'destination': str(d), 'errno': r, 'error': err})
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
            if batch_id not in self.worker.batches:
                return batch_id

    def rights(self, src: PoolSpec, dst: PoolSpec) -> List[str]:
        """The caller's rights, kept with a batch: its images are added later,
        by a thread that has no caller to ask.  Every pool, in the default
        namespace and the batch's own."""
        if self.unscoped():
            return ['*']
        out = []
        for pool in sorted(self.pools()):
            for ns in sorted({'', src.namespace, dst.namespace}):
                if self.authorized(pool, ns):
                    out.append('{}/{}'.format(pool, ns) if ns else pool)
        return out

    def start_expansion(self, batch_id: str) -> None:
        threading.Thread(target=self.expand, args=(batch_id,), daemon=True,
                         name='rbd_livemigrate.{}'.format(batch_id)).start()

    def resume(self) -> None:
        """After a restart: go on listing the batches that were being listed."""
        for b in self.worker.all_batches():
            if b.state == BatchState.EXPANDING:
                self.start(b.id)

    def expand(self, batch_id: str) -> None:
        try:
            self._expand_batch(batch_id)
        except Exception as e:
            log.exception('batch %s: listing its images failed', batch_id)
            why = 'listing stopped: {}: {}'.format(type(e).__name__, e)
            self.worker.update_batch(batch_id, lambda b: b.with_refusal(
                b.source, errno.EIO, why).evolve(state=BatchState.EXPANDED,
                                                 expanded=self.clock()))

    def _expand_batch(self, batch_id: str) -> None:
        batch = self.worker.get_batch(batch_id)
        src, dst = PoolSpec.parse(batch.source), PoolSpec.parse(batch.destination)
        req = AddRequest(**batch.request)._replace(dry_run=False)
        layout = self.build_layout(req)
        limit = self.check_request(req)
        allowed = _allowed(batch.allowed)
        images = self._images(src, batch.pattern)
        self.worker.update_batch(batch_id, lambda b: b.evolve(images=len(images)))
        seen = {t.source for t in self.worker.batch_tasks(batch_id)}
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
                batch = self.worker.get_batch(batch_id)
                if batch.state != BatchState.EXPANDING or self.worker.stopping:
                    return
                s, d = ImageSpec(src.pool, src.namespace, image), ImageSpec(
                    dst.pool, dst.namespace, image)
                if str(s) in seen:
                    continue
                try:
                    # a plain image is read, not opened: a source with
                    # clients is found by its prepare, and then waits
                    self._add_one(s, d, req, layout, limit, allowed, now_pools,
                                  batch_id=batch_id, paused=batch.paused, pool_conf=conf,
                                  quick=True)
                except LiveMigrateError as e:
                    err = e
                    self.worker.update_batch(batch_id, lambda b: b.with_refusal(
                        str(s), err.errno, str(err)))
                if n % KICK_EVERY_IMAGES == 0:
                    self.worker.kick()
        # a few images are checked at once: a check mostly waits on the OSDs,
        # and the copies must not wait for the listing
        threads = [threading.Thread(target=one_by_one, daemon=True,
                                    name='rbd_livemigrate.{}.{}'.format(batch_id, i))
                   for i in range(EXPAND_THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.worker.update_batch(batch_id, lambda b: b.evolve(
            state=BatchState.EXPANDED, expanded=self.clock())
            if b.state == BatchState.EXPANDING else b)
        self.worker.kick()
        log.info('batch %s: %d image(s) listed', batch_id, len(images))

    def get(self, batch_id: str) -> Batch:
        batch = self.worker.get_batch(batch_id)
        src, dst = PoolSpec.parse(batch.source), PoolSpec.parse(batch.destination)
        data_pool = batch.request.get('data_pool')
        pools = [(src.pool, src.namespace), (dst.pool, dst.namespace)]
        if data_pool:
            pools.append((data_pool, dst.namespace))
        if not all(self.authorized(p, ns) for p, ns in pools):
            raise NotAuthorized('not authorized on batch {}: it touches a pool or namespace '
                                "that the caller's mgr caps do not allow".format(batch.id))
        return batch

    def view(self, batch: Batch) -> Dict[str, Any]:
        return batch.summary_of(self.worker.batch_state_counts(batch.id))

    def pause(self, batch_id: str, paused: bool) -> CommandResult:
        batch = self.worker.update_batch(self.get(batch_id).id,
                                         lambda b: b.evolve(paused=paused))
        for t in self.worker.batch_tasks(batch.id):
            if not t.done and t.paused != paused:
                # the batch's own record carries this over a restart
                self.worker.update(t.id, lambda x: x if x.done else x.evolve(
                    paused=paused, next_retry=None if not paused else x.next_retry),
                    wait=False)
        self.worker.kick()
        return 0, dump(self.view(batch), 'json'), ''

    def cancel(self, batch_id: str) -> CommandResult:
        """Stop listing, and cancel every live task of the batch (a commit
        under way finishes); returns at once: see status."""
        current = self.get(batch_id)
        if current.state == BatchState.CANCELLED:
            raise WrongState('batch {} is already cancelled; see status {}'.format(
                current.id, current.id))
        if self.view(current)['finished']:
            raise WrongState('batch {} is finished: nothing to cancel; see status {}'.format(
                current.id, current.id))
        batch = self.worker.update_batch(current.id, lambda b: b.evolve(
            state=BatchState.CANCELLED, paused=False))
        for t in self.worker.batch_tasks(batch.id):
            if t.done or t.state == State.COMMITTING:
                continue
            try:
                # the batch's own record carries this over a restart
                self.worker.update(t.id, lambda x: x if (x.done or x.state == State.COMMITTING)
                                   else x.evolve(cancel_requested=True, paused=False,
                                                 next_retry=None), wait=False)
            except LiveMigrateError:
                continue
            self.worker.interrupt(t.id)
        self.worker.kick()
        v = self.view(batch)
        v['action'] = 'cancel in progress for {} task(s); see status {}'.format(
            v['live'], batch.id)
        return 0, dump(v, 'json'), ''


def _allowed(rights: List[str]) -> Allowed:
    """A caller's rights kept with a batch, as ``authorized(pool, namespace)``."""
    granted = set(rights)
    if '*' in granted:
        return lambda pool, ns: True
    return lambda pool, ns: ('{}/{}'.format(pool, ns) if ns else pool) in granted
