"""
The rados clients the adapter runs on, and the one shape of every call.

The copy runs on clients this module creates with their own CephContext
(measured about 1.5x faster than the mgr's shared context, see
doc/mgr/rbd_livemigrate.rst).  Each is registered with the mgr so that the
monitors blocklist it when this mgr fails over, which frees its image locks
at once.  Each running task gets its own client: cancelling an executing
copy blocklists that client, which is the only way to stop
``migration_execute`` on Pacific.  Commands and looks run on one *control*
client (``ControlClient``), rebuilt when it is blocklisted.

Every call the adapter makes has one shape: open a pool (and namespace),
do the work, turn a rados/rbd error into a typed error with its errno
(``translate``), close the pool.  ``open_ioctx`` and ``open_image`` are that
shape as context managers; ``ControlClient.controlled`` adds the control client's
own rule (a dead connection is rebuilt and reported EAGAIN).
"""

import contextlib
import errno
import logging
import threading
from typing import (Any, Callable, ContextManager, Dict, Iterator, List, Optional, Tuple, Type,
                    Union)

import rados
import rbd

from .errors import AlreadyExists, LiveMigrateError, NotFound, Transient, TryAgain
from .interface import Client as ClientBase
from .interface import ClientPool
from .spec import ImageSpec, PoolSpec

log = logging.getLogger(__name__)

CONTROL_OP_TIMEOUT_SECONDS = 60
MAX_IDLE_CLIENTS = 4

# errors a retry can outlive: a lock or watch still held, an abort under way
# (EROFS), a connection lost or fenced.  EIO, anything else and errors
# without an errno fail the task: retrying them only hides the cause.
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ESHUTDOWN,
                              errno.EROFS, errno.ECONNRESET, errno.ENOTCONN, errno.EINTR,
                              # an import's http/s3 server gone for a while (measured:
                              # execute fails ECONNREFUSED when the server stops)
                              errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH,
                              errno.ECONNABORTED})

# what a call translates: librbd's errors, librados's, or both
RBD_ERRORS: Tuple[Type[Exception], ...] = (rbd.Error,)
RADOS_ERRORS: Tuple[Type[Exception], ...] = (rados.Error,)
ALL_ERRORS: Tuple[Type[Exception], ...] = (rados.Error, rbd.Error)


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


@contextlib.contextmanager
def open_ioctx(client: ClientBase, spec: Union[ImageSpec, PoolSpec], what: str = '',
               catch: Tuple[Type[Exception], ...] = (), missing_ok: bool = False
               ) -> Iterator[Any]:
    """``spec``'s pool and namespace, open for the block; an error of a
    type in ``catch`` leaves it translated (``what`` failed), and the pool
    is closed.  A missing pool raises ``NotFound`` (``Client.ioctx``), or
    with ``missing_ok`` gives None (nothing is there)."""
    try:
        io = client.ioctx(spec.pool, spec.namespace)
    except NotFound:
        if not missing_ok:
            raise
        yield None
        return
    try:
        yield io
    except catch as e:
        raise translate(e, what)
    finally:
        io.close()


def open_ioctx_or_none(client: ClientBase, spec: Union[ImageSpec, PoolSpec], what: str = '',
                       catch: Tuple[Type[Exception], ...] = ()
                       ) -> ContextManager[Optional[Any]]:
    """As ``open_ioctx``, but None when the pool is gone."""
    return open_ioctx(client, spec, what, catch, missing_ok=True)


@contextlib.contextmanager
def open_image(client: ClientBase, spec: ImageSpec, what: str,
               catch: Tuple[Type[Exception], ...] = RBD_ERRORS,
               read_only: bool = False) -> Iterator[Any]:
    """Image ``spec`` (by name) open for the block, in ``open_ioctx``'s shape."""
    with open_ioctx(client, spec, what, catch) as io:
        with rbd.Image(io, spec.image, read_only=read_only) as opened:
            yield opened


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
        self._idle: List[ClientBase] = []
        self._idle_lock = threading.Lock()

    def take(self) -> ClientBase:
        """An idle copy client, or a new one."""
        with self._idle_lock:
            while self._idle:
                client = self._idle.pop()
                if not client.closed:
                    return client
        return self.make()

    def release(self, client: ClientBase) -> None:
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


class ControlClient:
    """The one client commands and looks run on, made on demand (each op
    bounded), rebuilt after it is blocklisted; it fences the others."""

    def __init__(self, factory: ClientFactory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._control: Optional[Client] = None

    def control(self) -> Client:
        with self._lock:
            if self._control is None or self._control.closed:
                # commands use this client: never let one hang for ever
                self._control = self._factory.make(op_timeout=CONTROL_OP_TIMEOUT_SECONDS)
            return self._control

    def drop_control(self, client: Optional[Client] = None) -> None:
        """Forget a dead (blocklisted) control client; the next call makes a new one."""
        with self._lock:
            if self._control is not None and (client is None or client is self._control):
                self._control.close()
                self._control = None

    def shutdown(self) -> None:
        self.drop_control()
        self._factory.discard_idle()

    @contextlib.contextmanager
    def controlled(self) -> Iterator[Client]:
        """The control client for the block; a connection found shut down
        (blocklisted) is dropped and the call reports EAGAIN."""
        client = self.control()
        try:
            yield client
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
        """Fence ``client`` (a copy's: the only way to stop its execute)."""
        with self.controlled() as c:
            try:
                # Reef's binding types expire_seconds as int (a float: TypeError)
                c.handle.blocklist_add(client.addr, int(expire_seconds))
            except rados.Error as e:
                raise translate(e, 'cannot blocklist client {}'.format(client.addr))
