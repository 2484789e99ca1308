"""cls_rbd's encodings (rbd_decode.py), checked with hand-built bytes and
without librados.

Each byte string is built the way Ceph's ``encode()`` writes it
(``src/cls/rbd/cls_rbd_types.cc``, ``cls_rbd.cc``): integers little-endian,
strings and bufferlists as a u32 length and the bytes, versioned structs
behind ENCODE_START (version u8, compat u8, length u32)."""

import json
import os
import struct
import subprocess
import sys
from typing import Dict, List, Tuple

import pytest

from rbd_livemigrate.interface import (HeaderType, INTENT_KEY, Intent, MigState, TrashSource)
from rbd_livemigrate.rbd_decode import (
    CEPH_NOSNAP, HEADER_KEYS, RBD_FEATURE_DATA_POOL, RBD_FEATURE_JOURNALING,
    RBD_FEATURE_STRIPINGV2, SNAP_NAMESPACE_TRASH, decode_dir_entry, decode_intent,
    decode_migration_spec, decode_trash_entry, decode_trash_source, dir_add_image_arg,
    encode_str, get_features_arg, header_oid, id_oid, is_unprotected, metadata_set_arg,
    object_map_oid, plain_info, read_string, snap_id_arg, snap_id_of_key,
    snapshot_ns_and_children)

MiB = 1 << 20


# -- Ceph's encode(), by hand ---------------------------------------------------------

def u8(v: int) -> bytes:
    return struct.pack('<B', v)


def u32(v: int) -> bytes:
    return struct.pack('<I', v)


def u64(v: int) -> bytes:
    return struct.pack('<Q', v)


def s64(v: int) -> bytes:
    return struct.pack('<q', v)


def string(text: str) -> bytes:
    data = text.encode()
    return u32(len(data)) + data


def utime(sec: int, nsec: int = 0) -> bytes:
    return u32(sec) + u32(nsec)


def encode_start(version: int, compat: int, payload: bytes) -> bytes:
    return u8(version) + u8(compat) + u32(len(payload)) + payload


def migration_spec(version: int = 3, kind: int = 1, pool_id: int = 3, namespace: str = '',
                   name: str = 'dst', image_id: str = '10a2b3c4', snap_seqs: int = 0,
                   mirroring: bool = False, state: int = 3, description: str = '',
                   mode: int = 0, source_spec: str = '', overlap: int = 1 << 30,
                   flatten: bool = False) -> bytes:
    """MigrationSpec::encode: ENCODE_START(3, 1 or 3), header_type, pool_id,
    pool_namespace, image_name, image_id, snap_seqs, overlap, flatten,
    mirroring, state, state_description, mirror_image_mode (v2), source_spec (v3)."""
    payload = (u8(kind) + s64(pool_id) + string(namespace) + string(name)
               + string(image_id) + u32(snap_seqs)
               + b''.join(u64(i + 4) + u64(i + 9) for i in range(snap_seqs))
               + u64(overlap) + u8(flatten) + u8(mirroring) + u8(state) + string(description))
    if version >= 2:
        payload += u8(mode)
    if version >= 3:
        payload += string(source_spec)
    return encode_start(version, 3 if source_spec else 1, payload)


def snapshot_info(snap_id: int, ns_type: int, ns_payload: bytes, name: str,
                  children: int) -> bytes:
    """SnapshotInfo::encode: id, snapshot_namespace (ENCODE_START, type u32,
    the namespace's fields), name, image_size, timestamp, child_count."""
    namespace = encode_start(1, 1, u32(ns_type) + ns_payload)
    return encode_start(1, 1, u64(snap_id) + namespace + string(name) + u64(10 * MiB)
                        + utime(1700000000, 5) + u32(children))


def trash_spec(source: int, name: str, version: int = 2) -> bytes:
    """TrashImageSpec::encode: source (u8), name, deletion_time,
    deferment_end_time, state (u8, v2)."""
    payload = u8(source) + string(name) + utime(1700000000) + utime(1700000060)
    if version >= 2:
        payload += u8(0)
    return encode_start(version, 1, payload)


# -- MigrationSpec ------------------------------------------------------------------

def test_a_source_header_of_each_version() -> None:
    for version in (1, 2, 3):
        h = decode_migration_spec(migration_spec(
            version=version, kind=1, pool_id=7, namespace='ns1', name='dst-img',
            image_id='abc123', snap_seqs=2, mirroring=True, state=3, description='going',
            mode=1))
        assert h is not None, version
        assert (h.kind, h.pool_id, h.namespace, h.image_name, h.image_id) == (
            HeaderType.SRC, 7, 'ns1', 'dst-img', 'abc123')
        assert (h.state, h.description, h.mirroring) == (MigState.EXECUTING, 'going', True)
        assert h.mirror_image_mode == (0 if version == 1 else 1)
        assert h.source_spec == '' and not h.is_import


