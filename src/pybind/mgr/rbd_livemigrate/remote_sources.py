"""
Remote sources as the commands and the task runner see them: one room
with narrow doors (the registry, the private files, a client factory, and
the live tasks' specs), wired in by module.py/commands (see
/work/briefs/issue27-wiring.md).

A remote move is an import task whose ``import_spec`` is the ``native``
spec remote_spec.build_source_spec makes (no secret in it) and whose
snapshot is either the user's ``@snap`` or ``rbd_livemigrate-<task id>``,
the module's own: taken by ``before_prepare``, removed from both ends by
``after_end``.  Nothing else marks a task as remote or its snapshot as the
module's: both are read back from the spec.
"""

import contextlib
import errno
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from . import remote_spec
from .errors import Blocked, InvalidArgument
from .interface import SourceReader
from .rbd_remote import RemoteClient
from .remote_spec import RemoteImageSpec, RemotePoolSpec, spec_of
from .remotes import ConfFiles, Remote, RemoteRegistry

log = logging.getLogger(__name__)

EBUSY = errno.EBUSY
MAX_SHOWN = 3

# (remote, key) -> an unconnected client (rbd_remote.RemoteClient)
ClientFor = Callable[[Remote, str], RemoteClient]
# (task id, import_spec JSON) of every task that is not over
LiveSpecs = Callable[[], Iterable[Tuple[str, Optional[str]]]]


def own_snap(task_id: str, spec: Dict[str, Any]) -> bool:
    """Is the spec's snapshot the one the module takes for this task?"""
    return spec.get('snap_name') == remote_spec.module_snap_name(task_id)


