"""``ceph rbd livemigrate import`` on the real cluster: raw files (with
snapshot streams), qcow2 over HTTP (a range-serving server on 127.0.0.1),
refusals that queue nothing, cancel of a running import, a mgr failover in
the middle of one, and s3 credentials kept out of the task record."""

import errno
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Dict, Iterator, List, Optional

import pytest
import rados
import rbd

from cluster import Cluster, wait_for
from conftest import Livemigrate, rbdtools

MiB = 1 << 20


@pytest.fixture(scope='module', autouse=True)
def import_grants(cluster: Cluster) -> Iterator[None]:
    """An admin lets imports read files under /tmp and reach loopback
    (these tests' files and servers are there); off again afterwards."""
    lm = Livemigrate(cluster)
    probe = tempfile.mkdtemp(prefix='lm-import-grant-', dir='/tmp')
    path = make_file(os.path.join(probe, 'probe.raw'), MiB, 'grant')
    spec = os.path.join(probe, 'spec.json')
    with open(spec, 'w') as f:
        json.dump({'type': 'raw', 'stream': file_stream(path)}, f)
    lm.set_option('import_file_dirs', '/tmp')
    lm.set_option('import_allowed_networks', '127.0.0.1/32')
    wait_for(lambda: lm.run('import', 'b/lm-grant-probe', '-i', spec, '--dry-run')[0] == 0,
             30, 'the import options taken')
    yield
    for opt in ('import_file_dirs', 'import_allowed_networks'):
        lm.rm_option(opt)
    shutil.rmtree(probe, ignore_errors=True)


