"""The webdataset reader on real tar files: captions, keys, metadata, and damaged shards."""

from __future__ import annotations

import io
import json
import os
import random
import re
import tarfile
from pathlib import Path

import fsspec
import pytest
from shardkit import truncate_file, write_caption_parquet, write_webdataset_shard

from freqscan.config import SourceConfig
from freqscan.records import Sample, ShardInfo, ShardReadError
from freqscan.sources import check_source, read_shard
from freqscan.sources.listing import InputError, list_shards

CONFIG = SourceConfig(input=("unused",), format="webdataset")


def shard(path) -> ShardInfo:
    return ShardInfo(path=str(path), size=os.path.getsize(path))


def read(path, config: SourceConfig = CONFIG) -> list[Sample]:
    return list(read_shard(shard(path), config))


def read_until_failure(path) -> tuple[list[Sample], ShardReadError]:
    samples = []
    with pytest.raises(ShardReadError) as exc:
        for sample in read_shard(shard(path), CONFIG):
            samples.append(sample)
    return samples, exc.value


def test_captions_urls_and_metadata(tmp_path):
    meta = {
        "url": "http://x/1.jpg",
        "caption": "json copy",
        "key": "000000001",
        "status": "success",
    }
    write_webdataset_shard(
        tmp_path / "s.tar",
        [
            {"key": "000000000", "txt": "a dog on a sofa", "jpg": b"\xff\xd8"},
            {"key": "000000001", "txt": "the txt wins", "json": meta, "jpg": b"\xff\xd8"},
            {"key": "000000002", "json": {"caption": "two cats", "url": "http://x/2.jpg"}},
        ],
    )
    assert read(tmp_path / "s.tar") == [
        Sample("000000000", "a dog on a sofa"),
        Sample("000000001", "the txt wins", url="http://x/1.jpg", metadata=json.dumps(meta)),
        Sample(
            "000000002",
            "two cats",
            url="http://x/2.jpg",
            metadata='{"caption": "two cats", "url": "http://x/2.jpg"}',
        ),
    ]


def test_invalid_or_odd_json_keeps_the_txt_caption(tmp_path):
    write_webdataset_shard(
        tmp_path / "s.tar",
        [
            {"key": "a", "txt": "a dog", "json": b'{"url": "http://x", '},
            {"key": "b", "txt": "a cat", "json": b'{"url": "caf\xe9"}'},
            {"key": "c", "txt": "a cow", "json": b'["not", "an", "object"]'},
            {"key": "d", "json": {"caption": None, "url": 7}},
        ],
    )
    assert read(tmp_path / "s.tar") == [
        Sample("a", "a dog"),
        Sample("b", "a cat"),
        Sample("c", "a cow", metadata='["not", "an", "object"]'),
        Sample("d", None, metadata='{"caption": null, "url": 7}', skip="missing_caption"),
    ]


def test_a_json_member_with_a_byte_order_mark_is_read(tmp_path):
    meta = '{"caption": "two cats", "url": "http://x/2.jpg"}'
    write_webdataset_shard(
        tmp_path / "s.tar", [{"key": "a", "json": "\ufeff" + meta, "jpg": b"\xff\xd8"}]
    )
    assert read(tmp_path / "s.tar") == [
        Sample("a", "two cats", url="http://x/2.jpg", metadata=meta)
    ]


def test_keys_follow_the_webdataset_convention(tmp_path):
    write_webdataset_shard(
        tmp_path / "s.tar",
        [
            {"key": "dir/sub/0001", "txt": "nested", "seg.png": b"png", "jpg": b"jpg"},
            {"key": "0002", "TXT": "upper-case extension", "jpg": b"jpg"},
        ],
    )
    # A member without a dot in its basename belongs to no sample; directories are not members.
    with tarfile.open(tmp_path / "s.tar", "a") as tar:
        tar.addfile(tarfile.TarInfo("README"), io.BytesIO(b""))
        folder = tarfile.TarInfo("folder.d")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    assert read(tmp_path / "s.tar") == [
        Sample("dir/sub/0001", "nested"),
        Sample("0002", "upper-case extension"),
    ]


def test_a_reappearing_key_is_yielded_again(tmp_path):
    write_webdataset_shard(
        tmp_path / "s.tar",
        [{"key": "a", "txt": "one"}, {"key": "b", "txt": "two"}, {"key": "a", "txt": "three"}],
    )
    assert [(s.key, s.caption) for s in read(tmp_path / "s.tar")] == [
        ("a", "one"),
        ("b", "two"),
        ("a", "three"),
    ]


