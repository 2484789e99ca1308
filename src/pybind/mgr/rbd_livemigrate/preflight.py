"""
Preflight: every reason a migration cannot start, found before prepare.

``validate_layout`` is pure.  ``find_blockers`` reads the cluster through
the adapter and the mgr's osd map and df, and returns every blocker it
finds (a dry run prints them all); ``Blocked.wait`` marks the ones a task
may wait out (watchers) instead of failing.
"""

import errno
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .errors import Blocked, InvalidArgument, NotFound
from .interface import FEATURES, ImageInfo, MirrorMode, RbdPort
# what prepare is given (beside RbdPort.prepare, which passes it)
from .interface import PrepareArgs, prepare_args  # noqa: F401
from .spec import ImageSpec, is_power_of_two, validate_name
from .task import Layout

MIN_OBJECT_SIZE = 4096
MAX_OBJECT_SIZE = 32 << 20
MAX_STRIPE_COUNT = 1 << 16
POOL_TYPE_ERASURE = 3
# the slowest copy rate a task may be given (--bandwidth-limit): below it a
# 100 GiB image takes more than a day; bytes per second
MIN_BANDWIDTH_BYTES = 1 << 20


class PoolInfo(NamedTuple):
    name: str
    id: int
    is_rbd: bool
    erasure: bool
    ec_overwrites: bool
    max_avail: Optional[int]


def pools_from_maps(osd_map: Dict[str, Any], df: Dict[str, Any]) -> Dict[str, PoolInfo]:
    avail = {p['name']: p.get('stats', {}).get('max_avail')
             for p in (df or {}).get('pools', [])}
    pools: Dict[str, PoolInfo] = {}
    for p in (osd_map or {}).get('pools', []):
        name = p['pool_name']
        pools[name] = PoolInfo(
            name=name, id=p['pool'],
            is_rbd='rbd' in p.get('application_metadata', {}),
            erasure=p.get('type') == POOL_TYPE_ERASURE,
            ec_overwrites='ec_overwrites' in p.get('flags_names', ''),
            max_avail=avail.get(name))
    return pools


def validate_layout(layout: Layout) -> None:
    """Reject layout values librbd would refuse, with a line saying why."""
    if layout.object_size is not None:
        if not is_power_of_two(layout.object_size) or not (
                MIN_OBJECT_SIZE <= layout.object_size <= MAX_OBJECT_SIZE):
            raise InvalidArgument(
                'object size {} is invalid: use a power of two from 4K to 32M'.format(
                    layout.object_size))
    if layout.stripe_unit is not None:
        if not is_power_of_two(layout.stripe_unit) or layout.stripe_unit < MIN_OBJECT_SIZE:
            raise InvalidArgument('stripe unit {} is invalid: use a power of two of at '
                                  'least 4K'.format(layout.stripe_unit))
        if layout.object_size is not None and layout.object_size % layout.stripe_unit:
            raise InvalidArgument('stripe unit {} is not a factor of the object size {}'.format(
                layout.stripe_unit, layout.object_size))
    if layout.stripe_count is not None and not 1 <= layout.stripe_count <= MAX_STRIPE_COUNT:
        raise InvalidArgument('stripe count {} is invalid: use 1 to {}'.format(
            layout.stripe_count, MAX_STRIPE_COUNT))
    if layout.features is not None:
        for f in layout.features:
            if f not in FEATURES:
                raise InvalidArgument('unknown feature {!r}: use a comma list of {}'.format(
                    f, ', '.join(sorted(FEATURES))))
        need = {'object-map': 'exclusive-lock', 'fast-diff': 'object-map',
                'journaling': 'exclusive-lock'}
        for f, dep in need.items():
            if f in layout.features and dep not in layout.features:
                raise InvalidArgument('feature {} needs {}: add it to --features'.format(f, dep))
    if layout.data_pool is not None:
        validate_name('data pool', layout.data_pool)


