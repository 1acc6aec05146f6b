"""SIGKILL drills: every ticket reaches a final state exactly once, no ticket is in two
provider batches, no result is lost, no routing-log row is lost or doubled. The
default tier runs 200 tickets and 3 kills; ``pytest -m slow`` runs 1,000 and 8."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hardening.crashkit import Drill


@pytest.fixture
def drill(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Drill]:
    jobs, kills = request.param
    seed = int(os.environ.get("CRASH_SEED", str(int.from_bytes(os.urandom(4), "big"))))
    made = Drill(tmp_path, jobs=jobs, kills=kills, seed=seed)
    made.proxy.start()
    try:
        yield made
    finally:
        made.close()
        print(
            f"crash drill seed {seed} (CRASH_SEED={seed} repeats it); kills: {made.killed_at}; "
            f"batches adopted after a restart: {made.adopted()}"
        )


def _run(drill: Drill) -> None:
    during_enqueue = max(1, drill.kills // 3)
    drill.enqueue_with_crashes(during_enqueue)
    drill.finish_with_crashes(drill.kills - during_enqueue)
    assert len(drill.killed_at) >= drill.kills - 1, drill.killed_at
    drill.proxy.stop()
    try:
        drill.verify()
    except AssertionError:
        print(drill.proxy.output())
        raise


@pytest.mark.parametrize("drill", [(200, 3)], indirect=True)
def test_sigkill_during_enqueue_and_batches(drill: Drill) -> None:
    _run(drill)


@pytest.mark.slow
@pytest.mark.parametrize("drill", [(1000, 8)], indirect=True)
def test_sigkill_many_times_over_a_thousand_tickets(drill: Drill) -> None:
    _run(drill)
