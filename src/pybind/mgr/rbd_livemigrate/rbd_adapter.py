"""
The one narrow adapter to librados/librbd.

Everything that talks to the cluster's data path sits here.  Methods take
specs and plain values, return plain values and raise the typed errors of
``errors.py``; nothing outside this file imports ``rados`` or ``rbd``.

Clients: the copy runs on clients this module creates with their own
CephContext (measured about 1.5x faster than the mgr's shared context, see
doc/mgr/rbd_livemigrate.rst).  Each is registered with the mgr so that the
monitors blocklist it when this mgr fails over, which frees its image locks
at once.  Each running task gets its own client: cancelling an executing
copy blocklists that client, which is the only way to stop
``migration_execute`` on Pacific.
"""

import concurrent.futures
import errno
import logging
import struct
import threading
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import rados
import rbd

from .compat import prepare_takes_flatten
from .errors import (AlreadyExists, Interrupted, InvalidArgument, LiveMigrateError,
                     NotFound, Transient, TryAgain)
from .interface import (FEATURES, INTENT_KEY, ClientPool, End, HeaderType, ImageInfo, Intent,
                        MigrationHeader, Mirror, MirrorMode,
                        MigrationRef, MigState, Observation, OrphanKind, ProgressCallback,
                        RbdPort, TrashSource, VerifyInputs)
from .interface import Client as ClientBase
from .preflight import prepare_args
from .spec import ImageSpec, PoolSpec
from .task import Layout
from .verify import first_difference, merge_extents, mismatch_line

log = logging.getLogger(__name__)

CONTROL_OP_TIMEOUT_SECONDS = 60
MAX_IDLE_CLIENTS = 4

# librbd.h values the Pacific binding does not export
OPERATION_FEATURE_MIGRATION = getattr(rbd, 'RBD_OPERATION_FEATURE_MIGRATION', 1 << 4)
TRASH_SOURCE_MIGRATION = getattr(rbd, 'RBD_TRASH_IMAGE_SOURCE_MIGRATION', 2)

# errors a retry can outlive: a lock or watch still held, an abort under way
# (EROFS), a connection lost or fenced.  EIO, anything else and errors
# without an errno fail the task: retrying them only hides the cause.
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ESHUTDOWN,
                              errno.EROFS, errno.ECONNRESET, errno.ENOTCONN, errno.EINTR,
                              # an import's http/s3 server gone for a while (measured:
                              # execute fails ECONNREFUSED when the server stops)
                              errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                              errno.ECONNABORTED})
OPERATION_FEATURE_CLONE_CHILD = getattr(rbd, 'RBD_OPERATION_FEATURE_CLONE_CHILD', 1 << 1)
MIRROR_IMAGE_ENABLED = getattr(rbd, 'RBD_MIRROR_IMAGE_ENABLED', 1)
MIRROR_IMAGE_DISABLED = getattr(rbd, 'RBD_MIRROR_IMAGE_DISABLED', 0)
CONFIG_SOURCE_POOL = getattr(rbd, 'RBD_CONFIG_SOURCE_POOL', 1)


def feature_mask(names: List[str]) -> int:
    mask = 0
    for n in names:
        if n not in FEATURES:
            raise InvalidArgument('unknown feature {!r}: use a comma list of {}'.format(
                n, ', '.join(sorted(FEATURES))))
        mask |= FEATURES[n]
    return mask


def feature_names(mask: int) -> List[str]:
    return [n for n, bit in sorted(FEATURES.items()) if mask & bit]


def translate(e: Exception, what: str) -> LiveMigrateError:
    """A rados/rbd exception as a typed error with its errno."""
    err = abs(getattr(e, 'errno', 0) or errno.EIO)
    msg = '{}: {}'.format(what, e)
    if err in TRANSIENT_ERRNOS or isinstance(e, (rbd.ConnectionShutdown,
                                                 rados.ConnectionShutdown)):
        return Transient(msg, err)
    if err == errno.ENOENT:
        return NotFound(msg)
    if err == errno.EEXIST:
        return AlreadyExists(msg)
    return LiveMigrateError(msg, err)


def client_addr(addrs: str) -> str:
    """'[v2:127.0.0.1:0/123,v1:...]' or '127.0.0.1:0/123' -> '127.0.0.1:0/123'."""
    first = addrs.strip().strip('[]').split(',')[0]
    for prefix in ('v2:', 'v1:', 'any:'):
        if first.startswith(prefix):
            first = first[len(prefix):]
    return first


class Client(ClientBase):
    """One connected rados client, registered with the mgr for fencing."""

    def __init__(self, factory: 'ClientFactory', handle: rados.Rados) -> None:
        self.factory = factory
        self.handle = handle
        self.addrs = handle.get_addrs()
        self.addr = client_addr(self.addrs)
        self.closed = False

    def ioctx(self, pool: str, namespace: str = '') -> rados.Ioctx:
        try:
            io = self.handle.open_ioctx(pool)
        except rados.ObjectNotFound:
            raise NotFound("pool '{}' does not exist: create it or check the spec".format(pool))
        except rados.Error as e:
            raise translate(e, "cannot open pool '{}'".format(pool))
        io.set_namespace(namespace)
        return io

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.handle.shutdown()
        except Exception:
            log.debug('shutdown of client %s failed', self.addr, exc_info=True)
        self.factory.unregister(self.addrs)


class ClientFactory(ClientPool):
    """Makes clients with their own CephContext; falls back to the mgr's."""

    def __init__(self, name: str, conf: Dict[str, str], context: Any,
                 register: Callable[[str], None], unregister: Callable[[str], None]) -> None:
        self.name = name
        self.conf = conf
        self.context = context
        self.register = register
        self.unregister = unregister
        self.own_context = True
        # idle copy clients, reused by the next task (connecting costs ~20 ms)
        self._idle: List[Client] = []
        self._idle_lock = threading.Lock()

    def take(self) -> Client:  # type: ignore[override]
        """An idle copy client, or a new one."""
        with self._idle_lock:
            while self._idle:
                client = self._idle.pop()
                if not client.closed:
                    return client
        return self.make()

    def release(self, client: Client) -> None:  # type: ignore[override]
        """Keep a healthy client for the next task; close the rest."""
        with self._idle_lock:
            if not client.closed and len(self._idle) < MAX_IDLE_CLIENTS:
                self._idle.append(client)
                return
        client.close()

    def discard_idle(self, addrs: Optional[set] = None) -> None:
        """Close idle clients (those in ``addrs`` only, e.g. the blocklisted)."""
        with self._idle_lock:
            drop = [c for c in self._idle if addrs is None or c.addr in addrs]
            self._idle = [c for c in self._idle if c not in drop]
        for c in drop:
            c.close()

    def make(self, op_timeout: int = 0) -> Client:
        """A new client; ``op_timeout`` seconds bound each op (0: none, for copies)."""
        handle: Optional[rados.Rados] = None
        if self.own_context:
            # no librbd cache: the copy reads and writes each object once,
            # and the control client only looks (read-only opens, raw reads);
            # a cache costs every open a flusher thread and its setup (~15%
            # of a read-only open), and memory (measured: copies no slower)
            conf = dict(self.conf, rbd_cache='false')
            if op_timeout:
                conf['rados_osd_op_timeout'] = str(op_timeout)
                conf['rados_mon_op_timeout'] = str(op_timeout)
            try:
                handle = rados.Rados(name=self.name, conf=conf)
                handle.connect(timeout=30)
            except Exception as e:
                log.warning('cannot make a client with its own context (%s); '
                            'using the mgr context (slower copies)', e)
                self.own_context = False
                handle = None
        if handle is None:
            handle = rados.Rados(context=self.context)
            try:
                handle.connect(timeout=30)
            except rados.Error as e:
                raise translate(e, 'cannot connect to the cluster')
        client = Client(self, handle)
        self.register(client.addrs)
        return client


