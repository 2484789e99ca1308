"""Release differences against fakes shaped like each release's API."""

from typing import Any, List, Tuple

import pytest

from rbd_livemigrate.compat import ClientRegistry, command_decorators, prepare_takes_flatten


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
    ('squid', 3, 2, True),           # the same (read in Squid's mgr_module.py)
    ('tentacle', 3, 2, True),        # the same (Tentacle 20.2.4)
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
    # Tentacle 20.2.4's binding: the same line as Reef's
    assert prepare_takes_flatten(CythonNoSignature(
        'RBD.migration_prepare(self, ioctx, image_name, dest_ioctx, dest_image_name, '
        'features=None, order=None, stripe_unit=None, stripe_count=None, data_pool=None, '
        'clone_format=None, flatten=False)'))


# -- command registration ----------------------------------------------------

class _Command:
    """Shared shape of a mgr command decorator object: registers on call."""
    COMMANDS: dict = {}

    def __init__(self, prefix: str, perm: str = 'rw', poll: bool = False) -> None:
        self.prefix, self.perm = prefix, perm

    def __call__(self, func: Any) -> Any:
        self.COMMANDS[self.prefix] = self
        return func


class PacificMgrModule:
    """Pacific to Squid: one global CLICommand and two decorator functions."""

    class CLICommand(_Command):
        COMMANDS: dict = {}

    @staticmethod
    def CLIReadCommand(prefix: str, poll: bool = False) -> Any:
        return PacificMgrModule.CLICommand(prefix, 'r', poll)

    @staticmethod
    def CLIWriteCommand(prefix: str, poll: bool = False) -> Any:
        return PacificMgrModule.CLICommand(prefix, 'w', poll)


class TentacleMgrModule:
    """Tentacle 20.2: no CLIReadCommand/CLIWriteCommand/CLICommand; one
    registry per module made from CLICommandBase."""

    class CLICommandBase(_Command):
        @classmethod
        def Read(cls, prefix: str, poll: bool = False) -> Any:
            return cls(prefix, 'r', poll)

        @classmethod
        def Write(cls, prefix: str, poll: bool = False) -> Any:
            return cls(prefix, 'w', poll)

        @classmethod
        def make_registry_subtype(cls, name: str) -> Any:
            return type(name, (cls,), {'COMMANDS': {}})


class LaterMgrModule(TentacleMgrModule):
    """ceph main after Tentacle: the registry and the old names as aliases."""
    CLICommand = TentacleMgrModule.CLICommandBase
    CLIReadCommand = TentacleMgrModule.CLICommandBase.Read
    CLIWriteCommand = TentacleMgrModule.CLICommandBase.Write


class RegistryWithoutReadWrite:
    class CLICommandBase(_Command):
        @classmethod
        def make_registry_subtype(cls, name: str) -> Any:
            return type(name, (cls,), {'COMMANDS': {}})


def _declare(cli: Any) -> None:
    @cli.read('rbd livemigrate ls')
    def ls(self: Any) -> None:
        pass

    @cli.write('rbd livemigrate add')
    def add(self: Any, source_spec: str) -> None:
        pass


def test_commands_global_registry() -> None:
    cli = command_decorators(PacificMgrModule)
    assert not cli.per_module
    assert cli.registry is PacificMgrModule.CLICommand
    _declare(cli)
    perms = {p: c.perm for p, c in PacificMgrModule.CLICommand.COMMANDS.items()}
    assert perms == {'rbd livemigrate ls': 'r', 'rbd livemigrate add': 'w'}


@pytest.mark.parametrize('shape', [TentacleMgrModule, LaterMgrModule,
                                   RegistryWithoutReadWrite])
def test_commands_per_module_registry(shape: Any) -> None:
    cli = command_decorators(shape, 'TestRegistry')
    assert cli.per_module
    assert cli.registry.__name__ == 'TestRegistry'
    assert issubclass(cli.registry, shape.CLICommandBase)
    _declare(cli)
    perms = {p: c.perm for p, c in cli.registry.COMMANDS.items()}
    assert perms == {'rbd livemigrate ls': 'r', 'rbd livemigrate add': 'w'}
    # the base's (shared) table is untouched: other modules do not see ours
    assert shape.CLICommandBase.COMMANDS == {}
    # a second module's registry is a different table
    other = command_decorators(shape, 'Other')
    assert other.registry.COMMANDS == {}
