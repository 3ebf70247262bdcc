"""The host's collector settings (funnel.runtime.tune_gc)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from funnel.runtime import GC_THRESHOLDS, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_tune_gc_sets_the_thresholds_and_freezes_what_exists(restored_gc: None) -> None:
    tune_gc()
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_cycles_are_still_collected_after_tuning(restored_gc: None) -> None:
    tune_gc()

    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2
