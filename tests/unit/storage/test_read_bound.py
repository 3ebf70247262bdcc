"""The read side is bounded (issue 19): at most MAX_READS reports queued or running; more are
refused at once (503 busy), and a request stops waiting after READ_TIMEOUT_S."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import storage.reports.api as api
from funnel.funnels import FunnelCatalog
from storage.gate import CommitGate
from storage.reports.api import MAX_READS, LiveReports, ReadsBusy


def reports() -> LiveReports:
    store: Any = None  # the bound is checked before any read touches the store
    return LiveReports(store, FunnelCatalog.default(), CommitGate())


def test_reads_beyond_the_bound_are_refused_at_once() -> None:
    live = reports()
    release = threading.Event()

    def slow() -> int:
        release.wait(10)
        return 1

    async def flood() -> tuple[list[int], str]:
        waiting = [asyncio.ensure_future(live._read(slow)) for _ in range(MAX_READS)]
        await asyncio.sleep(0)  # let them queue
        with pytest.raises(ReadsBusy, match="too many reports") as refused:
            await live._read(slow)
        release.set()
        done = await asyncio.gather(*waiting)
        assert await live._read(lambda: 2) == 2  # the bound frees up as reads finish
        return done, str(refused.value)

    done, _ = asyncio.run(flood())
    assert done == [1] * MAX_READS
    live.close()


def test_a_read_over_its_time_is_answered_and_still_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "READ_TIMEOUT_S", 0.05)
    live = reports()
    release = threading.Event()

    async def late() -> None:
        with pytest.raises(ReadsBusy, match="took over"):
            await live._read(lambda: release.wait(10))
        assert live._reads == 1  # still running on the reader: it counts until it ends
        release.set()
        while live._reads:
            await asyncio.sleep(0.01)

    asyncio.run(late())
    live.close()