@pytest.fixture
def workdir() -> Iterator[str]:
    d = tempfile.mkdtemp(prefix='lm-import-', dir='/tmp')
    os.chmod(d, 0o755)             # the mgr reads the files (same host user here)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_file(path: str, size: int, seed: str, sparse_every: int = 0) -> str:
    """``size`` bytes of pseudo-random data (every ``sparse_every``-th MiB left zero)."""
    with open(path, 'wb') as f:
        for i in range(size // MiB):
            if sparse_every and i % sparse_every == 0:
                f.write(b'\0' * MiB)
            else:
                f.write(hashlib.sha256('{}-{}'.format(seed, i).encode()).digest() * (MiB // 32))
    os.chmod(path, 0o644)
    return path


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            h.update(block)
    return h.hexdigest()


def sha256_image(conf: str, spec: str, snap: Optional[str] = None) -> str:
    h = hashlib.sha256()
    with rbdtools.connect(conf) as c, rbdtools.ioctx(c, spec) as (io, name):
        with rbd.Image(io, name, snapshot=snap, read_only=True) as image:
            size, off = image.size(), 0
            while off < size:
                n = min(4 * MiB, size - off)
                h.update(image.read(off, n))
                off += n
    return h.hexdigest()


def import_(lm: Livemigrate, dest: str, spec: Dict[str, Any], workdir: str,
            *args: str) -> Any:
    path = os.path.join(workdir, 'spec-{}.json'.format(dest.replace('/', '_')))
    with open(path, 'w') as f:
        json.dump(spec, f)
    return lm.run('import', dest, '-i', path, *args)


def import_ok(lm: Livemigrate, dest: str, spec: Dict[str, Any], workdir: str,
              *args: str) -> Dict[str, Any]:
    rc, out, err = import_(lm, dest, spec, workdir, *args)
    assert rc == 0, err
    task = json.loads(out)
    assert task['id'] and task['destination'] == dest
    return task  # type: ignore[no-any-return]


def file_stream(path: str) -> Dict[str, str]:
    return {'type': 'file', 'file_path': path}


# -- an HTTP server that honours byte ranges ------------------------------------
# (Python's SimpleHTTPRequestHandler ignores Range; librbd reads by range)

class RangeHandler(http.server.BaseHTTPRequestHandler):
    root = '/'

    def log_message(self, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.serve(body=False)

    def do_GET(self) -> None:
        self.serve(body=True)

    def serve(self, body: bool) -> None:
        path = os.path.join(self.root, self.path.lstrip('/').split('?')[0])
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get('Range', '')
        if rng.startswith('bytes='):
            a, _, b = rng[len('bytes='):].split(',')[0].partition('-')
            start = int(a) if a else max(0, size - int(b))
            end = min(int(b), size - 1) if a and b else size - 1
            status = 206
            if start >= size:
                self.send_response(416)
                self.send_header('Content-Range', 'bytes */{}'.format(size))
                self.end_headers()
                return
        self.send_response(status)
        self.send_header('Accept-Ranges', 'bytes')
        self.send_header('Content-Length', str(end - start + 1))
        if status == 206:
            self.send_header('Content-Range', 'bytes {}-{}/{}'.format(start, end, size))
        self.end_headers()
        if body:
            with open(path, 'rb') as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(left, MiB))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)


@pytest.fixture
def http_root(workdir: str) -> Iterator[str]:
    """(workdir served at) the base URL."""
    handler = type('Handler', (RangeHandler,), {'root': workdir})
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield 'http://127.0.0.1:{}'.format(srv.server_address[1])
    srv.shutdown()


# -- tests ----------------------------------------------------------------------

def test_raw_file_import(cluster: Cluster, lm: Livemigrate, name: str, workdir: str) -> None:
    path = make_file(os.path.join(workdir, 'disk.raw'), 24 * MiB, name, sparse_every=3)
    dest = 'b/' + name
    task = import_ok(lm, dest, {'type': 'raw', 'stream': file_stream(path)}, workdir,
                     '--priority', '5')
    assert task['source'] == 'import: raw file {}'.format(path)
    assert task['import'] == {'type': 'raw', 'stream': file_stream(path)}
    assert task['size_bytes'] == 24 * MiB and task['priority'] == 5
    done = lm.wait(task['id'])
    assert done['progress'] == 1.0 and done['error'] is None
    assert sha256_image(cluster.conf, dest) == sha256_file(path)
    with rbdtools.opened(cluster.conf, dest) as image:      # no migration left behind
        assert not image.op_features() & (1 << 4)
    completed = json.loads(cluster.ceph('progress', 'json').stdout)['completed']
    assert any(e['refs'].get('task_id') == task['id'] and 'Importing' in e['message']
               for e in completed)
    # the same import again: the finished task is history, the name is taken now
    rc, _, err = import_(lm, dest, {'type': 'raw', 'stream': file_stream(path)}, workdir)
    assert rc == errno.EEXIST and 'exists' in err


def test_raw_with_snapshot_streams(cluster: Cluster, lm: Livemigrate, name: str,
                                   workdir: str) -> None:
    s1 = make_file(os.path.join(workdir, 's1.raw'), 8 * MiB, name + '1')
    s2 = make_file(os.path.join(workdir, 's2.raw'), 12 * MiB, name + '2', sparse_every=2)
    head = make_file(os.path.join(workdir, 'head.raw'), 16 * MiB, name + 'h')
    dest = 'c/' + name
    spec = {'type': 'raw', 'stream': file_stream(head), 'snapshots': [
        {'type': 'raw', 'name': 'snap1', 'stream': file_stream(s1)},
        {'type': 'raw', 'name': 'snap2', 'stream': file_stream(s2)}]}
    task = import_ok(lm, dest, spec, workdir, '--object-size', '1M')
    assert '(+2 snapshots)' in task['source']
    lm.wait(task['id'])
    assert sha256_image(cluster.conf, dest) == sha256_file(head)
    assert sha256_image(cluster.conf, dest, 'snap1') == sha256_file(s1)
    assert sha256_image(cluster.conf, dest, 'snap2') == sha256_file(s2)
    assert rbdtools.image_layout(cluster.conf, dest)['object_size'] == MiB


def test_qcow2_over_http(cluster: Cluster, lm: Livemigrate, name: str, workdir: str,
                         http_root: str) -> None:
    if shutil.which('qemu-img') is None:
        pytest.fail('qemu-img missing: qa/standalone/cluster.py install puts qemu-utils in')
    raw = make_file(os.path.join(workdir, 'src.raw'), 20 * MiB, name, sparse_every=2)
    qcow = os.path.join(workdir, 'disk.qcow2')
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', raw, qcow], check=True)
    back = os.path.join(workdir, 'back.raw')
    subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', qcow, back], check=True)
    dest = 'b/' + name
    spec = {'type': 'qcow', 'stream': {'type': 'http', 'url': http_root + '/disk.qcow2'}}
    task = import_ok(lm, dest, spec, workdir)
    assert task['size_bytes'] == 20 * MiB              # the qcow header's virtual size
    lm.wait(task['id'])
    assert sha256_image(cluster.conf, dest) == sha256_file(back) == sha256_file(raw)


def _refusals(workdir: str, http_root: str, taken: str) -> List[Any]:
    path = make_file(os.path.join(workdir, 'ok.raw'), MiB, 'ok')
    return [
        ('bad json', 'b/x1', '{"type": "raw", ', errno.EINVAL, 'not JSON'),
        ('unknown format', 'b/x2', {'type': 'vmdk', 'stream': file_stream(path)},
         errno.EINVAL, 'vmdk'),
        ('missing file', 'b/x3', {'type': 'raw', 'stream': file_stream(workdir + '/none')},
         errno.ENOENT, 'does not exist'),
        ('404 url', 'b/x4',
         {'type': 'raw', 'stream': {'type': 'http', 'url': http_root + '/none.raw'}},
         errno.ENOENT, '404'),
        ('taken destination', taken, {'type': 'raw', 'stream': file_stream(path)},
         errno.EEXIST, 'exists'),
        ('not a qcow', 'b/x5', {'type': 'qcow', 'stream': file_stream(path)},
         errno.EINVAL, 'not a qcow'),
    ]


def test_refusals_queue_nothing(cluster: Cluster, lm: Livemigrate, name: str, workdir: str,
                                http_root: str) -> None:
    taken = 'b/' + name
    rbdtools.create_image(cluster.conf, taken, 4 * MiB, seed=name)
    before = rbdtools.checksums(cluster.conf, taken)
    count = len(lm.ls())
    for what, dest, spec, err_no, needle in _refusals(workdir, http_root, taken):
        if isinstance(spec, str):
            path = os.path.join(workdir, 'bad.json')
            with open(path, 'w') as f:
                f.write(spec)
            rc, out, err = lm.run('import', dest, '-i', path)
        else:
            rc, out, err = import_(lm, dest, spec, workdir)
        assert rc == err_no, '{}: {} {}'.format(what, rc, err)
        assert needle in err and err.strip().count('\n') == 0, (what, err)
        assert len(lm.ls()) == count, what
    assert rbdtools.checksums(cluster.conf, taken) == before
    rc, _, err = lm.run('import', 'b/x6')                  # no -i at all
    assert rc == errno.EINVAL and '-i' in err


def _wait_copying(lm: Livemigrate, task_id: str) -> Dict[str, Any]:
    return lm.wait(task_id, pred=lambda t: t['state'] == 'executing' and t['progress'] > 0.05)


def test_cancel_running_import(cluster: Cluster, lm: Livemigrate, name: str,
                               workdir: str) -> None:
    path = make_file(os.path.join(workdir, 'big.raw'), 96 * MiB, name)
    dest = 'b/' + name
    task = import_ok(lm, dest, {'type': 'raw', 'stream': file_stream(path)}, workdir,
                     '--bandwidth-limit', '8M')
    running = _wait_copying(lm, task['id'])
    assert running['bytes_copied'] > 0
    events = json.loads(cluster.ceph('progress', 'json').stdout)['events']
    assert any(e['refs'].get('task_id') == task['id'] for e in events)
    out = lm.ok('cancel', task['id'])
    assert out['id'] == task['id']
    done = lm.wait(task['id'], ('aborted',), timeout=120)
    assert 'destination removed' in (done['error'] or '')
    assert not rbdtools.image_exists(cluster.conf, dest)
    assert name not in rbdtools.trash_names(cluster.conf, 'b')


def test_import_survives_mgr_failover(cluster: Cluster, lm: Livemigrate, name: str,
                                      workdir: str) -> None:
    path = make_file(os.path.join(workdir, 'fo.raw'), 48 * MiB, name)
    dest = 'c/' + name
    task = import_ok(lm, dest, {'type': 'raw', 'stream': file_stream(path)}, workdir,
                     '--bandwidth-limit', '8M')
    _wait_copying(lm, task['id'])
    active = cluster.ceph_json('mgr', 'stat')['active_name']
    cluster.ceph('mgr', 'fail', active)
    wait_for(lambda: lm.run('ls')[0] == 0, 90, 'the module back after failover')
    done = lm.wait(task['id'], timeout=180)
    assert done['error'] is None or 'blocklisted' in done['error']
    assert sha256_image(cluster.conf, dest) == sha256_file(path)


def _serve(root: str, port: int = 0) -> http.server.ThreadingHTTPServer:
    handler = type('Handler', (RangeHandler,), {'root': root})
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', port), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def test_http_outage_is_retried(cluster: Cluster, lm: Livemigrate, name: str,
                                workdir: str) -> None:
    """The server stops mid-copy (librbd: ECONNREFUSED): the task retries with
    backoff, and carries on once the server is back."""
    path = make_file(os.path.join(workdir, 'out.raw'), 48 * MiB, name)
    srv = _serve(workdir)
    port = srv.server_address[1]
    dest = 'b/' + name
    try:
        task = import_ok(lm, dest, {'type': 'raw', 'stream': {
            'type': 'http', 'url': 'http://127.0.0.1:{}/out.raw'.format(port)}}, workdir,
            '--bandwidth-limit', '8M')
        _wait_copying(lm, task['id'])
        srv.shutdown()
        srv.server_close()
        failed = lm.wait(task['id'], pred=lambda t: t['attempts'] >= 1)
        assert failed['state'] in ('prepared', 'executing') and '111' in failed['error']
        srv = _serve(workdir, port)
        done = lm.wait(task['id'], timeout=180)
        assert done['error'] is None
        assert sha256_image(cluster.conf, dest) == sha256_file(path)
    finally:
        srv.shutdown()
        srv.server_close()


# -- s3 -----------------------------------------------------------------------------

# moto[server] is a dependency of tox's integration env (tox.ini); LM_MOTO_SERVER
# names another moto_server
MOTO = (os.environ.get('LM_MOTO_SERVER') or shutil.which('moto_server')
        or os.path.join(sys.prefix, 'bin', 'moto_server'))


@pytest.fixture
def s3_server(workdir: str) -> Iterator[str]:
    """A local S3-compatible server (moto, from PyPI in a venv); skipped without it."""
    if not os.access(MOTO, os.X_OK):
        pytest.skip('no moto_server at {} (LM_MOTO_SERVER)'.format(MOTO))
    import socket
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([MOTO, '-H', '127.0.0.1', '-p', str(port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = 'http://127.0.0.1:{}'.format(port)
    try:
        import urllib.request

        def up() -> bool:
            try:
                urllib.request.urlopen(url, timeout=1).read()
                return True
            except Exception:
                return False
        wait_for(up, 30, 'moto_server')
        yield url
    finally:
        p.terminate()
        p.wait(10)


def _s3_put(url: str, bucket: str, key: str, path: str) -> None:
    """Bucket and object, unsigned (moto does not check); an octet-stream body
    (a form-encoded one, urllib's default, makes moto's server hang)."""
    import urllib.request
    urllib.request.urlopen(urllib.request.Request('{}/{}'.format(url, bucket),
                                                  method='PUT'), timeout=30).read()
    with open(path, 'rb') as f:
        urllib.request.urlopen(urllib.request.Request(
            '{}/{}/{}'.format(url, bucket, key), data=f.read(), method='PUT',
            headers={'Content-Type': 'application/octet-stream'}), timeout=60).read()


def test_s3_credentials_stay_out_of_the_record(cluster: Cluster, lm: Livemigrate, name: str,
                                               workdir: str, s3_server: str) -> None:
    path = make_file(os.path.join(workdir, 's3.raw'), 8 * MiB, name)
    _s3_put(s3_server, 'bucket', 'disk.raw', path)
    secret = 'S3CR3T-' + name
    spec = {'type': 'raw', 'stream': {'type': 's3', 'url': s3_server + '/bucket/disk.raw',
                                      'access_key': 'AKID' + name, 'secret_key': secret}}
    dest = 'b/' + name
    task = import_ok(lm, dest, spec, workdir)
    record = cluster.ceph('config-key', 'get', 'mgr/rbd_livemigrate/task/' + task['id']).stdout
    for text in (json.dumps(task), record, lm.ok('ls'), json.dumps(lm.ls()),
                 lm.ok('status', task['id'])):
        assert secret not in text and 'AKID' + name not in text
    keys = json.loads(cluster.ceph('config-key', 'ls').stdout)
    mine = [k for k in keys if k.startswith('mgr/rbd_livemigrate/import/' + task['id'])]
    assert len(mine) == 2
    lm.wait(task['id'])
    assert sha256_image(cluster.conf, dest) == sha256_file(path)
    # removed once the task is over (swept every 10 s)
    wait_for(lambda: not any(k.startswith('mgr/rbd_livemigrate/import/' + task['id'])
                             for k in json.loads(cluster.ceph('config-key', 'ls').stdout)),
             60, 'the credentials removed')
    # nor in any log of the cluster (the mgr's, the mon's and its audit log);
    # the mon's store holds it until then, as it holds every config-key
    logs = os.path.dirname(cluster.log_file('mon.a'))
    for f in os.listdir(logs):
        with open(os.path.join(logs, f), errors='replace') as log:
            assert secret not in log.read(), f


__all__ = ['rados']
