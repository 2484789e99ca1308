"""
The module options as the scheduler and its runners read them, and the
retry backoff they give (pure; ``module.py`` builds ``Options`` from the
mgr's config in ``config_notify``).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    max_concurrent: int = 2
    max_concurrent_per_pool: int = 0
    max_history: int = 100
    stall_warn_seconds: float = 600
    blocked_warn_seconds: float = 300
    retry_max_attempts: int = 5
    retry_backoff_seconds: float = 10
    retry_backoff_max_seconds: float = 600
    blocked_recheck_seconds: float = 5
    bandwidth_limit_bytes: int = 0
    total_bandwidth_limit_bytes: int = 0
    maintenance_window: str = ''
    health_pause_checks: str = ''
    verify_default: str = 'auto'


def retry_delay(attempts: int, opts: Options) -> float:
    """Capped exponential backoff: base, 2*base, 4*base ... max."""
    return float(min(opts.retry_backoff_max_seconds,
                     opts.retry_backoff_seconds * (2 ** max(0, attempts - 1))))