class Adapter(RbdPort):
    """librbd migration calls on top of a control client (rebuilt on demand)."""

    def __init__(self, factory: ClientFactory) -> None:
        self.factory: ClientFactory = factory
        self._lock = threading.Lock()
        self._control: Optional[Client] = None

    # -- clients -------------------------------------------------------

    def control(self) -> Client:
        with self._lock:
            if self._control is None or self._control.closed:
                # commands use this client: never let one hang for ever
                self._control = self.factory.make(op_timeout=CONTROL_OP_TIMEOUT_SECONDS)
            return self._control

    def drop_control(self, client: Optional[Client] = None) -> None:
        """Forget a dead (blocklisted) control client; the next call makes a new one."""
        with self._lock:
            if self._control is not None and (client is None or client is self._control):
                self._control.close()
                self._control = None

    def shutdown(self) -> None:
        self.drop_control()
        self.factory.discard_idle()

    def _with_control(self, fn: Callable[[Client], Any]) -> Any:
        client = self.control()
        try:
            return fn(client)
        except (rados.ConnectionShutdown, rbd.ConnectionShutdown) as e:
            # blocklisted: rebuild and report EAGAIN for this call
            self.drop_control(client)
            raise TryAgain('the module is reconnecting to the cluster ({}); try again'.format(e))
        except LiveMigrateError as e:
            if e.errno == errno.ESHUTDOWN:
                self.drop_control(client)
                raise TryAgain('the module is reconnecting to the cluster ({}); '
                               'try again'.format(e))
            raise

    def blocklist(self, client: ClientBase, expire_seconds: float = 3600.0) -> None:
        def op(c: Client) -> None:
            try:
                # Reef's binding types expire_seconds as int (a float: TypeError)
                c.handle.blocklist_add(client.addr, int(expire_seconds))
            except rados.Error as e:
                raise translate(e, 'cannot blocklist client {}'.format(client.addr))
        self._with_control(op)

    # -- inspection ----------------------------------------------------

    def pool_exists(self, pool: str) -> bool:
        return bool(self._with_control(lambda c: c.handle.pool_exists(pool)))

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        if not namespace:
            return True

        def op(c: Client) -> bool:
            io = c.ioctx(pool)
            try:
                return namespace in rbd.RBD().namespace_list(io)
            finally:
                io.close()
        return bool(self._with_control(op))

    def pool_name(self, pool_id: int) -> str:
        def op(c: Client) -> str:
            try:
                return str(c.handle.pool_reverse_lookup(pool_id))
            except rados.Error as e:
                raise translate(e, 'no pool with id {}'.format(pool_id))
        return self._with_control(op)  # type: ignore[no-any-return]

    def list_images(self, spec: PoolSpec) -> List[str]:
        def op(c: Client) -> List[str]:
            io = c.ioctx(spec.pool, spec.namespace)
            try:
                return sorted(rbd.RBD().list(io))
            except rbd.Error as e:
                raise translate(e, "cannot list images of '{}'".format(spec))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def size_of(self, spec: ImageSpec) -> Optional[int]:
        def op(c: Client) -> Optional[int]:
            io = c.ioctx(spec.pool, spec.namespace)
            try:
                with rbd.Image(io, spec.image, read_only=True) as image:
                    return int(image.size())
            except rbd.Error:
                return None
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def image_exists(self, spec: ImageSpec) -> bool:
        """By name: one omap lookup in the pool's directory (a format 1 image:
        its header object), never a listing of the whole pool."""
        def op(c: Client) -> bool:
            io = c.ioctx(spec.pool, spec.namespace)
            try:
                if dir_lookup(io, spec.image) is not None:
                    return True
                try:
                    io.stat(spec.image + '.rbd')
                    return True
                except rados.ObjectNotFound:
                    return False
            except rados.Error as e:
                raise translate(e, "cannot look up '{}'".format(spec))
            finally:
                io.close()
        return bool(self._with_control(op))

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        def op(c: Client) -> ImageInfo:
            io = c.ioctx(spec.pool, spec.namespace)
            try:
                # the header's version first: a change made while the rest
                # is read leaves a version that no later look matches
                version = _version_by_name(io, spec.image)
                try:
                    image = rbd.Image(io, spec.image, read_only=True)
                except rbd.ImageNotFound:
                    raise NotFound("image '{}' does not exist".format(spec))
                with image:
                    image_id = image.id()
                    if version is not None and version[0] != image_id:
                        version = None          # renamed or replaced meanwhile
                    size = image.size()
                    info = image.stat()
                    features = image.features()
                    watchers = [w.get('addr', '?') for w in image.watchers_list()]
                    descendants: List[str] = []
                    v1_clones: List[str] = []
                    descendants_error = None
                    all_snaps = list(image.list_snaps())
                    try:
                        if all_snaps:       # a clone's parent is a snapshot of it
                            descendants, v1_clones = _descendants(c, image)
                    except (rbd.Error, rados.Error) as e:
                        err = translate(e, 'cannot list its clones')
                        if isinstance(err, Transient):
                            raise err
                        descendants_error = str(err)
                    except LiveMigrateError as e:     # a clone's pool is gone
                        descendants_error = str(e)
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
            except rbd.Error as e:
                raise translate(e, "cannot inspect image '{}'".format(spec))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def plain_image_info(self, spec: ImageSpec) -> Optional[ImageInfo]:
        """A plain image's info read from its directory entry, its header
        object (one read) and the mirroring object (one read), with no image
        opened; None when it needs ``image_info``.

        Plain: format 2 with no snapshot, parent, migration or other
        operation feature, journaling or mirroring entry.  Its clients are
        not listed (librbd's prepare refuses them, EBUSY), and the space it
        uses is taken as its size.
        """
        def op(c: Client) -> Optional[ImageInfo]:
            io = _ioctx_or_none(c, spec)
            if io is None:
                return None
            try:
                image_id = dir_lookup(io, spec.image)
                if image_id is None:
                    return None
                with rados.ReadOpCtx() as rop:
                    vals, _ = io.get_omap_vals_by_keys(rop, _HEADER_KEYS)
                    snaps, _ = io.get_omap_vals(rop, '', 'snapshot_', 1)
                    try:
                        io.operate_read_op(rop, 'rbd_header.' + image_id)
                    except rados.ObjectNotFound:
                        return None
                    version = int(io.get_last_version())
                    header = {k: bytes(v) for k, v in vals}
                    if any(True for _ in snaps):
                        return None
                info = _plain_info(image_id, header, int(io.get_pool_id()), version)
                if info is None or _omap_get(io, 'rbd_mirroring', 'image_' + image_id):
                    return None
                return info
            except (rados.Error, struct.error, IndexError):
                return None             # the full look says what is wrong
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def header_unchanged(self, spec: ImageSpec, image_id: str, version: int) -> bool:
        """One directory lookup and one stat of the header object.

        Every change librbd makes to an image's metadata (size, features,
        snapshots and their children, protection, locks, a migration, the
        parent) writes its header object, which moves its version on; a
        client that opens the image only watches it, which does not."""
        def op(c: Client) -> bool:
            io = _ioctx_or_none(c, spec)
            if io is None:
                return False
            try:
                return _version_by_name(io, spec.image) == (image_id, version)
            finally:
                io.close()
        return bool(self._with_control(op))

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
        def op(c: Client) -> Observation:
            src_io = _ioctx_or_none(c, source)
            dst_io = _ioctx_or_none(c, dest)
            try:
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
            except rados.Error as e:
                raise translate(e, "cannot read the migration state of '{}' -> '{}'".format(
                    source, dest))
            finally:
                for io in (src_io, dst_io):
                    if io is not None:
                        io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def observe_import(self, dest: ImageSpec, dest_id: Optional[str]) -> Observation:
        """An import has no source image: only the destination is read (by
        the recorded id, else by what its name resolves to now)."""
        def op(c: Client) -> Observation:
            io = _ioctx_or_none(c, dest)
            try:
                name_id = dir_lookup(io, dest.image) if io else None
                end = read_end(io, dest_id or name_id, name_id)
                if io is not None and dest_id is None and end.exists and end.header is None:
                    # committed (the header gone) before the record had the id:
                    # the intent key written before the commit names the task
                    end = end._replace(intent=read_intent(io, name_id or ''))
                return Observation(End(), end)
            except rados.Error as e:
                raise translate(e, "cannot read the import state of '{}'".format(dest))
            finally:
                if io is not None:
                    io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def prepare_import(self, client: ClientBase, source_spec: str, dest: ImageSpec,
                       layout: Layout) -> None:
        """``migration_prepare_import``: a new image with the layout asked
        (librbd's defaults for the rest; its object size is its stripe unit)."""
        kwargs: Dict[str, Any] = {}
        if layout.features is not None:
            kwargs['features'] = feature_mask(layout.features)
        if layout.object_size is not None:
            kwargs['order'] = layout.object_size.bit_length() - 1
        if layout.stripe_unit is not None or layout.stripe_count is not None:
            kwargs['stripe_unit'] = layout.stripe_unit or layout.object_size or (1 << 22)
            kwargs['stripe_count'] = layout.stripe_count or 1
        if layout.data_pool is not None:
            kwargs['data_pool'] = layout.data_pool.encode()
        io = client.ioctx(dest.pool, dest.namespace)
        try:
            rbd.RBD().migration_prepare_import(source_spec, io, dest.image, **kwargs)
        except rbd.Error as e:
            raise translate(e, 'import prepare failed')
        finally:
            io.close()

    def read_image(self, spec: ImageSpec) -> End:
        def op(c: Client) -> End:
            io = c.ioctx(spec.pool, spec.namespace)
            try:
                name_id = dir_lookup(io, spec.image)
                return read_end(io, name_id, name_id)
            except rados.Error as e:
                raise translate(e, "cannot read image '{}'".format(spec))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    # -- the migration steps -------------------------------------------

    def prepare(self, client: ClientBase, source: ImageSpec, dest: ImageSpec, layout: Layout,
                info: ImageInfo) -> None:
        args = prepare_args(layout, info)
        kwargs: Dict[str, Any] = {}
        if args.features is not None:
            kwargs['features'] = args.features
        if args.order is not None:
            kwargs['order'] = args.order
        if args.stripe_unit is not None:
            kwargs['stripe_unit'] = args.stripe_unit
            kwargs['stripe_count'] = args.stripe_count
        if args.data_pool is not None:
            # Pacific's binding passes data_pool straight to C: it wants bytes
            kwargs['data_pool'] = args.data_pool.encode()
        if args.flatten and prepare_takes_flatten(rbd.RBD.migration_prepare):
            kwargs['flatten'] = True          # Squid and later; else flatten() after commit
        src_io = client.ioctx(source.pool, source.namespace)
        dst_io = client.ioctx(dest.pool, dest.namespace)
        try:
            rbd.RBD().migration_prepare(src_io, source.image, dst_io, dest.image, **kwargs)
        except rbd.Error as e:
            raise translate(e, 'prepare failed')
        finally:
            src_io.close()
            dst_io.close()

    def _run(self, client: ClientBase, dest: ImageSpec, what: str,
             call: Callable[..., Any], on_progress: Optional[ProgressCallback]) -> None:
        def cb(offset: int, total: int) -> int:
            if on_progress is not None:
                on_progress(offset, total)
            return 0
        io = client.ioctx(dest.pool, dest.namespace)
        try:
            call(io, dest.image, on_progress=cb)
        except rbd.Error as e:
            raise translate(e, '{} failed'.format(what))
        finally:
            io.close()

    def execute(self, client: ClientBase, dest: ImageSpec,
                on_progress: Optional[ProgressCallback] = None) -> None:
        self._run(client, dest, 'execute', rbd.RBD().migration_execute, on_progress)

    def commit(self, client: ClientBase, dest: ImageSpec,
               on_progress: Optional[ProgressCallback] = None) -> None:
        self._run(client, dest, 'commit', rbd.RBD().migration_commit, on_progress)

    def abort(self, client: ClientBase, spec: ImageSpec,
              on_progress: Optional[ProgressCallback] = None) -> None:
        try:
            self._run(client, spec, 'abort', rbd.RBD().migration_abort, on_progress)
        except NotFound:
            # an abort cut while it removed the destination's snapshots leaves
            # one in the snapshot trash, and every later abort fails ENOENT on it
            if not self._purge_trashed_snaps(client, spec):
                raise
            self._run(client, spec, 'abort', rbd.RBD().migration_abort, on_progress)

    def _purge_trashed_snaps(self, client: ClientBase, spec: ImageSpec) -> int:
        """Finish the snapshot removals an interrupted abort left half done.

        librbd removes a snapshot by moving it to the snapshot trash
        namespace first, then dropping its object map, its RADOS snapshot
        id and its record.  Cut in between, the snapshot stays in the trash
        namespace and a new ``migration_abort`` asks to remove it by its
        user name, which fails ENOENT (Pacific, Reef).  The destination of
        an abort cannot be opened (EROFS) to remove it by id, so do those
        three steps here, only for trashed snapshots without clones, only
        on the destination of a migration being aborted.
        """
        io = client.ioctx(spec.pool, spec.namespace)
        purged = 0
        try:
            image_id = dir_lookup(io, spec.image)
            if image_id is None:
                return 0
            header = read_header(io, image_id)
            if header is None or header.kind != HeaderType.DST or \
                    header.state != MigState.ABORTING:
                return 0
            oid = 'rbd_header.' + image_id
            for snap_id in _snapshot_ids(io, oid):
                _, out = io.execute(oid, 'rbd', 'snapshot_get', struct.pack('<Q', snap_id))
                ns_type, children = _snapshot_ns_and_children(bytes(out))
                if ns_type != SNAP_NAMESPACE_TRASH or children:
                    continue
                log.warning("removing snapshot %d of '%s' (id %s) left in the snapshot trash by "
                            'an interrupted abort', snap_id, spec, image_id)
                try:
                    io.remove_object('rbd_object_map.{}.{:016x}'.format(image_id, snap_id))
                except rados.ObjectNotFound:
                    pass
                try:
                    io.remove_self_managed_snap(snap_id)
                except rados.ObjectNotFound:
                    pass
                io.execute(oid, 'rbd', 'snapshot_remove', struct.pack('<Q', snap_id))
                purged += 1
        except rados.Error as e:
            raise translate(e, "cannot clean the snapshots of '{}'".format(spec))
        finally:
            io.close()
        return purged

    def finish_commit(self, client: ClientBase, source: ImageSpec, source_id: str,
                      dest: ImageSpec, header: Optional[MigrationHeader]) -> None:
        """Remove a source that an interrupted ``migration_commit`` left behind.

        librbd's commit removes the destination's migration header first,
        then the source's snapshots, the source and its trash entry, then
        re-enables mirroring on the destination.  Cut after the first step,
        the source stays in its pool's trash with its own migration header,
        and no public librbd call removes it: ``trash_remove`` opens the
        image read-write and librbd refuses that (EROFS) while a source
        header exists.  So clear that header with the ``rbd`` object class
        method ``migration_remove`` (what librbd itself calls), remove the
        snapshots commit had not reached, then the trash entry.
        """
        io = client.ioctx(source.pool, source.namespace)
        oid = 'rbd_header.' + source_id
        try:
            if header_exists(io, source_id):
                if read_header(io, source_id) is not None:
                    io.execute(oid, 'rbd', 'migration_remove', b'')
                with rbd.Image(io, image_id=source_id) as image:
                    for snap in image.list_snaps():
                        if snap.get('namespace', 0) != 0:     # trash/group snapshots
                            continue
                        if image.is_protected_snap(snap['name']):
                            image.unprotect_snap(snap['name'])
                        image.remove_snap(snap['name'])
            try:
                rbd.RBD().trash_remove(io, source_id, force=True)
            except rbd.ImageNotFound:
                pass
        except (rados.Error, rbd.Error) as e:
            raise translate(e, "cannot finish removing source '{}' (id {})".format(
                source, source_id))
        finally:
            io.close()
        if header is not None and header.mirroring:
            self._enable_mirroring(client, dest, header.mirror_image_mode)

    def finish_abort(self, client: ClientBase, source: ImageSpec, source_id: str,
                     header: Optional[MigrationHeader]) -> None:
        """Finish an abort cut at its last step.

        librbd's abort marks both headers aborting, removes the destination,
        puts the source back under its name (the trash entry goes last),
        re-enables mirroring, and only then removes the source's migration
        header.  Cut after the source is back, a new ``migration_abort``
        fails ENOENT (it looks for the trash entry) and the source cannot be
        opened (EROFS: it still has its header).  What is left is that last
        write, ``migration_remove``: checked right before that the source is
        named again, out of the trash and still marked aborting.
        """
        io = client.ioctx(source.pool, source.namespace)
        oid = 'rbd_header.' + source_id
        try:
            h = read_header(io, source_id)
            if h is None:
                return                                    # done meanwhile
            if (h.kind != HeaderType.SRC or h.state != MigState.ABORTING
                    or dir_lookup(io, source.image) != source_id
                    or trash_source(io, source_id) is not None):
                raise Transient("'{}' (id {}) changed while its abort was being finished; "
                                'looking again'.format(source, source_id))
            log.warning("finishing an interrupted abort: removing the migration header of "
                        "'%s' (id %s)", source, source_id)
            io.execute(oid, 'rbd', 'migration_remove', b'')
        except rados.Error as e:
            raise translate(e, "cannot finish the abort of '{}' (id {})".format(
                source, source_id))
        finally:
            io.close()
        if header is not None and header.mirroring:
            self._enable_mirroring(client, source, header.mirror_image_mode)

    def mark_intent(self, client: ClientBase, spec: ImageSpec, image_id: str,
                    intent: Intent) -> None:
        """``rbd image-meta set`` of the intent key, done as one write op on
        the header object that fails (ENOENT) instead of creating it when
        the image is gone (cls ``metadata_set`` alone would create it)."""
        io = client.ioctx(spec.pool, spec.namespace)
        try:
            with rados.WriteOpCtx() as op:
                op.execute('rbd', 'get_features', struct.pack('<QB', CEPH_NOSNAP, 1))
                op.execute('rbd', 'metadata_set', struct.pack('<I', 1) + _encode_str(
                    INTENT_KEY) + _encode_str(intent.dumps()))
                io.operate_write_op(op, 'rbd_header.' + image_id)
        except rados.Error as e:
            raise translate(e, "cannot mark '{}' (id {}) before the {}".format(
                spec, image_id, intent.step))
        finally:
            io.close()

    def clear_intent(self, client: ClientBase, spec: ImageSpec, image_id: str,
                     task_id: str) -> bool:
        io = client.ioctx(spec.pool, spec.namespace)
        try:
            intent = read_intent(io, image_id)
            if intent is None or intent.task_id != task_id:
                return False
            with rados.WriteOpCtx() as op:
                op.execute('rbd', 'get_features', struct.pack('<QB', CEPH_NOSNAP, 1))
                op.execute('rbd', 'metadata_remove', _encode_str(INTENT_KEY))
                io.operate_write_op(op, 'rbd_header.' + image_id)
            return True
        except rados.ObjectNotFound:
            return False
        except rados.Error as e:
            raise translate(e, "cannot clear the mark on '{}' (id {})".format(spec, image_id))
        finally:
            io.close()

    def restore_source(self, client: ClientBase, source: ImageSpec, source_id: str) -> None:
        """Put back a source a prepare moved to the trash before it wrote the
        source's migration header.

        Nothing of the migration exists yet, but librbd cannot restore the
        image: ``migration_abort`` finds no migration (EINVAL) and
        ``trash_restore`` refuses entries whose source is MIGRATION.  Do
        what ``trash_restore`` does, with the same ``rbd`` object class
        calls: the id object, the directory entry, then drop the trash
        entry.  Checked right before: still in the trash as a migration
        source, no migration header, and the name still free.
        """
        io = client.ioctx(source.pool, source.namespace)
        try:
            named = dir_lookup(io, source.image)
            if (trash_source(io, source_id) != TrashSource.MIGRATION
                    or not header_exists(io, source_id)
                    or read_header(io, source_id) is not None
                    or named not in (None, source_id)):
                raise Transient("'{}' (id {}) changed while being restored; looking "
                                'again'.format(source, source_id))
            log.warning("restoring '%s' (id %s) from the trash: a prepare was cut before it "
                        'wrote the migration header', source, source_id)
            with rados.WriteOpCtx() as op:          # as librbd: create, then set_id
                op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
                op.execute('rbd', 'set_id', _encode_str(source_id))
                try:
                    io.operate_write_op(op, 'rbd_id.' + source.image)
                except rados.ObjectExists:
                    pass
            if named is None:       # the trash move may have stopped before unlinking
                io.execute('rbd_directory', 'rbd', 'dir_add_image',
                           _encode_str(source.image) + _encode_str(source_id))
            io.execute('rbd_trash', 'rbd', 'trash_remove', _encode_str(source_id))
        except rados.Error as e:
            raise translate(e, "cannot restore '{}' (id {}) from the trash".format(
                source, source_id))
        finally:
            io.close()

    def discard_dest(self, client: ClientBase, dest: ImageSpec, dest_id: str) -> None:
        """Remove the destination of a prepare cut before it wrote the
        destination's migration header.

        librbd's abort cannot undo that state: through either name it fails
        EINVAL (the destination has no header), and in place EEXIST (the
        destination took the name).  The image holds only what prepare
        copied (the snapshots, not yet the data, which execute copies), so
        remove it, checked by id right before, then abort through the
        source.
        """
        io = client.ioctx(dest.pool, dest.namespace)
        try:
            if dir_lookup(io, dest.image) != dest_id or read_header(io, dest_id) is not None:
                raise Transient("'{}' changed while being cleaned up; looking again".format(dest))
            if header_exists(io, dest_id):
                with rbd.Image(io, dest.image) as image:
                    if image.id() != dest_id:
                        raise Transient("'{}' is no longer id {}; looking again".format(
                            dest, dest_id))
                    for snap in image.list_snaps():
                        if snap.get('namespace', 0) != 0:     # trash/group snapshots
                            continue
                        if image.is_protected_snap(snap['name']):
                            image.unprotect_snap(snap['name'])
                        image.remove_snap(snap['name'])
            # without a header object, librbd's remove drops the id object and
            # the directory entry create had written
            log.warning("removing '%s' (id %s): created by a prepare cut short", dest, dest_id)
            rbd.RBD().remove(io, dest.image)
        except rbd.ImageNotFound:
            pass
        except (rados.Error, rbd.Error) as e:
            raise translate(e, "cannot remove the half-created destination '{}'".format(dest))
        finally:
            io.close()

    def _enable_mirroring(self, client: ClientBase, dest: ImageSpec, mode: int) -> None:
        """What commit's last step does when the source was mirrored."""
        io = client.ioctx(dest.pool, dest.namespace)
        try:
            with rbd.Image(io, dest.image) as image:
                image.mirror_image_enable(mode)
        except rbd.InvalidArgument:
            pass                                  # already enabled (pool mode)
        except rbd.Error as e:
            log.warning("cannot re-enable mirroring on '%s': %s", dest, e)
        finally:
            io.close()

    # -- verify before commit ------------------------------------------

    def protect_source(self, client: ClientBase, source: ImageSpec, name: str,
                       clients: bool = False) -> bool:
        io = client.ioctx(source.pool, source.namespace)
        try:
            with rbd.Image(io, source.image) as image:
                # as prepare would (its preflight may not have listed them):
                # no snapshot of an image that another client has open
                mine = getattr(client, 'addr', None)
                others = [] if clients else [
                    w.get('addr', '?') for w in image.watchers_list()
                    if client_addr(str(w.get('addr', ''))) != mine]
                if others:
                    raise Transient("'{}' has watchers ({}): not snapshotted before "
                                    'prepare'.format(source, ', '.join(others[:3])),
                                    errno.EBUSY)
                # stale: from a prepare undone since (or its removal cut short)
                _remove_named_snap(image, name)
                try:
                    image.create_snap(name)
                except rbd.Error as e:
                    if e.errno == errno.EDQUOT:
                        log.warning("'%s' is at its snapshot limit: no protective snapshot",
                                    source)
                        return False
                    raise
            return True
        except rbd.Error as e:
            raise translate(e, "cannot snapshot '{}' before prepare".format(source))
        finally:
            io.close()

    def unprotect(self, client: ClientBase, spec: ImageSpec, name: str, rollback: bool) -> bool:
        io = client.ioctx(spec.pool, spec.namespace)
        try:
            with rbd.Image(io, spec.image) as image:
                if rollback and any(s['name'] == name and s.get('namespace', 0) == 0
                                    for s in image.list_snaps()):
                    image.rollback_to_snap(name)
                return _remove_named_snap(image, name)
        except rbd.ImageNotFound:
            return False
        except rbd.Error as e:
            raise translate(e, "cannot {}remove snapshot {} of '{}'".format(
                'roll back to and ' if rollback else '', name, spec))
        finally:
            io.close()

    def client_writes(self, dest: ImageSpec, protect: str) -> Optional[int]:
        def op(c: Client) -> Optional[int]:
            io = c.ioctx(dest.pool, dest.namespace)
            try:
                with rbd.Image(io, dest.image, read_only=True) as image:
                    return _client_writes(image, protect)
            except rbd.Error as e:
                raise translate(e, "cannot tell what clients wrote to '{}'".format(dest))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def verify_inputs(self, source: ImageSpec, source_id: str, dest: ImageSpec,
                      protect: Optional[str]) -> VerifyInputs:
        def op(c: Client) -> VerifyInputs:
            src_io = c.ioctx(source.pool, source.namespace)
            dst_io = c.ioctx(dest.pool, dest.namespace)
            try:
                with rbd.Image(src_io, image_id=source_id, read_only=True) as si, \
                        rbd.Image(dst_io, dest.image, read_only=True) as di:
                    return VerifyInputs(_user_snaps(si), _user_snaps(di),
                                        None if protect is None
                                        else _client_writes(di, protect))
            except rbd.Error as e:
                raise translate(e, "cannot open '{}' and its source to compare them".format(
                    dest))
            finally:
                src_io.close()
                dst_io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def compare(self, client: ClientBase, source: ImageSpec, source_id: str, dest: ImageSpec,
                pairs: List[Any], on_progress: Callable[[int, int], bool]
                ) -> Optional[Tuple[str, int, str]]:
        src_io = client.ioctx(source.pool, source.namespace)
        dst_io = client.ioctx(dest.pool, dest.namespace)
        opened: List[Tuple[Any, 'rbd.Image', 'rbd.Image', List[Tuple[int, int]]]] = []
        try:
            try:
                # every image opened and its extents listed first: the total
                for pair in pairs:
                    si = rbd.Image(src_io, image_id=source_id, snapshot=pair.src_snap,
                                   read_only=True)
                    try:
                        di = rbd.Image(dst_io, dest.image, snapshot=pair.dst_snap,
                                       read_only=True)
                    except rbd.Error:
                        si.close()
                        raise
                    size, dsize = si.size(), di.size()
                    osize = 1 << di.stat()['order']
                    opened.append((pair, si, di, []))
                    if size != dsize:
                        return (pair.label, min(size, dsize), mismatch_line(
                            pair.label, min(size, dsize), osize,
                            'is {} bytes on the source and {} on the destination'.format(
                                size, dsize)))
                    # what either side holds (a side may lack what the other has)
                    opened[-1][3].extend(merge_extents(
                        _allocated(si, size) + _allocated(di, size), size, COMPARE_CHUNK))
                total = sum(n for *_, ext in opened for _, n in ext)
                done = [0]
                if not on_progress(0, total):
                    raise Interrupted('verification interrupted')
                for pair, si, di, ext in opened:
                    found = _compare_extents(si, di, ext, total, done, on_progress)
                    if found is not None:
                        osize = 1 << di.stat()['order']
                        return (pair.label, found, mismatch_line(pair.label, found, osize))
                return None
            except rbd.Error as e:
                raise translate(e, "cannot compare '{}' with its source".format(dest))
        finally:
            for _, si, di, _ in opened:
                si.close()
                di.close()
            src_io.close()
            dst_io.close()

    def flatten(self, client: ClientBase, dest: ImageSpec) -> bool:
        """Flatten a committed clone (``--flatten``); False if it has no parent."""
        io = client.ioctx(dest.pool, dest.namespace)
        try:
            with rbd.Image(io, dest.image) as image:
                try:
                    image.parent_id()
                except rbd.ImageNotFound:
                    return False
                image.flatten()
                return True
        except rbd.Error as e:
            raise translate(e, "flatten of '{}' failed".format(dest))
        finally:
            io.close()

    # -- orphans -------------------------------------------------------

    def find_migrations(self, pools: List[str]) -> List[MigrationRef]:
        """Every migration source parked in the trash of these pools."""
        def op(c: Client) -> List[MigrationRef]:
            refs: List[MigrationRef] = []
            for pool in pools:
                try:
                    io = c.ioctx(pool)
                except NotFound:
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
                finally:
                    io.close()
            return refs
        return self._with_control(op)  # type: ignore[no-any-return]

    def pool_config(self, spec: PoolSpec) -> Dict[str, str]:
        """The rbd options set on the pool itself (``rbd config pool set``)."""
        def op(c: Client) -> Dict[str, str]:
            io = _ioctx_or_none(c, ImageSpec(spec.pool, spec.namespace, 'x'))
            if io is None:
                return {}
            try:
                return {e['name']: str(e['value']) for e in rbd.RBD().config_list(io)
                        if e.get('source') == CONFIG_SOURCE_POOL and e.get('value')}
            except rbd.Error as e:
                raise translate(e, "cannot read the rbd options of pool '{}'".format(spec))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        def op(c: Client) -> Optional[str]:
            io = _ioctx_or_none(c, spec)
            if io is None:
                return None
            try:
                for image_id, source, name in trash_entries(io):
                    if source == TrashSource.MIGRATION.value and name == spec.image:
                        return image_id
                return None
            except rados.Error as e:
                raise translate(e, "cannot read the trash of '{}'".format(spec.pool))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def image_id(self, spec: ImageSpec) -> Optional[str]:
        def op(c: Client) -> Optional[str]:
            io = _ioctx_or_none(c, spec)
            if io is None:
                return None
            try:
                return dir_lookup(io, spec.image)
            except rados.Error as e:
                raise translate(e, "cannot look up '{}'".format(spec))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def watchers(self, spec: ImageSpec) -> List[str]:
        """The addresses of the clients that have ``spec`` open (one open)."""
        def op(c: Client) -> List[str]:
            io = c.ioctx(spec.pool, spec.namespace)
            try:
                with rbd.Image(io, spec.image, read_only=True) as image:
                    return [w.get('addr', '?') for w in image.watchers_list()]
            except rbd.Error as e:
                raise translate(e, "cannot list the clients of '{}'".format(spec))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]

    def descendants(self, spec: ImageSpec) -> List[str]:
        def op(c: Client) -> List[str]:
            io = c.ioctx(spec.pool, spec.namespace)
            try:
                # a clone needs a snapshot with a child (clone v2) or a
                # protected one (clone v1): a look at the header's snapshot
                # records first (opening the image and listing clones, which
                # reads every pool, costs far more)
                image_id = dir_lookup(io, spec.image)
                if image_id is not None and not _may_have_clones(io, image_id):
                    return []
                with rbd.Image(io, spec.image, read_only=True) as image:
                    if not list(image.list_snaps()):
                        # no snapshot, no clone: and listing them reads every pool
                        return []
                    return ['{}'.format(ImageSpec(d['pool'], d.get('pool_namespace', ''),
                                                  d['image']))
                            for d in image.list_descendants()]
            except (rbd.Error, rados.Error) as e:
                raise translate(e, "cannot list the clones of '{}'".format(spec))
            finally:
                io.close()
        return self._with_control(op)  # type: ignore[no-any-return]


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
        io = c.ioctx(d['pool'], d.get('pool_namespace', ''))
        try:
            with rbd.Image(io, image_id=d['id'], read_only=True) as child:
                if not child.op_features() & OPERATION_FEATURE_CLONE_CHILD:
                    v1.append(spec)
        finally:
            io.close()
    return specs, v1


