"""
The adapter's looks: what the cluster holds now, read on the control client.

``Reads`` is the reading half of ``rbd_adapter.Adapter``: pools, images,
an image's info for preflight, both ends of a migration (``observe``, from
raw metadata: see ``rbd_objects``), the migrations parked in the trash
(orphans) and the lookups a waiting task repeats.  Nothing here changes
the cluster.
"""

import logging
import struct
from typing import Any, Callable, Dict, List, Optional, Tuple

import rados
import rbd

from .errors import InvalidArgument, LiveMigrateError, NotFound, Transient
from .interface import (End, HeaderType, ImageInfo, MigrationRef, Mirror, MirrorMode,
                        Observation, OrphanKind, TrashSource)
from .rbd_clients import (ALL_ERRORS, RADOS_ERRORS, RBD_ERRORS, Client, ControlClient,
                          open_image, open_ioctx, open_ioctx_or_none, translate)
from .rbd_decode import plain_info
from .rbd_objects import (dir_lookup, header_exists, may_have_clones, omap_get,
                          read_end, read_header, read_intent, read_plain_header, trash_entries,
                          version_by_name)
from .spec import ImageSpec, PoolSpec

log = logging.getLogger(__name__)

# librbd.h values the Pacific binding does not export
OPERATION_FEATURE_MIGRATION = getattr(rbd, 'RBD_OPERATION_FEATURE_MIGRATION', 1 << 4)
OPERATION_FEATURE_CLONE_CHILD = getattr(rbd, 'RBD_OPERATION_FEATURE_CLONE_CHILD', 1 << 1)
MIRROR_IMAGE_DISABLED = getattr(rbd, 'RBD_MIRROR_IMAGE_DISABLED', 0)
CONFIG_SOURCE_POOL = getattr(rbd, 'RBD_CONFIG_SOURCE_POOL', 1)