def test_every_state_and_an_unknown_one() -> None:
    for state in MigState:
        if state != MigState.UNKNOWN:
            h = decode_migration_spec(migration_spec(kind=2, state=state.value))
            assert h is not None and h.kind == HeaderType.DST and h.state == state
    h = decode_migration_spec(migration_spec(state=42))
    assert h is not None and h.state == MigState.UNKNOWN


def test_an_import_destination() -> None:
    spec = '{"type":"raw","stream":{"type":"file","file_path":"/x.bin"}}'
    h = decode_migration_spec(migration_spec(kind=2, pool_id=-1, name='', image_id='',
                                             state=2, source_spec=spec))
    assert h is not None and h.is_import and h.state == MigState.PREPARED
    assert h.source_spec == spec


# rbd_header.<id> 'migration_get' of an import prepared on Pacific 16.2.15
# (raw file, 10 MiB, state prepared): the bytes a cluster wrote
PACIFIC_IMPORT_HEADER = (
    b'\x03\x03u\x00\x00\x00\x02' + b'\xff' * 8 + b'\x00' * 16 + b'\x00\x00\xa0\x00\x00\x00'
    b'\x00\x00\x01\x00\x02\x00\x00\x00\x00\x00H\x00\x00\x00'
    b'{"stream":{"file_path":"/tmp/lmimp-raw.bin","type":"file"},"type":"raw"}')


def test_an_import_header_a_cluster_wrote_is_what_encode_writes() -> None:
    h = decode_migration_spec(PACIFIC_IMPORT_HEADER)
    assert h is not None and h.is_import and h.state == MigState.PREPARED
    assert json.loads(h.source_spec)['stream']['file_path'] == '/tmp/lmimp-raw.bin'
    # the hand-built encoding of that header (overlap and flatten are not
    # decoded: 10 MiB and true here) is byte for byte what librbd wrote
    built = migration_spec(kind=2, pool_id=-1, name='', image_id='', state=2,
                           source_spec=h.source_spec, overlap=10 * MiB, flatten=True)
    assert built == PACIFIC_IMPORT_HEADER


def test_short_or_foreign_headers_are_none() -> None:
    full = migration_spec(version=1, description='xyz')
    for n in range(len(full) - 3):      # cut anywhere before the description's text
        assert decode_migration_spec(full[:n]) is None, n
    assert decode_migration_spec(migration_spec(kind=3)) is None     # no such end
    assert decode_migration_spec(b'') is None


# -- SnapshotInfo -------------------------------------------------------------------

def test_snapshot_namespace_and_children() -> None:
    user = snapshot_info(4, 0, b'', 'snap1', children=2)
    assert snapshot_ns_and_children(user) == (0, 2)
    group = snapshot_info(5, 1, s64(2) + string('grp') + string('gsnap'), 'g', children=0)
    assert snapshot_ns_and_children(group) == (1, 0)
    trash = snapshot_info(6, SNAP_NAMESPACE_TRASH, string('snap1') + u32(0), '.trash', 0)
    assert snapshot_ns_and_children(trash) == (SNAP_NAMESPACE_TRASH, 0)
    with pytest.raises(struct.error):
        snapshot_ns_and_children(user[:-2])


def test_protection_status() -> None:
    assert is_unprotected(u8(0))
    assert not is_unprotected(u8(1)) and not is_unprotected(u8(2))     # unprotecting, protected
    assert not is_unprotected(b'')                                      # unsure: not unprotected


# -- the trash, the directory, image-meta ---------------------------------------------

def test_trash_entries_of_both_versions() -> None:
    for version in (1, 2):
        buf = trash_spec(TrashSource.MIGRATION.value, 'img', version)
        assert decode_trash_entry(buf) == (2, 'img')
        assert decode_trash_source(buf) == TrashSource.MIGRATION
    assert decode_trash_source(trash_spec(0, 'a')) == TrashSource.USER
    assert decode_trash_source(trash_spec(9, 'a')) == TrashSource.UNKNOWN
    assert decode_trash_source(b'\x02\x01') == TrashSource.UNKNOWN
    with pytest.raises((IndexError, struct.error)):
        decode_trash_entry(trash_spec(2, 'img')[:9])


def test_directory_entry() -> None:
    assert decode_dir_entry(string('10a2b3c4')) == '10a2b3c4'
    assert decode_dir_entry(b'\x05\x00') is None


