"""The partial-state corpus (qa/standalone/partial_states.py), sample grid: each step
(prepare, execute, commit, abort) x killer (the active mgr, an operator's rbd CLI) once,
layouts and kill moments rotated.  One cluster for the module; one test per case, so a
failure names the step, killer, layout and moment.  The full grid runs from the command
line: ``/usr/bin/python3 qa/standalone/partial_states.py --full``."""

import os
import subprocess
import tempfile
from typing import Iterator

import pytest

import partial_states
from cluster import Cluster
from conftest import RELEASE, destroy_cluster


def _offset() -> int:
    """The rotation: PARTIAL_STATES_OFFSET if set, else taken from the commit
    under test, so that successive submissions run other cells and every
    cell runs over a few of them."""
    if os.environ.get('PARTIAL_STATES_OFFSET'):
        return int(os.environ['PARTIAL_STATES_OFFSET'])
    try:
        head = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)),
                              timeout=10).stdout.strip()
        return int(head[:8], 16) if head else 0
    except (OSError, ValueError, subprocess.SubprocessError):
        return 0


OFFSET = _offset()
CASES = partial_states.sample_cases(offset=OFFSET)
SAMPLE = 'partial states: offset {} (PARTIAL_STATES_OFFSET), cells: {}'.format(
    OFFSET, ', '.join(c.name for c in CASES))


@pytest.fixture(scope='module', autouse=True)
def announce(request: pytest.FixtureRequest) -> None:
    """CI's log says which cells of the grid this commit ran (a print at
    collection is swallowed by pytest's capture)."""
    capture = request.config.pluginmanager.get_plugin('capturemanager')
    reporter = request.config.pluginmanager.get_plugin('terminalreporter')
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line('')
            reporter.write_line(SAMPLE)


@pytest.fixture(scope='module')
def pscluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = partial_states.start_cluster(tempfile.mkdtemp(prefix='lm-partial-', dir='/tmp'),
                                     RELEASE)
    yield c
    destroy_cluster(c, request.session.testsfailed > 0)


@pytest.fixture(scope='module')
def corpus(pscluster: Cluster) -> Iterator[partial_states.Corpus]:
    corpus = partial_states.Corpus(pscluster)
    yield corpus
    corpus.close()


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_partial_state(corpus: partial_states.Corpus, case: partial_states.Case) -> None:
    result = corpus.run(case)
    print(result.describe())
    assert result.ok, result.describe()
