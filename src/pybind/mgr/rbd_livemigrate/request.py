"""
The options of ``add``, ``import`` and ``add-pool``, as typed by the CLI
(one record, built by keyword in ``module.py``; a batch keeps it).
"""

from typing import NamedTuple, Optional


class AddRequest(NamedTuple):
    """The options of add and add-pool, as typed."""
    object_size: Optional[str] = None
    stripe_unit: Optional[str] = None
    stripe_count: Optional[int] = None
    features: Optional[str] = None
    data_pool: Optional[str] = None
    flatten: bool = False
    manual_commit: bool = False
    allow_descendants: bool = False
    priority: int = 0
    bandwidth_limit: Optional[str] = None
    dry_run: bool = False
    manual_cutover: bool = False
    verify: Optional[str] = None