def test_a_sample_written_twice_in_a_row_is_yielded_twice(tmp_path):
    write_webdataset_shard(
        tmp_path / "s.tar",
        [
            {"key": "a", "txt": "first", "jpg": b"1"},
            {"key": "a", "txt": "second", "jpg": b"2"},
            {"key": "b", "txt": "other", "jpg": b"3"},
            # Only the image again: a new sample too, even though its image is not read.
            {"key": "b", "jpg": b"4"},
        ],
    )
    assert [m.name for m in tarfile.open(tmp_path / "s.tar")] == [
        "a.jpg",
        "a.txt",
        "a.jpg",
        "a.txt",
        "b.jpg",
        "b.txt",
        "b.jpg",
    ]
    assert read(tmp_path / "s.tar") == [
        Sample("a", "first"),
        Sample("a", "second"),
        Sample("b", "other"),
        Sample("b", None, skip="missing_caption"),
    ]
    with_images = list(read_shard(shard(tmp_path / "s.tar"), CONFIG, images=True))
    assert [(s.key, s.caption, s.image) for s in with_images] == [
        ("a", "first", b"1"),
        ("a", "second", b"2"),
        ("b", "other", b"3"),
        ("b", None, b"4"),
    ]


def test_unusable_captions_are_yielded_with_their_reason(tmp_path):
    write_webdataset_shard(
        tmp_path / "s.tar",
        [
            {"key": "empty", "txt": "", "jpg": b"x"},
            {"key": "blank", "txt": " \n\t ", "jpg": b"x"},
            {"key": "badutf8", "txt": b"a dog \xff\xfe caf\xe9", "json": {"caption": "ok"}},
            {"key": "long", "txt": "a cat " + "word " * 20_000, "jpg": b"x"},  # 100 kB
            {"key": "limit", "txt": "x" * 10_000},
            {"key": "over", "txt": "x" * 10_001},
            {"key": "image-only", "jpg": b"x"},
        ],
    )
    assert [(s.key, s.caption is None, s.skip) for s in read(tmp_path / "s.tar")] == [
        ("empty", True, "empty_caption"),
        ("blank", True, "empty_caption"),
        ("badutf8", True, "invalid_utf8"),
        ("long", True, "caption_too_long"),
        ("limit", False, None),
        ("over", True, "caption_too_long"),
        ("image-only", True, "missing_caption"),
    ]
    short = SourceConfig(input=("unused",), format="webdataset", max_caption_chars=5)
    assert read(tmp_path / "s.tar", short)[4].skip == "caption_too_long"


def test_html_and_whitespace_pass_through_unchanged(tmp_path):
    caption = "  <b>Dogs</b> &amp; <i>cats</i>\n playing\u00a0"
    write_webdataset_shard(tmp_path / "s.tar", [{"key": "k", "txt": caption}])
    assert read(tmp_path / "s.tar") == [Sample("k", caption)]


def test_image_only_and_empty_shards(tmp_path):
    write_webdataset_shard(
        tmp_path / "img.tar", [{"key": f"{i}", "jpg": b"x" * 700} for i in range(3)]
    )
    assert read(tmp_path / "img.tar") == [
        Sample(str(i), None, skip="missing_caption") for i in range(3)
    ]
    write_webdataset_shard(tmp_path / "empty.tar", [])
    assert read(tmp_path / "empty.tar") == []


@pytest.fixture
def ten_samples(tmp_path) -> Path:
    path = tmp_path / "whole.tar"
    write_webdataset_shard(
        path,
        [
            {"key": f"{i:04d}", "jpg": b"j" * 1500, "json": {"url": f"u{i}"}, "txt": f"caption {i}"}
            for i in range(10)
        ],
    )
    return path


