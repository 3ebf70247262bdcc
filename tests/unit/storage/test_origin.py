"""The sink's identity of a fact across a worker's replay (storage.origin)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.origin import Watermarks, fresh_by_origin, header, origin_of, seq_of


def test_a_replay_within_the_rows_and_below_the_watermark_is_dropped_per_origin() -> None:
    parts = [0, 0, 1, 0, 0, -1, 1]
    seqs = [5, 6, 3, 5, 7, -1, 2]
    keep, after = fresh_by_origin(parts, seqs, {0: 4, 1: 2})
    assert keep is not None
    # 0:5 and 0:6 are new; 1:3 too; 0:5 again is the replay; 0:7 goes on; no origin is kept;
    # 1:2 is at the watermark.
    assert keep.to_pylist() == [True, True, True, False, True, True, False]
    assert after == {0: 7, 1: 3}


def test_rows_all_fresh_need_no_mask_and_raise_the_watermarks() -> None:
    keep, after = fresh_by_origin([2, 2, 3], [10, 11, 1], {})
    assert keep is None
    assert after == {2: 11, 3: 1}


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), max_size=60))
def test_the_mask_is_what_a_running_maximum_per_origin_keeps(
    rows: list[tuple[int, int]],
) -> None:
    marks = {0: 10, 2: 3}
    keep, after = fresh_by_origin([p for p, _ in rows], [s for _, s in rows], marks)
    expected, high = [], dict(marks)
    for p, s in rows:
        expected.append(s > high.get(p, -1))
        high[p] = max(high.get(p, -1), s)
    assert (keep.to_pylist() if keep is not None else [True] * len(rows)) == expected
    assert after == high


def test_watermarks_travel_as_commit_metadata_and_origins_as_headers() -> None:
    marks = Watermarks({3: seq_of(1_000_000, 7), 0: 5})
    assert Watermarks.decode(marks.encode()) == marks
    assert Watermarks.decode("") == {}
    assert origin_of([("other", b"x"), header(3, 99)]) == (3, 99)
    assert origin_of(None) == (-1, -1)


def test_a_seq_orders_by_offset_then_by_place() -> None:
    assert seq_of(5, 0) < seq_of(5, 1) < seq_of(6, 0)
    with pytest.raises(ValueError, match="beyond"):
        seq_of(1, 1 << 24)
