"""KRaft cluster ids the storage tool accepts."""

from devtools.kafka_broker import _cluster_id


def test_cluster_ids_never_look_like_options() -> None:
    # One in 64 random ids starts with "-": 5000 draws would all but surely meet some.
    ids = [_cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 for i in ids)
    assert not any(i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
