"""
cls_rbd's on-disk encodings, decoded and encoded by hand, without librados.

The adapter reads some of librbd's metadata raw (an image in the middle of
an abort cannot be opened, and Pacific's binding cannot list migration
trash entries): the pool's ``rbd_directory``, an image's ``rbd_header.<id>``
omap values, the ``rbd_trash`` entries and the replies of the ``rbd``
object class methods.  This module turns those bytes into the interface's
values and builds the arguments of the class methods the adapter calls.
It does no I/O: ``tests/test_rbd_decode.py`` checks it with hand-built
bytes.

The layouts are Ceph's ``encode()`` (``src/cls/rbd/cls_rbd_types.cc``,
``src/cls/rbd/cls_rbd.cc``): integers little-endian, a string or a
bufferlist as its u32 length then its bytes, a versioned struct behind an
``ENCODE_START`` header of 6 bytes (version u8, compat u8, length u32).
"""

import struct
from typing import Dict, Optional, Tuple

from .interface import HeaderType, ImageInfo, Intent, MigrationHeader, MigState, TrashSource

# an ENCODE_START header: struct version (u8), compat version (u8), length (u32)
ENCODE_START_LEN = 6

CEPH_NOSNAP = (1 << 64) - 2
SNAP_NAMESPACE_TRASH = 2          # cls::rbd::SNAPSHOT_NAMESPACE_TYPE_TRASH
RBD_PROTECTION_STATUS_UNPROTECTED = 0
SNAPSHOT_KEY_PREFIX = 'snapshot_'  # a header's snapshot records: snapshot_<id, %016x>

# librbd.h RBD_FEATURE_* a plain image's header is judged by
RBD_FEATURE_STRIPINGV2 = 1 << 1
RBD_FEATURE_JOURNALING = 1 << 6
RBD_FEATURE_DATA_POOL = 1 << 7

# the header keys a plain image's info is read from (cls_rbd's names)
HEADER_KEYS = ('size', 'order', 'features', 'stripe_unit', 'stripe_count', 'data_pool_id',
               'parent', 'migration', 'op_features')


# -- object names ------------------------------------------------------------

def header_oid(image_id: str) -> str:
    return 'rbd_header.' + image_id


def id_oid(name: str) -> str:
    return 'rbd_id.' + name


def object_map_oid(image_id: str, snap_id: int) -> str:
    return 'rbd_object_map.{}.{:016x}'.format(image_id, snap_id)


# -- primitives --------------------------------------------------------------

def encode_str(text: str) -> bytes:
    """A string (or a bufferlist of its UTF-8 bytes): u32 length, bytes."""
    data = text.encode('utf-8')
    return struct.pack('<I', len(data)) + data


def read_string(buf: bytes, off: int) -> Tuple[str, int]:
    """The string at ``off`` and the offset after it (struct.error if short)."""
    (n,) = struct.unpack_from('<I', buf, off)
    off += 4
    return buf[off:off + n].decode('utf-8', 'replace'), off + n


def snap_id_arg(snap_id: int) -> bytes:
    """The argument of ``snapshot_get``/``snapshot_remove``/``get_protection_status``."""
    return struct.pack('<Q', snap_id)


def snap_id_of_key(key: str) -> int:
    """The snapshot id of a header's ``snapshot_<id>`` omap key."""
    return int(key[len(SNAPSHOT_KEY_PREFIX):], 16)


def get_features_arg() -> bytes:
    """``get_features`` of the head (snap id, read_only): a guard that fails
    ENOENT in a write op on a header object that does not exist."""
    return struct.pack('<QB', CEPH_NOSNAP, 1)


def metadata_set_arg(key: str, value: str) -> bytes:
    """``metadata_set``: a map<string, bufferlist> of one entry."""
    return struct.pack('<I', 1) + encode_str(key) + encode_str(value)


def dir_add_image_arg(name: str, image_id: str) -> bytes:
    return encode_str(name) + encode_str(image_id)


# -- decoders ----------------------------------------------------------------