class Reads(ControlClient):
    """What the cluster holds now (``RbdPort``'s reads), on the control client."""

    # -- pools and images ----------------------------------------------

    def pool_exists(self, pool: str) -> bool:
        with self.controlled() as c:
            return bool(c.handle.pool_exists(pool))

    def probe_prepare_import(self, pool: str,
                             probe: Callable[[Callable[[str], Any]], bool]) -> bool:
        """``probe(prepare_import)`` with ``migration_prepare_import`` of a spec
        into ``pool`` (``compat.cross_cluster_import``: the spec fails before
        any image is created)."""
        with self.controlled() as c, open_ioctx(c, PoolSpec(pool)) as io:
            return probe(lambda spec: rbd.RBD().migration_prepare_import(
                spec, io, 'rbd_livemigrate-probe-dest'))

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        if not namespace:
            return True
        with self.controlled() as c, open_ioctx(c, PoolSpec(pool)) as io:
            return namespace in rbd.RBD().namespace_list(io)

    def pool_name(self, pool_id: int) -> str:
        with self.controlled() as c:
            try:
                return str(c.handle.pool_reverse_lookup(pool_id))
            except rados.Error as e:
                raise translate(e, 'no pool with id {}'.format(pool_id))

    def list_images(self, spec: PoolSpec) -> List[str]:
        what = "cannot list images of '{}'".format(spec)
        with self.controlled() as c, open_ioctx(c, spec, what, RBD_ERRORS) as io:
            return sorted(rbd.RBD().list(io))

    def size_of(self, spec: ImageSpec) -> Optional[int]:
        with self.controlled() as c, open_ioctx(c, spec) as io:
            try:
                with rbd.Image(io, spec.image, read_only=True) as image:
                    return int(image.size())
            except rbd.Error:
                return None

    def image_exists(self, spec: ImageSpec) -> bool:
        """By name: one omap lookup in the pool's directory (a format 1 image:
        its header object), never a listing of the whole pool."""
        what = "cannot look up '{}'".format(spec)
        with self.controlled() as c, open_ioctx(c, spec, what, RADOS_ERRORS) as io:
            if dir_lookup(io, spec.image) is not None:
                return True
            try:
                io.stat(spec.image + '.rbd')
                return True
            except rados.ObjectNotFound:
                return False

    def image_id(self, spec: ImageSpec) -> Optional[str]:
        what = "cannot look up '{}'".format(spec)
        with self.controlled() as c, open_ioctx_or_none(c, spec, what, RADOS_ERRORS) as io:
            return None if io is None else dir_lookup(io, spec.image)

    def pool_config(self, spec: PoolSpec) -> Dict[str, str]:
        """The rbd options set on the pool itself (``rbd config pool set``)."""
        what = "cannot read the rbd options of pool '{}'".format(spec)
        with self.controlled() as c, open_ioctx_or_none(c, spec, what, RBD_ERRORS) as io:
            if io is None:
                return {}
            return {e['name']: str(e['value']) for e in rbd.RBD().config_list(io)
                    if e.get('source') == CONFIG_SOURCE_POOL and e.get('value')}

    # -- an image, for preflight -----------------------------------------

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        what = "cannot inspect image '{}'".format(spec)
        with self.controlled() as c, open_ioctx(c, spec, what, RBD_ERRORS) as io:
            # the header's version first: a change made while the rest
            # is read leaves a version that no later look matches
            version = version_by_name(io, spec.image)
            try:
                image = rbd.Image(io, spec.image, read_only=True)
            except rbd.ImageNotFound:
                raise NotFound("image '{}' does not exist".format(spec))
            with image:
                return _image_info(c, image, version, with_used)

    def plain_image_info(self, spec: ImageSpec) -> Optional[ImageInfo]:
        """A plain image's info read from its directory entry, its header
        object (one read) and the mirroring object (one read), with no image
        opened; None when it needs ``image_info``.

        Plain: format 2 with no snapshot, parent, migration or other
        operation feature, journaling or mirroring entry.  Its clients are
        not listed (librbd's prepare refuses them, EBUSY), and the space it
        uses is taken as its size.
        """
        with self.controlled() as c, open_ioctx_or_none(c, spec) as io:
            if io is None:
                return None
            try:
                image_id = dir_lookup(io, spec.image)
                if image_id is None:
                    return None
                read = read_plain_header(io, image_id)
                if read is None:
                    return None
                header, version = read
                info = plain_info(image_id, header, int(io.get_pool_id()), version)
                if info is None or omap_get(io, 'rbd_mirroring', 'image_' + image_id):
                    return None
                return info
            except (rados.Error, struct.error, IndexError):
                return None             # the full look says what is wrong

    def header_unchanged(self, spec: ImageSpec, image_id: str, version: int) -> bool:
        """One directory lookup and one stat of the header object.

        Every change librbd makes to an image's metadata (size, features,
        snapshots and their children, protection, locks, a migration, the
        parent) writes its header object, which moves its version on; a
        client that opens the image only watches it, which does not."""
        with self.controlled() as c, open_ioctx_or_none(c, spec) as io:
            if io is None:
                return False
            return version_by_name(io, spec.image) == (image_id, version)

    def watchers(self, spec: ImageSpec) -> List[str]:
        """The addresses of the clients that have ``spec`` open (one open)."""
        what = "cannot list the clients of '{}'".format(spec)
        with self.controlled() as c, open_image(c, spec, what, read_only=True) as image:
            return [w.get('addr', '?') for w in image.watchers_list()]

    def descendants(self, spec: ImageSpec) -> List[str]:
        what = "cannot list the clones of '{}'".format(spec)
        with self.controlled() as c, open_ioctx(c, spec, what, ALL_ERRORS) as io:
            # a clone needs a snapshot with a child (clone v2) or a
            # protected one (clone v1): a look at the header's snapshot
            # records first (opening the image and listing clones, which
            # reads every pool, costs far more)
            image_id = dir_lookup(io, spec.image)
            if image_id is not None and not may_have_clones(io, image_id):
                return []
            with rbd.Image(io, spec.image, read_only=True) as image:
                if not list(image.list_snaps()):
                    # no snapshot, no clone: and listing them reads every pool
                    return []
                return ['{}'.format(ImageSpec(d['pool'], d.get('pool_namespace', ''),
                                              d['image']))
                        for d in image.list_descendants()]

    # -- a migration, from raw metadata ------------------------------------

    def observe(self, source: ImageSpec, dest: ImageSpec, source_id: Optional[str],
                dest_id: Optional[str]) -> Observation:
        """Both ends of the migration ``source`` -> ``dest``, by image id.

        Reads raw metadata (directory, header objects, trash entries) rather
        than opening images: an image in the middle of an abort cannot be
        opened (EROFS), and an open by name may find another image.  The
        destination id, when not recorded, is learned from the source's
        migration header (librbd writes it there before the destination
        exists) or from a destination header that points to the source id.
        """
        what = "cannot read the migration state of '{}' -> '{}'".format(source, dest)
        with self.controlled() as c, \
                open_ioctx_or_none(c, source, what, RADOS_ERRORS) as src_io, \
                open_ioctx_or_none(c, dest, what, RADOS_ERRORS) as dst_io:
            s_name = dir_lookup(src_io, source.image) if src_io else None
            sid = source_id or s_name
            s_end = read_end(src_io, sid, s_name)
            did = dest_id
            if did is None and s_end.header is not None and \
                    s_end.header.kind == HeaderType.SRC:
                did = s_end.header.image_id
            d_name = s_name if source == dest else (
                dir_lookup(dst_io, dest.image) if dst_io else None)
            intent = None
            if did is None and d_name is not None and d_name != sid and dst_io:
                h = read_header(dst_io, d_name)
                if h is not None and h.kind == HeaderType.DST and h.image_id == sid:
                    did = d_name
                elif h is None:
                    # both headers gone (a commit at its end): the intent
                    # key prepare copied from the source still names it
                    intent = read_intent(dst_io, d_name)
                    if intent is not None and intent.names_source(sid):
                        did = d_name
            d_end = read_end(dst_io, did, d_name)
            if intent is not None and did == d_name:
                d_end = d_end._replace(intent=intent)
            return Observation(s_end, d_end)

    def observe_import(self, dest: ImageSpec, dest_id: Optional[str]) -> Observation:
        """An import has no source image: only the destination is read (by
        the recorded id, else by what its name resolves to now)."""
        what = "cannot read the import state of '{}'".format(dest)
        with self.controlled() as c, open_ioctx_or_none(c, dest, what, RADOS_ERRORS) as io:
            name_id = dir_lookup(io, dest.image) if io else None
            end = read_end(io, dest_id or name_id, name_id)
            if io is not None and dest_id is None and end.exists and end.header is None:
                # committed (the header gone) before the record had the id:
                # the intent key written before the commit names the task
                end = end._replace(intent=read_intent(io, name_id or ''))
            return Observation(End(), end)

    def read_image(self, spec: ImageSpec) -> End:
        what = "cannot read image '{}'".format(spec)
        with self.controlled() as c, open_ioctx(c, spec, what, RADOS_ERRORS) as io:
            name_id = dir_lookup(io, spec.image)
            return read_end(io, name_id, name_id)

    # -- orphans -------------------------------------------------------

    def find_migrations(self, pools: List[str]) -> List[MigrationRef]:
        """Every migration source parked in the trash of these pools."""
        refs: List[MigrationRef] = []
        with self.controlled() as c:
            for pool in pools:
                with open_ioctx_or_none(c, PoolSpec(pool)) as io:
                    if io is None:
                        continue
                    try:
                        namespaces = [''] + list(rbd.RBD().namespace_list(io))
                        for ns in namespaces:
                            io.set_namespace(ns)
                            for image_id, source, name in trash_entries(io):
                                if source != TrashSource.MIGRATION.value:
                                    continue
                                ref = _migration_ref(c, io, pool, ns, image_id, name)
                                if ref is not None:
                                    refs.append(ref)
                    except (rados.Error, rbd.Error) as e:
                        log.warning('cannot scan pool %s for migrations: %s', pool, e)
            return refs

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        what = "cannot read the trash of '{}'".format(spec.pool)
        with self.controlled() as c, open_ioctx_or_none(c, spec, what, RADOS_ERRORS) as io:
            if io is None:
                return None
            for image_id, source, name in trash_entries(io):
                if source == TrashSource.MIGRATION.value and name == spec.image:
                    return image_id
            return None


