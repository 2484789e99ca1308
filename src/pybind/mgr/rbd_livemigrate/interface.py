"""
The typed interface to librbd, without librbd.

Plain records of what the adapter reads from the cluster (``Observation``,
``ImageInfo``, ``MigrationRef``) and the ``RbdPort`` protocol that
``rbd_adapter.Adapter`` implements.  Nothing here imports ``rados`` or
``rbd``: the planner, the preflight checks, the commands and their unit
tests use only this module, and fakes shaped like ``RbdPort`` stand in for
the cluster.

Constants are librbd's own (``librbd.h``, ``cls_rbd_types.h``), spelled out
so that they are known without the binding.
"""

import enum
import json
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from .spec import ImageSpec, Layout, PoolSpec

ProgressCallback = Callable[[int, int], None]

# librbd.h RBD_FEATURE_*
FEATURES: Dict[str, int] = {
    'layering': 1 << 0,
    'striping': 1 << 1,
    'exclusive-lock': 1 << 2,
    'object-map': 1 << 3,
    'fast-diff': 1 << 4,
    'deep-flatten': 1 << 5,
    'journaling': 1 << 6,
}


class MigState(enum.Enum):
    """cls::rbd::MigrationState, as stored in an image's migration header."""
    ERROR = 0
    PREPARING = 1
    PREPARED = 2
    EXECUTING = 3
    EXECUTED = 4
    ABORTING = 5
    UNKNOWN = -1

    @classmethod
    def of(cls, value: int) -> 'MigState':
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class HeaderType(enum.Enum):
    """cls::rbd::MigrationHeaderType: which end of a migration an image is."""
    SRC = 1
    DST = 2


class MigrationHeader(NamedTuple):
    """An image's migration header (cls::rbd::MigrationSpec), decoded.

    ``pool_id``/``namespace``/``image_name``/``image_id`` name the *other*
    end: a source's header points to its destination and the reverse.
    """
    kind: HeaderType
    pool_id: int
    namespace: str
    image_name: str
    image_id: str
    state: MigState
    description: str = ''
    mirroring: bool = False
    mirror_image_mode: int = 0
    source_spec: str = ''            # an import's destination: librbd's source-spec

    @property
    def is_import(self) -> bool:
        """The destination of an import: no source image (pool id -1)."""
        return self.kind == HeaderType.DST and self.pool_id < 0


class TrashSource(enum.Enum):
    """cls::rbd::TrashImageSource of a trash entry."""
    USER = 0
    MIRRORING = 1
    MIGRATION = 2
    REMOVING = 3
    USER_PARENT = 4
    UNKNOWN = -1


# the image-meta key (``rbd image-meta get``) that names the task and the
# step about to be taken, written on the image before each irreversible step
INTENT_KEY = 'rbd_livemigrate.task'
INTENT_STEPS = ('prepare', 'commit', 'abort')


class Intent(NamedTuple):
    """What the module wrote on an image just before an irreversible step.

    One OSD write that lives in the image itself: written on the source
    before ``migration_prepare`` (which copies every image-meta key to the
    destination it creates), on the destination before ``migration_commit``
    and on the source before ``migration_abort``.  A destination carrying
    the source's id here is that migration's destination, whatever the
    task's record (written behind) or the headers (removed by the step
    itself) still say.  An import has no source image: its ``source_id`` is
    empty and its destination is known by the task id.
    """
    task_id: str
    step: str
    source_id: str
    dest_id: str = ''

    def dumps(self) -> str:
        out = {'task': self.task_id, 'step': self.step, 'source_id': self.source_id}
        if self.dest_id:
            out['dest_id'] = self.dest_id
        return json.dumps(out, sort_keys=True, separators=(',', ':'))

    @classmethod
    def loads(cls, text: str) -> Optional['Intent']:
        """None for anything that is not one of ours (never raises)."""
        try:
            d = json.loads(text)
            if not isinstance(d, dict):
                return None
            values = [d.get('task'), d.get('step'), d.get('source_id'), d.get('dest_id', '')]
            if not all(isinstance(v, str) for v in values) or not all(values[:2]) \
                    or values[1] not in INTENT_STEPS:
                return None
            return cls(*(str(v) for v in values))
        except ValueError:
            return None

    def names_source(self, source_id: Optional[str]) -> bool:
        return bool(source_id) and self.source_id == source_id


class End(NamedTuple):
    """One end of a migration, as librbd holds it now.

    ``image_id`` is the id this end is tracked by (recorded by the task,
    or learned from the other end's header); the other fields describe
    that id, except ``name_id``, which is what the end's *name* resolves to
    now in its pool's directory (None: no image has that name).
    """
    image_id: Optional[str] = None
    name_id: Optional[str] = None
    exists: bool = False                     # its header object exists
    header: Optional[MigrationHeader] = None
    trash: Optional[TrashSource] = None      # its trash entry, if any
    pool_id: int = -1
    # the module's intent key on this image (read where it identifies the
    # end: a destination found by its name when no id was recorded)
    intent: Optional[Intent] = None


