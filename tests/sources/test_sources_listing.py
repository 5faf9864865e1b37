"""list_shards: files, directories and globs over fsspec, with fingerprints and clear refusals."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from freqscan.records import ShardInfo
from freqscan.sources.listing import InputError, list_shards


def touch(path, data: bytes = b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def local(path) -> ShardInfo:
    st = os.stat(path)
    return ShardInfo(path=str(path), size=st.st_size, mtime=st.st_mtime, etag=None)


@pytest.fixture
def tree(tmp_path):
    """An img2dataset-like output: tars with parquet and stats beside them, one nested."""
    root = tmp_path / "ds"
    touch(root / "00001.tar", b"b" * 20)
    touch(root / "00000.tar", b"a" * 10)
    touch(root / "00000.parquet")
    touch(root / "00000_stats.json")
    touch(root / "more" / "00002.tar", b"c" * 30)
    return root


def test_a_file_is_listed_with_absolute_path_size_and_mtime(tree, monkeypatch):
    monkeypatch.chdir(tree)
    assert list_shards(["00000.tar"], "webdataset") == [local(tree / "00000.tar")]


def test_a_directory_lists_its_shards_of_the_format_recursively_sorted(tree):
    assert list_shards([str(tree)], "webdataset") == [
        local(tree / "00000.tar"),
        local(tree / "00001.tar"),
        local(tree / "more" / "00002.tar"),
    ]
    assert list_shards([str(tree) + "/"], "parquet") == [local(tree / "00000.parquet")]


def test_a_glob_keeps_only_shards_of_the_format_and_expands_directories(tree):
    assert list_shards([str(tree / "0000*")], "webdataset") == [
        local(tree / "00000.tar"),
        local(tree / "00001.tar"),
    ]
    assert list_shards([str(tree / "m*")], "webdataset") == [local(tree / "more" / "00002.tar")]
    assert [s.path for s in list_shards([str(tree / "**" / "*.tar")], "webdataset")] == [
        str(tree / "00000.tar"),
        str(tree / "00001.tar"),
        str(tree / "more" / "00002.tar"),
    ]


def test_overlapping_inputs_are_deduplicated_and_sorted(tree):
    shards = list_shards(
        [str(tree / "more"), str(tree / "00001.tar"), str(tree), str(tree / "*.tar")],
        "webdataset",
    )
    assert [s.path for s in shards] == [
        str(tree / "00000.tar"),
        str(tree / "00001.tar"),
        str(tree / "more" / "00002.tar"),
    ]


def test_a_missing_path_is_refused_by_name(tmp_path):
    with pytest.raises(InputError) as exc:
        list_shards([str(tmp_path / "nope")], "parquet")
    assert str(exc.value) == f"input {tmp_path / 'nope'}: no such file or directory"


def test_a_glob_matching_nothing_is_refused(tmp_path):
    with pytest.raises(InputError) as exc:
        list_shards([str(tmp_path / "*.tar")], "webdataset")
    assert str(exc.value) == f"input {tmp_path / '*.tar'}: the glob matches nothing"


def test_an_empty_directory_is_refused(tmp_path):
    with pytest.raises(InputError) as exc:
        list_shards([str(tmp_path)], "webdataset")
    assert str(exc.value) == f"no .tar shards under {tmp_path}"


def test_a_directory_of_the_other_format_suggests_it(tree):
    only_parquet = tree / "pq"
    touch(only_parquet / "a.parquet")
    with pytest.raises(InputError) as exc:
        list_shards([str(only_parquet)], "webdataset")
    assert str(exc.value) == (
        f"no .tar shards under {only_parquet} (did you mean --format parquet?)"
    )
    with pytest.raises(InputError, match=r"^no \.parquet shards under .*\*\.tar .*webdataset"):
        list_shards([str(tree / "*.tar")], "parquet")


def test_a_file_with_the_wrong_extension_is_refused(tree):
    with pytest.raises(InputError) as exc:
        list_shards([str(tree / "00000.tar")], "parquet")
    assert str(exc.value) == (
        f"input {tree / '00000.tar'}: not a .parquet file (format parquet reads .parquet shards)"
        " (did you mean --format webdataset?)"
    )
    with pytest.raises(InputError, match="not a .tar file"):
        list_shards([str(tree / "00000_stats.json")], "webdataset")


def test_one_bad_input_among_good_ones_is_refused(tree):
    with pytest.raises(InputError, match="nope"):
        list_shards([str(tree), str(tree / "nope")], "webdataset")


def test_unknown_format_or_protocol_is_refused(tree):
    with pytest.raises(InputError, match="'zip' is not one of webdataset, parquet"):
        list_shards([str(tree)], "zip")
    with pytest.raises(InputError, match="input nope://x: cannot open its filesystem"):
        list_shards(["nope://x"], "webdataset")
    with pytest.raises(InputError, match=r"\*\*\.tar: cannot list: Invalid pattern"):
        list_shards([str(tree / "**.tar")], "webdataset")


class S3LikeFileSystem(MemoryFileSystem):
    """In-memory store that reports fingerprints the way s3fs does (ETag, LastModified)."""

    protocol = "s3like"
    LAST_MODIFIED = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(path.replace("s3like://", "memory://", 1))

    def _s3(self, info):
        if info["type"] == "file":
            info = {k: v for k, v in info.items() if k != "created"}
            info.update(ETag=f'"etag-{info["size"]}"', LastModified=self.LAST_MODIFIED)
        return info

    def info(self, path, **kwargs):
        return self._s3(super().info(path, **kwargs))

    def ls(self, path, detail=True, **kwargs):
        out = super().ls(path, detail=detail, **kwargs)
        return [self._s3(e) for e in out] if detail else out

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        out = super().find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        return {p: self._s3(e) for p, e in out.items()} if detail else out


@pytest.fixture
def s3like():
    fsspec.register_implementation("s3like", S3LikeFileSystem, clobber=True)
    fs = fsspec.filesystem("s3like")
    fs.pipe({"/bucket/ds/00000.tar": b"ab", "/bucket/ds/sub/00001.tar": b"abc"})
    fs.pipe("/bucket/ds/00000.parquet", b"p")
    yield fs
    fs.rm("/bucket", recursive=True)


def test_remote_shards_keep_their_protocol_and_store_fingerprint(s3like):
    stamp = S3LikeFileSystem.LAST_MODIFIED.timestamp()
    expected = [
        ShardInfo("s3like:///bucket/ds/00000.tar", 2, mtime=stamp, etag='"etag-2"'),
        ShardInfo("s3like:///bucket/ds/sub/00001.tar", 3, mtime=stamp, etag='"etag-3"'),
    ]
    assert list_shards(["s3like://bucket/ds"], "webdataset") == expected
    assert list_shards(["s3like://bucket/ds/**/*.tar"], "webdataset") == expected
    assert list_shards(["s3like://bucket/ds/00000.tar"], "webdataset") == expected[:1]
    with pytest.raises(InputError, match="input s3like://bucket/nope: no such file"):
        list_shards(["s3like://bucket/nope"], "webdataset")
