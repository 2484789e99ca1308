import pytest

from rbd_livemigrate.errors import InvalidArgument
from rbd_livemigrate.spec import ImageSpec, PoolSpec, parse_bytes


@pytest.mark.parametrize('text,expected', [
    ('rbd/img', ('rbd', '', 'img')),
    ('rbd/ns1/img', ('rbd', 'ns1', 'img')),
    ('pool-1/a.b_c', ('pool-1', '', 'a.b_c')),
    ('p/ñame', ('p', '', 'ñame')),
])
def test_image_spec_ok(text: str, expected: tuple) -> None:
    spec = ImageSpec.parse(text)
    assert tuple(spec) == expected
    assert str(spec) == text


@pytest.mark.parametrize('text', [
    '', 'img', '/img', 'rbd/', 'rbd//img', 'a/b/c/d', 'rbd/img@snap', 'rbd/im g',
    'rbd/img\n', 'rbd/\x00', 'rbd/' + 'x' * 251, 'rbd/..', '/', '//',
])
def test_image_spec_bad(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        ImageSpec.parse(text)
    assert e.value.errno == 22
    assert '\n' not in str(e.value)


def test_pool_spec() -> None:
    assert PoolSpec.parse('a') == PoolSpec('a', '')
    assert PoolSpec.parse('a/ns') == PoolSpec('a', 'ns')
    assert str(PoolSpec('a', 'ns')) == 'a/ns'
    for bad in ('', 'a/b/c', 'a/', '/b'):
        with pytest.raises(InvalidArgument):
            PoolSpec.parse(bad)


@pytest.mark.parametrize('text,value', [
    ('4096', 4096), ('4K', 4096), ('1M', 1 << 20), ('1MiB', 1 << 20), ('2g', 2 << 30),
    (None, None),
])
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes('x', text) == value


@pytest.mark.parametrize('text', ['-1', '1.5M', 'M', '1Q', '', '99999999P'])
def test_parse_bytes_bad(text: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_bytes('object size', text)
