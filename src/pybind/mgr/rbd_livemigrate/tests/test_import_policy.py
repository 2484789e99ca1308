"""What an import may make the mgr read: files, addresses and config-keys
(import_policy, pure) and the gate that resolves them (import_guard, with
its resolver and file look stood in for)."""

import errno
import ipaddress
import json
import os
import socket
from typing import Any, Dict, List

import pytest

from rbd_livemigrate.errors import LiveMigrateError
from rbd_livemigrate.import_guard import FileLook, ImportGuard, look_file
from rbd_livemigrate.import_policy import (Endpoints, Policy, cluster_endpoints,
                                           judge_address, judge_config_key, parse_address,
                                           parse_dirs, parse_networks)
from rbd_livemigrate.spec import ImageSpec

A = ImageSpec('a', '', 'x')
ANS = ImageSpec('a', 'ns1', 'x')
MON = ipaddress.ip_address('10.0.0.5')
CLUSTER = Endpoints(frozenset({(MON, 3300), (MON, 6789)}), frozenset({MON}))


def refused(fn: Any, *args: Any, err: int = errno.EACCES) -> str:
    with pytest.raises(LiveMigrateError) as e:
        fn(*args)
    assert e.value.errno == err, str(e.value)
    assert '\n' not in str(e.value)
    return str(e.value)


def addr(text: str) -> Any:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize('ip', ['127.0.0.1', '127.0.0.2', '::1', '0.0.0.0', '::',
                                '169.254.169.254', 'fe80::1', '10.1.2.3', '192.168.1.1',
                                '172.16.0.1', 'fc00::1', '224.0.0.1', 'ff02::1',
                                '::ffff:127.0.0.1', '100.64.0.1', '10.0.0.5'])
def test_non_public_addresses_are_refused_by_default(ip: str) -> None:
    refused(judge_address, 'head', 'h', addr(ip), 80, Policy(), CLUSTER)


def test_public_address_passes() -> None:
    judge_address('head', 'h', addr('8.8.8.8'), 443, Policy(), CLUSTER)


def test_allowed_network_widens_but_never_to_a_daemon_port() -> None:
    p = Policy(networks=parse_networks('127.0.0.0/8, 10.0.0.0/8'))
    judge_address('head', 'h', addr('127.0.0.1'), 8080, p, CLUSTER)
    judge_address('head', 'h', addr('10.0.0.5'), 8080, p, CLUSTER)    # the mon's host
    msg = refused(judge_address, 'head', 'h', MON, 6789, p, CLUSTER)
    assert 'daemon' in msg
    # unspecified and multicast stay refused whatever is allowed
    everything = Policy(networks=parse_networks('0.0.0.0/0,::/0'))
    refused(judge_address, 'head', 'h', addr('0.0.0.0'), 80, everything, CLUSTER)
    refused(judge_address, 'head', 'h', addr('224.0.0.1'), 80, everything, CLUSTER)
    # a host of the cluster outside any allowed network
    refused(judge_address, 'head', 'h', MON, 8080, Policy(), CLUSTER)


def test_option_parsing() -> None:
    assert parse_dirs(' /srv/images/ , /a ') == ('/srv/images', '/a')
    assert refused(parse_dirs, 'relative/dir', err=errno.EINVAL).count('import_file_dirs')
    refused(parse_networks, '10.0.0.0/33', err=errno.EINVAL)
    assert parse_networks('') == ()


