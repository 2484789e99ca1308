"""
Differences between Ceph releases, detected from the API, in one place.

Never parse version strings: each difference is found by what the running
mgr or binding accepts (a call's arity, a keyword, an attribute), once, and
remembered.  Unit-tested against fakes shaped like each release
(tests/test_compat.py).

==========================  ==========================  =========================
what                        Pacific (16)                Reef (18) and later
==========================  ==========================  =========================
register a rados client     ``_ceph_register_client(    ``_ceph_register_client(
for fencing on failover     addrs)``                    name, addrs, replace)``
unregister it               ``(addrs)``                 ``(name, addrs)``
``migration_prepare``       no ``flatten``              ``flatten`` and
                                                        ``clone_format`` (seen in
                                                        Reef 18.2.7)
==========================  ==========================  =========================
"""

import inspect
import logging
import threading
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

CLIENT_NAME = 'rbd_livemigrate'


class ClientRegistry:
    """Registers the module's own rados clients with the mgr, in the form the
    running mgr takes (the monitors blocklist registered clients when this
    mgr fails over, which frees their image locks at once)."""

    def __init__(self, register: Callable[..., Any], unregister: Callable[..., Any],
                 name: str = CLIENT_NAME) -> None:
        self._register = register
        self._unregister = unregister
        self.name = name
        self._named: Optional[bool] = None       # None: not known yet
        self._lock = threading.Lock()

    @property
    def named(self) -> Optional[bool]:
        """True: the (name, addrs, ...) form; False: (addrs); None: not tried yet."""
        return self._named

    def _call(self, fn: Callable[..., Any], named_args: tuple, plain_args: tuple) -> None:
        with self._lock:
            form = self._named
        if form is None:
            form = _takes_name(fn)
        if form is None:
            # a builtin without a signature: try the newer form, which an
            # older mgr rejects on arity before doing anything
            try:
                fn(*named_args)
                form = True
            except TypeError:
                fn(*plain_args)
                form = False
        elif form:
            fn(*named_args)
        else:
            fn(*plain_args)
        with self._lock:
            if self._named is None:
                self._named = form
                log.debug('mgr client registration takes a name: %s', form)

    def register(self, addrs: str) -> None:
        self._call(self._register, (self.name, addrs, False), (addrs,))

    def unregister(self, addrs: str) -> None:
        self._call(self._unregister, (self.name, addrs), (addrs,))


def _takes_name(fn: Callable[..., Any]) -> Optional[bool]:
    """From a Python signature, if there is one (fakes, future wrappers)."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values()):
        return None
    return len(params) >= 2


def prepare_takes_flatten(migration_prepare: Callable[..., Any]) -> bool:
    """Does ``RBD.migration_prepare`` take ``flatten`` (Reef 18.2 and later)?

    Cython methods carry no Python signature; their docstring starts with
    the embedded one and lists the parameters.
    """
    try:
        return 'flatten' in inspect.signature(migration_prepare).parameters
    except (TypeError, ValueError):
        pass
    doc = getattr(migration_prepare, '__doc__', None) or ''
    first = doc.strip().split('\n', 1)[0]
    return ':param flatten:' in doc or 'flatten=' in first