class Observation(NamedTuple):
    """Both ends of one migration, read in one pass (``RbdPort.observe``)."""
    source: End
    dest: End


class MirrorMode(enum.Enum):
    """rbd_mirror_image_mode_t."""
    JOURNAL = 0
    SNAPSHOT = 1


class Mirror(NamedTuple):
    """An image's mirroring, when enabled (``rbd mirror image status``)."""
    mode: MirrorMode
    primary: bool


class ImageInfo(NamedTuple):
    """What preflight needs to know of a source image (``RbdPort.image_info``)."""
    id: str
    size: int
    object_size: int
    stripe_unit: int
    stripe_count: int
    features: int
    data_pool_id: int
    watchers: List[str]
    descendants: List[str]
    snapshots: List[str]
    used_bytes: int
    migrating: bool
    has_parent: bool
    mirror: Optional[Mirror] = None          # None: mirroring disabled
    v1_clones: List[str] = []                # descendants made with clone format 1
    descendants_error: Optional[str] = None  # listing the descendants failed: why
    # the version of the image's header object, read before the rest (None:
    # not known): while it is unchanged, so is everything above but the
    # watchers and the space used (``RbdPort.header_unchanged``)
    header_version: Optional[int] = None


class PrepareArgs(NamedTuple):
    """What ``migration_prepare`` is given for a layout (None: the source's)."""
    order: Optional[int]
    stripe_unit: Optional[int]
    stripe_count: Optional[int]
    features: Optional[int]
    data_pool: Optional[str]
    flatten: bool


def prepare_args(layout: Layout, info: ImageInfo) -> PrepareArgs:
    """The layout as librbd's prepare options, given the source.

    librbd keeps the source's stripe unit when only the object size
    changes, and it must divide the new size: a plainly striped source
    moves to plain striping of the new size unless asked otherwise.
    Preflight checks these (``preflight.image_blockers``); the adapter's
    ``prepare`` passes them.
    """
    object_size = layout.object_size
    stripe_unit, stripe_count = layout.stripe_unit, layout.stripe_count
    if object_size is not None and stripe_unit is None and stripe_count is None:
        if info.stripe_count == 1 or info.stripe_unit > object_size:
            stripe_unit, stripe_count = object_size, 1
    if stripe_unit is not None:
        stripe_count = stripe_count or 1
    elif stripe_count is not None:
        stripe_unit = info.stripe_unit
    features = None
    if layout.features is not None:
        features = 0
        for f in layout.features:
            features |= FEATURES[f]
    return PrepareArgs(order=object_size.bit_length() - 1 if object_size else None,
                       stripe_unit=stripe_unit, stripe_count=stripe_count,
                       features=features, data_pool=layout.data_pool,
                       flatten=layout.flatten)


class OrphanKind(str, enum.Enum):
    """What a migration without a task is (shown by ``ls``)."""
    MIGRATION = 'migration'              # a live migration no task knows
    HALF_PREPARED = 'half-prepared'      # a prepare cut short
    HALF_COMMITTED = 'half-committed'    # source left in the trash by a cut commit
    HALF_ABORTED = 'half-aborted'        # an abort cut short

    def __str__(self) -> str:
        return self.value


class MigrationRef(NamedTuple):
    """A migration found from its source's trash entry (for orphans)."""
    source: str
    destination: str
    source_image_id: str
    dest_image_id: str = ''
    kind: OrphanKind = OrphanKind.MIGRATION


