"""
Remote (other-cluster) sources: parsing what the user types, and the
``native`` source-spec librbd imports from.  Pure: no rados, no files.

What librbd does with a remote source (read in ceph/ceph
``src/librbd/migration/NativeFormat.cc`` and ``src/librbd/api/Migration.cc``,
measured with ``rbd migration prepare --import-only`` between two Tentacle
20.2.4 harness clusters, December 2026):

- Keys of the ``native`` spec in 20.2.4: ``type``, ``cluster_name``,
  ``client_name``, ``pool_name`` | ``pool_id``, ``pool_namespace``,
  ``image_name``, ``image_id``, ``snap_name`` | ``snap_id``.  ``mon_host``,
  ``key``, ``key_ref``, ``keyring_path``, ``config_path`` exist only in
  newer code (ceph/ceph main); 20.2.4's librbd has none of those strings.
- Unknown keys are ignored.  A spec carrying ``mon_host`` + ``key`` and no
  ``cluster_name`` (main's form) given to 20.2.4 imports the *local*
  cluster's image of that pool/name/snap, rc 0 (measured).  So this module
  never builds that form, and every remote spec names ``cluster_name``.
- ``client_name`` without ``cluster_name``: EINVAL ("cannot specify client
  name without cluster name"); ``compat.cross_cluster_import`` probes that.
- Import needs ``snap_name`` or ``snap_id``: EINVAL ("snap name or snap id
  required for import").
- The remote cluster's conf is found only through the default search list
  ``$data_dir/config,/etc/ceph/$cluster.conf,$home/.ceph/$cluster.conf,
  $cluster.conf`` with ``$cluster`` = ``cluster_name`` (``CEPH_CONF`` is
  ignored on purpose, no CephContext from the environment).  The last entry
  takes an absolute path: ``cluster_name`` = ``/dir/name`` reads
  ``/dir/name.conf`` (measured).  The conf names ``keyring``; the default
  keyring search (``/etc/ceph/$cluster.$name.keyring``...) is not relied on.
  No conf found: ENOENT "failed to read ceph conf for remote cluster".
- The spec is stored in the destination's migration header.  Every client
  that opens the destination before commit (the mgr's copy, a VM, ``rbd
  info``) opens the remote too, from its own host, with the same conf path:
  without the conf there, opening the destination fails ENOENT ("failed to
  refresh parent image").  After commit the destination stands alone.
- Clients reading through the destination, and the copy itself, add no
  watcher on the remote image (opened read-only at the snapshot): the
  remote's watchers are its own clients only.
- Destination snapshots: every snapshot of the remote image, *including
  ones newer than the spec's* (an import from ``@s2`` of an image with
  s1, s2, s3 gave the destination s1, s2, s3).
- Upstream bug (tracker 67401, acknowledged in ceph/ceph PR 71380): before
  execute the destination's HEAD reads as the spec's snapshot; after
  execute it holds the remote's HEAD.  Measured: HEAD written after @s2,
  destination HEAD after execute = remote HEAD, not s2.  A move is only
  right when the remote HEAD does not differ from the snapshot while the
  copy runs (clients stopped): check it (diff from the snapshot to HEAD)
  before prepare and verify after.
- A remote clone is flattened on import (the import's migration spec sets
  ``flatten``): before commit ``rbd info`` shows the remote parent
  (``rbd/par@base``), after commit no parent, data equal to the remote
  clone's snapshot, usage the full image.
- ``migration abort`` of an import leaves the remote image untouched
  (snapshots, features).  A failed prepare (EEXIST destination) logs
  "v2_relink_src_image: failed restoring image from trash: ENOENT" against
  the source: harmless with read-only caps, but grant the remote user no
  more than it needs.
- Caps that suffice for the copy: ``mon 'profile rbd' osd
  'profile rbd-read-only'``; taking and removing the module's own snapshot
  needs ``osd 'profile rbd'``.
"""

import base64
import binascii
import json
import re
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .errors import InvalidArgument
from .spec import PoolSpec, validate_name

# names become file names and conf sections: keep them plain
_REMOTE_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$')
_CLIENT_RE = re.compile(r'^client\.[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$')
# mon_host as ceph.conf takes it: addresses, [v2:...,v1:...] vectors, names;
# never whitespace, '=', ';', '#' or a newline (it goes into a conf file)
_MON_HOST_RE = re.compile(r'^[A-Za-z0-9.:,\[\]/_-]{1,1024}$')
_SECTION_RE = re.compile(r'^\s*\[([^\]]+)\]\s*$')
_KEY_LINE_RE = re.compile(r'^\s*key\s*=\s*(\S+)\s*$')
_BARE_KEY_RE = re.compile(r'^[A-Za-z0-9+/]+={0,2}$')

DEFAULT_CLIENT = 'client.admin'
SNAP_PREFIX = 'rbd_livemigrate-'
# the keys a spec built here may carry (never a secret)
SPEC_KEYS = ('type', 'cluster_name', 'client_name', 'pool_name', 'pool_namespace',
             'image_name', 'snap_name')