class RemoteSources:
    def __init__(self, registry: RemoteRegistry, files: ConfFiles, client_for: ClientFor,
                 live_specs: LiveSpecs) -> None:
        self.registry = registry
        self.files = files
        self.client_for = client_for
        self.live_specs = live_specs

    # -- commands: remote add / ls / rm ---------------------------------

    def add_remote(self, name: str, mon_host: str, client_name: Optional[str],
                   keyring: Optional[str]) -> Dict[str, Any]:
        remote, new = self.registry.add(name, mon_host, client_name, keyring)
        out = remote.view(self.files.dir)
        out['added'] = new
        return out

    def ls(self) -> List[Dict[str, Any]]:
        views = self.registry.ls(self.files.dir)
        used = self.users_by_remote()
        for v in views:
            v['tasks'] = len(used.get(v['name'], []))
        return views

    def users_by_remote(self) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = {}
        for task_id, text in self.live_specs():
            spec = spec_of(text)
            name = remote_spec.remote_of_spec(spec) if spec else None
            if name:
                out.setdefault(name, []).append(task_id)
        return out

    def rm(self, name: str) -> None:
        self.registry.rm(name, lambda n: sorted(self.users_by_remote().get(n, [])))
        if name not in self.users_by_remote():
            self.files.remove(name)

    # -- add / add-pool -------------------------------------------------

    def image_source(self, text: str) -> Optional[RemoteImageSpec]:
        """The remote image ``text`` names, or None for a local spec.  EOPNOTSUPP
        where this mgr's librbd cannot import from another cluster."""
        if remote_spec.split_remote(text, self.registry.names()) is None:
            return None
        self.registry.require_supported()
        return RemoteImageSpec.parse(text)

    def pool_source(self, text: str) -> Optional[RemotePoolSpec]:
        if remote_spec.split_remote(text, self.registry.names()) is None:
            return None
        self.registry.require_supported()
        return RemotePoolSpec.parse(text)

    def spec_for(self, src: RemoteImageSpec, task_id: str) -> Dict[str, Any]:
        """The task's import_spec: the user's snapshot, or the module's own."""
        remote = self.registry.get(src.remote)
        snap = src.snap or remote_spec.module_snap_name(task_id)
        return remote_spec.build_source_spec(self.files.dir, remote.name, remote.client_name,
                                             src.pool, src.namespace, src.image, snap)

    def check_image(self, src: RemoteImageSpec) -> Dict[str, Any]:
        """At add time: the remote image exists (and its snapshot, if given);
        its size, snapshots and watchers."""
        remote = self.registry.get(src.remote)
        with self.client_for(remote, self.registry.key(remote.name)) as c:
            info = c.image_info(src.pool, src.namespace, src.image)
        if src.snap and src.snap not in info['snaps']:
            raise InvalidArgument("remote image {} has no snapshot '{}'".format(
                RemoteImageSpec(src.remote, src.pool, src.namespace, src.image, None), src.snap))
        return info

    def pool_images(self, src: RemotePoolSpec) -> List[str]:
        remote = self.registry.get(src.remote)
        with self.client_for(remote, self.registry.key(remote.name)) as c:
            return remote_spec.pool_images(c.list_images(src.pool, src.namespace))

    # -- the task's steps -----------------------------------------------

    @staticmethod
    def is_remote(spec_text: Optional[str]) -> bool:
        return spec_of(spec_text) is not None

    def _remote_of(self, spec: Dict[str, Any]) -> Tuple[Remote, str]:
        name = remote_spec.remote_of_spec(spec)
        if name is None:
            raise InvalidArgument('not a remote source-spec')
        remote = self.registry.get(name)
        return remote, self.registry.key(name)

    def before_prepare(self, task_id: str, spec_text: str) -> None:
        """Before ``migration_prepare_import``: the remote image has no
        watchers (its clients are stopped, as for a local source), the
        module's snapshot is taken if it is the task's, HEAD has not moved
        since the snapshot (librbd 20.2.4 copies HEAD), and the files exist.
        A finding is ``Blocked(EBUSY, wait=True)``: the task waits."""
        spec = spec_of(spec_text)
        if spec is None:
            return
        remote, key = self._remote_of(spec)
        pool, ns = spec['pool_name'], spec.get('pool_namespace', '')
        image, snap = spec['image_name'], spec['snap_name']
        where = '{}:{}/{}{}'.format(remote.name, pool, ns + '/' if ns else '', image)
        with self.client_for(remote, key) as c:
            watchers = c.watchers(pool, ns, image)
            if watchers:
                raise Blocked('remote image {} has {} watcher(s) ({}): stop its clients; the '
                              'task waits'.format(where, len(watchers),
                                                  ', '.join(watchers[:MAX_SHOWN])),
                              EBUSY, wait=True)
            if own_snap(task_id, spec) and c.create_snap(pool, ns, image, snap):
                log.info('task %s: took snapshot %s of %s', task_id, snap, where)
            if c.head_differs(pool, ns, image, snap):
                raise Blocked('remote image {} was written after snapshot {}: librbd would copy '
                              'the newer data (stop its clients, then remove the snapshot or '
                              'name a newer one)'.format(where, snap), EBUSY, wait=True)
        self.files.write(remote, key)

    @contextlib.contextmanager
    def reader(self, spec_text: str) -> Iterator[SourceReader]:
        """The remote image as verify reads it: the spec's snapshot (what
        librbd copied), the image's user snapshots, and an opener; one
        connection, closed (with what it opened) on leaving."""
        spec = spec_of(spec_text)
        if spec is None:
            raise InvalidArgument('not a remote source-spec')
        remote, key = self._remote_of(spec)
        pool, ns, image = spec['pool_name'], spec.get('pool_namespace', ''), spec['image_name']
        with self.client_for(remote, key) as c:
            yield SourceReader(spec['snap_name'], c.user_snaps(pool, ns, image),
                               lambda snap: c.open_at(pool, ns, image, snap))

    def watchers(self, spec_text: Optional[str]) -> List[str]:
        """The clients of a remote task's image (the scheduler's look at a
        waiting task, as at a local source's)."""
        spec = spec_of(spec_text)
        if spec is None:
            return []
        remote, key = self._remote_of(spec)
        with self.client_for(remote, key) as c:
            return c.watchers(spec['pool_name'], spec.get('pool_namespace', ''),
                              spec['image_name'])

    def ensure_files(self, spec_text: Optional[str]) -> None:
        """Before any librbd call that opens the destination before commit
        (execute, commit, abort, verify, status), e.g. after a mgr restart."""
        spec = spec_of(spec_text)
        if spec is not None:
            remote, key = self._remote_of(spec)
            self.files.write(remote, key)

    def after_end(self, task_id: str, spec_text: Optional[str],
                  remove_dest_snap: Callable[[str], None]) -> None:
        """When the task is over (committed, cancelled, aborted): the module's
        snapshot leaves the remote and the destination (librbd copied it
        there), and files no task needs are removed."""
        spec = spec_of(spec_text)
        if spec is not None and own_snap(task_id, spec):
            remote, key = self._remote_of(spec)
            with self.client_for(remote, key) as c:
                if c.remove_snap(spec['pool_name'], spec.get('pool_namespace', ''),
                                 spec['image_name'], spec['snap_name']):
                    log.info('task %s: removed snapshot %s from remote %s', task_id,
                             spec['snap_name'], remote.name)
            remove_dest_snap(spec['snap_name'])
        self.tidy(ending=task_id)

    # -- files ------------------------------------------------------------

    def needed(self) -> Set[str]:
        return set(self.users_by_remote())

    def start(self) -> None:
        """At serve(): sweep what a killed mgr left, then write the files of
        the remotes live tasks use (their destinations open the remote)."""
        needed = self.needed()
        self.files.sweep(keep=needed)
        for name in sorted(needed):
            try:
                self.files.write(self.registry.get(name), self.registry.key(name))
            except Exception as e:      # one remote never stops the module
                log.error('cannot write the files of remote %s: %s', name, e)

    def tidy(self, ending: Optional[str] = None) -> List[str]:
        """Remove the files no live task needs; ``ending``: a task being ended
        (still live in the table until its end is recorded) needs none."""
        return self.files.retain(name for name, ids in self.users_by_remote().items()
                                 if any(i != ending for i in ids))
