"""``costroute serve`` tunes the collector once start-up is done; apps made elsewhere
(tests, embedding) leave the process's collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.api import gc_tuning
from proxy.app import create_app
from proxy.settings import parse_settings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def _settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    return parse_settings({"store": {"path": str(tmp_path / "c.db")}}, source="test")


async def test_serve_freezes_start_up_objects_and_raises_the_threshold(
    tmp_path: Path, restore_gc: None
) -> None:
    app = create_app(_settings(tmp_path), tune_gc=True)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == (
            gc_tuning.GEN0_THRESHOLD,
            gc_tuning.OLDER_THRESHOLD,
            gc_tuning.OLDER_THRESHOLD,
        )
        # The app's services (price tables included) are out of later collections.
        assert gc.get_freeze_count() > 10_000


async def test_an_app_made_without_it_leaves_the_collector_alone(
    tmp_path: Path, restore_gc: None
) -> None:
    before = gc.get_threshold()
    app = create_app(_settings(tmp_path))
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