SECRET_SPEC_KEYS = ('key', 'key_ref', 'mon_host', 'keyring_path', 'config_path')


def validate_remote_name(name: str) -> str:
    if not isinstance(name, str) or not _REMOTE_RE.match(name):
        raise InvalidArgument(
            'remote name {!r}: 1-63 letters, digits, ".", "_" or "-", starting with a '
            'letter or digit'.format(name))
    return name


def validate_client_name(name: Optional[str]) -> str:
    name = name or DEFAULT_CLIENT
    if not _CLIENT_RE.match(name):
        raise InvalidArgument('client name {!r}: expected client.<id>'.format(name))
    return name


def validate_mon_host(text: str) -> str:
    if not isinstance(text, str) or not _MON_HOST_RE.match(text):
        raise InvalidArgument(
            'mon_host {!r}: expected addresses as ceph.conf takes them, e.g. '
            '10.0.0.1,10.0.0.2 or [v2:10.0.0.1:3300,v1:10.0.0.1:6789] '
            '(no spaces)'.format(text))
    return text


def validate_key(key: str) -> str:
    """A cephx secret: base64 of at least 16 bytes (AES-128 and newer)."""
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b''
    if len(raw) < 16:
        raise InvalidArgument('the keyring given with -i has no valid key')
    return key


def parse_keyring(text: Optional[str], client_name: Optional[str]) -> Tuple[str, str]:
    """``(client_name, key)`` from the keyring given with ``-i``.

    With ``client_name`` the keyring must have that section; without, it
    must have exactly one ``client.*`` section.  A bare key (one line, as
    ``ceph auth print-key`` writes it) is taken for ``client_name``.  The
    key is never part of an error message.
    """
    if not text or not text.strip():
        raise InvalidArgument('remote add needs the keyring of the remote user: -i <keyring>')
    lines = text.strip().splitlines()
    if len(lines) == 1 and _BARE_KEY_RE.match(lines[0].strip()):
        return validate_client_name(client_name), validate_key(lines[0].strip())
    keys: Dict[str, str] = {}
    section: Optional[str] = None
    for line in lines:
        m = _SECTION_RE.match(line)
        if m:
            section = m.group(1).strip()
            continue
        m = _KEY_LINE_RE.match(line)
        if m and section is not None:
            keys[section] = m.group(1)
    clients = sorted(s for s in keys if s.startswith('client.'))
    if client_name:
        want = validate_client_name(client_name)
        if want not in keys:
            raise InvalidArgument('the keyring given with -i has no [{}] section (it has: '
                                  '{})'.format(want, ', '.join(sorted(keys)) or 'none'))
        return want, validate_key(keys[want])
    if len(clients) != 1:
        raise InvalidArgument('the keyring given with -i has {} client sections ({}): '
                              'name one with --client-name'.format(
                                  len(clients), ', '.join(clients) or 'none'))
    return validate_client_name(clients[0]), validate_key(keys[clients[0]])


def split_remote(text: str, remotes: Any) -> Optional[Tuple[str, str]]:
    """``(remote, rest)`` when ``text`` is ``<remote>:<rest>`` and ``<remote>`` is
    one of ``remotes`` (registered names); None for a local spec.  A local pool
    may have ':' in its name: only a registered remote name makes it remote."""
    if not isinstance(text, str) or ':' not in text:
        return None
    head, rest = text.split(':', 1)
    if '/' in head or '@' in head or head not in remotes:
        return None
    return head, rest


class RemoteImageSpec(NamedTuple):
    remote: str
    pool: str
    namespace: str
    image: str
    snap: Optional[str]       # None: the module takes (and later removes) one

    def __str__(self) -> str:
        pool = '{}/{}'.format(self.pool, self.namespace) if self.namespace else self.pool
        out = '{}:{}/{}'.format(self.remote, pool, self.image)
        return out + ('@' + self.snap if self.snap else '')

    @classmethod
    def parse(cls, text: str) -> 'RemoteImageSpec':
        """``<remote>:<pool>[/<ns>]/<image>[@<snap>]``."""
        if not isinstance(text, str) or ':' not in text:
            raise InvalidArgument('remote image spec {!r}: expected '
                                  '<remote>:<pool>[/<namespace>]/<image>[@<snap>]'.format(text))
        remote, rest = text.split(':', 1)
        validate_remote_name(remote)
        snap: Optional[str] = None
        if '@' in rest:
            rest, snap = rest.split('@', 1)
            validate_name('snapshot', snap)
        parts = rest.split('/')
        if len(parts) not in (2, 3):
            raise InvalidArgument('remote image spec {!r}: expected '
                                  '<remote>:<pool>[/<namespace>]/<image>[@<snap>]'.format(text))
        pool = validate_name('pool', parts[0])
        namespace = validate_name('namespace', parts[1]) if len(parts) == 3 else ''
        image = validate_name('image', parts[-1])
        return cls(remote, pool, namespace, image, snap)


