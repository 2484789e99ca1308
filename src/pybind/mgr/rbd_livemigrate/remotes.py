"""
Registered remote clusters, and the private files librbd reads them from.

``ceph rbd livemigrate remote add <name> <mon_host> [--client-name client.X]
-i <keyring>`` registers another cluster whose images ``add``/``add-pool``
may then move here (see remote_spec.py for what librbd does with them).

Storage, in the module's store (the monitors' config-key store, under
``mgr/rbd_livemigrate/``):

- ``remote/<name>``: the record, versioned JSON (name, mon_host, client_name,
  the remote's fsid, when it was added).  Never a key: a record that has
  one is refused as corrupt.
- ``remote-key/<name>``: the cephx key alone.  Written before the record and
  removed after it, so a record always has its key; a key with no record
  (a crash between the two) is removed at load.

The key never appears in a record, a reply, a log line or a progress
message: ``Remote`` does not hold it, ``RemoteRegistry.key()`` is the one
way to read it, and errors name the remote and the user, never the key.
The monitors' own log shows ``config-key set`` without the value (measured
on Tentacle 20.2.4: only the mon's store.db holds it).

Files: Tentacle's librbd reads a remote cluster's conf only from a path
(``cluster_name``; remote_spec.py), so ``ConfFiles`` writes
``<dir>/<name>.conf`` (mon_host, keyring path) and ``<dir>/<name>.keyring``
(0600, in a 0700 directory owned by the mgr's user) while a task needs
them, removes them when none does, and sweeps the directory at start
(files a killed mgr left behind).
"""

import errno
import json
import logging
import os
import stat
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from . import remote_spec
from .errors import AlreadyExists, Busy, InvalidArgument, LiveMigrateError, NotFound

log = logging.getLogger(__name__)

RECORD_PREFIX = 'remote/'
KEY_PREFIX = 'remote-key/'
RECORD_VERSION = 1
CONF_SUFFIX = '.conf'
KEYRING_SUFFIX = '.keyring'
TMP_SUFFIX = '.tmp'


class NotSupported(LiveMigrateError):
    errno = errno.EOPNOTSUPP


class CorruptRemote(ValueError):
    pass


@dataclass(frozen=True)
class Remote:
    name: str
    mon_host: str
    client_name: str
    fsid: str
    added_at: float
    version: int = RECORD_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> 'Remote':
        try:
            d = json.loads(text)
        except ValueError as e:
            raise CorruptRemote('not JSON: {}'.format(e))
        if not isinstance(d, dict):
            raise CorruptRemote('not an object')
        if 'key' in d:
            raise CorruptRemote('a record must not hold a key')
        version = d.get('version')
        if not isinstance(version, int) or version < 1:
            raise CorruptRemote('bad version {!r}'.format(version))
        if version > RECORD_VERSION:
            raise CorruptRemote('version {} is newer than this module knows ({})'.format(
                version, RECORD_VERSION))
        try:
            r = cls(name=remote_spec.validate_remote_name(d['name']),
                    mon_host=remote_spec.validate_mon_host(d['mon_host']),
                    client_name=remote_spec.validate_client_name(d['client_name']),
                    fsid=str(d.get('fsid', '')), added_at=float(d.get('added_at', 0.0)),
                    version=version)
        except (KeyError, TypeError, ValueError, InvalidArgument) as e:
            raise CorruptRemote('bad field: {}'.format(e))
        return r

    def view(self, conf_dir: Optional[str] = None) -> Dict[str, Any]:
        """What ``remote ls`` shows (no key)."""
        out: Dict[str, Any] = {'name': self.name, 'mon_host': self.mon_host,
                               'client_name': self.client_name, 'fsid': self.fsid,
                               'added_at': time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                                         time.gmtime(self.added_at))}
        if conf_dir:
            # where clients that open a destination before commit need the conf
            out['conf_path'] = remote_spec.cluster_path(conf_dir, self.name) + CONF_SUFFIX
        return out


# (name, mon_host, client_name, key) -> the remote's fsid; raises
# LiveMigrateError (EACCES, ETIMEDOUT, ...): rbd_remote.connect_check
ConnectCheck = Callable[[str, str, str, str], str]


