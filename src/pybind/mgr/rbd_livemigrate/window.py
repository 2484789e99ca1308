"""
Maintenance windows: when new prepare/execute work may run.

A window option is a comma list of ``HH:MM-HH:MM`` ranges in UTC; a range
whose end is before its start wraps past midnight (``22:00-06:00``).  An
empty string means always open.  Pure functions, unit-tested.
"""

import datetime
import re
from typing import List, Tuple

from .errors import InvalidArgument

_RANGE = re.compile(r'^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$')

Window = List[Tuple[int, int]]       # (start minute, end minute) of the day, UTC


def parse_window(text: str) -> Window:
    ranges: Window = []
    if not text or not text.strip():
        return ranges
    for part in text.split(','):
        m = _RANGE.match(part)
        if not m:
            raise InvalidArgument(
                "maintenance window {!r} is invalid: use HH:MM-HH:MM in UTC, e.g. "
                "22:00-06:00 (a comma list for several)".format(text))
        start = int(m.group(1)) * 60 + int(m.group(2))
        end = int(m.group(3)) * 60 + int(m.group(4))
        if end > 24 * 60 or start == end:
            raise InvalidArgument("maintenance window range {!r} is empty or past 24:00".format(
                part.strip()))
        ranges.append((start, end))
    return ranges


def in_window(window: Window, now: float) -> bool:
    if not window:
        return True
    dt = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    minute = dt.hour * 60 + dt.minute
    for start, end in window:
        if start < end:
            if start <= minute < end:
                return True
        elif minute >= start or minute < end:
            return True
    return False


def seconds_until_open(window: Window, now: float) -> float:
    """Seconds until the window next opens (0 if open), to the minute."""
    if in_window(window, now):
        return 0.0
    for step in range(1, 24 * 60 + 1):
        if in_window(window, now + step * 60):
            return float(step * 60 - (now % 60))
    return 0.0
