#!/usr/bin/python3
"""Drive the module's remote-source pieces (remote_spec, remotes.ConfFiles,
rbd_remote, compat's probe) with a release's own librbd, the way the module
will once they are wired into its commands.  Run under the destination
cluster's release (``cluster.python(__file__, ...)``, CEPH_CONF set); prints
one JSON object.  The key is read from a keyring file, never from argv.

    remote_driver.py probe [--pool P]
    remote_driver.py connect NAME MON_HOST CLIENT KEYRING [--timeout S]
    remote_driver.py head-differs NAME MON_HOST CLIENT KEYRING POOL/IMAGE@SNAP
    remote_driver.py move NAME MON_HOST CLIENT KEYRING CONF_DIR SRC DEST_POOL/DEST_IMAGE
        SRC is pool[/ns]/image[@snap]; without @snap the driver takes a snapshot named
        like the module's and removes it at the end
    remote_driver.py prepare NAME MON_HOST CLIENT KEYRING CONF_DIR SRC@SNAP DEST [--op-timeout S]
    remote_driver.py step execute|commit DEST_POOL/DEST_IMAGE    (errno in the answer)
"""

import argparse
import json
import os
import stat
import sys
import time
from typing import Any, Dict, List

os.environ['UNITTEST'] = '1'        # import the package without the mgr
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'src', 'pybind', 'mgr'))

import rados  # noqa: E402
import rbd  # noqa: E402

from rbd_livemigrate import compat, remote_spec  # noqa: E402
from rbd_livemigrate.errors import LiveMigrateError  # noqa: E402
from rbd_livemigrate.rbd_remote import RemoteClient, connect_check  # noqa: E402
from rbd_livemigrate.remotes import ConfFiles, Remote  # noqa: E402


def _key(keyring: str, client: str) -> str:
    with open(keyring) as f:
        return remote_spec.parse_keyring(f.read(), client)[1]


def _local() -> rados.Rados:
    c = rados.Rados(conffile='')
    c.connect(timeout=30)
    return c


def _modes(d: str) -> Dict[str, str]:
    out = {}
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        out[n] = oct(stat.S_IMODE(os.stat(os.path.join(d, n)).st_mode))
    if os.path.isdir(d):
        out['.'] = oct(stat.S_IMODE(os.stat(d).st_mode))
    return out


def cmd_probe(a: argparse.Namespace) -> Dict[str, Any]:
    c = _local()
    try:
        io = c.open_ioctx(a.pool)

        def prepare(spec: str) -> None:
            rbd.RBD().migration_prepare_import(spec, io, 'rbd_livemigrate-probe-dest')
        supported = compat.cross_cluster_import(prepare)
        images = rbd.RBD().list(io)
    finally:
        c.shutdown()
    return {'supported': supported, 'refusal': compat.cross_cluster_refusal(),
            'probe_dest_created': 'rbd_livemigrate-probe-dest' in images}


def cmd_connect(a: argparse.Namespace) -> Dict[str, Any]:
    t = time.monotonic()
    try:
        fsid = connect_check(a.name, a.mon_host, a.client, _key(a.keyring, a.client),
                             a.timeout)
        return {'fsid': fsid, 'seconds': round(time.monotonic() - t, 2)}
    except LiveMigrateError as e:
        return {'errno': e.errno, 'error': str(e), 'type': type(e).__name__,
                'seconds': round(time.monotonic() - t, 2)}


def _split(src: str) -> List[Any]:
    snap = None
    if '@' in src:
        src, snap = src.split('@', 1)
    parts = src.split('/')
    ns = parts[1] if len(parts) == 3 else ''
    return [parts[0], ns, parts[-1], snap]


def cmd_head_differs(a: argparse.Namespace) -> Dict[str, Any]:
    pool, ns, image, snap = _split(a.src)
    with RemoteClient(a.name, a.mon_host, a.client, _key(a.keyring, a.client)) as rc:
        return {'head_differs': rc.head_differs(pool, ns, image, snap)}


