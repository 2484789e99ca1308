"""Imports never reach past the caller's rights (issue 20), on the real cluster.

librbd opens an import's streams inside the mgr: a ``file`` with the mgr's
own user, a URL from the mgr's host, ``config://`` references from the mgr's
config-key store.  A tenant key scoped to pools a and b tries to read the
mgr's keyring and /etc, to reach services on the mgr host's loopback (by
every spelling of the address), a redirect to loopback, an s3 endpoint on
loopback, and to make the mgr send config-key values it cannot read.  Every
attempt must fail with an errno and one line, queue nothing, create no image,
and send nothing: the servers' request logs stay empty.  Then an admin lists
a directory and a network, and the same tenant imports from them, with
identical data.
"""

import errno
import hashlib
import http.server
import json
import os
import shutil
import stat
import tempfile
import threading
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from cluster import Cluster, wait_for
import conftest
from conftest import Livemigrate, make_tenant, rbdtools

MiB = 1 << 20
TENANT = 'client.lm-importer'
SECRET = 'hunter2-sekrit'
PREFIX = 'lmtest/import-creds/'


@pytest.fixture(scope='module')
def tenant(cluster: Cluster) -> str:
    """A key for pools a and b only (mgr: this module; osd: rbd profile)."""
    return make_tenant(cluster, TENANT)


