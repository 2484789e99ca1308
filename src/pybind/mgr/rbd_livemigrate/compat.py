"""
Differences between Ceph releases, detected from the API, in one place.

Never parse version strings: each difference is found by what the running
mgr or binding accepts or has (a call's arity, a keyword, an attribute),
once, and remembered.  Unit-tested against fakes shaped like each release
(tests/test_compat.py).  Run on Pacific 16.2.15, Reef 18.2.7 and Tentacle
20.2.4; Squid 19.2's sources were read, not run.

==================  ===================  ==================  ==================
what                Pacific 16.2         Reef 18.2,          Tentacle 20.2
                                         Squid 19.2 (read)
==================  ===================  ==================  ==================
declaring commands  global ``CLICommand``, the same          one registry per
                    ``CLIReadCommand``/                      module:
                    ``CLIWriteCommand``                      ``CLICommandBase.
                                                             make_registry_
                                                             subtype(name)``,
                                                             ``.Read``/``.Write``,
                                                             set as the class's
                                                             ``CLICommand``
register a rados    ``_ceph_register_    ``(name, addrs,     as Reef
client for fencing  client(addrs)``      replace)``
unregister it       ``(addrs)``          ``(name, addrs)``   as Reef
``migration_        no ``flatten``       ``flatten``,        as Reef
prepare``                                ``clone_format``
==================  ===================  ==================  ==================

Checked and the same on all three (nothing to detect): ``MgrModule.get``,
``mon_command``, ``remote``, ``is_authorized``, ``set_health_checks`` and the
store calls; ``migration_execute/commit/abort/status`` and
``migration_prepare_import``; the progress callback ``(offset, total)``,
whose negative return no release honours (``probe_progress_cancel.py``);
the cls_rbd MigrationSpec (encoding v3) and snapshot namespaces; the OSD
map's ``blocklist`` (address -> expiry); ``Rados.blocklist_add`` (int expiry).
"""

import errno
import inspect
import logging
import threading
from typing import Any, Callable, NamedTuple, Optional

log = logging.getLogger(__name__)

CLIENT_NAME = 'rbd_livemigrate'
COMMAND_REGISTRY_NAME = 'RbdLiveMigrateCLICommand'


class CommandDecorators(NamedTuple):
    """How this module declares its commands on the running mgr.

    ``registry``: the class the mgr reads the module's commands from and
    dispatches them through; set it as the module class's ``CLICommand``
    (Tentacle's ``MgrModule`` has no default and uses ``cls.CLICommand``;
    older mgrs use their one global ``CLICommand`` and ignore the
    attribute).  ``read``/``write``: decorators taking the command prefix.
    ``per_module``: True where the mgr keeps one registry per module.
    """
    registry: Any
    read: Callable[[str], Callable[[Any], Any]]
    write: Callable[[str], Callable[[Any], Any]]
    per_module: bool


def command_decorators(mgr_module: Any,
                       name: str = COMMAND_REGISTRY_NAME) -> CommandDecorators:
    """Read/write command decorators for the ``mgr_module`` that is loaded.

    Tentacle (20.2) dropped ``CLIReadCommand``/``CLIWriteCommand`` and the
    global ``CLICommand``: each module makes its own registry with
    ``CLICommandBase.make_registry_subtype(name)`` and decorates with its
    ``Read``/``Write``.  Pacific to Squid have only the global
    ``CLICommand`` with the two decorator functions.  Found by what
    ``mgr_module`` has, not by its version.
    """
    base = getattr(mgr_module, 'CLICommandBase', None)
    make = getattr(base, 'make_registry_subtype', None)
    if base is not None and callable(make):
        registry = make(name)

        def by_perm(perm: str) -> Callable[[str], Callable[[Any], Any]]:
            method = getattr(registry, 'Read' if perm == 'r' else 'Write', None)
            if callable(method):
                return method   # type: ignore[no-any-return]
            return lambda prefix: registry(prefix, perm)
        return CommandDecorators(registry, by_perm('r'), by_perm('w'), True)
    return CommandDecorators(getattr(mgr_module, 'CLICommand', None),
                             mgr_module.CLIReadCommand, mgr_module.CLIWriteCommand, False)


