"""
What an import may make the mgr read, on its caller's behalf (pure decisions).

librbd opens an import's streams inside the mgr process: a ``file`` with the
mgr's own user and files, a URL from the mgr's host (its loopback, the
cluster's networks), and it resolves ``config://KEY`` references from the
mgr's config-key store.  The caller's caps say nothing about any of those, so
the module is the only gate.  The rules, each a pure function of plain values
(``import_guard`` does the resolving and the stat calls):

- a file must resolve (symlinks and ``..`` followed) to a regular file under
  a directory the admin lists in ``import_file_dirs`` (empty: no file import);
- every address a URL's host resolves to must be allowed: never the
  unspecified or a multicast address, never a daemon endpoint of this cluster
  (mon, mgr, osd address and port, the mgr's service URLs); loopback,
  link-local, private and other non-global addresses, and the hosts the
  cluster's daemons run on, only inside a network the admin lists in
  ``import_allowed_networks``;
- a ``config://`` reference may name only the keys the module stored for the
  task itself (from literal credentials it was given), or a key the admin set
  aside under ``import_credential_prefix``, scoped by the import's
  destination: ``<prefix><pool>/<name>`` for the pool's default namespace,
  ``<prefix><pool>/<namespace>/<name>`` for a namespace.
"""

import ipaddress
import urllib.parse
from typing import Any, FrozenSet, Iterator, List, NamedTuple, Optional, Tuple, Union

from .errors import InvalidArgument, NotAuthorized
from .spec import ImageSpec

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

CONFIG_PREFIX = 'config://'
# where move_credentials stores a task's literal credentials (source_spec)
OWN_KEY_ROOT = 'mgr/rbd_livemigrate/import/'
OPT = 'ceph config set mgr mgr/rbd_livemigrate/{} <value>'


class Policy(NamedTuple):
    """The admin's grants (module options), parsed."""
    file_dirs: Tuple[str, ...] = ()                 # absolute, resolved, no trailing /
    networks: Tuple[IPNetwork, ...] = ()
    credential_prefix: str = ''


class Endpoints(NamedTuple):
    """Where this cluster's daemons listen (from the mon, osd and mgr maps)."""
    addrs: FrozenSet[Tuple[IPAddress, int]] = frozenset()
    hosts: FrozenSet[IPAddress] = frozenset()


def parse_dirs(text: str) -> Tuple[str, ...]:
    """``import_file_dirs``: a comma list of absolute directories."""
    out = []
    for item in (text or '').split(','):
        d = item.strip()
        if not d:
            continue
        if not d.startswith('/'):
            raise InvalidArgument("import_file_dirs holds {!r}, not an absolute directory: fix "
                                  'it with {}'.format(d, OPT.format('import_file_dirs')))
        out.append(d.rstrip('/') or '/')
    return tuple(out)


def parse_networks(text: str) -> Tuple[IPNetwork, ...]:
    """``import_allowed_networks``: a comma list of CIDR networks."""
    out: List[IPNetwork] = []
    for item in (text or '').split(','):
        n = item.strip()
        if not n:
            continue
        try:
            out.append(ipaddress.ip_network(n, strict=False))
        except ValueError:
            raise InvalidArgument("import_allowed_networks holds {!r}, not a network such as "
                                  '10.1.0.0/16: fix it with {}'.format(
                                      n, OPT.format('import_allowed_networks')))
    return tuple(out)


def parse_address(text: str) -> Optional[Tuple[IPAddress, int]]:
    """A map's ``ip:port`` / ``v2:ip:port/nonce`` / ``[v6]:port`` (None: not one)."""
    s = text.strip()
    for tag in ('v1:', 'v2:', 'any:'):
        if s.startswith(tag):
            s = s[len(tag):]
    s = s.split('/', 1)[0]
    if s.startswith('['):
        host, _, port = s[1:].partition(']:')
    else:
        host, _, port = s.rpartition(':')
    try:
        return plain(ipaddress.ip_address(host)), int(port)
    except ValueError:
        return None