def _check_pool(pools: Dict[str, PoolInfo], name: str, role: str,
                blockers: List[Blocked], data: bool = False) -> Optional[PoolInfo]:
    pool = pools.get(name)
    if pool is None:
        blockers.append(Blocked("{} pool '{}' does not exist: create it or check the "
                                'spec'.format(role, name), errno.ENOENT))
        return None
    if data:
        if pool.erasure and not pool.ec_overwrites:
            blockers.append(Blocked(
                "data pool '{}' is erasure-coded without overwrites: run ceph osd pool set "
                '{} allow_ec_overwrites true'.format(name, name), errno.EINVAL))
        return pool
    if pool.erasure:
        blockers.append(Blocked(
            "{} pool '{}' is erasure-coded: image headers need a replicated pool; give the "
            'EC pool as --data-pool'.format(role, name), errno.EINVAL))
    elif not pool.is_rbd:
        blockers.append(Blocked(
            "{} pool '{}' is not an RBD pool: run rbd pool init {}".format(role, name, name),
            errno.EINVAL))
    return pool


def reusable(info: Optional[ImageInfo]) -> Optional[ImageInfo]:
    """What an add's preflight saw of a source, for the prepare's preflight
    to reuse while the source's header is unchanged; None when it must look
    in full.

    Only a plain image qualifies: no snapshot (a clone needs one, and
    cloning writes the parent's header, but a format 1 clone of a snapshot
    protected earlier does not), no client (prepare refuses one itself, so
    the reuse need not list them), not migrating, not mirrored.
    """
    if (info is None or info.header_version is None or info.snapshots or info.watchers
            or info.descendants or info.v1_clones or info.descendants_error is not None
            or info.migrating or info.mirror is not None):
        return None
    return info


def _fits(pool: Optional[PoolInfo], used: int) -> bool:
    """``used`` bytes fit in what ``pool`` has available (unknown: they do)."""
    return pool is None or pool.max_avail is None or used <= pool.max_avail


def find_blockers(adapter: RbdPort, pools: Dict[str, PoolInfo], source: ImageSpec,
                  dest: ImageSpec, layout: Layout, allow_descendants: bool,
                  seen: Optional[ImageInfo] = None, quick: bool = False
                  ) -> Tuple[List[Blocked], Optional[ImageInfo]]:
    """Every blocker found (none: prepare may run), and the source's info.

    ``seen``: what an earlier look found (``reusable``); it is the info
    returned, with no image opened, if the source's header has not changed
    since.  ``quick``: a plain source is read raw, not opened (a batch's
    listing; ``RbdPort.plain_image_info``).  Either way its clients are not
    listed: librbd's prepare refuses a source with clients (EBUSY), and the
    caller then looks in full.
    """
    blockers: List[Blocked] = []
    if source == dest and layout == Layout():
        blockers.append(Blocked(
            "source and destination are both '{}' and no layout option was given: "
            'nothing to migrate'.format(source), errno.EINVAL))
        return blockers, None
    src_pool = _check_pool(pools, source.pool, 'source', blockers)
    dst_pool = _check_pool(pools, dest.pool, 'destination', blockers)
    data_pool = None
    if layout.data_pool is not None:
        data_pool = _check_pool(pools, layout.data_pool, 'data', blockers, data=True)
    space_pool = data_pool or dst_pool
    info: Optional[ImageInfo] = None
    if src_pool is not None:
        if not adapter.namespace_exists(source.pool, source.namespace):
            blockers.append(Blocked("source namespace '{}' does not exist in pool '{}'".format(
                source.namespace, source.pool), errno.ENOENT))
        else:
            try:
                if seen is not None and seen.header_version is not None and \
                        adapter.header_unchanged(source, seen.id, seen.header_version):
                    info = seen
                elif quick:
                    info = adapter.plain_image_info(source)
                    if info is not None and not _fits(space_pool, info.used_bytes):
                        info = None         # what it really uses: the full look
                if info is None:
                    info = adapter.image_info(source)
            except NotFound:
                blockers.append(Blocked("source image '{}' does not exist: check the "
                                        'spec with rbd ls'.format(source), errno.ENOENT))
    if dst_pool is not None:
        if not adapter.namespace_exists(dest.pool, dest.namespace):
            blockers.append(Blocked(
                "destination namespace '{}' does not exist in pool '{}': run rbd namespace "
                'create {}/{}'.format(dest.namespace, dest.pool, dest.pool, dest.namespace),
                errno.ENOENT))
        elif dest != source and adapter.image_exists(dest):
            blockers.append(Blocked("destination image '{}' already exists: choose another "
                                    'name or remove it'.format(dest), errno.EEXIST))
        elif dest != source:
            trashed = adapter.trashed_source(dest)
            if trashed is not None:
                blockers.append(Blocked(
                    "'{}' is the name of the source of another live migration (parked in "
                    'the trash as id {}; its cancel needs the name back): choose another '
                    'name or finish that migration first'.format(dest, trashed),
                    errno.EEXIST))
    if info is None:
        return blockers, None
    if info.migrating:
        blockers.append(Blocked("source image '{}' is already being migrated: see rbd "
                                'migration status or ceph rbd livemigrate ls'.format(source),
                                errno.EBUSY))
    if info.watchers:
        blockers.append(Blocked(watchers_reason(str(source), info.watchers), errno.EBUSY,
                                wait=True))
    blockers += image_blockers(source, dest, layout, info, allow_descendants)
    if space_pool is not None and not _fits(space_pool, info.used_bytes):
        blockers.append(Blocked(
            "pool '{}' has {} bytes available but the image uses {}: free space or add "
            'OSDs'.format(space_pool.name, space_pool.max_avail, info.used_bytes),
            errno.ENOSPC))
    return blockers, info