# the comparison reads this much of each side at once, on this many threads
# (measured: synchronous reads on threads beat aio callbacks in Python; 8
# threads compare a written 1 GiB image in 0.52x its execute time here, 4 in 0.65x)
COMPARE_CHUNK = 4 << 20
COMPARE_THREADS = 8


def _client_writes(image: 'rbd.Image', protect: str) -> Optional[int]:
    """Objects of ``image`` that librbd clients wrote since snapshot
    ``protect`` (fast-diff); None without a valid fast-diff or the snapshot."""
    if not image.features() & rbd.RBD_FEATURE_FAST_DIFF or image.flags() & (
            rbd.RBD_FLAG_OBJECT_MAP_INVALID | rbd.RBD_FLAG_FAST_DIFF_INVALID):
        return None
    if not any(s['name'] == protect for s in image.list_snaps()):
        return None
    written = [0]

    def cb(offset: int, length: int, exists: bool) -> int:
        written[0] += 1
        return 0
    image.diff_iterate(0, image.size(), protect, cb, whole_object=True)
    return written[0]


def _remove_named_snap(image: 'rbd.Image', name: str) -> bool:
    """Remove user snapshot ``name``, and a snapshot of that name whose
    removal was cut short (librbd moves a snapshot to the trash namespace
    first, then removes it: a kill in between leaves it there, under another
    name); False when there is neither."""
    found = False
    for snap in list(image.list_snaps()):
        ns = snap.get('namespace', 0)
        if ns == 0 and snap['name'] == name:
            image.remove_snap(name)
            found = True
        elif ns == SNAP_NAMESPACE_TRASH and image.snap_get_trash_namespace(
                snap['id']).get('original_name') == name:
            log.warning('removing snapshot %s (id %d), left in the snapshot trash by an '
                        'interrupted removal', name, snap['id'])
            image.remove_snap_by_id(snap['id'])
            found = True
    return found