def plain(addr: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address as the IPv4 address it reaches."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


# -- files ------------------------------------------------------------------

def under(path: str, directory: str) -> bool:
    return directory == '/' or path == directory or path.startswith(directory + '/')


def judge_file_place(label: str, given: str, real: str, dirs: Tuple[str, ...]) -> None:
    """Refuse (NotAuthorized) a file stream unless ``real`` (``given`` with
    its links and ``..`` resolved) lies under an allowed directory (``dirs``
    resolved too).  Judged before the file is looked at, so that a refusal
    never tells whether a file outside exists."""
    shown = given if given == real else '{} (-> {})'.format(given, real)
    if not dirs:
        raise NotAuthorized('{} file {}: file imports are off: an admin allows a directory with '
                            '{}'.format(label, shown, OPT.format('import_file_dirs')))
    if not any(under(real, d) for d in dirs):
        raise NotAuthorized('{} file {} is outside the directories import_file_dirs allows '
                            '({}): put it there'.format(label, shown, ', '.join(dirs)))


def judge_file_kind(label: str, path: str, regular: bool, links: int) -> None:
    """Refuse a file under an allowed directory that is not a regular file
    with one name (a hard link may have its other name anywhere)."""
    if not regular:
        raise InvalidArgument('{} file {} is not a regular file (a directory, FIFO, socket or '
                              'device): name an image file'.format(label, path))
    if links > 1:
        raise NotAuthorized('{} file {} has {} hard links (another name may lie outside the '
                            'allowed directories): import a copy'.format(label, path, links))


# -- addresses --------------------------------------------------------------

def _kind(addr: IPAddress) -> Optional[str]:
    """Why an address is not a plain public one (None: it is)."""
    if addr.is_loopback:
        return 'a loopback address (the mgr host itself)'
    if addr.is_link_local:
        return 'a link-local address (cloud metadata services live there)'
    if addr.is_private:
        return 'a private address'
    if addr.is_reserved or not addr.is_global:
        return 'a reserved address'
    return None


def judge_address(label: str, host: str, addr: IPAddress, port: int, policy: Policy,
                  cluster: Endpoints) -> None:
    """Refuse (NotAuthorized) a URL whose ``host`` resolved to ``addr``."""
    addr = plain(addr)
    where = '{} url host {!r} resolves to {}'.format(label, host, addr)
    if addr.is_unspecified or addr.is_multicast:
        raise NotAuthorized('{}, an {} address: imports never use it'.format(
            where, 'unspecified' if addr.is_unspecified else 'multicast'))
    if (addr, port) in cluster.addrs:
        raise NotAuthorized('{} port {}, where a daemon of this cluster listens: imports never '
                            'reach the cluster itself'.format(where, port))
    allowed = any(addr in n for n in policy.networks if n.version == addr.version)
    if allowed:
        return
    kind = _kind(addr)
    if kind is None and addr in cluster.hosts:
        kind = "a host of this cluster's daemons"
    if kind is not None:
        raise NotAuthorized('{}, {}: imports only reach public addresses unless an admin '
                            'allows the network with {}'.format(
                                where, kind, OPT.format('import_allowed_networks')))


# -- config-key references ----------------------------------------------------

def config_refs(node: Any, where: str = '') -> Iterator[Tuple[str, str]]:
    """Every ``config://`` reference anywhere in a spec: (where, key), where
    reads like ``stream.access_key`` or ``snapshots[1].stream.secret_key``."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from config_refs(v, '{}.{}'.format(where, k) if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from config_refs(v, '{}[{}]'.format(where, i + 1))
    elif isinstance(node, str) and node.startswith(CONFIG_PREFIX):
        yield where or 'the spec', node[len(CONFIG_PREFIX):]


def judge_config_key(where: str, key: str, dest: ImageSpec, policy: Policy,
                     task_id: Optional[str]) -> None:
    """Refuse (NotAuthorized) a ``config://`` reference the import may not use.

    ``task_id`` is set for a stored spec (just before prepare): the keys the
    module stored for that task are then its own.  A caller never names them.
    """
    if task_id is not None and key.startswith('{}{}/'.format(OWN_KEY_ROOT, task_id)):
        return
    prefix = policy.credential_prefix
    if prefix and key.startswith(prefix):
        parts = key[len(prefix):].split('/')
        if dest.namespace:
            ok = len(parts) == 3 and parts[:2] == [dest.pool, dest.namespace] and bool(parts[2])
            form = '{}{}/{}/<name>'.format(prefix, dest.pool, dest.namespace)
        else:
            ok = len(parts) == 2 and parts[0] == dest.pool and bool(parts[1])
            form = '{}{}/<name>'.format(prefix, dest.pool)
        if ok:
            return
        raise NotAuthorized('{} names config-key {!r}, which belongs to another pool or '
                            'namespace: an import into {} may name only {}'.format(
                                where, key, dest, form))
    hint = ('give the credential itself (the module keeps it) or a key under {!r}'.format(
        prefix) if prefix else 'give the credential itself (the module keeps it)')
    raise NotAuthorized('{} names config-key {!r}: imports may not read the config-key store '
                        'there: {}'.format(where, key, hint))


# -- this cluster's endpoints -------------------------------------------------

_ADDR_KEYS = ('addr', 'public_addr', 'cluster_addr', 'heartbeat_back_addr',
              'heartbeat_front_addr', 'active_addr')


def _walk_addrs(node: Any, out: List[Tuple[IPAddress, int]]) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if isinstance(v, str) and (k in _ADDR_KEYS or k.endswith('_addr')):
                a = parse_address(v)
                if a is not None:
                    out.append(a)
            else:
                _walk_addrs(v, out)
    elif isinstance(node, list):
        for v in node:
            _walk_addrs(v, out)


def _service_addrs(services: Any, out: List[Tuple[IPAddress, int]]) -> None:
    """The mgr modules' service URLs (dashboard, prometheus...) with an IP host."""
    if not isinstance(services, dict):
        return
    for url in services.values():
        try:
            parts = urllib.parse.urlsplit(str(url))
            host = plain(ipaddress.ip_address(parts.hostname or ''))
            port = parts.port or (443 if parts.scheme == 'https' else 80)
        except ValueError:
            continue
        out.append((host, port))


def cluster_endpoints(mon_map: Any, osd_map: Any, mgr_map: Any) -> Endpoints:
    """Every daemon address (ip, port) in the maps, and the hosts they are on."""
    found: List[Tuple[IPAddress, int]] = []
    for m in (mon_map, osd_map, mgr_map):
        _walk_addrs(m, found)
    if isinstance(mgr_map, dict):
        _service_addrs(mgr_map.get('services'), found)
    addrs = frozenset(a for a in found if a[1] != 0 and not a[0].is_unspecified)
    return Endpoints(addrs, frozenset(a for a, _ in addrs))