def watchers_reason(source: str, addrs: List[str], then: str = 'the task waits until they '
                    'close') -> str:
    """What a task waiting for its source's clients says (add, prepare,
    recheck), or with ``then`` what a command refused for them says."""
    return "source image '{}' is open by {} client(s) ({}): stop them; {}".format(
        source, len(addrs), ', '.join(addrs[:3]), then)


def image_blockers(source: ImageSpec, dest: ImageSpec, layout: Layout, info: ImageInfo,
                   allow_descendants: bool) -> List[Blocked]:
    """What about the source image itself makes prepare fail or do harm."""
    out: List[Blocked] = []
    if source == dest and layout == Layout(flatten=True) and not info.has_parent:
        out.append(Blocked("'{}' is not a clone: --flatten alone has nothing to do".format(
            source), errno.EINVAL))
    args = prepare_args(layout, info)
    object_size = layout.object_size or info.object_size
    stripe_unit = args.stripe_unit or info.stripe_unit
    if stripe_unit > object_size or object_size % stripe_unit:
        out.append(Blocked(
            'stripe unit {} is not a factor of the object size {}{}: give a smaller '
            '--stripe-unit or a larger --object-size'.format(
                stripe_unit, object_size,
                '' if layout.object_size else " (the source's)"), errno.EINVAL))
    if info.has_parent and layout.features is not None and 'layering' not in layout.features:
        out.append(Blocked(
            "'{}' is a clone, which cannot exist without the layering feature: add layering "
            'to --features (or flatten the image first)'.format(source), errno.EINVAL))
    mirror = info.mirror
    if mirror is not None:
        disable = 'rbd mirror image disable {}'.format(source)
        if not mirror.primary:
            out.append(Blocked(
                "'{}' is a non-primary mirror image (a read-only copy of a peer's): migrate "
                'the primary image instead, or promote this one first'.format(source),
                errno.EROFS))
        elif mirror.mode == MirrorMode.SNAPSHOT:
            out.append(Blocked(
                "'{}' is mirrored in snapshot mode, and librbd cannot migrate an image with "
                'mirror snapshots: run {}, add again, and enable mirroring on the destination '
                'after commit (the peer then resyncs fully)'.format(source, disable),
                errno.EBUSY))
        else:
            out.append(Blocked(
                "'{}' is mirrored in journal mode, which prepare would silently switch off "
                '(the peer would resync fully): run {}, add again, and enable mirroring on '
                'the destination after commit'.format(source, disable), errno.EBUSY))
    if info.descendants_error is not None and not allow_descendants:
        out.append(Blocked(
            "cannot tell whether '{}' has clones ({}): fix that, or add with "
            '--allow-descendants if you know none is open read-only'.format(
                source, info.descendants_error), errno.EIO))
    if info.descendants and not allow_descendants:
        out.append(Blocked(
            "source image '{}' is the parent of {} clone(s) ({}): make sure none is open "
            'read-only and add with --allow-descendants'.format(
                source, len(info.descendants), ', '.join(info.descendants[:3])), errno.EBUSY))
    if info.v1_clones and source.namespace:
        out.append(Blocked(
            "'{}' is the parent of clone(s) made with clone format 1 ({}), which librbd cannot "
            'move out of a namespace (Pacific aborts the process): flatten them first '
            '(rbd flatten {})'.format(source, ', '.join(info.v1_clones[:3]),
                                      info.v1_clones[0]), errno.EINVAL))
    return out