def test_map_addresses() -> None:
    assert parse_address('v2:10.0.0.5:3300/0') == (MON, 3300)
    assert parse_address('[::1]:6789/12') == (addr('::1'), 6789)
    assert parse_address('-') is None
    mon_map = {'mons': [{'public_addrs': {'addrvec': [
        {'type': 'v2', 'addr': '10.0.0.5:3300', 'nonce': 0},
        {'type': 'v1', 'addr': '10.0.0.5:6789', 'nonce': 0}]}, 'addr': '10.0.0.5:6789/0'}]}
    osd_map = {'osds': [{'public_addr': '10.0.0.7:6801/123', 'cluster_addr': '-',
                         'heartbeat_back_addr': '10.0.0.7:6803/123'}]}
    mgr_map = {'active_addrs': {'addrvec': [{'addr': '10.0.0.6:6800'}]},
               'services': {'dashboard': 'https://10.0.0.6:8443/', 'x': 'https://name:1/'}}
    e = cluster_endpoints(mon_map, osd_map, mgr_map)
    assert (MON, 3300) in e.addrs and (addr('10.0.0.7'), 6803) in e.addrs
    assert (addr('10.0.0.6'), 8443) in e.addrs and (addr('10.0.0.6'), 6800) in e.addrs
    assert e.hosts == {MON, addr('10.0.0.6'), addr('10.0.0.7')}


def test_config_keys() -> None:
    p = Policy(credential_prefix='rbd/import-keys/')
    judge_config_key('s', 'rbd/import-keys/a/k1', A, p, None)
    judge_config_key('s', 'rbd/import-keys/a/ns1/k1', ANS, p, None)
    for key, dest in [('rbd/import-keys/b/k1', A),            # another pool
                      ('rbd/import-keys/a/ns1/k1', A),        # a namespace's, default dest
                      ('rbd/import-keys/a/k1', ANS),          # the pool's, namespace dest
                      ('rbd/import-keys/a/', A),
                      ('rbd/import-keys/a/x/y/z', A),
                      ('mgr/dashboard/crt', A),               # another module's
                      ('secret/db-password', A),              # the admin's, outside
                      ('mgr/rbd_livemigrate/import/abc/head/secret_key', A)]:
        refused(judge_config_key, 's', key, dest, p, None)
    # no prefix: nothing at all; a stored spec may name its own task's keys only
    refused(judge_config_key, 's', 'rbd/import-keys/a/k1', A, Policy(), None)
    judge_config_key('s', 'mgr/rbd_livemigrate/import/abc/head/secret_key', A, Policy(), 'abc')
    refused(judge_config_key, 's', 'mgr/rbd_livemigrate/import/abd/head/secret_key', A,
            Policy(), 'abc')


class Guard:
    def __init__(self, policy: Policy, files: Dict[str, Any],
                 dns: Dict[str, List[str]]) -> None:
        """``files``: given path -> (resolved path, regular, links)."""
        self.resolved: List[str] = []
        self.looked: List[str] = []
        real = {k: v[0] for k, v in files.items()}
        kinds = {v[0]: FileLook(v[1], v[2]) for v in files.values()}

        def look(label: str, path: str) -> FileLook:
            self.looked.append(path)
            return kinds[path]

        def resolver(label: str, host: str, port: int) -> List[Any]:
            self.resolved.append(host)
            return [addr(a) for a in dns[host]]

        self.guard = ImportGuard(lambda: policy, lambda: CLUSTER, look, resolver,
                                 lambda p: real.get(p, p))


def s3(url: str, key: str) -> Dict[str, Any]:
    return {'type': 'raw', 'stream': {'type': 's3', 'url': url, 'access_key': key,
                                      'secret_key': 'literal'}}


def test_config_refs_are_judged_before_anything_is_resolved() -> None:
    g = Guard(Policy(networks=parse_networks('127.0.0.1/32')), {}, {'h': ['127.0.0.1']})
    refused(g.guard.check, s3('http://h/b/k', 'config://secret/db-password'), A)
    assert g.resolved == []
    g.guard.check(s3('http://h/b/k', 'AKIA'), A)
    assert g.resolved == ['h']


def test_every_resolved_address_must_pass() -> None:
    g = Guard(Policy(), {}, {'rebind': ['8.8.8.8', '127.0.0.1']})
    spec = {'type': 'raw', 'stream': {'type': 'http', 'url': 'http://rebind/x'}}
    assert 'loopback' in refused(g.guard.check, spec, A)