def _image_info(c: Client, image: 'rbd.Image', version: Optional[Tuple[str, int]],
                with_used: bool) -> ImageInfo:
    """``ImageInfo`` of an open image; ``version``: the id and header
    version its name resolved to just before it was opened."""
    image_id = image.id()
    if version is not None and version[0] != image_id:
        version = None          # renamed or replaced meanwhile
    size = image.size()
    info = image.stat()
    features = image.features()
    watchers = [w.get('addr', '?') for w in image.watchers_list()]
    all_snaps = list(image.list_snaps())
    descendants, v1_clones, descendants_error = _clones(c, image, all_snaps)
    snaps = [s['name'] for s in all_snaps]
    used = size
    if with_used and features & rbd.RBD_FEATURE_FAST_DIFF:
        used = _used_bytes(image, size)
    migrating = bool(image.op_features() & OPERATION_FEATURE_MIGRATION)
    try:
        image.parent_id()
        has_parent = True
    except rbd.ImageNotFound:
        has_parent = False
    return ImageInfo(
        id=image_id, size=size, object_size=1 << info['order'],
        stripe_unit=image.stripe_unit(), stripe_count=image.stripe_count(),
        features=features, data_pool_id=image.data_pool_id(),
        watchers=watchers, descendants=descendants, snapshots=snaps,
        used_bytes=used, migrating=migrating, has_parent=has_parent,
        mirror=_mirror(image), v1_clones=v1_clones,
        descendants_error=descendants_error,
        header_version=version[1] if version is not None else None)