def cmd_move(a: argparse.Namespace) -> Dict[str, Any]:
    pool, ns, image, snap = _split(a.src)
    dpool, dimage = a.dest.split('/')
    key = _key(a.keyring, a.client)
    out: Dict[str, Any] = {}
    files = ConfFiles(a.conf_dir)
    out['swept'] = files.sweep()
    remote = Remote(a.name, a.mon_host, a.client, '', time.time())
    with RemoteClient(a.name, a.mon_host, a.client, key) as rc:
        out['watchers'] = rc.watchers(pool, ns, image)
        own = snap is None
        if own:
            snap = remote_spec.module_snap_name('drv' + os.urandom(4).hex())
            rc.create_snap(pool, ns, image, snap)
        out['snap'] = snap
        out['head_differs'] = rc.head_differs(pool, ns, image, snap)
        cluster = files.write(remote, key)
        out['files_during'] = _modes(a.conf_dir)
        spec = remote_spec.build_source_spec(a.conf_dir, a.name, a.client, pool, ns, image,
                                             snap)
        assert cluster == spec['cluster_name']
        out['spec'] = spec
        local = _local()
        try:
            io = local.open_ioctx(dpool)
            r = rbd.RBD()
            t = time.monotonic()
            r.migration_prepare_import(json.dumps(spec), io, dimage)
            out['prepare_s'] = round(time.monotonic() - t, 2)
            t = time.monotonic()
            r.migration_execute(io, dimage)
            out['execute_s'] = round(time.monotonic() - t, 2)
            with rbd.Image(io, dimage, read_only=True) as img:
                out['dest_snaps'] = [s['name'] for s in img.list_snaps()]
            t = time.monotonic()
            r.migration_commit(io, dimage)
            out['commit_s'] = round(time.monotonic() - t, 2)
        finally:
            local.shutdown()
        if own and not a.keep_snap:
            out['snap_removed'] = rc.remove_snap(pool, ns, image, snap)
    out['files_removed'] = files.retain([])
    out['files_after'] = _modes(a.conf_dir)
    return out


def cmd_prepare(a: argparse.Namespace) -> Dict[str, Any]:
    """Files (with the op timeout) and prepare only: the steps follow with ``step``."""
    pool, ns, image, snap = _split(a.src)
    dpool, dimage = a.dest.split('/')
    files = ConfFiles(a.conf_dir, op_timeout_seconds=a.op_timeout)
    files.write(Remote(a.name, a.mon_host, a.client, '', time.time()),
                _key(a.keyring, a.client))
    spec = remote_spec.build_source_spec(a.conf_dir, a.name, a.client, pool, ns, image, snap)
    local = _local()
    try:
        rbd.RBD().migration_prepare_import(json.dumps(spec), local.open_ioctx(dpool), dimage)
    finally:
        local.shutdown()
    return {'spec': spec, 'conf': open(files.paths(a.name)[0]).read()}


def cmd_step(a: argparse.Namespace) -> Dict[str, Any]:
    dpool, dimage = a.dest.split('/')
    local = _local()
    t = time.monotonic()
    try:
        io = local.open_ioctx(dpool)
        getattr(rbd.RBD(), 'migration_' + a.what)(io, dimage)
        return {'ok': True, 'seconds': round(time.monotonic() - t, 2)}
    except rbd.Error as e:
        return {'ok': False, 'errno': abs(getattr(e, 'errno', 0) or 0),
                'error': str(e), 'seconds': round(time.monotonic() - t, 2)}
    finally:
        local.shutdown()


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('probe')
    s.add_argument('--pool', default='rbd')
    s.set_defaults(func=cmd_probe)
    for name, func in (('connect', cmd_connect), ('head-differs', cmd_head_differs),
                       ('move', cmd_move)):
        s = sub.add_parser(name)
        for arg in ('name', 'mon_host', 'client', 'keyring'):
            s.add_argument(arg)
        if name == 'connect':
            s.add_argument('--timeout', type=float, default=10)
        if name == 'head-differs':
            s.add_argument('src')
        if name == 'move':
            s.add_argument('conf_dir')
            s.add_argument('src')
            s.add_argument('dest')
            s.add_argument('--keep-snap', action='store_true')
        s.set_defaults(func=func)
    s = sub.add_parser('prepare')
    for arg in ('name', 'mon_host', 'client', 'keyring', 'conf_dir', 'src', 'dest'):
        s.add_argument(arg)
    s.add_argument('--op-timeout', type=int, default=0)
    s.set_defaults(func=cmd_prepare)
    s = sub.add_parser('step')
    s.add_argument('what', choices=('execute', 'commit', 'abort'))
    s.add_argument('dest')
    s.set_defaults(func=cmd_step)
    a = p.parse_args()
    print(json.dumps(a.func(a)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
