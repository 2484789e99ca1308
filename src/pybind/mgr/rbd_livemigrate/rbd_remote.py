"""
A client of a remote cluster: the connect check of ``remote add``, and the
few reads and snapshot calls a remote source needs (its images, watchers,
snapshots, whether HEAD moved since the snapshot).

Like the other ``rbd_*`` modules this one imports ``rados``/``rbd`` (lazily,
so unit tests hand it fakes) and raises the typed errors of ``errors.py``.
The key is given in the client's configuration, never read from a file and
never part of an error or a log line.

Measured with Tentacle 20.2.4's binding, two harness clusters:

- ``rados.Rados(conffile=None, ...)`` reads no conf at all; ``conffile=''``
  reads the *local* cluster's conf (its mon_host, keyring, log file), which
  must not leak into a remote client.
- A wrong key, a garbage key or an unknown user: ``PermissionDeniedError``
  errno 13 (EACCES) within 0.03 s.
- No answer (a closed port, an unrouted address): ``TimedOut`` errno 110
  (ETIMEDOUT) after ``client_mount_timeout``; ``connect(timeout=5)`` does
  *not* bound it (300 s measured with the default).  librados never reports
  EHOSTUNREACH or ECONNREFUSED here: a refused port is also ETIMEDOUT.
- An unresolvable host: EINVAL; an empty mon_host: ENOENT.
"""

import contextlib
import errno
import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .errors import InvalidArgument, LiveMigrateError, NotAuthorized, NotFound, Transient

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10


class Unreachable(Transient):
    """No answer from a remote's monitors (ETIMEDOUT, EHOSTUNREACH...)."""
    errno = errno.ETIMEDOUT


def client_conf(mon_host: str, key: str, timeout: float) -> Dict[str, str]:
    """A remote client's whole configuration (no conf file is read)."""
    t = str(max(1, int(timeout)))
    return {'mon_host': mon_host, 'key': key, 'keyring': '', 'keyfile': '',
            'client_mount_timeout': t, 'rados_mon_op_timeout': t,
            # a stopped remote OSD fails a read instead of hanging it (the gate's
            # looks, the comparison's reads)
            'rados_osd_op_timeout': t,
            'log_to_stderr': 'false', 'err_to_stderr': 'false', 'log_file': ''}


def _errno_of(e: BaseException) -> int:
    return abs(getattr(e, 'errno', 0) or 0)


