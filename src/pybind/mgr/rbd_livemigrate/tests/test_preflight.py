"""
Preflight's pure checks: every input librbd would refuse late (or act on
destructively) is a blocker with an errno, before anything is queued.
"""

import errno
from typing import Any, Dict, List, Optional

import pytest

from rbd_livemigrate.errors import InvalidArgument
from rbd_livemigrate.interface import ImageInfo, Mirror, MirrorMode
from rbd_livemigrate.preflight import (PoolInfo, find_blockers, image_blockers, prepare_args,
                                       reusable, validate_layout)
from rbd_livemigrate.spec import ImageSpec
from rbd_livemigrate.task import Layout

MiB = 1 << 20
SRC = ImageSpec('a', '', 'img')
DST = ImageSpec('b', '', 'img')


def info(**kw: Any) -> ImageInfo:
    base = dict(id='sid', size=8 * MiB, object_size=4 * MiB, stripe_unit=4 * MiB,
                stripe_count=1, features=61, data_pool_id=-1, watchers=[], descendants=[],
                snapshots=[], used_bytes=8 * MiB, migrating=False, has_parent=False)
    base.update(kw)
    return ImageInfo(**base)  # type: ignore[arg-type]


def errnos(layout: Layout = Layout(), source: ImageSpec = SRC, dest: ImageSpec = DST,
           allow: bool = False, **kw: Any) -> List[int]:
    return [b.errno for b in image_blockers(source, dest, layout, info(**kw), allow)]


def test_plain_image_has_no_blocker() -> None:
    assert errnos() == []
    assert errnos(Layout(object_size=1 * MiB)) == []
    assert errnos(Layout(object_size=8 * MiB)) == []


@pytest.mark.parametrize('layout,kw,ok', [
    (Layout(stripe_unit=8 * MiB), {}, False),                     # larger than the 4M objects
    (Layout(stripe_unit=8 * MiB, object_size=8 * MiB), {}, True),
    (Layout(stripe_unit=1 * MiB, stripe_count=4), {}, True),
    (Layout(stripe_unit=2 * MiB), {'object_size': 1 * MiB, 'stripe_unit': 1 * MiB}, False),
    (Layout(object_size=1 * MiB), {'stripe_unit': 2 * MiB, 'stripe_count': 4}, True),
    (Layout(stripe_count=4), {'object_size': 1 * MiB, 'stripe_unit': 1 * MiB}, True),
])
def test_stripe_unit_must_divide_the_object_size(layout: Layout, kw: Any, ok: bool) -> None:
    assert errnos(layout, **kw) == ([] if ok else [errno.EINVAL])


def test_prepare_args_follow_the_layout() -> None:
    a = prepare_args(Layout(object_size=1 * MiB), info())
    assert (a.order, a.stripe_unit, a.stripe_count) == (20, 1 * MiB, 1)
    a = prepare_args(Layout(stripe_count=4), info(stripe_unit=64 << 10))
    assert (a.order, a.stripe_unit, a.stripe_count) == (None, 64 << 10, 4)
    a = prepare_args(Layout(features=['layering', 'exclusive-lock']), info())
    assert a.features == 5 and a.order is None and a.stripe_unit is None


def test_clone_needs_layering() -> None:
    assert errnos(Layout(features=['exclusive-lock']), has_parent=True) == [errno.EINVAL]
    assert errnos(Layout(features=['layering']), has_parent=True) == []
    assert errnos(Layout(features=['exclusive-lock'])) == []


@pytest.mark.parametrize('mirror,err', [
    (Mirror(MirrorMode.SNAPSHOT, True), errno.EBUSY),
    (Mirror(MirrorMode.JOURNAL, True), errno.EBUSY),
    (Mirror(MirrorMode.SNAPSHOT, False), errno.EROFS),
    (Mirror(MirrorMode.JOURNAL, False), errno.EROFS),
    (None, None),
])
def test_mirrored_images_are_refused(mirror: Optional[Mirror], err: Optional[int]) -> None:
    found = image_blockers(SRC, DST, Layout(), info(mirror=mirror), False)
    assert [b.errno for b in found] == ([err] if err else [])
    for b in found:
        assert 'rbd mirror image disable a/img' in str(b) or 'primary' in str(b)


def test_descendants() -> None:
    assert errnos(descendants=['a/kid']) == [errno.EBUSY]
    assert errnos(descendants=['a/kid'], allow=True) == []
    # an error listing them is never taken for "no clones"
    assert errnos(descendants_error='EIO') == [errno.EIO]
    assert errnos(descendants_error='EIO', allow=True) == []


def test_format_1_clones_of_a_parent_in_a_namespace() -> None:
    src = ImageSpec('a', 'ns1', 'img')
    kw: Dict[str, Any] = dict(descendants=['a/ns1/kid'], v1_clones=['a/ns1/kid'])
    assert errnos(source=src, allow=True, **kw) == [errno.EINVAL]
    # measured: a format 1 clone's parent moves into a namespace fine
    assert errnos(dest=ImageSpec('b', 'ns2', 'img'), allow=True,
                  descendants=['a/kid'], v1_clones=['a/kid']) == []
    assert errnos(source=src, allow=True, descendants=['a/ns1/kid']) == []


