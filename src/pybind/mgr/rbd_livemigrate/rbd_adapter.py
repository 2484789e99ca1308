"""
The one narrow adapter to librados/librbd.

Everything that talks to the cluster's data path sits in the ``rbd_*``
modules, and ``Adapter`` (the ``interface.RbdPort`` the rest of the module
is given) is made of them.  Methods take specs and plain values, return
plain values and raise the typed errors of ``errors.py``; nothing outside
these modules imports ``rados`` or ``rbd``.  They import only the interface
and its value types (``interface``, ``spec``, ``errors``, ``compat``).

==================  ============================================================
``rbd_clients``     the rados clients (copy clients and the control client),
                    ``translate``, and the one shape of every call:
                    ``open_ioctx``/``open_image``, ``ControlClient.controlled``
``rbd_reads``       ``Reads``: what the cluster holds now (images, preflight's
                    info, both ends of a migration, orphans)
``rbd_steps``       ``Steps``: librbd's migration steps, the intent key, and the
                    finishing of steps a crash cut short
``rbd_verify``      ``Verify``: the protective snapshot and the byte comparison
``rbd_objects``     raw reads and writes of librbd's objects (directory,
                    headers, trash) through librados
``rbd_decode``      cls_rbd's encodings, without librados (unit-tested)
==================  ============================================================
"""

from .interface import RbdPort
from .rbd_clients import (CONTROL_OP_TIMEOUT_SECONDS, MAX_IDLE_CLIENTS, TRANSIENT_ERRNOS,
                          Client, ClientFactory, client_addr, translate)
from .rbd_decode import decode_migration_spec
from .rbd_reads import Reads
from .rbd_steps import Steps, feature_mask
from .rbd_verify import COMPARE_CHUNK, COMPARE_THREADS, Verify, _remove_named_snap

__all__ = ['Adapter', 'Client', 'ClientFactory', 'client_addr', 'translate', 'feature_mask',
           'decode_migration_spec', '_remove_named_snap', 'TRANSIENT_ERRNOS',
           'CONTROL_OP_TIMEOUT_SECONDS', 'MAX_IDLE_CLIENTS', 'COMPARE_CHUNK', 'COMPARE_THREADS']


class Adapter(Reads, Steps, Verify, RbdPort):
    """librbd migration calls on top of a control client (rebuilt on demand):
    ``Adapter(factory)``, the ``RbdPort`` the module runs on."""

    def __init__(self, factory: ClientFactory) -> None:
        super().__init__(factory)
        self.factory: ClientFactory = factory