def member_offsets(path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


@pytest.mark.parametrize(
    "where",
    [
        "empty file",
        "mid first header",
        "mid skipped image",
        "mid read json",
        "mid read txt padding",
        "at a member boundary",
        "mid a later header",
        "before the end marker",
        "mid the end marker",
    ],
)
def test_a_truncated_tar_fails_as_truncated(ten_samples, tmp_path, where):
    members = member_offsets(ten_samples)  # per sample: jpg, json, txt
    end_of_data = members[-1].offset_data + 512
    cut = {
        "empty file": 0,
        "mid first header": 100,
        "mid skipped image": members[0].offset_data + 700,
        "mid read json": members[16].offset_data + 5,
        "mid read txt padding": members[17].offset_data + members[17].size + 10,
        "at a member boundary": members[15].offset,
        "mid a later header": members[15].offset + 200,
        "before the end marker": end_of_data,
        "mid the end marker": end_of_data + 300,
    }[where]
    truncate_file(ten_samples, cut)
    samples, error = read_until_failure(ten_samples)
    assert error.reason == "truncated_tar"
    assert error.message.startswith(f"{ten_samples}: ")
    # Samples before the cut may come out (the caller discards them), never a wrong one.
    assert len(samples) < 10
    assert [s.caption for s in samples] == [f"caption {i}" for i in range(len(samples))]


def test_a_tar_cut_after_its_end_marker_block_is_complete(ten_samples):
    members = member_offsets(ten_samples)
    truncate_file(ten_samples, members[-1].offset_data + 512 + 512)
    assert len(read(ten_samples)) == 10


def test_not_a_tar_is_unreadable(tmp_path):
    # Seeded: about 1 in 128 random headers has a checksum field tarfile parses
    # (base-256), and then the reason reads "bad checksum" instead.
    (tmp_path / "random.tar").write_bytes(random.Random(0).randbytes(4096))
    with pytest.raises(ShardReadError) as exc:
        read(tmp_path / "random.tar")
    assert (exc.value.reason, exc.value.message) == (
        "unreadable",
        f"{tmp_path / 'random.tar'}: not a tar, or a corrupt member header (invalid header)",
    )
    write_caption_parquet(tmp_path / "p.tar", ["a parquet file named .tar"] * 100)
    with pytest.raises(ShardReadError, match="^unreadable: "):
        read(tmp_path / "p.tar")


def test_a_corrupt_header_mid_tar_is_unreadable(ten_samples):
    members = member_offsets(ten_samples)
    data = bytearray(ten_samples.read_bytes())
    data[members[9].offset + 10] ^= 0xFF  # breaks the header checksum
    ten_samples.write_bytes(bytes(data))
    samples, error = read_until_failure(ten_samples)
    # Sample 2 is complete but still pending when the next header fails: a failed shard's
    # samples are discarded anyway.
    assert (error.reason, len(samples)) == ("unreadable", 2)
    assert error.message == f"{ten_samples}: not a tar, or a corrupt member header (bad checksum)"


def test_missing_and_unopenable_shards(tmp_path):
    with pytest.raises(ShardReadError) as exc:
        read_shard(ShardInfo(str(tmp_path / "gone.tar"), 10), CONFIG).__next__()
    assert (exc.value.reason, exc.value.message) == (
        "not_found",
        f"{tmp_path / 'gone.tar'}: no such file (moved or deleted after listing?)",
    )
    (tmp_path / "dir.tar").mkdir()
    with pytest.raises(ShardReadError, match=r"^unreadable: .*dir\.tar: cannot open: "):
        read(tmp_path / "dir.tar")


def test_reads_through_fsspec_urls(tmp_path):
    write_webdataset_shard(tmp_path / "s.tar", [{"key": "k", "txt": "a dog", "jpg": b"x"}])
    fs = fsspec.filesystem("memory")
    fs.pipe("/wds-test/00000.tar", (tmp_path / "s.tar").read_bytes())
    try:
        [listed] = list_shards(["memory://wds-test"], "webdataset")
        assert listed.path == "memory:///wds-test/00000.tar"
        assert list(read_shard(listed, CONFIG)) == [Sample("k", "a dog")]
    finally:
        fs.rm("/wds-test", recursive=True)


def test_check_source_refuses_a_first_shard_that_is_not_a_tar(tmp_path, ten_samples):
    (tmp_path / "0.tar").write_bytes(b"\x01" * 2048)
    with pytest.raises(InputError) as exc:
        check_source([shard(tmp_path / "0.tar"), shard(ten_samples)], CONFIG)
    assert str(exc.value) == (
        f"{tmp_path / '0.tar'}: not a tar, or a corrupt member header (invalid header)"
    )
    check_source([shard(ten_samples)], CONFIG)
    # A truncated first shard is a data defect the job reports per shard, not a refusal.
    truncate_file(ten_samples, 100)
    check_source([shard(ten_samples)], CONFIG)
    # The config makes its local input absolute.
    with pytest.raises(InputError, match=f"no shards to read in {re.escape(CONFIG.input[0])}"):
        check_source([], CONFIG)