def _user_snaps(image: 'rbd.Image') -> List[Tuple[str, int]]:
    snaps = [s for s in image.list_snaps() if s.get('namespace', 0) == 0]
    return [(s['name'], s['size']) for s in sorted(snaps, key=lambda s: s['id'])]


def _allocated(image: 'rbd.Image', size: int) -> List[Tuple[int, int]]:
    """Extents ``image`` (at its snapshot) holds data in, parents included;
    whole objects, from the object map where there is one."""
    out: List[Tuple[int, int]] = []

    def cb(offset: int, length: int, exists: bool) -> int:
        out.append((offset, length))
        return 0
    image.diff_iterate(0, size, None, cb, include_parent=True, whole_object=True)
    return out


def _compare_extents(si: 'rbd.Image', di: 'rbd.Image', extents: List[Tuple[int, int]],
                     total: int, done: List[int],
                     on_progress: Callable[[int, int], bool]) -> Optional[int]:
    """The first offset where ``si`` and ``di`` differ within ``extents``."""
    stop = threading.Event()

    def one(extent: Tuple[int, int]) -> Optional[int]:
        if stop.is_set():
            return None
        off, n = extent
        a = si.read(off, n)
        b = di.read(off, n)
        if a == b:
            return None
        return off + first_difference(a, b)

    # a window of reads in flight, in order: the first difference is the
    # lowest offset, and a large image never queues all its extents at once
    with concurrent.futures.ThreadPoolExecutor(COMPARE_THREADS) as pool:
        window: Deque[Tuple[int, 'concurrent.futures.Future[Optional[int]]']] = deque()
        todo = iter(extents)
        try:
            while True:
                while len(window) < 2 * COMPARE_THREADS:
                    e = next(todo, None)
                    if e is None:
                        break
                    window.append((e[1], pool.submit(one, e)))
                if not window:
                    return None
                n, fut = window.popleft()
                found = fut.result()
                if found is not None:
                    return found
                done[0] += n
                if not on_progress(done[0], total):
                    raise Interrupted('verification interrupted')
        finally:
            stop.set()
            for _, fut in window:
                fut.cancel()


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


