import ast
import enum
import os

import pytest

from rbd_livemigrate.errors import InvalidArgument
from rbd_livemigrate.request import AddRequest, parse, request_of
from rbd_livemigrate.spec import ImageSpec, Layout, PoolSpec, parse_bytes
from rbd_livemigrate.task import VerifyMode


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


class _Choice(str, enum.Enum):
    full = 'full'


def test_request_of_takes_the_handlers_arguments_by_keyword() -> None:
    given = request_of({'self': object(), 'object_size': '1M', 'verify': _Choice.full,
                        'format': 'json', 'priority': 3, 'inbuf': None})
    assert given == AddRequest(object_size='1M', verify='full', priority=3)
    assert type(given.verify) is str


def test_add_and_add_pool_declare_every_request_option() -> None:
    """request_of(locals()) keeps an option only if the handler declares it:
    add and add-pool declare them all, import all but the migration-only ones."""
    path = os.path.join(os.path.dirname(__file__), '..', 'module.py')
    with open(path) as f:
        tree = ast.parse(f.read())
    params = {n.name: {a.arg for a in n.args.args} for n in ast.walk(tree)
              if isinstance(n, ast.FunctionDef)}
    options = set(AddRequest._fields)
    assert options <= params['add'] and options <= params['add_pool']
    assert options - params['import_image'] == {'flatten', 'allow_descendants',
                                                'manual_cutover', 'verify'}


def test_a_request_is_checked_in_the_order_the_operator_reads_it() -> None:
    """The layout first, then priority and bandwidth, then --verify."""
    with pytest.raises(InvalidArgument, match='object size'):
        parse(AddRequest(object_size='x', priority=5000, verify='nope'), 'auto')
    with pytest.raises(InvalidArgument, match='priority'):
        parse(AddRequest(priority=5000, verify='nope'), 'auto')
    with pytest.raises(InvalidArgument, match='verify mode'):
        parse(AddRequest(verify='nope'), 'auto')
    req = parse(AddRequest(object_size='1M', bandwidth_limit='10M'), 'full')
    assert req.layout == Layout(object_size=1 << 20) and req.bandwidth_limit == 10 << 20
    assert req.verify == VerifyMode.FULL and req.given.verify is None