class RemoteRegistry:
    """The remotes in the store.  ``supported()`` says whether this mgr's librbd
    imports from another cluster (``compat.cross_cluster_import``)."""

    def __init__(self, get_store_prefix: Callable[[str], Dict[str, str]],
                 set_store: Callable[[str, Optional[str]], None],
                 connect_check: ConnectCheck, supported: Callable[[], bool],
                 refusal: Callable[[], str], local_fsid: Callable[[], str]) -> None:
        self._get_prefix = get_store_prefix
        self._set = set_store
        self._check = connect_check
        self._supported = supported
        self._refusal = refusal
        self._local_fsid = local_fsid
        self._lock = threading.Lock()

    # -- reading -------------------------------------------------------

    def load(self) -> Tuple[Dict[str, Remote], Dict[str, str]]:
        """{name: Remote}, and {store key: why} for what was skipped.  Orphan
        keys (no record) are removed."""
        remotes: Dict[str, Remote] = {}
        skipped: Dict[str, str] = {}
        for k, v in sorted(self._get_prefix(RECORD_PREFIX).items()):
            try:
                r = Remote.from_json(v if isinstance(v, str) else '')
                if k != RECORD_PREFIX + r.name:
                    raise CorruptRemote('key does not match name {!r}'.format(r.name))
            except CorruptRemote as e:
                log.error('skipping stored remote %s: %s', k, e)
                skipped[k] = str(e)
                continue
            remotes[r.name] = r
        for k in sorted(self._get_prefix(KEY_PREFIX)):
            if k[len(KEY_PREFIX):] not in remotes and RECORD_PREFIX + k[len(KEY_PREFIX):] \
                    not in skipped:
                log.info('removing the key of remote %s, which has no record',
                         k[len(KEY_PREFIX):])
                self._set(k, None)
        return remotes, skipped

    def names(self) -> Set[str]:
        return set(self.load()[0])

    def get(self, name: str) -> Remote:
        remotes, _ = self.load()
        if name not in remotes:
            raise NotFound("no remote named '{}' (ceph rbd livemigrate remote ls)".format(name))
        return remotes[name]

    def key(self, name: str) -> str:
        """The remote's key: for ConfFiles and the remote client only."""
        value = self._get_prefix(KEY_PREFIX + name).get(KEY_PREFIX + name)
        if not value:
            raise NotFound("remote '{}' has no key stored: remove it and add it again".format(
                name))
        return value

    def ls(self, conf_dir: Optional[str] = None) -> List[Dict[str, Any]]:
        remotes, _ = self.load()
        return [remotes[n].view(conf_dir) for n in sorted(remotes)]

    # -- changing ------------------------------------------------------

    def require_supported(self) -> None:
        if not self._supported():
            raise NotSupported(self._refusal())

    def add(self, name: str, mon_host: str, client_name: Optional[str],
            keyring: Optional[str]) -> Tuple[Remote, bool]:
        """(the remote, True if new).  The same request again returns the
        existing one; a different one for the same name is EEXIST."""
        self.require_supported()
        remote_spec.validate_remote_name(name)
        remote_spec.validate_mon_host(mon_host)
        client, key = remote_spec.parse_keyring(keyring, client_name)
        with self._lock:
            remotes, _ = self.load()
            old = remotes.get(name)
            if old is not None:
                diff = [f for f, a, b in (('mon_host', old.mon_host, mon_host),
                                          ('client name', old.client_name, client))
                        if a != b]
                try:
                    same_key = self.key(name) == key
                except NotFound:
                    same_key = False
                if not same_key:
                    diff.append('key')
                if not diff:
                    return old, False
                raise AlreadyExists("remote '{}' exists with another {}: remove it first "
                                    '(remote rm {})'.format(name, ', '.join(diff), name))
            fsid = self._check(name, mon_host, client, key)
            if fsid and fsid == self._local_fsid():
                raise InvalidArgument("remote '{}' is this cluster (fsid {}): moves within a "
                                      'cluster need no remote'.format(name, fsid))
            remote = Remote(name=name, mon_host=mon_host, client_name=client, fsid=fsid,
                            added_at=time.time())
            self._set(KEY_PREFIX + name, key)
            self._set(RECORD_PREFIX + name, remote.to_json())
        log.info('remote %s added: %s as %s, fsid %s', name, mon_host, client, fsid)
        return remote, True

    def rm(self, name: str, users: Callable[[str], List[str]]) -> None:
        """Refused (EBUSY) while ``users(name)`` names a task."""
        with self._lock:
            self.get(name)
            busy = users(name)
            if busy:
                shown = ', '.join(busy[:5]) + (' and {} more'.format(len(busy) - 5)
                                               if len(busy) > 5 else '')
                raise Busy("remote '{}' is used by task(s) {}: cancel them or wait until "
                           'they end'.format(name, shown))
            self._set(RECORD_PREFIX + name, None)
            self._set(KEY_PREFIX + name, None)
        log.info('remote %s removed', name)


