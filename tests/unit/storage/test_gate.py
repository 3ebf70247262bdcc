"""The commit gate (issue 19): a read sees whole commits, and ingestion goes first: a commit
that waits is not overtaken by reads that come after it."""

from __future__ import annotations

import threading
import time

from storage.gate import CommitGate


def wait_for(condition: object, what: str) -> None:
    """Poll a state another thread changes, with a deadline (not a sleep to pass a race)."""
    assert callable(condition)
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_a_waiting_commit_goes_before_later_reads() -> None:
    gate = CommitGate()
    order: list[str] = []
    first_read_holds, release_first = threading.Event(), threading.Event()

    def first_read() -> None:
        with gate.read() as version:
            order.append(f"read@{version}")
            first_read_holds.set()
            release_first.wait(10)

    def commit() -> None:
        with gate.commit():
            order.append("commit")

    def later_read() -> None:
        with gate.read() as version:
            order.append(f"later read@{version}")

    threads = [threading.Thread(target=first_read)]
    threads[0].start()
    assert first_read_holds.wait(10)
    threads.append(threading.Thread(target=commit))
    threads[1].start()
    wait_for(lambda: gate._commits_waiting == 1, "the commit to wait")
    threads.append(threading.Thread(target=later_read))
    threads[2].start()
    wait_for(lambda: gate._reads_waiting == 1, "the later read to wait")
    assert order == ["read@0"]  # the commit waits for the read under way, the later read too
    release_first.set()
    for thread in threads:
        thread.join(10)
    assert order == ["read@0", "commit", "later read@1"]
    assert gate.version == 1


def test_a_failed_commit_is_no_new_version_and_frees_the_gate() -> None:
    gate = CommitGate()
    try:
        with gate.commit():
            raise RuntimeError("store down")
    except RuntimeError:
        pass
    assert gate.version == 0
    with gate.read() as version:
        assert version == 0