def _encode_str(text: str) -> bytes:
    data = text.encode('utf-8')
    return struct.pack('<I', len(data)) + data


def _read_string(buf: bytes, off: int) -> Tuple[str, int]:
    (n,) = struct.unpack_from('<I', buf, off)
    off += 4
    return buf[off:off + n].decode('utf-8', 'replace'), off + n


def decode_migration_spec(buf: bytes) -> Optional[MigrationHeader]:
    """cls::rbd::MigrationSpec: ENCODE_START(v, compat, len), header_type (u8),
    pool_id (s64), pool_namespace, image_name, image_id, snap_seqs (map),
    overlap (u64), flatten, mirroring, state (u8), state_description,
    mirror_image_mode (u8, v2+), source_spec (string, v3+: an import's), ..."""
    try:
        version = buf[0]
        off = 6
        kind = HeaderType(buf[off])
        off += 1
        (pool_id,) = struct.unpack_from('<q', buf, off)
        off += 8
        namespace, off = _read_string(buf, off)
        name, off = _read_string(buf, off)
        image_id, off = _read_string(buf, off)
        (nsnaps,) = struct.unpack_from('<I', buf, off)
        off += 4 + 16 * nsnaps + 8 + 1             # snap_seqs, overlap, flatten
        mirroring = bool(buf[off])
        state = MigState.of(buf[off + 1])
        off += 2
        description, off = _read_string(buf, off)
        mode = buf[off] if version >= 2 and off < len(buf) else 0
        source_spec = ''
        if version >= 3 and off + 5 <= len(buf):       # an import's source-spec
            source_spec, off = _read_string(buf, off + 1)
    except (IndexError, ValueError, struct.error):
        return None
    return MigrationHeader(kind, pool_id, namespace, name, image_id, state, description,
                           mirroring, mode, source_spec)


