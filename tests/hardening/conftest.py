"""Fixtures of the hardening tier: one stack per test module (see ``stack.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.hardening.stack import HardStack, hard_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HardStack]:
    with hard_stack(tmp_path_factory.mktemp("hard")) as built:
        yield built


@pytest.fixture
def fresh(stack: HardStack) -> HardStack:
    stack.reset()
    return stack