class ClientRegistry:
    """Registers the module's own rados clients with the mgr, in the form the
    running mgr takes (the monitors blocklist registered clients when this
    mgr fails over, which frees their image locks at once)."""

    def __init__(self, register: Callable[..., Any], unregister: Callable[..., Any],
                 name: str = CLIENT_NAME) -> None:
        self._register = register
        self._unregister = unregister
        self.name = name
        self._named: Optional[bool] = None       # None: not known yet
        self._lock = threading.Lock()

    @property
    def named(self) -> Optional[bool]:
        """True: the (name, addrs, ...) form; False: (addrs); None: not tried yet."""
        return self._named

    def _call(self, fn: Callable[..., Any], named_args: tuple, plain_args: tuple) -> None:
        with self._lock:
            form = self._named
        if form is None:
            form = _takes_name(fn)
        if form is None:
            # a builtin without a signature: try the newer form, which an
            # older mgr rejects on arity before doing anything
            try:
                fn(*named_args)
                form = True
            except TypeError:
                fn(*plain_args)
                form = False
        elif form:
            fn(*named_args)
        else:
            fn(*plain_args)
        with self._lock:
            if self._named is None:
                self._named = form
                log.debug('mgr client registration takes a name: %s', form)

    def register(self, addrs: str) -> None:
        self._call(self._register, (self.name, addrs, False), (addrs,))

    def unregister(self, addrs: str) -> None:
        self._call(self._unregister, (self.name, addrs), (addrs,))


def _takes_name(fn: Callable[..., Any]) -> Optional[bool]:
    """From a Python signature, if there is one (fakes, future wrappers)."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values()):
        return None
    return len(params) >= 2


def prepare_takes_flatten(migration_prepare: Callable[..., Any]) -> bool:
    """Does ``RBD.migration_prepare`` take ``flatten`` (Reef 18.2 and later)?

    Cython methods carry no Python signature; their docstring starts with
    the embedded one and lists the parameters.
    """
    try:
        return 'flatten' in inspect.signature(migration_prepare).parameters
    except (TypeError, ValueError):
        pass
    doc = getattr(migration_prepare, '__doc__', None) or ''
    first = doc.strip().split('\n', 1)[0]
    return ':param flatten:' in doc or 'flatten=' in first


# A native source-spec that names a client but no cluster: librbd that knows
# ``cluster_name`` refuses it (EINVAL) before connecting or creating anything;
# older librbd ignores both keys and fails opening the pool named here
# (ENOENT, nothing created).
CROSS_CLUSTER_PROBE_SPEC = ('{"type": "native", "client_name": "client.rbd_livemigrate-probe", '
                            '"pool_name": "rbd_livemigrate-probe-no-such-pool", '
                            '"image_name": "probe", "snap_name": "probe"}')
CROSS_CLUSTER_RELEASE = 'Tentacle (20.2)'


def cross_cluster_import(prepare_import: Callable[[str], Any]) -> bool:
    """Does the running librbd import from another cluster (the ``native``
    source's ``cluster_name``/``client_name``: Tentacle 20.2; Squid 19.2.3 by
    its release notes, not run here)?

    ``prepare_import(spec_json)`` runs ``migration_prepare_import`` of that
    spec to a destination that is never created, raising an error with an
    ``errno`` attribute.  Measured with the binding of each release:
    Tentacle 20.2.4 EINVAL, Reef 18.2.7 ENOENT, Pacific 16.2.15 ENOENT, no
    image created.  Anything but EINVAL, or no error, is "no".
    """
    try:
        prepare_import(CROSS_CLUSTER_PROBE_SPEC)
    except Exception as e:
        err = abs(getattr(e, 'errno', 0) or 0)
        log.debug('cross-cluster probe: %s errno %s', type(e).__name__, err)
        return err == errno.EINVAL
    log.warning('cross-cluster probe: migration_prepare_import of a spec with no '
                'cluster succeeded; treating this librbd as without cross-cluster import')
    return False


def cross_cluster_refusal() -> str:
    """The one line EOPNOTSUPP carries where ``cross_cluster_import`` is False."""
    return ('moving images from another cluster needs the mgr on Ceph {} or later (its '
            'librbd imports from a remote cluster); this one has no such import'.format(
                CROSS_CLUSTER_RELEASE))