class RemotePoolSpec(NamedTuple):
    remote: str
    pool: str
    namespace: str

    def __str__(self) -> str:
        return '{}:{}'.format(self.remote, PoolSpec(self.pool, self.namespace))

    @classmethod
    def parse(cls, text: str) -> 'RemotePoolSpec':
        """``<remote>:<pool>[/<ns>]``."""
        if not isinstance(text, str) or ':' not in text:
            raise InvalidArgument('remote pool spec {!r}: expected '
                                  '<remote>:<pool>[/<namespace>]'.format(text))
        remote, rest = text.split(':', 1)
        validate_remote_name(remote)
        pool = PoolSpec.parse(rest)
        return cls(remote, pool.pool, pool.namespace)


def module_snap_name(task_id: str) -> str:
    """The snapshot the module takes on the remote image when none is given."""
    validate_name('snapshot', SNAP_PREFIX + task_id)
    return SNAP_PREFIX + task_id


def cluster_path(conf_dir: str, remote: str) -> str:
    """The ``cluster_name`` that makes librbd read ``<conf_dir>/<remote>.conf``
    (its search list ends with ``$cluster.conf``)."""
    if not conf_dir.startswith('/'):
        raise InvalidArgument('conf dir {!r} is not absolute'.format(conf_dir))
    return '{}/{}'.format(conf_dir.rstrip('/'), validate_remote_name(remote))


def build_source_spec(conf_dir: str, remote: str, client_name: str, pool: str,
                      namespace: str, image: str, snap: str) -> Dict[str, Any]:
    """The ``native`` import spec of a remote image at ``snap``: no secret, no
    ``mon_host`` (see the module docstring for why)."""
    if not snap:
        raise InvalidArgument('a remote import needs a snapshot')
    spec: Dict[str, Any] = {
        'type': 'native',
        'cluster_name': cluster_path(conf_dir, remote),
        'client_name': validate_client_name(client_name),
        'pool_name': validate_name('pool', pool),
        'pool_namespace': namespace,
        'image_name': validate_name('image', image),
        'snap_name': validate_name('snapshot', snap),
    }
    return spec


def is_remote_spec(spec: Any) -> bool:
    return isinstance(spec, dict) and spec.get('type') == 'native' and 'cluster_name' in spec


def spec_of(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """A task's import_spec if it is a remote one, else None."""
    if not text:
        return None
    try:
        spec = json.loads(text)
    except ValueError:
        return None
    return spec if is_remote_spec(spec) else None


def remote_of_spec(spec: Dict[str, Any]) -> Optional[str]:
    """The remote name a spec built here points at (its cluster_name's last part)."""
    if not is_remote_spec(spec):
        return None
    name = str(spec['cluster_name']).rsplit('/', 1)[-1]
    return name if _REMOTE_RE.match(name) else None


def check_no_secret(spec: Dict[str, Any]) -> None:
    found = sorted(k for k in SECRET_SPEC_KEYS if k in spec)
    if found:
        raise InvalidArgument('a remote source-spec must not carry {} (the module keeps the '
                              'remote\'s key in its store)'.format(', '.join(found)))


def conf_text(mon_host: str, keyring_path: str, op_timeout_seconds: int = 0) -> str:
    """The remote's conf as librbd reads it (no secret in it).

    ``op_timeout_seconds`` > 0 bounds every mon and OSD operation on the
    remote.  Measured (20.2.4): with the remote's OSD stopped mid-copy,
    ``migration_execute`` hangs until it is back (then completes) by
    default; with ``rados_osd_op_timeout = 8`` it failed ETIMEDOUT 8 s
    later, and an execute again once the remote was back completed (1.2 s
    for 200 MiB) with the data matching.  Every client that opens the
    destination before commit with this file gets the same bound (a read
    error instead of a wait while the remote is away).
    """
    text = ('# written by the rbd_livemigrate mgr module; removed when no task needs it\n'
            '[global]\n'
            '\tmon_host = {}\n'
            '\tkeyring = {}\n').format(validate_mon_host(mon_host), keyring_path)
    if op_timeout_seconds > 0:
        text += ('\trados_osd_op_timeout = {0}\n'
                 '\trados_mon_op_timeout = {0}\n').format(int(op_timeout_seconds))
    return text


def keyring_text(client_name: str, key: str) -> str:
    return '[{}]\n\tkey = {}\n'.format(validate_client_name(client_name), validate_key(key))


def pool_images(names: List[str]) -> List[str]:
    """Images of a remote pool, in the order add-pool queues them."""
    return sorted(n for n in names if n)


def summary(spec: Dict[str, Any]) -> str:
    """``<remote>:<pool>[/<ns>]/<image>@<snap>`` for ``ls``, the log and the
    progress message (a remote spec holds no secret; the conf path is left
    out as noise)."""
    name = remote_of_spec(spec) or '?'
    ns = spec.get('pool_namespace') or ''
    return '{}:{}/{}{}@{}'.format(name, spec.get('pool_name', '?'), ns + '/' if ns else '',
                                  spec.get('image_name', '?'), spec.get('snap_name', '?'))