class RemoteClient:
    """``with RemoteClient(mon_host, client, key) as c: c.fsid()``."""

    def __init__(self, name: str, mon_host: str, client_name: str, key: str,
                 timeout: float = CONNECT_TIMEOUT_SECONDS, rados_mod: Any = None,
                 rbd_mod: Any = None) -> None:
        self.name = name
        self.mon_host = mon_host
        self.client_name = client_name
        self._key = key
        self.timeout = timeout
        self._rados_mod = rados_mod
        self._rbd_mod = rbd_mod
        self._cluster: Any = None
        # what ``open_at`` opened, closed with the connection
        self._opened_images: List[Any] = []

    def __repr__(self) -> str:      # never the key
        return 'RemoteClient({!r}, {!r}, {!r})'.format(self.name, self.mon_host,
                                                       self.client_name)

    # -- connection ----------------------------------------------------

    def _mods(self) -> Any:
        if self._rados_mod is None:
            import rados
            self._rados_mod = rados
        if self._rbd_mod is None:
            import rbd
            self._rbd_mod = rbd
        return self._rados_mod, self._rbd_mod

    def _error(self, e: BaseException, what: str) -> LiveMigrateError:
        err = _errno_of(e)
        who = "remote '{}' ({} as {})".format(self.name, self.mon_host, self.client_name)
        if err in (errno.EACCES, errno.EPERM):
            return NotAuthorized('{} refused {}: wrong key, unknown user or missing caps '
                                 '(EACCES)'.format(who, what), errno.EACCES)
        if err in (errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ECONNREFUSED,
                   errno.ENETUNREACH):
            return Unreachable('no answer from {} within {:g} s ({})'.format(
                who, self.timeout, errno.errorcode.get(err, err)), err)
        if err == errno.ENOENT:
            return NotFound('{}: {} not found'.format(who, what))
        if err == errno.EINVAL and what == 'the connection':
            return InvalidArgument('{}: mon_host cannot be resolved or parsed'.format(who))
        return LiveMigrateError('{}: {} failed: {}'.format(who, what, type(e).__name__),
                                err or errno.EIO)

    def connect(self) -> 'RemoteClient':
        rados, _ = self._mods()
        cluster = rados.Rados(conffile=None, name=self.client_name,
                              conf=client_conf(self.mon_host, self._key, self.timeout))
        try:
            cluster.connect(timeout=int(self.timeout))
        except Exception as e:
            try:
                cluster.shutdown()
            except Exception:
                pass
            raise self._error(e, 'the connection') from None
        self._cluster = cluster
        return self

    def close(self) -> None:
        while self._opened_images:
            try:
                self._opened_images.pop().close()
            except Exception:
                pass
        if self._cluster is not None:
            try:
                self._cluster.shutdown()
            finally:
                self._cluster = None

    def __enter__(self) -> 'RemoteClient':
        return self.connect() if self._cluster is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- reads ---------------------------------------------------------

    def fsid(self) -> str:
        return str(self._cluster.get_fsid())

    def _ioctx(self, pool: str, namespace: str) -> Any:
        try:
            io = self._cluster.open_ioctx(pool)
        except Exception as e:
            raise self._error(e, "pool '{}'".format(pool)) from None
        if namespace:
            io.set_namespace(namespace)
        return io

    def _image(self, pool: str, namespace: str, image: str, snap: Optional[str] = None,
               read_only: bool = True) -> Any:
        """(ioctx, image) opened; the caller closes both (``_opened`` does)."""
        _, rbd = self._mods()
        io = self._ioctx(pool, namespace)
        try:
            return io, rbd.Image(io, image, snapshot=snap, read_only=read_only)
        except Exception as e:
            io.close()
            raise self._error(e, 'image {}{}'.format(image, '@' + snap if snap else '')) \
                from None

    @contextlib.contextmanager
    def _opened(self, pool: str, namespace: str, image: str, what: str,
                snap: Optional[str] = None, read_only: bool = True) -> Iterator[Any]:
        """The image, open for the block; an error of librbd's inside it
        becomes a typed one naming ``what`` (the module's own pass through)."""
        io, img = self._image(pool, namespace, image, snap, read_only)
        try:
            yield img
        except LiveMigrateError:
            raise
        except Exception as e:
            raise self._error(e, what) from None
        finally:
            img.close()
            io.close()

    def list_images(self, pool: str, namespace: str = '') -> List[str]:
        _, rbd = self._mods()
        io = self._ioctx(pool, namespace)
        try:
            return sorted(rbd.RBD().list(io))
        except Exception as e:
            raise self._error(e, "the images of pool '{}'".format(pool)) from None
        finally:
            io.close()

    def image_info(self, pool: str, namespace: str, image: str) -> Dict[str, Any]:
        """size, snapshot names, watcher addresses."""
        with self._opened(pool, namespace, image, 'image {}'.format(image)) as img:
            return {'size': int(img.size()),
                    'snaps': [s['name'] for s in img.list_snaps()],
                    'watchers': sorted(w['addr'] for w in img.watchers_list())}

    def user_snaps(self, pool: str, namespace: str, image: str) -> List[Tuple[str, int]]:
        """The image's user snapshots (name, size), oldest first."""
        with self._opened(pool, namespace, image,
                          'the snapshots of image {}'.format(image)) as img:
            snaps = [s for s in img.list_snaps() if s.get('namespace', 0) == 0]
            return [(str(s['name']), int(s['size']))
                    for s in sorted(snaps, key=lambda s: s['id'])]

    def open_at(self, pool: str, namespace: str, image: str, snap: Optional[str]) -> Any:
        """The image at ``snap``, read-only, open until the connection closes
        (the comparison reads it on its threads)."""
        io, img = self._image(pool, namespace, image, snap)
        self._opened_images.extend([io, img])
        return img

    def watchers(self, pool: str, namespace: str, image: str) -> List[str]:
        return list(self.image_info(pool, namespace, image)['watchers'])

    def head_differs(self, pool: str, namespace: str, image: str, snap: str) -> bool:
        """Has HEAD changed since ``snap`` (size or any extent)?  librbd's
        import copies the remote HEAD (remote_spec.py): a move is right only
        while this is False."""
        with self._opened(pool, namespace, image, 'image {}'.format(image)) as img, \
                self._opened(pool, namespace, image, 'image {}@{}'.format(image, snap),
                             snap) as snap_img:
            head_size = int(img.size())
            if int(snap_img.size()) != head_size:
                return True
            changed: List[int] = []

            def cb(offset: int, length: int, exists: bool) -> int:
                changed.append(offset)
                return -1      # one is enough (a negative return ends the walk)
            try:
                img.diff_iterate(0, head_size, snap, cb)
            except Exception as e:
                if not changed:
                    raise self._error(e, 'the diff of {}@{}'.format(image, snap)) from None
            return bool(changed)

    # -- the module's own snapshot --------------------------------------

    def create_snap(self, pool: str, namespace: str, image: str, snap: str) -> bool:
        """True if made now, False if it was there (idempotent)."""
        try:
            with self._opened(pool, namespace, image, 'a snapshot of {}'.format(image),
                              read_only=False) as img:
                if snap in [s['name'] for s in img.list_snaps()]:
                    return False
                img.create_snap(snap)
                return True
        except LiveMigrateError as e:
            if e.errno == errno.EEXIST:
                return False
            raise

    def remove_snap(self, pool: str, namespace: str, image: str, snap: str) -> bool:
        """True if removed now, False if it or its image was gone."""
        try:
            with self._opened(pool, namespace, image, 'snapshot {}@{}'.format(image, snap),
                              read_only=False) as img:
                img.remove_snap(snap)
                return True
        except LiveMigrateError as e:
            if e.errno == errno.ENOENT:
                return False
            raise


def connect_check(name: str, mon_host: str, client_name: str, key: str,
                  timeout: float = CONNECT_TIMEOUT_SECONDS, rados_mod: Any = None) -> str:
    """Connect once and return the remote's fsid (``remote add``'s check)."""
    with RemoteClient(name, mon_host, client_name, key, timeout, rados_mod=rados_mod,
                      rbd_mod=object()) as c:
        return c.fsid()