class Recorder(http.server.BaseHTTPRequestHandler):
    """Serves ``files`` with byte ranges; records every request it gets."""
    files: Dict[str, bytes] = {}
    log: List[Tuple[str, str, Dict[str, str]]] = []
    redirect_to = ''

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.serve(False)

    def do_GET(self) -> None:
        self.serve(True)

    def serve(self, body: bool) -> None:
        self.log.append((self.command, self.path, dict(self.headers.items())))
        if self.redirect_to:
            self.send_response(302)
            self.send_header('Location', self.redirect_to)
            self.send_header('Content-Length', '0')
            self.end_headers()
            return
        data = self.files.get(self.path.split('?')[0])
        if data is None:
            self.send_error(404)
            return
        start, end, status = 0, len(data) - 1, 200
        rng = self.headers.get('Range', '')
        if rng.startswith('bytes='):
            a, _, b = rng[len('bytes='):].partition('-')
            start, end, status = int(a), min(int(b or end), end), 206
        self.send_response(status)
        self.send_header('Content-Length', str(end - start + 1))
        if status == 206:
            self.send_header('Content-Range', 'bytes {}-{}/{}'.format(start, end, len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data[start:end + 1])


def serve(host: str = '127.0.0.1', redirect_to: str = '',
          files: Any = None) -> Tuple[http.server.ThreadingHTTPServer, List[Any]]:
    log: List[Any] = []
    handler = type('H', (Recorder,), {'files': {} if files is None else files, 'log': log,
                                      'redirect_to': redirect_to})
    srv = http.server.ThreadingHTTPServer((host, 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, log


@pytest.fixture
def server() -> Iterator[Tuple[int, List[Any], Dict[str, bytes]]]:
    files: Dict[str, bytes] = {}
    srv, log = serve(files=files)
    yield srv.server_address[1], log, files
    srv.shutdown()


@pytest.fixture
def workdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix='lm-impsec-', dir='/tmp')
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def as_tenant(cluster: Cluster, keyring: str, *args: str) -> Tuple[int, str, str]:
    return conftest.as_tenant(cluster, TENANT, keyring, *args)


def tenant_import(cluster: Cluster, keyring: str, dest: str, spec: Dict[str, Any],
                  workdir: str, *args: str) -> Tuple[int, str, str]:
    path = os.path.join(workdir, 'spec-{}.json'.format(hashlib.sha1(
        json.dumps(spec).encode()).hexdigest()[:8]))
    with open(path, 'w') as f:
        json.dump(spec, f)
    return as_tenant(cluster, keyring, 'import', dest, '-i', path, *args)


def digest(data: bytes) -> str:
    """What rbdtools.checksums says of an image holding ``data``."""
    return '{}:{}'.format(len(data), hashlib.md5(data).hexdigest())


def image_exists(cluster: Cluster, spec: str) -> bool:
    return cluster.rbd('info', spec, check=False).returncode == 0


def expect_refused(cluster: Cluster, lm: Livemigrate, keyring: str, dest: str,
                   spec: Dict[str, Any], workdir: str, err: int, *words: str) -> str:
    before = sorted(t['id'] for t in lm.ls() if t['id'])
    rc, out, msg = tenant_import(cluster, keyring, dest, spec, workdir)
    line = msg.strip()
    assert rc == err, (spec, rc, msg)
    assert line and '\n' not in line and 'Traceback' not in line, msg
    for w in words:
        assert w in line, (w, line)
    assert sorted(t['id'] for t in lm.ls() if t['id']) == before
    assert not image_exists(cluster, dest)
    return line


def set_and_wait(cluster: Cluster, lm: Livemigrate, keyring: str, workdir: str,
                 name: str, value: str, probe: Dict[str, Any], accepted: bool) -> None:
    """Set a module option and wait until the module acts on it: a dry-run
    import of ``probe`` is accepted (or refused) as the new value says."""
    lm.set_option(name, value)

    def sees() -> bool:
        rc, _, _ = tenant_import(cluster, keyring, 'a/lm-dry-probe', probe, workdir,
                                 '--dry-run')
        return (rc == 0) == accepted
    wait_for(sees, 30, '{}={} taken'.format(name, value))


def raw(stream: Dict[str, Any]) -> Dict[str, Any]:
    return {'type': 'raw', 'stream': stream}


def http_(url: str) -> Dict[str, Any]:
    return raw({'type': 'http', 'url': url})


def s3(url: str, access: str, secret: str = 'literal-secret') -> Dict[str, Any]:
    return raw({'type': 's3', 'url': url, 'access_key': access, 'secret_key': secret})


def file_(path: str) -> Dict[str, Any]:
    return raw({'type': 'file', 'file_path': path})


@pytest.fixture
def defaults(lm: Livemigrate) -> Iterator[None]:
    """The import options at their defaults before and after the test."""
    for opt in ('import_file_dirs', 'import_allowed_networks', 'import_credential_prefix'):
        lm.rm_option(opt)
    yield
    for opt in ('import_file_dirs', 'import_allowed_networks', 'import_credential_prefix'):
        lm.rm_option(opt)


# -- files ----------------------------------------------------------------------

def test_files_of_the_mgr_host_are_refused(cluster: Cluster, lm: Livemigrate, tenant: str,
                                           name: str, workdir: str, defaults: None) -> None:
    mgr_keyring = os.path.join(cluster.data_dir('mgr.' + cluster.mgr_ids[0]), 'keyring')
    assert os.path.exists(mgr_keyring)
    allowed = os.path.join(workdir, 'allowed')
    os.mkdir(allowed)
    good = os.path.join(allowed, 'disk.raw')
    with open(good, 'wb') as f:
        f.write(os.urandom(4 * MiB))
    os.chmod(good, 0o644)
    dest = 'a/' + name
    # no directory allowed: no file at all, the refusal names the option
    expect_refused(cluster, lm, tenant, dest, file_(good), workdir, errno.EACCES,
                   'import_file_dirs')
    expect_refused(cluster, lm, tenant, dest, file_(mgr_keyring), workdir, errno.EACCES)
    set_and_wait(cluster, lm, tenant, workdir, 'import_file_dirs', allowed, file_(good), True)
    os.symlink(mgr_keyring, os.path.join(allowed, 'link-out'))
    os.symlink('/etc', os.path.join(allowed, 'etc'))
    os.mkfifo(os.path.join(allowed, 'fifo'))
    os.mknod(os.path.join(allowed, 'zero'), 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    os.link(mgr_keyring, os.path.join(allowed, 'hard')) if os.stat(mgr_keyring).st_dev == \
        os.stat(allowed).st_dev else None
    cases = [(mgr_keyring, errno.EACCES),
             (cluster.admin_keyring, errno.EACCES),
             ('/etc/passwd', errno.EACCES),
             (os.path.join(allowed, 'link-out'), errno.EACCES),
             (os.path.join(allowed, 'etc', 'passwd'), errno.EACCES),
             (os.path.join(allowed, '..', '..', 'etc', 'passwd'), errno.EACCES),  # /tmp/etc
             (allowed + '/../../../../../etc/passwd', errno.EACCES),
             ('/etc/no-such-file', errno.EACCES),
             (allowed + '/../' + os.path.basename(workdir) + '/../../etc/hostname',
              errno.EACCES),
             (os.path.join(allowed, 'fifo'), errno.EINVAL),
             (os.path.join(allowed, 'zero'), errno.EINVAL),
             ('/dev/zero', errno.EACCES),
             (allowed, errno.EINVAL)]
    if os.path.exists(os.path.join(allowed, 'hard')):
        cases.append((os.path.join(allowed, 'hard'), errno.EACCES))
    if os.path.isdir('/etc/ceph'):
        cases.append(('/etc/ceph/ceph.conf', errno.EACCES))
    for path, err in cases:
        expect_refused(cluster, lm, tenant, dest, file_(path), workdir, err)
    # the allowed file itself goes through, end to end, identical
    rc, out, msg = tenant_import(cluster, tenant, dest, file_(good), workdir)
    assert rc == 0, msg
    task = json.loads(out)
    assert 'mgr caps on a, b' in task['added_by'], task['added_by']
    lm.wait(task['id'])
    with open(good, 'rb') as f:
        want = digest(f.read())
    assert rbdtools.checksums(cluster.conf, dest) == {'HEAD': want}
    assert rbdtools.trash_names(cluster.conf, 'a') == []


def test_a_link_swapped_after_import_is_caught_before_prepare(
        cluster: Cluster, lm: Livemigrate, tenant: str, name: str, workdir: str,
        defaults: None) -> None:
    allowed = os.path.join(workdir, 'allowed')
    os.mkdir(allowed)
    real = os.path.join(allowed, 'disk.raw')
    with open(real, 'wb') as f:
        f.write(os.urandom(MiB))
    link = os.path.join(allowed, 'current')
    os.symlink(real, link)
    set_and_wait(cluster, lm, tenant, workdir, 'import_file_dirs', allowed, file_(real), True)
    lm.ok('pause')
    try:
        rc, out, msg = tenant_import(cluster, tenant, 'a/' + name, file_(link), workdir)
        assert rc == 0, msg
        task = json.loads(out)
        # librbd is given the file that was judged, not the link
        assert task['import']['stream']['file_path'] == real
        os.unlink(real)
        mgr_keyring = os.path.join(cluster.data_dir('mgr.' + cluster.mgr_ids[0]), 'keyring')
        os.symlink(mgr_keyring, real)
    finally:
        lm.ok('resume')
    t = lm.wait(task['id'], ('failed',))
    assert 'outside the directories' in t['error'], t['error']
    assert not image_exists(cluster, 'a/' + name)
    lm.ok('cancel', task['id'])


# -- addresses ------------------------------------------------------------------

def test_urls_never_reach_the_mgr_host(cluster: Cluster, lm: Livemigrate, tenant: str,
                                       name: str, workdir: str, defaults: None,
                                       server: Tuple[int, List[Any], Dict[str, bytes]]
                                       ) -> None:
    port, log, files = server
    files['/disk.raw'] = os.urandom(MiB)
    mon_port = cluster.port
    dest = 'b/' + name
    urls = ['http://127.0.0.1:{p}/disk.raw', 'http://localhost:{p}/disk.raw',
            'http://LOCALHOST:{p}/disk.raw', 'http://127.1:{p}/disk.raw',
            'http://2130706433:{p}/disk.raw', 'http://0x7f000001:{p}/disk.raw',
            'http://[::1]:{p}/disk.raw', 'http://[::ffff:127.0.0.1]:{p}/disk.raw',
            'http://0.0.0.0:{p}/disk.raw', 'http://127.0.0.2:{p}/disk.raw',
            'https://127.0.0.1:{p}/disk.raw', 'http://169.254.169.254/latest/meta-data/',
            'http://[fe80::1]/x', 'http://10.0.0.1/x', 'http://192.168.0.1/x',
            'http://224.0.0.1/x',
            'http://127.0.0.1:{m}/', 'http://127.0.0.1/disk.raw']
    for url in urls:
        expect_refused(cluster, lm, tenant, dest, http_(url.format(p=port, m=mon_port)),
                       workdir, errno.EACCES)
    expect_refused(cluster, lm, tenant, dest, s3('http://127.0.0.1:{}/bucket/disk.raw'.format(
        port), 'AKIA'), workdir, errno.EACCES)
    assert log == [], log
    # an admin allows the loopback network: the service is reachable, the
    # monitor's own endpoint never is
    set_and_wait(cluster, lm, tenant, workdir, 'import_allowed_networks', '127.0.0.1/32',
                 http_('http://127.0.0.1:{}/disk.raw'.format(port)), True)
    line = expect_refused(cluster, lm, tenant, dest, http_('http://127.0.0.1:{}/'.format(
        mon_port)), workdir, errno.EACCES)
    assert 'daemon' in line
    expect_refused(cluster, lm, tenant, dest, http_('http://127.0.0.2:{}/disk.raw'.format(
        port)), workdir, errno.EACCES)
    del log[:]
    rc, out, msg = tenant_import(cluster, tenant, dest, http_('http://localhost:{}/disk.raw'
                                                              .format(port)), workdir)
    if rc != 0:      # localhost resolving to ::1 first is refused: 127.0.0.1/32 only
        assert rc == errno.EACCES, msg
        rc, out, msg = tenant_import(cluster, tenant, dest, http_(
            'http://127.0.0.1:{}/disk.raw'.format(port)), workdir)
    assert rc == 0, msg
    task = lm.wait(json.loads(out)['id'])
    assert task['state'] == 'committed'
    assert rbdtools.checksums(cluster.conf, dest) == {'HEAD': digest(files['/disk.raw'])}
    assert rbdtools.trash_names(cluster.conf, 'b') == []


def test_a_redirect_to_loopback_is_not_followed(cluster: Cluster, lm: Livemigrate,
                                                tenant: str, name: str, workdir: str,
                                                defaults: None) -> None:
    """librbd's http client treats 3xx as an error and follows nothing; the
    module's probe follows nothing either: the target never hears of it."""
    target, target_log = serve(host='127.0.0.2', files={'/k': b'x' * 4096})
    front, front_log = serve(redirect_to='http://127.0.0.2:{}/k'.format(
        target.server_address[1]))
    try:
        url = 'http://127.0.0.1:{}/disk.raw'.format(front.server_address[1])
        lm.set_option('import_allowed_networks', '127.0.0.1/32')
        wait_for(lambda: tenant_import(cluster, tenant, 'b/' + name, http_(url), workdir,
                                       '--dry-run')[0] == errno.EINVAL, 30, 'option taken')
        line = expect_refused(cluster, lm, tenant, 'b/' + name, http_(url), workdir,
                              errno.EINVAL, 'redirect')
        assert '127.0.0.2' not in line
        assert front_log and target_log == []
    finally:
        target.shutdown()
        front.shutdown()


# -- config-key -----------------------------------------------------------------

def test_config_refs_never_send_a_value(cluster: Cluster, lm: Livemigrate, tenant: str,
                                        name: str, workdir: str, defaults: None,
                                        server: Tuple[int, List[Any], Dict[str, bytes]]
                                        ) -> None:
    port, log, files = server
    url = 'http://127.0.0.1:{}/bucket/disk.raw'.format(port)
    files['/bucket/disk.raw'] = os.urandom(MiB)
    cluster.ceph('config-key', 'set', 'secret/db-password', SECRET)
    cluster.ceph('config-key', 'set', 'mgr/dashboard/lmtest_secret', SECRET)
    cluster.ceph('config-key', 'set', PREFIX + 'c/key', SECRET)
    cluster.ceph('config-key', 'set', PREFIX + 'a/ns1/key', SECRET)
    lm.set_option('import_credential_prefix', PREFIX)
    set_and_wait(cluster, lm, tenant, workdir, 'import_allowed_networks', '127.0.0.1/32',
                 http_('http://127.0.0.1:{}/none'.format(port)), False)
    # another task's stored credential: an admin's s3 import, held paused
    lm.ok('pause')
    try:
        path = os.path.join(workdir, 'other.json')
        with open(path, 'w') as f:
            json.dump(s3(url, 'AKIA-OTHER', SECRET), f)
        other = lm.ok('import', 'b/' + name + '-other', '-i', path)
        theirs = other['import']['stream']['secret_key'][len('config://'):]
        assert theirs.startswith('mgr/rbd_livemigrate/import/')
        sent = list(log)         # the admin's own probe (signed, the secret never sent)
        del log[:]
        refs = ['secret/db-password', 'mgr/dashboard/lmtest_secret', theirs,
                PREFIX + 'c/key',              # another pool's, under the prefix
                PREFIX + 'a/ns1/key',          # a namespace's, for a default-namespace dest
                'mgr/rbd_livemigrate/import/' + other['id'] + '/head/access_key']
        for ref in refs:
            for field in ('access_key', 'secret_key'):
                spec = s3(url, 'AKIA', 'literal')
                spec['stream'][field] = 'config://' + ref
                expect_refused(cluster, lm, tenant, 'a/' + name, spec, workdir,
                               errno.EACCES, 'config-key')
        # an unscoped caller (the admin) is held to the same rules
        spec = s3(url, 'config://secret/db-password')
        with open(path, 'w') as f:
            json.dump(spec, f)
        rc, _, msg = lm.run('import', 'a/' + name, '-i', path)
        assert rc == -errno.EACCES or rc == errno.EACCES, msg
        lm.ok('cancel', other['id'])
    finally:
        lm.ok('resume')
    assert log == [], log
    for _, _, headers in sent:
        assert SECRET not in json.dumps(headers)
    # what the admin set aside for pool a is usable by an import into a
    cluster.ceph('config-key', 'set', PREFIX + 'a/access', 'AKIA-SET-ASIDE')
    rc, out, msg = tenant_import(cluster, tenant, 'a/' + name, s3(
        url, 'config://' + PREFIX + 'a/access'), workdir, '--dry-run')
    assert rc == 0, msg
    assert any('AKIA-SET-ASIDE' in h.get('Authorization', '') for _, _, h in log), log
    cluster.ceph('config-key', 'rm', 'mgr/dashboard/lmtest_secret', check=False)
