"""Release differences against fakes shaped like each release's API."""

from typing import Any, List, Tuple

import pytest

from rbd_livemigrate.compat import ClientRegistry, prepare_takes_flatten


class Builtin:
    """Like a C-extension method: no signature, TypeError on a wrong arity."""

    def __init__(self, arity: int) -> None:
        self.arity = arity
        self.calls: List[Tuple[Any, ...]] = []

    @property
    def __signature__(self) -> Any:
        raise ValueError('no signature found for builtin')

    def __call__(self, *args: Any) -> None:
        if len(args) != self.arity:
            raise TypeError('takes exactly {} argument(s) ({} given)'.format(
                self.arity, len(args)))
        self.calls.append(args)


@pytest.mark.parametrize('release,reg_arity,unreg_arity,named', [
    ('pacific', 1, 1, False),        # _ceph_register_client(addrs)
    ('reef', 3, 2, True),            # _ceph_register_client(name, addrs, replace)
])
def test_registry_builtins(release: str, reg_arity: int, unreg_arity: int,
                           named: bool) -> None:
    reg, unreg = Builtin(reg_arity), Builtin(unreg_arity)
    r = ClientRegistry(reg, unreg)
    r.register('v2:127.0.0.1:0/1')
    r.register('v2:127.0.0.1:0/2')
    r.unregister('v2:127.0.0.1:0/1')
    assert r.named is named
    if named:
        assert reg.calls == [('rbd_livemigrate', 'v2:127.0.0.1:0/1', False),
                             ('rbd_livemigrate', 'v2:127.0.0.1:0/2', False)]
        assert unreg.calls == [('rbd_livemigrate', 'v2:127.0.0.1:0/1')]
    else:
        assert reg.calls == [('v2:127.0.0.1:0/1',), ('v2:127.0.0.1:0/2',)]
        assert unreg.calls == [('v2:127.0.0.1:0/1',)]


def test_registry_python_signatures() -> None:
    seen: List[Tuple[Any, ...]] = []

    def pacific(addrs: str) -> None:
        seen.append((addrs,))

    def reef(name: str, addrs: str, replace: bool) -> None:
        seen.append((name, addrs, replace))
    ClientRegistry(pacific, pacific).register('a')
    ClientRegistry(reef, reef).register('b')
    assert seen == [('a',), ('rbd_livemigrate', 'b', False)]


def test_registry_does_not_swallow_real_errors() -> None:
    def broken(name: str, addrs: str, replace: bool) -> None:
        raise RuntimeError('mgr is shutting down')
    with pytest.raises(RuntimeError):
        ClientRegistry(broken, broken).register('a')


class PacificRBD:
    def migration_prepare(self, ioctx: Any, image_name: str, dest_ioctx: Any,
                          dest_image_name: str, features: Any = None, order: Any = None,
                          stripe_unit: Any = None, stripe_count: Any = None,
                          data_pool: Any = None) -> None:
        pass


class SquidRBD:
    def migration_prepare(self, ioctx: Any, image_name: str, dest_ioctx: Any,
                          dest_image_name: str, features: Any = None, order: Any = None,
                          stripe_unit: Any = None, stripe_count: Any = None,
                          data_pool: Any = None, clone_format: Any = None,
                          flatten: bool = False) -> None:
        pass


class CythonNoSignature:
    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    @property
    def __signature__(self) -> Any:
        raise ValueError('no signature')

    def __call__(self, *a: Any) -> None:
        pass


def test_prepare_flatten_detection() -> None:
    assert not prepare_takes_flatten(PacificRBD().migration_prepare)
    assert prepare_takes_flatten(SquidRBD().migration_prepare)
    assert prepare_takes_flatten(CythonNoSignature(
        'Prepare an RBD image migration.\n\n:param flatten: flatten the image'))
    assert not prepare_takes_flatten(CythonNoSignature(
        'Prepare an RBD image migration.\n\n:param data_pool: data pool'))
    # Cython's embedded signature line (Reef 18.2.7)
    assert prepare_takes_flatten(CythonNoSignature(
        'RBD.migration_prepare(self, ioctx, image_name, dest_ioctx, dest_image_name, '
        'features=None, order=None, stripe_unit=None, stripe_count=None, data_pool=None, '
        'clone_format=None, flatten=False)\n\n        Prepare an RBD image migration.'))
    assert not prepare_takes_flatten(CythonNoSignature(
        'RBD.migration_prepare(self, ioctx, image_name, dest_ioctx, dest_image_name, '
        'features=None, order=None, stripe_unit=None, stripe_count=None, data_pool=None)'))
