"""
Raw reads and writes of librbd's objects through librados.

What librbd itself keeps in a pool, read without opening an image: the
directory (``rbd_directory``: name -> id), each image's header object
(``rbd_header.<id>``: its migration header, snapshot records, image-meta
keys), the trash (``rbd_trash``) and the mirroring directory.  An image in
the middle of an abort cannot be opened (EROFS), and an open by name may
find another image than the one a task tracks by id, so the migration's
state is read here.  The bytes are decoded by ``rbd_decode``; these
functions only do the I/O and raise rados's errors (the caller translates).
"""

import errno
import logging
import struct
from typing import Dict, List, Optional, Tuple

import rados

from .interface import INTENT_KEY, End, Intent, MigrationHeader, TrashSource
from .rbd_decode import (HEADER_KEYS, SNAPSHOT_KEY_PREFIX, decode_dir_entry, decode_intent,
                         decode_migration_spec, decode_trash_entry, decode_trash_source,
                         encode_str, get_features_arg, header_oid, is_unprotected,
                         metadata_set_arg, snap_id_arg, snap_id_of_key,
                         snapshot_ns_and_children)

log = logging.getLogger(__name__)

# the most keys one omap read returns (a longer list is read in pages, or
# taken as "unsure")
OMAP_PAGE = 1024


def omap_get(io: 'rados.Ioctx', oid: str, key: str) -> Optional[bytes]:
    """One omap value of ``oid`` (None: no such key or object)."""
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals_by_keys(op, (key,))
        try:
            io.operate_read_op(op, oid)
        except rados.ObjectNotFound:
            return None
        for _, value in it:
            return bytes(value)
    return None


def dir_lookup(io: 'rados.Ioctx', name: str) -> Optional[str]:
    """The id the image name resolves to now (the pool's rbd_directory)."""
    value = omap_get(io, 'rbd_directory', 'name_' + name)
    if value is None:
        return None
    return decode_dir_entry(value)


def header_exists(io: 'rados.Ioctx', image_id: str) -> bool:
    try:
        io.stat(header_oid(image_id))
        return True
    except rados.ObjectNotFound:
        return False


def version_by_name(io: 'rados.Ioctx', name: str) -> Optional[Tuple[str, int]]:
    """The id ``name`` resolves to and its header object's version (None:
    not a format 2 image, or not readable now)."""
    try:
        image_id = dir_lookup(io, name)
        if image_id is None:
            return None
        io.stat(header_oid(image_id))
        return image_id, int(io.get_last_version())
    except rados.Error:
        return None


def read_plain_header(io: 'rados.Ioctx', image_id: str) -> Optional[Tuple[Dict[str, bytes], int]]:
    """The ``HEADER_KEYS`` values of image ``image_id``'s header object and
    its version, in one read; None when there is no such object or it has a
    snapshot record (not a plain image)."""
    with rados.ReadOpCtx() as op:
        vals, _ = io.get_omap_vals_by_keys(op, HEADER_KEYS)
        snaps, _ = io.get_omap_vals(op, '', SNAPSHOT_KEY_PREFIX, 1)
        try:
            io.operate_read_op(op, header_oid(image_id))
        except rados.ObjectNotFound:
            return None
        version = int(io.get_last_version())
        header = {k: bytes(v) for k, v in vals}
        if any(True for _ in snaps):
            return None
    return header, version


def read_header(io: 'rados.Ioctx', image_id: str) -> Optional[MigrationHeader]:
    """The migration header of image ``image_id``; None if it has none."""
    try:
        _, out = io.execute(header_oid(image_id), 'rbd', 'migration_get', b'')
    except rados.ObjectNotFound:
        return None
    except rados.Error as e:
        if abs(getattr(e, 'errno', 0) or 0) == errno.EINVAL:   # not migrating
            return None
        raise
    return decode_migration_spec(bytes(out))


def read_intent(io: 'rados.Ioctx', image_id: str) -> Optional[Intent]:
    """The module's intent key on image ``image_id`` (None: none, not ours,
    or no such image)."""
    try:
        _, out = io.execute(header_oid(image_id), 'rbd', 'metadata_get',
                            encode_str(INTENT_KEY))
    except rados.ObjectNotFound:
        return None
    return decode_intent(bytes(out))


