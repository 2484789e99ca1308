"""
Who may see and change what: the caller's mgr caps, per pool and namespace.

``authorized(pool, namespace)`` and ``unscoped()`` answer for the caller of
the command being run (``MgrModule.is_authorized``, which checks the
permission the command needs: r for reads, rw for changes); ``unscoped`` is
true when no pool constraint limits it.  A caller sees and acts on a task
only when every pool it touches (source, destination, data pool) is within
its caps.  A batch keeps its caller's rights (``rights``): its images are
added later, by a thread with no caller to ask (``kept``).
"""

from typing import Callable, Dict, List, Optional, Tuple

from .errors import NotAuthorized
from .preflight import PoolInfo
from .spec import ImageSpec, PoolSpec
from .task import Task

Allowed = Callable[[str, str], bool]


class Access:
    def __init__(self, authorized: Allowed, unscoped: Callable[[], bool],
                 pools: Callable[[], Dict[str, PoolInfo]]) -> None:
        self.authorized = authorized
        self.unscoped = unscoped
        self.pools = pools

    def allowed(self, pool: str, namespace: str) -> bool:
        """The caller's caps allow ``pool``/``namespace`` (asked at call time)."""
        return self.authorized(pool, namespace)

    def authorize(self, pool: str, namespace: str, allowed: Optional[Allowed] = None) -> None:
        if not (allowed or self.authorized)(pool, namespace):
            where = '{}/{}'.format(pool, namespace) if namespace else pool
            raise NotAuthorized("not authorized on pool '{}': the caller's mgr caps do not "
                                'allow it'.format(where))

    def may(self, task: Task, allowed: Optional[Allowed] = None) -> bool:
        """The caller may see and act on ``task``: every pool it touches
        (source, destination, data pool) is within the caller's caps."""
        return all((allowed or self.authorized)(pool, ns) for pool, ns in task_pools(task))

    def authorize_task(self, task: Task) -> None:
        if not self.may(task):
            raise NotAuthorized('not authorized on task {}: it touches a pool or namespace '
                                "that the caller's mgr caps do not allow".format(task.id))

    def rights(self, src: PoolSpec, dst: PoolSpec) -> List[str]:
        """The caller's rights, kept with a batch: its images are added later,
        by a thread that has no caller to ask.  Every pool, in the default
        namespace and the batch's own."""
        if self.unscoped():
            return ['*']
        out = []
        for pool in sorted(self.pools()):
            for ns in sorted({'', src.namespace, dst.namespace}):
                if self.authorized(pool, ns):
                    out.append('{}/{}'.format(pool, ns) if ns else pool)
        return out


def kept(rights: List[str]) -> Allowed:
    """A caller's rights kept with a batch, as ``authorized(pool, namespace)``."""
    granted = set(rights)
    if '*' in granted:
        return lambda pool, ns: True
    return lambda pool, ns: ('{}/{}'.format(pool, ns) if ns else pool) in granted


def caller_text(rights: List[str]) -> str:
    """``added_by``: a caller's rights ('*' or pool[/namespace] entries) in words."""
    if '*' in rights:
        return 'a caller with mgr caps on every pool'
    return 'a caller with mgr caps on {}'.format(', '.join(rights) or 'no pool')


def task_pools(task: Task) -> List[Tuple[str, str]]:
    """Every (pool, namespace) a task reads or writes: its ends and the
    destination's data pool (data objects keep the image's namespace)."""
    src, dst = ImageSpec.parse(task.source), ImageSpec.parse(task.destination)
    out = [(src.pool, src.namespace), (dst.pool, dst.namespace)]
    if task.layout.data_pool:
        out.append((task.layout.data_pool, dst.namespace))
    return out