def _clones(c: Client, image: 'rbd.Image', all_snaps: List[Dict[str, Any]]
            ) -> Tuple[List[str], List[str], Optional[str]]:
    """The clones of ``image`` (none without a snapshot), those of them
    made with clone format 1, and why they could not be listed (a
    transient error raises)."""
    try:
        if all_snaps:       # a clone's parent is a snapshot of it
            return _descendants(c, image) + (None,)
    except (rbd.Error, rados.Error) as e:
        err = translate(e, 'cannot list its clones')
        if isinstance(err, Transient):
            raise err
        return [], [], str(err)
    except LiveMigrateError as e:     # a clone's pool is gone
        return [], [], str(e)
    return [], [], None


def _descendants(c: Client, image: 'rbd.Image') -> Tuple[List[str], List[str]]:
    """The clones of ``image`` (specs), and those made with clone format 1
    (no clone-child op feature: librbd tracks them in the old way)."""
    specs: List[str] = []
    v1: List[str] = []
    for d in image.list_descendants():
        spec = str(ImageSpec(d['pool'], d.get('pool_namespace', ''), d['image']))
        specs.append(spec)
        if d.get('trash'):
            continue
        with open_ioctx(c, PoolSpec(d['pool'], d.get('pool_namespace', ''))) as io:
            with rbd.Image(io, image_id=d['id'], read_only=True) as child:
                if not child.op_features() & OPERATION_FEATURE_CLONE_CHILD:
                    v1.append(spec)
    return specs, v1


def _mirror(image: 'rbd.Image') -> Optional[Mirror]:
    """The image's mirroring; an unreadable state raises (preflight refuses
    rather than guess)."""
    info = image.mirror_image_get_info()
    if info.get('state', MIRROR_IMAGE_DISABLED) == MIRROR_IMAGE_DISABLED:
        return None
    mode = image.mirror_image_get_mode()
    try:
        return Mirror(MirrorMode(mode), bool(info.get('primary')))
    except ValueError:
        raise InvalidArgument('unknown mirroring mode {}'.format(mode))


def _used_bytes(image: 'rbd.Image', size: int) -> int:
    """Allocated bytes of the head (whole objects), from the object map."""
    total = [0]

    def cb(offset: int, length: int, exists: bool) -> int:
        if exists:
            total[0] += length
        return 0
    try:
        image.diff_iterate(0, size, None, cb, include_parent=False, whole_object=True)
    except rbd.Error:
        return size
    return total[0]


def _migration_ref(c: Client, io: 'rados.Ioctx', pool: str, ns: str,
                   image_id: str, name: str) -> Optional[MigrationRef]:
    """The migration a source in the trash belongs to (from its header)."""
    source = str(ImageSpec(pool, ns, name))
    exists = header_exists(io, image_id)
    header = read_header(io, image_id) if exists else None
    if header is None or header.kind != HeaderType.SRC:
        # header object without a migration header: a prepare cut before it
        # wrote one (adopt the source to put it back); no header object: a
        # commit cut after removing it (only the trash entry is left)
        return MigrationRef(source=source, destination='', source_image_id=image_id,
                            kind=OrphanKind.HALF_PREPARED if exists
                            else OrphanKind.HALF_COMMITTED)
    try:
        dest_pool = c.handle.pool_reverse_lookup(header.pool_id)
    except rados.Error:
        dest_pool = str(header.pool_id)
    return MigrationRef(source=source,
                        destination=str(ImageSpec(dest_pool, header.namespace,
                                                  header.image_name)),
                        source_image_id=image_id, dest_image_id=header.image_id)