SNAP_NAMESPACE_TRASH = 2          # cls::rbd::SNAPSHOT_NAMESPACE_TYPE_TRASH


def _snapshot_ids(io: 'rados.Ioctx', oid: str) -> List[int]:
    with rados.ReadOpCtx() as op:
        it, _ = io.get_omap_vals(op, 'snapshot_', 'snapshot_', 1024)
        io.operate_read_op(op, oid)
        return [int(k[len('snapshot_'):], 16) for k, _ in it]


RBD_PROTECTION_STATUS_UNPROTECTED = 0


def _may_have_clones(io: 'rados.Ioctx', image_id: str) -> bool:
    """False only when no snapshot of format 2 image ``image_id`` can have
    a clone: none has a child (clone v2 counts them in the snapshot record)
    and none is protected (clone v1 needs a protected snapshot).  True when
    unsure (unreadable header, more snapshots than one listing returns)."""
    oid = 'rbd_header.' + image_id
    try:
        snap_ids = _snapshot_ids(io, oid)
        if len(snap_ids) >= 1024:
            return True
        for snap_id in snap_ids:
            arg = struct.pack('<Q', snap_id)
            _, out = io.execute(oid, 'rbd', 'snapshot_get', arg)
            if _snapshot_ns_and_children(bytes(out))[1]:
                return True
            _, out = io.execute(oid, 'rbd', 'get_protection_status', arg)
            if bytes(out)[:1] != bytes([RBD_PROTECTION_STATUS_UNPROTECTED]):
                return True
    except (rados.Error, struct.error):
        return True
    return False


