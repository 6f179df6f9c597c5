from pathlib import Path

from blockferry.dedupe_index.store import ShardStore

MIB = 1024 * 1024


def test_entries_tombstones_and_offsets_survive_a_reopen(tmp_path: Path) -> None:
    store = ShardStore(tmp_path, 64 * MIB)
    assert store.next_offset(3) is None
    store.apply(3, [(b"a" * 32, b"p:16"), (b"b" * 32, b"p:32")], next_offset=2)
    store.apply(3, [(b"a" * 32, None)], next_offset=3)
    store.apply(1, [(b"a" * 32, b"q:16")], next_offset=1)
    assert store.known(3, [b"a" * 32, b"b" * 32, b"c" * 32]) == [False, True, False]
    assert store.known(1, [b"a" * 32]) == [True], "shards are separate"
    store.close()

    again = ShardStore(tmp_path, 64 * MIB)
    assert again.next_offset(3) == 3
    assert again.entries(3) == 1
    again.clear(3)
    assert again.next_offset(3) is None
    assert again.known(3, [b"b" * 32]) == [False]
    assert again.known(1, [b"a" * 32]) == [True], "clearing one shard keeps the others"
    again.close()
