"""The parquet reader on real files: LAION and custom columns, dirty cells, bad shards."""

from __future__ import annotations

import os
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shardkit import truncate_file, write_caption_parquet

from freqscan.config import SourceConfig
from freqscan.records import Sample, ShardInfo, ShardReadError
from freqscan.sources import check_source, read_shard
from freqscan.sources.listing import InputError
from freqscan.sources.parquet import BATCH_ROWS

LAION = SourceConfig(input=("unused",), format="parquet")


def shard(path) -> ShardInfo:
    return ShardInfo(path=str(path), size=os.path.getsize(path))


def read(path, config: SourceConfig = LAION) -> list[Sample]:
    return list(read_shard(shard(path), config))


def unvalidated_strings(values: list[bytes | None], large: bool = False) -> pa.Array:
    """A string column holding whatever bytes, as some writers produce (no UTF-8 check)."""
    raw = pa.array(values, pa.large_binary() if large else pa.binary())
    return pa.Array.from_buffers(
        pa.large_string() if large else pa.string(), len(raw), raw.buffers()
    )


def test_laion_columns(tmp_path):
    write_caption_parquet(tmp_path / "a.parquet", ["a dog", "a cat"], urls=["http://x/0", None])
    assert read(tmp_path / "a.parquet") == [
        Sample("0", "a dog", url="http://x/0"),
        Sample("1", "a cat"),
    ]


def test_custom_columns_key_column_and_no_url(tmp_path):
    pq.write_table(
        pa.table(
            {
                "id": [17, None, 3],
                "caption": ["a dog", "a cat", "a cow"],
                "url": ["u0", "u1", "u2"],
            }
        ),
        tmp_path / "a.parquet",
    )
    config = SourceConfig(
        input=("unused",), caption_column="caption", url_column="url", key_column="id"
    )
    # A null key falls back to the row index, as without a key column.
    assert read(tmp_path / "a.parquet", config) == [
        Sample("17", "a dog", url="u0"),
        Sample("1", "a cat", url="u1"),
        Sample("3", "a cow", url="u2"),
    ]
    no_url = SourceConfig(input=("unused",), caption_column="caption", url_column=None)
    assert read(tmp_path / "a.parquet", no_url) == [
        Sample("0", "a dog"),
        Sample("1", "a cat"),
        Sample("2", "a cow"),
    ]
    same = SourceConfig(
        input=("unused",), caption_column="caption", url_column="url", key_column="caption"
    )
    assert [s.key for s in read(tmp_path / "a.parquet", same)] == ["a dog", "a cat", "a cow"]


def test_dirty_caption_cells_are_skipped_with_their_reason(tmp_path):
    captions = [b"a dog", None, b"", b" \t\n", b"caf\xe9 au lait", b"x" * 10_001, b"<b>ok</b> "]
    urls = unvalidated_strings([b"u0", b"u1", b"u2", b"u3", b"u\xff", b"u5", b"u6"])
    keys = unvalidated_strings([b"k0", b"k1", b"k2", b"k3", b"k\xff", b"k5", b"k6"])
    expected = [
        ("k0", "a dog", None),
        ("k1", None, "missing_caption"),
        ("k2", None, "empty_caption"),
        ("k3", None, "empty_caption"),
        ("k\\xff", None, "invalid_utf8"),
        ("k5", None, "caption_too_long"),
        ("k6", "<b>ok</b> ", None),
    ]
    config = SourceConfig(input=("unused",), key_column="KEY")
    for column in (
        unvalidated_strings(captions),
        unvalidated_strings(captions, large=True),
        pa.array(captions, pa.binary()),
        unvalidated_strings(captions).dictionary_encode(),
    ):
        pq.write_table(pa.table({"TEXT": column, "URL": urls, "KEY": keys}), tmp_path / "d.parquet")
        samples = read(tmp_path / "d.parquet", config)
        assert [(s.key, s.caption, s.skip) for s in samples] == expected, column.type
        assert samples[4].url == "u\\xff"


def test_a_column_of_nulls_is_all_missing_captions(tmp_path):
    pq.write_table(pa.table({"TEXT": pa.nulls(2), "URL": ["u0", "u1"]}), tmp_path / "n.parquet")
    assert read(tmp_path / "n.parquet") == [
        Sample("0", None, url="u0", skip="missing_caption"),
        Sample("1", None, url="u1", skip="missing_caption"),
    ]