class ConfFiles:
    """``<dir>/<name>.conf`` and ``<dir>/<name>.keyring`` for the remotes that
    running tasks need.  Only files with those suffixes (and our temporary
    files) are ever written or removed here."""

    def __init__(self, dir: str, op_timeout_seconds: int = 0) -> None:
        self.op_timeout_seconds = op_timeout_seconds
        if not os.path.isabs(dir):
            raise InvalidArgument('remote conf dir {!r} is not absolute'.format(dir))
        self.dir = os.path.normpath(dir)
        self._lock = threading.Lock()

    def _ensure_dir(self) -> None:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        st = os.lstat(self.dir)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument('remote conf dir {} is not a directory'.format(self.dir))
        if st.st_uid != os.geteuid():
            raise InvalidArgument('remote conf dir {} belongs to uid {}, not to this mgr '
                                  '({})'.format(self.dir, st.st_uid, os.geteuid()))
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.dir, 0o700)

    def _ours(self, fname: str) -> bool:
        return fname.endswith((CONF_SUFFIX, KEYRING_SUFFIX, TMP_SUFFIX))

    def paths(self, name: str) -> Tuple[str, str]:
        base = remote_spec.cluster_path(self.dir, name)
        return base + CONF_SUFFIX, base + KEYRING_SUFFIX

    def sweep(self, keep: Iterable[str] = ()) -> List[str]:
        """At start: remove every conf/keyring left here (a killed mgr's) but
        those of the remotes in ``keep`` (live tasks need them without a gap:
        clients opening a destination read them; ``write`` replaces them)."""
        kept = {f for name in keep for f in self.paths(name)}
        with self._lock:
            self._ensure_dir()
            removed = []
            for fname in sorted(os.listdir(self.dir)):
                if self._ours(fname) and os.path.join(self.dir, fname) not in kept:
                    try:
                        os.unlink(os.path.join(self.dir, fname))
                        removed.append(fname)
                    except FileNotFoundError:
                        pass
        if removed:
            log.info('removed %d remote conf/keyring file(s) left in %s', len(removed),
                     self.dir)
        return removed

    def _write(self, path: str, text: str) -> None:
        try:
            with open(path) as f:
                if f.read() == text and stat.S_IMODE(os.fstat(f.fileno()).st_mode) == 0o600:
                    return
        except OSError:
            pass
        tmp = '{}.{}{}'.format(path, os.getpid(), TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def write(self, remote: Remote, key: str) -> str:
        """Write (or keep) the remote's files; returns the ``cluster_name`` the
        source-spec uses."""
        conf, keyring = self.paths(remote.name)
        with self._lock:
            self._ensure_dir()
            self._write(keyring, remote_spec.keyring_text(remote.client_name, key))
            text = remote_spec.conf_text(remote.mon_host, keyring, self.op_timeout_seconds)
            self._write(conf, text)
        return remote_spec.cluster_path(self.dir, remote.name)

    def remove(self, name: str) -> None:
        with self._lock:
            for p in self.paths(name):
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass

    def present(self) -> Set[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return set()
        return {n[:-len(CONF_SUFFIX)] for n in names if n.endswith(CONF_SUFFIX)} | \
            {n[:-len(KEYRING_SUFFIX)] for n in names if n.endswith(KEYRING_SUFFIX)}

    def retain(self, needed: Iterable[str]) -> List[str]:
        """Remove the files of every remote not in ``needed``; returns those."""
        keep = set(needed)
        gone = sorted(self.present() - keep)
        for name in gone:
            self.remove(name)
        return gone
