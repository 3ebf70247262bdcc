"""The worker waits for its tables' changelog metadata before a table's first write (a
changelog created moments before read as 0 partitions on a loaded machine, and Faust's
partition check then stopped the worker). The consumer here is a stand-in that learns the
topic after a number of metadata refreshes; the real broker runs in the integration tests."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from stream_processors.agents import changelogs_known


class Client:
    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.refreshes = 0

    async def force_metadata_update(self) -> bool:
        self.refreshes += 1
        if self.refreshes >= self.consumer.known_after:
            self.consumer.partitions["app-person-state-changelog"] = 4
        return True


class Consumer:
    def __init__(self, known_after: int) -> None:
        self.known_after = known_after
        self.partitions = {"app-person-state-changelog": 0}
        self._consumer = SimpleNamespace(_client=Client(self))

    def topic_partitions(self, topic: str) -> int | None:
        return self.partitions.get(topic)


def app(known_after: int) -> SimpleNamespace:
    table = SimpleNamespace(changelog_topic_name="app-person-state-changelog")
    return SimpleNamespace(tables={"person-state": table}, consumer=Consumer(known_after))


def test_the_metadata_is_refreshed_until_every_changelog_is_known() -> None:
    waiting = app(known_after=3)
    assert asyncio.run(changelogs_known(waiting))
    assert waiting.consumer._consumer._client.refreshes == 3
    assert asyncio.run(changelogs_known(waiting))  # once known, never asked again
    assert waiting.consumer._consumer._client.refreshes == 3


def test_it_gives_up_and_leaves_the_check_to_faust() -> None:
    never = app(known_after=10**9)
    assert not asyncio.run(changelogs_known(never, attempts=5))
    assert never.consumer._consumer._client.refreshes == 5
