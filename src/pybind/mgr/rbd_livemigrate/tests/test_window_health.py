import calendar
import json

import pytest

from rbd_livemigrate.errors import InvalidArgument
from rbd_livemigrate.health import health_block
from rbd_livemigrate.window import in_window, parse_window, seconds_until_open


def at(hh: int, mm: int) -> float:
    return float(calendar.timegm((2026, 11, 26, hh, mm, 0, 0, 0, 0)))


def test_empty_window_always_open() -> None:
    assert parse_window('') == [] and in_window([], at(3, 0))


def test_plain_and_wrapping_ranges() -> None:
    day = parse_window('09:00-17:30')
    assert in_window(day, at(9, 0)) and in_window(day, at(17, 29))
    assert not in_window(day, at(17, 30)) and not in_window(day, at(8, 59))
    night = parse_window('22:00-06:00')
    assert in_window(night, at(23, 0)) and in_window(night, at(0, 0))
    assert in_window(night, at(5, 59)) and not in_window(night, at(6, 0))
    assert not in_window(night, at(12, 0))
    both = parse_window('01:00-02:00, 13:00-14:00')
    assert in_window(both, at(13, 30)) and not in_window(both, at(3, 0))
    assert parse_window('00:00-24:00') == [(0, 1440)]


def test_seconds_until_open() -> None:
    w = parse_window('22:00-06:00')
    assert seconds_until_open(w, at(23, 0)) == 0
    assert seconds_until_open(w, at(21, 0)) == 3600


@pytest.mark.parametrize('text', ['22-06', '25:00-01:00', '10:00-10:00', 'always', '1:2-3:4',
                                  '10:00-', '10:00-11:00;12:00-13:00', '10:60-11:00'])
def test_bad_window(text: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_window(text)
    assert e.value.errno == 22


def health(status: str, **checks: str) -> dict:
    return {'json': json.dumps({'status': status, 'checks': {
        code: {'severity': 'HEALTH_WARN', 'summary': {'message': msg}}
        for code, msg in checks.items()}})}


def test_health_triggers() -> None:
    triggers = 'OSD_FULL,OSD_NEARFULL,PG_AVAILABILITY,HEALTH_ERR'
    assert health_block(health('HEALTH_OK'), triggers) is None
    assert health_block(health('HEALTH_WARN', OSD_NEARFULL='1 nearfull osd(s)'),
                        triggers) == 'cluster health OSD_NEARFULL: 1 nearfull osd(s)'
    assert health_block(health('HEALTH_WARN', POOL_APP_NOT_ENABLED='x'), triggers) is None
    assert health_block(health('HEALTH_ERR', MON_DOWN='x'), triggers) == 'cluster is HEALTH_ERR'
    assert health_block(health('HEALTH_ERR', MON_DOWN='x'), 'OSD_FULL') is None
    assert health_block(health('HEALTH_WARN', OSD_NEARFULL='x'), '') is None
    # our own warnings never pause the queue
    assert health_block(health('HEALTH_WARN', RBD_LIVEMIGRATE_FAILED='x'),
                        'RBD_LIVEMIGRATE_FAILED') is None