def _snapshot_ns_and_children(buf: bytes) -> Tuple[int, int]:
    """cls::rbd::SnapshotInfo: ENCODE_START, id (u64), snapshot_namespace
    (ENCODE_START, type u32, ...), name, image_size (u64), timestamp (utime_t),
    child_count (u32)."""
    off = 6 + 8
    (ns_len,) = struct.unpack_from('<I', buf, off + 2)
    (ns_type,) = struct.unpack_from('<I', buf, off + 6)
    _, off = _read_string(buf, off + 6 + ns_len)
    (children,) = struct.unpack_from('<I', buf, off + 16)
    return ns_type, children


def header_exists(io: 'rados.Ioctx', image_id: str) -> bool:
    try:
        io.stat('rbd_header.' + image_id)
        return True
    except rados.ObjectNotFound:
        return False


# the header keys a plain image's info is read from (cls_rbd's names)
_HEADER_KEYS = ('size', 'order', 'features', 'stripe_unit', 'stripe_count', 'data_pool_id',
                'parent', 'migration', 'op_features')


def _plain_info(image_id: str, header: Dict[str, bytes], pool_id: int,
                version: int) -> Optional[ImageInfo]:
    """``ImageInfo`` from a header's values (``_HEADER_KEYS``), or None if
    the image is not plain (see ``Adapter.plain_image_info``)."""
    def le64(key: str, fmt: str = '<Q') -> int:
        return int(struct.unpack(fmt, header[key][:8])[0])
    if any(k not in header for k in ('size', 'order', 'features')):
        return None
    if 'parent' in header or 'migration' in header:
        return None
    if 'op_features' in header and le64('op_features'):
        return None
    features = le64('features')
    if features & rbd.RBD_FEATURE_JOURNALING:
        return None
    size = le64('size')
    object_size = 1 << header['order'][0]
    stripe_unit, stripe_count = object_size, 1
    if features & rbd.RBD_FEATURE_STRIPINGV2 and 'stripe_unit' in header:
        stripe_unit, stripe_count = le64('stripe_unit'), le64('stripe_count')
    data_pool_id = pool_id
    if features & rbd.RBD_FEATURE_DATA_POOL and 'data_pool_id' in header:
        data_pool_id = le64('data_pool_id', '<q')
    return ImageInfo(id=image_id, size=size, object_size=object_size, stripe_unit=stripe_unit,
                     stripe_count=stripe_count, features=features, data_pool_id=data_pool_id,
                     watchers=[], descendants=[], snapshots=[], used_bytes=size,
                     migrating=False, has_parent=False, header_version=version)


