"""
Data helpers for the real-cluster tests: write recognisable data into RBD
images and checksum the head and every snapshot.  Uses Debian's
python3-rados/python3-rbd (run with /usr/bin/python3).
"""

import contextlib
import hashlib
import struct
import threading
from typing import Dict, Iterator, List, Optional, Tuple

import rados
import rbd

CHUNK = 4 << 20


@contextlib.contextmanager
def connect(conf: str) -> Iterator[rados.Rados]:
    cluster = rados.Rados(conffile=conf)
    cluster.connect(timeout=30)
    try:
        yield cluster
    finally:
        cluster.shutdown()


def split(spec: str) -> Tuple[str, str, str]:
    parts = spec.split('/')
    if len(parts) == 2:
        return parts[0], '', parts[1]
    return parts[0], parts[1], parts[2]


@contextlib.contextmanager
def ioctx(cluster: rados.Rados, spec: str) -> Iterator[Tuple[rados.Ioctx, str]]:
    pool, ns, image = split(spec)
    io = cluster.open_ioctx(pool)
    io.set_namespace(ns)
    try:
        yield io, image
    finally:
        io.close()


def pattern(seed: str, offset: int, length: int) -> bytes:
    """Recognisable, offset-dependent data: 'seed@offset' repeated."""
    out = bytearray()
    block = 4096
    for off in range(offset, offset + length, block):
        tag = '{}@{:012d};'.format(seed, off).encode()
        out += (tag * (block // len(tag) + 1))[:block]
    return bytes(out[:length])


def create_image(conf: str, spec: str, size: int, written: Optional[int] = None,
                 seed: str = 'data', snaps: int = 0, order: Optional[int] = None,
                 features: Optional[int] = None) -> None:
    """Create ``spec`` and write ``written`` bytes of pattern; after each of
    ``snaps`` snapshots rewrite part of the image so every snap differs."""
    written = size if written is None else written
    with connect(conf) as cluster, ioctx(cluster, spec) as (io, name):
        rbd.RBD().create(io, name, size, order=order, old_format=False, features=features)
        with rbd.Image(io, name) as image:
            write(image, 0, written, seed)
            for i in range(snaps):
                image.create_snap('snap{}'.format(i + 1))
                part = max(CHUNK, written // (snaps + 2))
                write(image, (i * part) % max(1, written), min(part, written), '{}-s{}'.format(
                    seed, i + 1))


def write(image: rbd.Image, offset: int, length: int, seed: str) -> None:
    end = offset + length
    while offset < end:
        n = min(CHUNK, end - offset)
        image.write(pattern(seed, offset, n), offset)
        offset += n


def _digest(image: rbd.Image) -> str:
    h = hashlib.md5()
    size = image.size()
    off = 0
    while off < size:
        n = min(CHUNK, size - off)
        h.update(image.read(off, n))
        off += n
    return '{}:{}'.format(size, h.hexdigest())


def checksums(conf: str, spec: str) -> Dict[str, str]:
    """{'HEAD': ..., '<snap>': ...} for the image and each of its snapshots
    (user snapshots by name; mirror snapshots, which cannot be opened by
    name, as ``mirror:<id>`` by id)."""
    out: Dict[str, str] = {}
    with connect(conf) as cluster, ioctx(cluster, spec) as (io, name):
        with rbd.Image(io, name, read_only=True) as image:
            out['HEAD'] = _digest(image)
            snaps = [(s['name'], s['id'], s.get('namespace', 0)) for s in image.list_snaps()]
            for snap, snap_id, ns in snaps:
                if ns == 0:
                    continue
                image.set_snap_by_id(snap_id)
                out['mirror:{}'.format(snap_id)] = _digest(image)
                image.set_snap_by_id(None)
        for snap, snap_id, ns in snaps:
            if ns != 0:
                continue
            with rbd.Image(io, name, snapshot=snap, read_only=True) as image:
                out[snap] = _digest(image)
    return out


def data_objects(conf: str, pool: str, image_id: str, namespace: str = '') -> int:
    """How many data objects image ``image_id`` has in ``pool``: what a
    copy has written, read from the cluster itself (not from the module)."""
    prefix = 'rbd_data.{}.'.format(image_id)
    with connect(conf) as cluster:
        io = cluster.open_ioctx(pool)
        try:
            io.set_namespace(namespace)
            return sum(1 for o in io.list_objects() if o.key.startswith(prefix))
        finally:
            io.close()


def image_exists(conf: str, spec: str) -> bool:
    with connect(conf) as cluster, ioctx(cluster, spec) as (io, name):
        return name in rbd.RBD().list(io)


def image_layout(conf: str, spec: str) -> Dict[str, int]:
    with connect(conf) as cluster, ioctx(cluster, spec) as (io, name):
        with rbd.Image(io, name, read_only=True) as image:
            return {'object_size': 1 << image.stat()['order'],
                    'stripe_unit': image.stripe_unit(), 'stripe_count': image.stripe_count(),
                    'features': image.features()}


def parent_of(conf: str, spec: str) -> Optional[str]:
    with connect(conf) as cluster, ioctx(cluster, spec) as (io, name):
        with rbd.Image(io, name, read_only=True) as image:
            try:
                p = image.get_parent_image_spec()
            except rbd.ImageNotFound:
                return None
            ns = p.get('pool_namespace') or ''
            base = '{}/{}/{}'.format(p['pool_name'], ns, p['image_name']) if ns else \
                '{}/{}'.format(p['pool_name'], p['image_name'])
            return '{}@{}'.format(base, p['snap_name'])


def trash_names(conf: str, pool: str, namespace: str = '') -> List[str]:
    """Names in the trash, from the rbd_trash omap (Pacific's trash_list
    raises IndexError on migration sources)."""
    with connect(conf) as cluster:
        io = cluster.open_ioctx(pool)
        io.set_namespace(namespace)
        try:
            with rados.ReadOpCtx() as op:
                it, _ = io.get_omap_vals(op, '', 'id_', 100000)
                try:
                    io.operate_read_op(op, 'rbd_trash')
                except rados.ObjectNotFound:
                    return []
                values = [bytes(v) for _, v in it]
        finally:
            io.close()
    names = []
    for buf in values:
        (n,) = struct.unpack_from('<I', buf, 7)
        names.append(buf[11:11 + n].decode())
    return names


@contextlib.contextmanager
def opened(conf: str, spec: str) -> Iterator[rbd.Image]:
    """Hold an image open (a watcher) for the duration."""
    with connect(conf) as cluster, ioctx(cluster, spec) as (io, name):
        with rbd.Image(io, name) as image:
            yield image


def holder(conf: str, spec: str) -> Tuple[threading.Thread, threading.Event]:
    """Hold ``spec`` open in a thread (a VM's client, which only opens it)
    until the event returned is set; returns once it is open."""
    opened_, release = threading.Event(), threading.Event()

    def hold() -> None:
        with opened(conf, spec):
            opened_.set()
            release.wait(300)
    th = threading.Thread(target=hold, daemon=True)
    th.start()
    assert opened_.wait(30), 'could not open ' + spec
    return th, release