def write_intent(io: 'rados.Ioctx', image_id: str, intent: Intent) -> None:
    """``rbd image-meta set`` of the intent key, as one write op on the
    header object that fails (ENOENT) instead of creating it when the
    image is gone (cls ``metadata_set`` alone would create it)."""
    with rados.WriteOpCtx() as op:
        op.execute('rbd', 'get_features', get_features_arg())
        op.execute('rbd', 'metadata_set', metadata_set_arg(INTENT_KEY, intent.dumps()))
        io.operate_write_op(op, header_oid(image_id))


def remove_intent(io: 'rados.Ioctx', image_id: str) -> None:
    """Remove the intent key, in the same one write op (ENOENT: no image)."""
    with rados.WriteOpCtx() as op:
        op.execute('rbd', 'get_features', get_features_arg())
        op.execute('rbd', 'metadata_remove', encode_str(INTENT_KEY))
        io.operate_write_op(op, header_oid(image_id))


def trash_source(io: 'rados.Ioctx', image_id: str) -> Optional[TrashSource]:
    """The source of the trash entry of ``image_id`` (None: not in the trash)."""
    value = omap_get(io, 'rbd_trash', 'id_' + image_id)
    if value is None:
        return None
    return decode_trash_source(value)


def trash_entries(io: 'rados.Ioctx') -> List[Tuple[str, int, str]]:
    """(image id, source, name) of each trash entry, read from the rbd_trash omap.

    Pacific's ``RBD.trash_list`` raises IndexError on migration entries (its
    source enum lacks them), so the entries are decoded here.
    """
    out: List[Tuple[str, int, str]] = []
    start = ''
    while True:
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, start, 'id_', OMAP_PAGE)
            try:
                io.operate_read_op(op, 'rbd_trash')
            except rados.ObjectNotFound:
                return out
            batch = list(it)
        for key, value in batch:
            try:
                source, name = decode_trash_entry(bytes(value))
                out.append((key[len('id_'):], source, name))
            except (IndexError, struct.error):
                log.debug('undecodable trash entry %s', key)
        if len(batch) < OMAP_PAGE:
            return out
        start = batch[-1][0]


def snapshot_ids(io: 'rados.Ioctx', oid: str) -> List[int]:
    """The ids of the snapshot records of header object ``oid`` (at most a page)."""
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals(op, SNAPSHOT_KEY_PREFIX, SNAPSHOT_KEY_PREFIX, OMAP_PAGE)
        io.operate_read_op(op, oid)
        return [snap_id_of_key(k) for k, _ in it]


def snapshot_record(io: 'rados.Ioctx', oid: str, snap_id: int) -> Tuple[int, int]:
    """(namespace type, child count) of one snapshot record (``snapshot_get``)."""
    _, out = io.execute(oid, 'rbd', 'snapshot_get', snap_id_arg(snap_id))
    return snapshot_ns_and_children(bytes(out))


def may_have_clones(io: 'rados.Ioctx', image_id: str) -> bool:
    """False only when no snapshot of format 2 image ``image_id`` can have
    a clone: none has a child (clone v2 counts them in the snapshot record)
    and none is protected (clone v1 needs a protected snapshot).  True when
    unsure (unreadable header, more snapshots than one listing returns)."""
    oid = header_oid(image_id)
    try:
        snap_ids = snapshot_ids(io, oid)
        if len(snap_ids) >= OMAP_PAGE:
            return True
        for snap_id in snap_ids:
            if snapshot_record(io, oid, snap_id)[1]:
                return True
            _, out = io.execute(oid, 'rbd', 'get_protection_status', snap_id_arg(snap_id))
            if not is_unprotected(bytes(out)):
                return True
    except (rados.Error, struct.error):
        return True
    return False


def read_end(io: Optional['rados.Ioctx'], image_id: Optional[str], name_id: Optional[str]) -> End:
    """One end of a migration: image ``image_id`` in ``io``'s pool and
    namespace (None: the pool is gone), ``name_id`` what its name resolves to."""
    if io is None:
        return End(image_id, None)
    pool_id = int(io.get_pool_id())
    if image_id is None:
        return End(None, name_id, pool_id=pool_id)
    exists = header_exists(io, image_id)
    return End(image_id=image_id, name_id=name_id, exists=exists,
               header=read_header(io, image_id) if exists else None,
               trash=trash_source(io, image_id), pool_id=pool_id)