def _version_by_name(io: 'rados.Ioctx', name: str) -> Optional[Tuple[str, int]]:
    """The id ``name`` resolves to and its header object's version (None:
    not a format 2 image, or not readable now)."""
    try:
        image_id = dir_lookup(io, name)
        if image_id is None:
            return None
        io.stat('rbd_header.' + image_id)
        return image_id, int(io.get_last_version())
    except rados.Error:
        return None


def read_header(io: 'rados.Ioctx', image_id: str) -> Optional[MigrationHeader]:
    """The migration header of image ``image_id``; None if it has none."""
    try:
        _, out = io.execute('rbd_header.' + image_id, 'rbd', 'migration_get', b'')
    except rados.ObjectNotFound:
        return None
    except rados.Error as e:
        if abs(getattr(e, 'errno', 0) or 0) == errno.EINVAL:   # not migrating
            return None
        raise
    return decode_migration_spec(bytes(out))


CEPH_NOSNAP = (1 << 64) - 2


def read_intent(io: 'rados.Ioctx', image_id: str) -> Optional[Intent]:
    """The module's intent key on image ``image_id`` (None: none, not ours,
    or no such image)."""
    try:
        _, out = io.execute('rbd_header.' + image_id, 'rbd', 'metadata_get',
                            _encode_str(INTENT_KEY))
        text, _ = _read_string(bytes(out), 0)
    except rados.ObjectNotFound:
        return None
    except struct.error:
        return None
    return Intent.loads(text)


def _omap_get(io: 'rados.Ioctx', oid: str, key: str) -> Optional[bytes]:
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
    value = _omap_get(io, 'rbd_directory', 'name_' + name)
    if value is None:
        return None
    try:
        return _read_string(value, 0)[0]
    except struct.error:
        return None


def trash_source(io: 'rados.Ioctx', image_id: str) -> Optional[TrashSource]:
    """The source of the trash entry of ``image_id`` (None: not in the trash)."""
    value = _omap_get(io, 'rbd_trash', 'id_' + image_id)
    if value is None:
        return None
    try:
        return TrashSource(value[6])
    except (IndexError, ValueError):
        return TrashSource.UNKNOWN


def _ioctx_or_none(c: Client, spec: ImageSpec) -> Optional['rados.Ioctx']:
    """The spec's pool and namespace; None if the pool is gone (nothing is there)."""
    try:
        return c.ioctx(spec.pool, spec.namespace)
    except NotFound:
        return None


def read_end(io: Optional['rados.Ioctx'], image_id: Optional[str],
             name_id: Optional[str]) -> End:
    if io is None:
        return End(image_id, None)
    pool_id = int(io.get_pool_id())
    if image_id is None:
        return End(None, name_id, pool_id=pool_id)
    exists = header_exists(io, image_id)
    return End(image_id=image_id, name_id=name_id, exists=exists,
               header=read_header(io, image_id) if exists else None,
               trash=trash_source(io, image_id), pool_id=pool_id)


def trash_entries(io: 'rados.Ioctx') -> List[Tuple[str, int, str]]:
    """(image id, source, name) of each trash entry, read from the rbd_trash omap.

    Pacific's ``RBD.trash_list`` raises IndexError on migration entries (its
    source enum lacks them), so decode cls::rbd::TrashImageSpec ourselves:
    ENCODE_START header (6 bytes), source (u8), name (string), ...
    """
    out: List[Tuple[str, int, str]] = []
    start = ''
    while True:
        with rados.ReadOpCtx() as op:
            it, _ = io.get_omap_vals(op, start, 'id_', 1024)
            try:
                io.operate_read_op(op, 'rbd_trash')
            except rados.ObjectNotFound:
                return out
            batch = list(it)
        for key, value in batch:
            try:
                buf = bytes(value)
                name, _ = _read_string(buf, 7)
                out.append((key[len('id_'):], buf[6], name))
            except (IndexError, struct.error):
                log.debug('undecodable trash entry %s', key)
        if len(batch) < 1024:
            return out
        start = batch[-1][0]


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