class Client:
    """What the pipeline needs of a rados client (rbd_clients.Client)."""
    addr: str
    closed: bool

    def ioctx(self, pool: str, namespace: str = '') -> Any:
        """An open rados.Ioctx (only the adapter uses it)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ClientPool:
    """Copy clients: ``take`` an idle or new one, ``release`` it after use."""

    def take(self) -> Client:
        raise NotImplementedError

    def release(self, client: Client) -> None:
        raise NotImplementedError


class VerifyInputs(NamedTuple):
    """What the comparison plan needs: each side's user snapshots (name,
    size), oldest first, and the destination objects clients wrote since
    the protective snapshot (None: unknown, or no such snapshot)."""
    src_snaps: List[Tuple[str, int]]
    dst_snaps: List[Tuple[str, int]]
    client_writes: Optional[int]


class SourceReader(NamedTuple):
    """A source the comparison reads through another client (an import's
    image in another cluster): the snapshot librbd copied from, the image's
    user snapshots (name, size) oldest first, and ``open(snap)``: the image
    at a snapshot, read-only, open while the reader is."""
    snap: str
    snaps: List[Tuple[str, int]]
    open: Callable[[Optional[str]], Any]


# the label of the comparison of the heads (``verify.Pair``); the head as of
# prepare is labelled HEAD followed by a note
HEAD = 'HEAD'


def mismatch_line(label: str, offset: int, object_size: int, why: str = 'differs') -> str:
    """The message of a difference ``RbdPort.compare`` found."""
    where = 'the head' if label == HEAD else (
        'the head as of prepare' if label.startswith(HEAD) else 'snapshot {}'.format(label))
    return '{} {} at offset {} (object {})'.format(where, why, offset, offset // object_size)


def merge_extents(extents: Sequence[Tuple[int, int]], size: int,
                  chunk: int) -> List[Tuple[int, int]]:
    """The union of ``extents`` (offset, length), cut to at most ``chunk``
    bytes each and clipped to ``size``, in order: what ``compare`` reads."""
    spans = sorted((max(0, o), min(size, o + n)) for o, n in extents if n > 0 and o < size)
    merged: List[Tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        elif hi > lo:
            merged.append((lo, hi))
    out: List[Tuple[int, int]] = []
    for lo, hi in merged:
        while lo < hi:
            n = min(chunk, hi - lo)
            out.append((lo, n))
            lo += n
    return out


def first_difference(a: bytes, b: bytes, block: int = 4096) -> int:
    """The offset of the first byte where ``a`` and ``b`` differ (their
    common length if one is a prefix of the other)."""
    n = min(len(a), len(b))
    for off in range(0, n, block):
        if a[off:off + block] != b[off:off + block]:
            for i in range(off, min(n, off + block)):
                if a[i] != b[i]:
                    return i
    return n


class RbdPort:
    """Everything the module asks of librbd/librados.

    Reads return plain values; every call raises the typed errors of
    ``errors.py`` (``Transient`` for errors a retry may not hit).  The
    steps take the ``Client`` they run on: copies run on their own
    clients, which ``blocklist`` can stop.
    """
    factory: ClientPool

    # -- reads --------------------------------------------------------
    def pool_exists(self, pool: str) -> bool:
        raise NotImplementedError

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        raise NotImplementedError

    def pool_name(self, pool_id: int) -> str:
        raise NotImplementedError

    def list_images(self, spec: PoolSpec) -> List[str]:
        raise NotImplementedError

    def image_exists(self, spec: ImageSpec) -> bool:
        raise NotImplementedError

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        raise NotImplementedError

    def plain_image_info(self, spec: ImageSpec) -> Optional[ImageInfo]:
        """``image_info`` of a plain image from raw reads, clients not
        listed; None when the image needs the full look."""
        raise NotImplementedError

    def header_unchanged(self, spec: ImageSpec, image_id: str, version: int) -> bool:
        """``spec`` still names image ``image_id`` and its header object is
        still at ``version`` (False when unsure: the caller looks in full)."""
        raise NotImplementedError

    def size_of(self, spec: ImageSpec) -> Optional[int]:
        raise NotImplementedError

    def observe(self, source: ImageSpec, dest: ImageSpec, source_id: Optional[str],
                dest_id: Optional[str]) -> Observation:
        raise NotImplementedError

    def read_image(self, spec: ImageSpec) -> End:
        """The image the name ``spec`` resolves to now (id, header, trash)."""
        raise NotImplementedError

    def find_migrations(self, pools: List[str]) -> List[MigrationRef]:
        raise NotImplementedError

    def pool_config(self, spec: PoolSpec) -> Dict[str, str]:
        """rbd options set at pool level (``rbd config pool set``), which the
        destination's create applies (``rbd_default_data_pool`` ...)."""
        raise NotImplementedError

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        """The id of a migration source parked in the trash under ``spec``'s
        name (free in ``rbd ls``, but its abort needs the name back)."""
        raise NotImplementedError

    def image_id(self, spec: ImageSpec) -> Optional[str]:
        """The id the name resolves to now (one directory lookup)."""
        raise NotImplementedError

    def watchers(self, spec: ImageSpec) -> List[str]:
        """The addresses of the clients that have the image open."""
        raise NotImplementedError

    def descendants(self, spec: ImageSpec) -> List[str]:
        """The clones of ``spec`` (any depth); raises if they cannot be listed."""
        raise NotImplementedError

    # -- steps --------------------------------------------------------
    def blocklist(self, client: Client, expire_seconds: float = 3600.0) -> None:
        raise NotImplementedError

    def prepare(self, client: Client, source: ImageSpec, dest: ImageSpec, layout: Layout,
                info: ImageInfo) -> None:
        raise NotImplementedError

    def execute(self, client: Client, dest: ImageSpec,
                on_progress: Optional[ProgressCallback] = None) -> None:
        raise NotImplementedError

    def commit(self, client: Client, dest: ImageSpec,
               on_progress: Optional[ProgressCallback] = None) -> None:
        raise NotImplementedError

    def abort(self, client: Client, spec: ImageSpec,
              on_progress: Optional[ProgressCallback] = None) -> None:
        """``migration_abort`` through the image at ``spec`` (either end's name)."""
        raise NotImplementedError

    def finish_commit(self, client: Client, source: ImageSpec, source_id: str,
                      dest: ImageSpec, header: Optional[MigrationHeader]) -> None:
        """Remove a source an interrupted commit left in the trash."""
        raise NotImplementedError

    def finish_abort(self, client: Client, source: ImageSpec, source_id: str,
                     header: Optional[MigrationHeader]) -> None:
        """Drop the migration header of a source an interrupted abort had
        already put back (its last step; librbd's own abort fails ENOENT)."""
        raise NotImplementedError

    def mark_intent(self, client: Client, spec: ImageSpec, image_id: str,
                    intent: Intent) -> None:
        """Write ``intent`` on image ``image_id`` (``spec``'s pool and
        namespace) before an irreversible step; raises if it is not written."""
        raise NotImplementedError

    def clear_intent(self, client: Client, spec: ImageSpec, image_id: str,
                     task_id: str) -> bool:
        """Remove the intent key of image ``image_id`` if it names
        ``task_id``; False when there was none of that task's."""
        raise NotImplementedError

    def restore_source(self, client: Client, source: ImageSpec, source_id: str) -> None:
        """Put back a source a prepare moved to the trash without a header."""
        raise NotImplementedError

    def discard_dest(self, client: Client, dest: ImageSpec, dest_id: str) -> None:
        """Remove a destination a prepare created but never gave its header."""
        raise NotImplementedError

    # -- verify before commit (see verify.py) ------------------------

    def protect_source(self, client: Client, source: ImageSpec, name: str,
                       clients: bool = False) -> bool:
        """Take snapshot ``name`` of the source (a stale one is replaced);
        False when the source is at its snapshot limit.  Refused (EBUSY)
        while other clients have the source open, unless ``clients``: taken
        ahead of a cutover, while they still hold it."""
        raise NotImplementedError

    def restore_head(self, client: Client, source: ImageSpec, source_id: str,
                     dest: ImageSpec) -> int:
        """Write the source's head (by id: in its trash during a migration)
        over every extent where the destination's head differs from it;
        the number of bytes written."""
        raise NotImplementedError

    def unprotect(self, client: Client, spec: ImageSpec, name: str, rollback: bool) -> bool:
        """Roll ``spec`` back to snapshot ``name`` (``rollback``), then remove
        it; False when there is no such snapshot (done before)."""
        raise NotImplementedError

    def client_writes(self, dest: ImageSpec, protect: str) -> Optional[int]:
        """Objects of ``dest`` that clients wrote since snapshot ``protect``
        (fast-diff); None when that cannot be told."""
        raise NotImplementedError

    def verify_inputs(self, source: ImageSpec, source_id: str, dest: ImageSpec,
                      protect: Optional[str]) -> 'VerifyInputs':
        raise NotImplementedError

    def dest_inputs(self, dest: ImageSpec, protect: str
                    ) -> Tuple[List[Tuple[str, int]], Optional[int]]:
        """One look at ``dest``: its user snapshots (name, size) oldest
        first, and the objects clients wrote since snapshot ``protect``
        (``client_writes``)."""
        raise NotImplementedError

    def compare_with(self, client: Client, reader: SourceReader, dest: ImageSpec,
                     pairs: List[Any], on_progress: Callable[[int, int], bool]
                     ) -> Optional[Tuple[str, int, str]]:
        """``compare``, the source side read through ``reader``."""
        raise NotImplementedError

    def compare(self, client: Client, source: ImageSpec, source_id: str, dest: ImageSpec,
                pairs: List[Any], on_progress: Callable[[int, int], bool]
                ) -> Optional[Tuple[str, int, str]]:
        """Compare the source (by id, in its trash) with the destination,
        byte for byte, for each ``verify.Pair``; the first difference as
        (label, offset, message) or None.  ``on_progress(done, total)``
        returning False stops it (raises ``Interrupted``)."""
        raise NotImplementedError

    def flatten(self, client: Client, dest: ImageSpec) -> bool:
        raise NotImplementedError

    # -- imports ------------------------------------------------------
    def observe_import(self, dest: ImageSpec, dest_id: Optional[str]) -> Observation:
        """An import's destination (by id when recorded, else what its name
        resolves to); the source end is empty."""
        raise NotImplementedError

    def prepare_import(self, client: Client, source_spec: str, dest: ImageSpec,
                       layout: Layout) -> None:
        raise NotImplementedError