def test_intent_round_trip() -> None:
    intent = Intent('t1', 'commit', 'src-id', 'dst-id')
    # metadata_set's argument is map<string, bufferlist> of one entry ...
    arg = metadata_set_arg(INTENT_KEY, intent.dumps())
    assert arg == u32(1) + string(INTENT_KEY) + string(intent.dumps())
    # ... and metadata_get replies with the value as a bufferlist
    assert decode_intent(string(intent.dumps())) == intent
    assert decode_intent(string('{"someone": "else"}')) is None
    assert decode_intent(b'\x01') is None


def test_method_arguments_and_object_names() -> None:
    assert get_features_arg() == b'\xfe' + b'\xff' * 7 + b'\x01' and CEPH_NOSNAP == 2 ** 64 - 2
    assert snap_id_arg(10) == u64(10)
    assert encode_str('id1') == string('id1')
    assert read_string(b'xx' + string('é') + b'rest', 2) == ('é', 8)
    assert dir_add_image_arg('img', 'id1') == string('img') + string('id1')
    assert header_oid('abc') == 'rbd_header.abc' and id_oid('img') == 'rbd_id.img'
    assert object_map_oid('abc', 31) == 'rbd_object_map.abc.000000000000001f'
    assert snap_id_of_key('snapshot_000000000000001f') == 31


# -- a plain image's header -----------------------------------------------------------

def header(**over: bytes) -> Dict[str, bytes]:
    h = {'size': u64(1 << 30), 'order': u8(22), 'features': u64(61),
         'stripe_unit': u64(4 * MiB), 'stripe_count': u64(1)}
    h.update(over)
    return {k: v for k, v in h.items() if v != b'-'}


def test_plain_info_of_a_plain_image() -> None:
    info = plain_info('id1', header(), 5, 42)
    assert info is not None
    assert (info.id, info.size, info.object_size, info.stripe_unit, info.stripe_count) == (
        'id1', 1 << 30, 4 * MiB, 4 * MiB, 1)
    assert (info.features, info.data_pool_id, info.used_bytes, info.header_version) == (
        61, 5, 1 << 30, 42)
    assert not info.migrating and not info.has_parent and info.snapshots == []
    assert set(header()) <= set(HEADER_KEYS)


def test_plain_info_striping_and_data_pool() -> None:
    striped = header(features=u64(1 | RBD_FEATURE_STRIPINGV2), stripe_unit=u64(64 << 10),
                     stripe_count=u64(8))
    info = plain_info('id1', striped, 5, 1)
    assert info is not None and (info.stripe_unit, info.stripe_count) == (64 << 10, 8)
    # the striping keys without the feature are not read
    info = plain_info('id1', header(stripe_unit=u64(64 << 10), stripe_count=u64(8)), 5, 1)
    assert info is not None and (info.stripe_unit, info.stripe_count) == (4 * MiB, 1)
    on_data_pool = header(features=u64(1 | RBD_FEATURE_DATA_POOL), data_pool_id=s64(9))
    info = plain_info('id1', on_data_pool, 5, 1)
    assert info is not None and info.data_pool_id == 9


def test_not_plain() -> None:
    cases: List[Tuple[str, Dict[str, bytes]]] = [
        ('journaling', header(features=u64(61 | RBD_FEATURE_JOURNALING))),
        ('a parent', header(parent=b'\x01')),
        ('a migration', header(migration=b'\x01')),
        ('an op feature', header(op_features=u64(2))),
        ('no order', header(order=b'-')),
        ('no size', header(size=b'-')),
    ]
    for why, h in cases:
        assert plain_info('id1', h, 5, 1) is None, why
    assert plain_info('id1', header(op_features=u64(0)), 5, 1) is not None
    with pytest.raises(struct.error):
        plain_info('id1', header(features=b'\x01'), 5, 1)


def test_feature_bits_are_librbds() -> None:
    rbd = pytest.importorskip('rbd')
    assert (RBD_FEATURE_STRIPINGV2, RBD_FEATURE_JOURNALING, RBD_FEATURE_DATA_POOL) == (
        rbd.RBD_FEATURE_STRIPINGV2, rbd.RBD_FEATURE_JOURNALING, rbd.RBD_FEATURE_DATA_POOL)


def test_decoders_load_without_librados() -> None:
    code = ('import sys\n'
            'sys.modules["rados"] = None\n'        # any import of them raises ImportError
            'sys.modules["rbd"] = None\n'
            'import rbd_livemigrate.rbd_decode\n'
            'assert "rbd_livemigrate.rbd_clients" not in sys.modules\n')
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, UNITTEST='1', PYTHONPATH=os.path.join(here, '..', '..'))
    p = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