def decode_migration_spec(buf: bytes) -> Optional[MigrationHeader]:
    """cls::rbd::MigrationSpec: ENCODE_START(v, compat, len), header_type (u8),
    pool_id (s64), pool_namespace, image_name, image_id, snap_seqs (map),
    overlap (u64), flatten, mirroring, state (u8), state_description,
    mirror_image_mode (u8, v2+), source_spec (string, v3+: an import's), ..."""
    try:
        version = buf[0]
        off = ENCODE_START_LEN
        kind = HeaderType(buf[off])
        off += 1
        (pool_id,) = struct.unpack_from('<q', buf, off)
        off += 8
        namespace, off = read_string(buf, off)
        name, off = read_string(buf, off)
        image_id, off = read_string(buf, off)
        (nsnaps,) = struct.unpack_from('<I', buf, off)
        off += 4 + 16 * nsnaps + 8 + 1             # snap_seqs, overlap, flatten
        mirroring = bool(buf[off])
        state = MigState.of(buf[off + 1])
        off += 2
        description, off = read_string(buf, off)
        mode = buf[off] if version >= 2 and off < len(buf) else 0
        source_spec = ''
        if version >= 3 and off + 5 <= len(buf):       # an import's source-spec
            source_spec, off = read_string(buf, off + 1)
    except (IndexError, ValueError, struct.error):
        return None
    return MigrationHeader(kind, pool_id, namespace, name, image_id, state, description,
                           mirroring, mode, source_spec)


def snapshot_ns_and_children(buf: bytes) -> Tuple[int, int]:
    """cls::rbd::SnapshotInfo: ENCODE_START, id (u64), snapshot_namespace
    (ENCODE_START, type u32, ...), name, image_size (u64), timestamp (utime_t),
    child_count (u32).  Raises struct.error when short."""
    off = ENCODE_START_LEN + 8
    (ns_len,) = struct.unpack_from('<I', buf, off + 2)
    (ns_type,) = struct.unpack_from('<I', buf, off + 6)
    _, off = read_string(buf, off + 6 + ns_len)
    (children,) = struct.unpack_from('<I', buf, off + 16)
    return ns_type, children


def is_unprotected(buf: bytes) -> bool:
    """The reply of ``get_protection_status`` (u8) says unprotected."""
    return buf[:1] == bytes([RBD_PROTECTION_STATUS_UNPROTECTED])


def decode_dir_entry(value: bytes) -> Optional[str]:
    """An ``rbd_directory`` ``name_<name>`` value: the image id (None: undecodable)."""
    try:
        return read_string(value, 0)[0]
    except struct.error:
        return None


def decode_trash_source(value: bytes) -> TrashSource:
    """The source of a cls::rbd::TrashImageSpec (ENCODE_START, source u8, ...)."""
    try:
        return TrashSource(value[ENCODE_START_LEN])
    except (IndexError, ValueError):
        return TrashSource.UNKNOWN


def decode_trash_entry(value: bytes) -> Tuple[int, str]:
    """cls::rbd::TrashImageSpec: ENCODE_START, source (u8), name (string), ...
    as (source, name); raises IndexError or struct.error when short."""
    name, _ = read_string(value, ENCODE_START_LEN + 1)
    return value[ENCODE_START_LEN], name


def decode_intent(out: bytes) -> Optional[Intent]:
    """The reply of ``metadata_get`` (a bufferlist) as the module's intent
    (None: undecodable or not one of ours)."""
    try:
        text, _ = read_string(out, 0)
    except struct.error:
        return None
    return Intent.loads(text)


def plain_info(image_id: str, header: Dict[str, bytes], pool_id: int,
               version: int) -> Optional[ImageInfo]:
    """``ImageInfo`` from a header's omap values (``HEADER_KEYS``), or None if
    the image is not plain (see ``Adapter.plain_image_info``).  Raises
    struct.error or IndexError on a value too short."""
    def le64(key: str, fmt: str = '<Q') -> int:
        return int(struct.unpack(fmt, header[key][:8])[0])
    if any(k not in header for k in ('size', 'order', 'features')):
        return None
    if 'parent' in header or 'migration' in header:
        return None
    if 'op_features' in header and le64('op_features'):
        return None
    features = le64('features')
    if features & RBD_FEATURE_JOURNALING:
        return None
    size = le64('size')
    object_size = 1 << header['order'][0]
    stripe_unit, stripe_count = object_size, 1
    if features & RBD_FEATURE_STRIPINGV2 and 'stripe_unit' in header:
        stripe_unit, stripe_count = le64('stripe_unit'), le64('stripe_count')
    data_pool_id = pool_id
    if features & RBD_FEATURE_DATA_POOL and 'data_pool_id' in header:
        data_pool_id = le64('data_pool_id', '<q')
    return ImageInfo(id=image_id, size=size, object_size=object_size, stripe_unit=stripe_unit,
                     stripe_count=stripe_count, features=features, data_pool_id=data_pool_id,
                     watchers=[], descendants=[], snapshots=[], used_bytes=size,
                     migrating=False, has_parent=False, header_version=version)