@pytest.mark.parametrize('layout', [
    Layout(features=['journaling']), Layout(features=['object-map']),
    Layout(features=['fast-diff', 'exclusive-lock']), Layout(features=['bogus']),
    Layout(object_size=3 * MiB), Layout(object_size=64 * MiB), Layout(stripe_unit=1000),
    Layout(stripe_count=0), Layout(object_size=1 * MiB, stripe_unit=2 * MiB),
    Layout(data_pool='bad/name'),
])
def test_invalid_layouts(layout: Layout) -> None:
    with pytest.raises(InvalidArgument):
        validate_layout(layout)


def test_flatten_alone_in_place_needs_a_clone() -> None:
    assert errnos(Layout(flatten=True), dest=SRC) == [errno.EINVAL]
    assert errnos(Layout(flatten=True), dest=SRC, has_parent=True) == []
    assert errnos(Layout(flatten=True)) == []              # to another pool: a real move


@pytest.mark.parametrize('kw,ok', [
    ({'header_version': 3}, True),
    ({}, False),                                              # version not known
    ({'header_version': 3, 'snapshots': ['s']}, False),       # a clone could appear unseen
    ({'header_version': 3, 'watchers': ['1.2.3.4:0/1']}, False),
    ({'header_version': 3, 'descendants': ['a/c']}, False),
    ({'header_version': 3, 'v1_clones': ['a/c']}, False),
    ({'header_version': 3, 'descendants_error': 'EIO'}, False),
    ({'header_version': 3, 'migrating': True}, False),
    ({'header_version': 3, 'mirror': Mirror(MirrorMode.JOURNAL, True)}, False),
    ({'header_version': 3, 'has_parent': True}, True),        # a clone moves as it is
])
def test_only_a_plain_images_look_is_reused(kw: Dict[str, Any], ok: bool) -> None:
    i = info(**kw)
    assert (reusable(i) is i) == ok
    assert reusable(None) is None


class Port:
    """find_blockers' reads: the header recheck, or a full look."""

    def __init__(self, unchanged: bool) -> None:
        self.unchanged = unchanged
        self.calls: List[str] = []

    def namespace_exists(self, pool: str, namespace: str) -> bool:
        return True

    def image_exists(self, spec: ImageSpec) -> bool:
        return False

    def trashed_source(self, spec: ImageSpec) -> Optional[str]:
        return None

    def header_unchanged(self, spec: ImageSpec, image_id: str, version: int) -> bool:
        self.calls.append('stat {} {} {}'.format(spec, image_id, version))
        return self.unchanged

    def image_info(self, spec: ImageSpec, with_used: bool = True) -> ImageInfo:
        self.calls.append('open')
        return info(id='sid', header_version=4, size=16 * MiB)


POOLS = {n: PoolInfo(n, i, True, False, False, None) for i, n in ((1, 'a'), (2, 'b'))}


def test_find_blockers_reuses_a_look_only_while_the_header_is_unchanged() -> None:
    seen = info(header_version=3)
    port = Port(True)
    blockers, got = find_blockers(port, POOLS, SRC, DST, Layout(), False,  # type: ignore
                                  seen=seen)
    assert blockers == [] and got is seen and port.calls == ['stat a/img sid 3']
    port = Port(False)
    blockers, got = find_blockers(port, POOLS, SRC, DST, Layout(), False,  # type: ignore
                                  seen=seen)
    assert port.calls == ['stat a/img sid 3', 'open'] and got is not None
    assert got.size == 16 * MiB and got.header_version == 4


class QuickPort(Port):
    """A plain image read raw (``plain_image_info``), or None: not plain."""

    def __init__(self, plain: Optional[ImageInfo]) -> None:
        super().__init__(False)
        self.plain = plain

    def plain_image_info(self, spec: ImageSpec) -> Optional[ImageInfo]:
        self.calls.append('read')
        return self.plain


def test_a_quick_look_reads_a_plain_image_and_opens_the_rest() -> None:
    plain = info(header_version=9, used_bytes=8 * MiB)
    port = QuickPort(plain)
    blockers, got = find_blockers(port, POOLS, SRC, DST, Layout(), False,  # type: ignore
                                  quick=True)
    assert blockers == [] and got is plain and port.calls == ['read']
    port = QuickPort(None)
    blockers, got = find_blockers(port, POOLS, SRC, DST, Layout(), False,  # type: ignore
                                  quick=True)
    assert port.calls == ['read', 'open'] and got is not None and got.size == 16 * MiB


def test_a_quick_look_counts_the_size_so_a_tight_pool_gets_the_full_look() -> None:
    """The raw read takes the space used as the image's size: where that
    would not fit, the full look measures what the image really uses."""
    tight = dict(POOLS, b=PoolInfo('b', 2, True, False, False, 10 * MiB))
    port = QuickPort(info(header_version=9, size=64 * MiB, used_bytes=64 * MiB))
    blockers, got = find_blockers(port, tight, SRC, DST, Layout(), False,  # type: ignore
                                  quick=True)
    assert port.calls == ['read', 'open'] and blockers == [] and got is not None
    assert got.used_bytes == 8 * MiB