def test_files_resolved_and_judged() -> None:
    files = {'/srv/img/ok.raw': ('/srv/img/ok.raw', True, 1),
             '/srv/img/link': ('/etc/ceph/ceph.client.admin.keyring', True, 1),
             '/srv/img/../../etc/passwd': ('/etc/passwd', True, 1),
             '/srv/img/fifo': ('/srv/img/fifo', False, 1),
             '/srv/img/hard': ('/srv/img/hard', True, 2),
             '/srv/img/inner': ('/srv/img/ok.raw', True, 1)}
    g = Guard(Policy(file_dirs=('/srv/img',)), files, {})

    def spec(path: str) -> Dict[str, Any]:
        return {'type': 'raw', 'stream': {'type': 'file', 'file_path': path}}
    assert g.guard.check(spec('/srv/img/ok.raw'), A)['stream']['file_path'] == '/srv/img/ok.raw'
    # a link inside pointing inside: librbd gets the resolved path
    assert g.guard.check(spec('/srv/img/inner'), A)['stream']['file_path'] == '/srv/img/ok.raw'
    refused(g.guard.check, spec('/srv/img/link'), A)
    # judged by place before it is looked at: whether it exists is not told
    assert '/etc/ceph/ceph.client.admin.keyring' not in g.looked
    refused(g.guard.check, spec('/srv/img/../../etc/passwd'), A)
    refused(g.guard.check, spec('/srv/img/fifo'), A, err=errno.EINVAL)
    refused(g.guard.check, spec('/srv/img/hard'), A)
    # no directory allowed: every file refused, naming the option
    g = Guard(Policy(), files, {})
    assert 'import_file_dirs' in refused(g.guard.check, spec('/srv/img/ok.raw'), A)
    # the stored spec is judged again by its text (before prepare)
    g = Guard(Policy(file_dirs=('/srv/img',)), files, {})
    g.guard.check_text(json.dumps(spec('/srv/img/ok.raw')), A, 'abc')
    with pytest.raises(LiveMigrateError):
        g.guard.check_text(json.dumps(spec('/srv/img/link')), A, 'abc')


def test_real_files(tmp_path: Any) -> None:
    """look_file on a real directory: symlinks and .. resolved, a FIFO seen."""
    allowed = tmp_path / 'allowed'
    allowed.mkdir()
    (allowed / 'img.raw').write_bytes(b'x' * 512)
    outside = tmp_path / 'outside.raw'
    outside.write_bytes(b'y')
    os.symlink(str(outside), str(allowed / 'out'))
    os.mkfifo(str(allowed / 'fifo'))
    guard = ImportGuard(lambda: Policy(file_dirs=(str(allowed),)), lambda: CLUSTER)

    def spec(path: str) -> Dict[str, Any]:
        return {'type': 'raw', 'stream': {'type': 'file', 'file_path': path}}
    guard.check(spec(str(allowed / 'img.raw')), A)
    refused(guard.check, spec(str(allowed / 'out')), A)
    refused(guard.check, spec(str(allowed / '..' / 'outside.raw')), A)
    refused(guard.check, spec(str(allowed / 'fifo')), A, err=errno.EINVAL)
    refused(guard.check, spec('/dev/zero'), A)
    refused(guard.check, spec('/no/such/file'), A)              # EACCES, not ENOENT
    refused(guard.check, spec(str(allowed / 'missing')), A, err=errno.ENOENT)
    assert look_file('head', str(outside)) == FileLook(True, 1)


def test_real_resolver_refuses_localhost() -> None:
    guard = ImportGuard(lambda: Policy(), lambda: CLUSTER)
    try:
        socket.getaddrinfo('localhost', 80)
    except socket.gaierror:
        pytest.skip('no resolver for localhost here')
    for url in ('http://localhost/x', 'http://127.1/x', 'http://2130706433/x',
                'http://[::1]/x', 'http://0.0.0.0/x', 'http://0x7f000001/x'):
        try:
            refused(guard.check, {'type': 'raw', 'stream': {'type': 'http', 'url': url}}, A)
        except AssertionError:
            raise AssertionError(url)
