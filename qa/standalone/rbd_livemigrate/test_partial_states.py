"""The partial-state corpus (qa/standalone/partial_states.py), sample grid: each step
(prepare, execute, commit, abort) x killer (the active mgr, an operator's rbd CLI) once,
layouts and kill moments rotated.  One cluster for the module; one test per case, so a
failure names the step, killer, layout and moment.  The full grid runs from the command
line: ``/usr/bin/python3 qa/standalone/partial_states.py --full``."""

import os
import tempfile
from typing import Iterator

import pytest

import partial_states
from cluster import Cluster
from conftest import RELEASE, destroy_cluster

# PARTIAL_STATES_OFFSET shifts the rotation (e.g. a CI build number) to cover other cells
CASES = partial_states.sample_cases(offset=int(os.environ.get('PARTIAL_STATES_OFFSET', '0')))


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