def test_row_keys_run_on_across_batches_and_row_groups(tmp_path):
    rows = BATCH_ROWS * 2 + 5
    captions = [f"caption {i}" for i in range(rows)]
    pq.write_table(pa.table({"TEXT": captions}), tmp_path / "big.parquet", row_group_size=3000)
    samples = read(tmp_path / "big.parquet", SourceConfig(input=("unused",), url_column=None))
    assert [(s.key, s.caption) for s in samples] == [(str(i), c) for i, c in enumerate(captions)]


def test_an_empty_shard_yields_nothing(tmp_path):
    write_caption_parquet(tmp_path / "e.parquet", [], urls=[])
    assert read(tmp_path / "e.parquet") == []


@pytest.mark.parametrize(
    ("config", "missing", "fix"),
    [
        (
            SourceConfig(input=("unused",), caption_column="caption"),
            "caption",
            "set --caption-column to one of them",
        ),
        (
            SourceConfig(input=("unused",), url_column="url"),
            "url",
            "set --url-column to one of them, or to '' for none",
        ),
        (
            SourceConfig(input=("unused",), key_column="key"),
            "key",
            "set --key-column to one of them, or leave it unset to key by row index",
        ),
    ],
)
def test_a_missing_column_fails_the_shard_and_is_refused_early(tmp_path, config, missing, fix):
    path = tmp_path / "a.parquet"
    write_caption_parquet(path, ["a dog"], urls=["u"], extra_columns={"similarity": [0.3]})
    message = f"column '{missing}' not in {path}; available: TEXT, URL, similarity ({fix})"
    with pytest.raises(ShardReadError) as exc:
        read(path, config)
    assert (exc.value.reason, exc.value.message) == ("missing_column", message)
    with pytest.raises(InputError) as refused:
        check_source([shard(path)], config)
    assert str(refused.value) == message


def test_a_caption_column_that_is_not_text_is_refused(tmp_path):
    pq.write_table(pa.table({"TEXT": [1, 2], "URL": ["a", "b"]}), tmp_path / "i.parquet")
    message = (
        f"column 'TEXT' in {tmp_path / 'i.parquet'} holds int64, not text; "
        "available: TEXT, URL (set --caption-column to one of them)"
    )
    with pytest.raises(ShardReadError) as exc:
        read(tmp_path / "i.parquet")
    assert (exc.value.reason, exc.value.message) == ("missing_column", message)


def test_check_source_accepts_a_good_first_shard(tmp_path):
    write_caption_parquet(tmp_path / "a.parquet", ["a dog"], urls=["u"])
    (tmp_path / "b.parquet").write_bytes(b"not read by the check")
    assert (
        check_source([shard(tmp_path / "a.parquet"), shard(tmp_path / "b.parquet")], LAION) is None
    )


@pytest.mark.parametrize("damage", ["random bytes", "empty file", "cut footer", "cut data"])
def test_a_corrupt_parquet_is_unreadable(tmp_path, damage):
    path = tmp_path / "c.parquet"
    captions = [f"a caption with some words, number {i}" for i in range(5000)]
    pq.write_table(pa.table({"TEXT": captions}), path, compression="none")
    size = path.stat().st_size
    if damage == "random bytes":
        path.write_bytes(random.Random(0).randbytes(5000))
    elif damage == "empty file":
        truncate_file(path, 0)
    elif damage == "cut footer":
        truncate_file(path, size - 10)
    else:  # garble the data pages, keep the footer
        data = bytearray(path.read_bytes())
        data[100:20_000] = random.Random(1).randbytes(19_900)
        path.write_bytes(bytes(data))
    config = SourceConfig(input=("unused",), url_column=None)
    with pytest.raises(ShardReadError) as exc:
        read(path, config)
    assert exc.value.reason == "unreadable"
    assert exc.value.message.startswith(f"{path}: ")


def test_a_missing_shard_is_not_found(tmp_path):
    with pytest.raises(ShardReadError, match="^not_found: "):
        read_shard(ShardInfo(str(tmp_path / "gone.parquet"), 1), LAION).__next__()
