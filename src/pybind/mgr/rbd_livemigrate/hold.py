"""
Typed reasons why work that may run does not run now.

The scheduler, the planner and the health checks decide on the ``kind``;
the ``message`` is only shown.
"""

import enum
from typing import NamedTuple


class HoldKind(enum.Enum):
    """Why work that may run does not run now."""
    PAUSED = 'paused'                      # this task paused by the operator
    QUEUE_PAUSED = 'queue paused'          # the whole queue paused
    WINDOW_CLOSED = 'window closed'        # outside the maintenance window
    WINDOW_INVALID = 'window invalid'      # the window option cannot be parsed
    CLUSTER_HEALTH = 'cluster health'      # a health check in health_pause_checks
    WATCHERS = 'watchers'                  # clients have the source open
    NO_SPACE = 'no space'                  # the destination pool lacks room (or stats)
    MANUAL_COMMIT = 'manual commit'        # waiting for ceph rbd livemigrate commit
    DESCENDANTS = 'descendants'            # clones appeared that add did not allow
    MANUAL_CUTOVER = 'manual cutover'      # waiting for ceph rbd livemigrate cutover

    @property
    def deliberate(self) -> bool:
        """Asked for by the operator: never a health warning."""
        return self in (HoldKind.PAUSED, HoldKind.QUEUE_PAUSED, HoldKind.WINDOW_CLOSED,
                        HoldKind.MANUAL_COMMIT, HoldKind.MANUAL_CUTOVER)

    @property
    def warn_at_once(self) -> bool:
        """A configuration mistake: warn without waiting blocked_warn_seconds."""
        return self == HoldKind.WINDOW_INVALID


class Hold(NamedTuple):
    kind: HoldKind
    message: str

    def __str__(self) -> str:
        return self.message
