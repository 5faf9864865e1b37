"""Stream the samples of one img2dataset webdataset shard (a tar), without extracting it.

An img2dataset shard holds, per sample, ``<key>.jpg|png|webp``, ``<key>.txt`` (the caption) and
``<key>.json`` (url, caption, key, status...), the members of one sample next to each other.
A member whose extension the current sample already has starts a new sample with the same key,
so a sample written twice in a row (``k.txt k.jpg k.txt k.jpg``) is read as two samples and the
caller counts the second as a duplicate key, as it does one that reappears later.
Only the small text members are read into memory; image bytes are skipped as the stream passes,
unless the caller asks for images (image tagging).
"""

from __future__ import annotations

import io
import json
import lzma
import re
import tarfile
from collections.abc import Iterator
from typing import Any

from freqscan.config import SourceConfig
from freqscan.records import Sample, ShardInfo, ShardReadError
from freqscan.sources.captions import decode_caption
from freqscan.sources.files import open_shard

# Members whose bytes are read; every other member is skipped unread.
READ_EXTENSIONS = frozenset({"txt", "json"})
# img2dataset writes one of these per sample; the first one found is the sample's image.
IMAGE_EXTENSIONS: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")

# webdataset's rule: the key is the member's directory plus its basename up to the first dot,
# the extension is the rest ("a/b.seg.png" -> key "a/b", extension "seg.png"). Members without
# a dot in their basename are not part of any sample and are ignored, as webdataset does.
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")

# Exceptions tarfile and the decompressors behind "r|*" raise on damaged bytes (gzip's is an
# OSError). The shard file's own I/O errors arrive as ShardReadError("storage_error") (see
# open_shard), which is none of these, so a dropped connection is never taken for damage.
_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, ValueError, lzma.LZMAError)

_Member = tuple[str, str, bytes | None]


def read_webdataset(
    shard: ShardInfo, config: SourceConfig, images: bool = False
) -> Iterator[Sample]:
    """Yield one sample per key of a webdataset tar shard, in tar order.

    A key that reappears, after other keys or right after its own members, is yielded again
    (the caller counts duplicates).

    Args:
        shard: The tar shard.
        config: Source settings (``max_caption_chars``).
        images: Also read each sample's image bytes into ``Sample.image``.

    Raises:
        ShardReadError: ``not_found``, ``truncated_tar`` (the tar ends before its end-of-archive
            marker), ``unreadable`` (not a tar, corrupt header, permission denied) or
            ``storage_error`` (the store failed mid-read). Samples read before the failure may
            already have been yielded.
    """
    extensions = READ_EXTENSIONS | set(IMAGE_EXTENSIONS) if images else READ_EXTENSIONS
    for key, members in _by_sample(_tar_members(shard, extensions)):
        data = {ext: content for ext, content in members.items() if content is not None}
        yield _sample(key, data, config)


def check_webdataset(shard: ShardInfo) -> None:
    """Open a tar shard and read its first member header.

    A truncated shard passes: truncation is a data defect the job reports per shard, not a
    sign that the input is not webdataset.

    Args:
        shard: The tar shard.

    Raises:
        ShardReadError: The shard is missing, not a tar, or corrupt.
    """
    members = _tar_members(shard, READ_EXTENSIONS)
    try:
        next(members, None)
    except ShardReadError as exc:
        if exc.reason != "truncated_tar":
            raise
    finally:
        members.close()


def _by_sample(
    members: Iterator[_Member],
) -> Iterator[tuple[str, dict[str, bytes | None]]]:
    """Group consecutive members into samples: ``(key, extension -> bytes)`` in tar order.

    A sample ends where the key changes or where an extension it already has comes again.
    """
    key = ""
    group: dict[str, bytes | None] = {}
    for member_key, ext, content in members:
        if group and (member_key != key or ext in group):
            yield key, group
            group = {}
        key = member_key
        group[ext] = content
    if group:
        yield key, group


def _sample(key: str, data: dict[str, bytes], config: SourceConfig) -> Sample:
    metadata, fields = _parse_json(data.get("json"))
    # The .txt member is the caption whenever present; the json's copy is a fallback.
    raw = data["txt"] if "txt" in data else _text_field(fields, "caption")
    caption, skip = decode_caption(raw, config.max_caption_chars)
    image = next((data[ext] for ext in IMAGE_EXTENSIONS if ext in data), None)
    return Sample(
        key=key,
        caption=caption,
        url=_text_field(fields, "url"),
        metadata=metadata,
        skip=skip,
        image=image,
    )


def _parse_json(raw: bytes | None) -> tuple[str | None, dict[str, Any]]:
    """The json member's text and its fields; ``(None, {})`` when absent or invalid."""
    if raw is None:
        return None, {}
    try:
        text = raw.decode("utf-8-sig")  # a BOM is not part of the JSON
        fields = json.loads(text)
    except (ValueError, RecursionError):  # invalid UTF-8 or JSON, absurdly deep nesting
        return None, {}
    return text, fields if isinstance(fields, dict) else {}


def _text_field(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    return value if isinstance(value, str) else None


def _tar_members(shard: ShardInfo, extensions: frozenset[str] | set[str]) -> Iterator[_Member]:
    """Yield ``(key, extension, bytes)`` per file member in tar order.

    The bytes are ``None`` for members whose extension is not in ``extensions``.
    """
    with open_shard(shard) as f:
        stream = _EndAwareReader(f)
        try:
            with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_StrictTarInfo) as tar:
                for member in tar:
                    name = _MEMBER_NAME.match(member.name) if member.isfile() else None
                    if name is None:
                        continue
                    key, ext = name.group(1), name.group(2).lower()
                    content = None
                    if ext in extensions:
                        content = tar.extractfile(member).read()
                    yield key, ext, content
        except _BrokenTar as exc:
            raise ShardReadError(exc.reason, f"{shard.path}: {exc.detail}") from None
        except _TAR_ERRORS as exc:
            # tarfile reports a member cut short like any other damage ("unexpected end of
            # data"); running out of bytes is what makes it a truncation.
            if stream.at_end:
                raise ShardReadError(
                    "truncated_tar", f"{shard.path}: the tar is cut short ({exc})"
                ) from None
            raise ShardReadError(
                "unreadable", f"{shard.path}: not a readable tar ({exc})"
            ) from None


class _BrokenTar(Exception):
    """A header problem that tarfile would otherwise take for the end of the archive."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class _StrictTarInfo(tarfile.TarInfo):
    """Refuses missing, cut or corrupt headers instead of ending the archive early.

    After the first member, tarfile treats a missing, partial or invalid header as a normal
    end of the archive, so a tar cut at a member boundary would look complete. Here only the
    end-of-archive marker (a zero block) ends a shard.
    """

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        if len(buf) < tarfile.BLOCKSIZE:
            raise _BrokenTar("truncated_tar", "the tar ends before its end-of-archive marker")
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.HeaderError as exc:
            if buf.count(0) == tarfile.BLOCKSIZE:
                raise  # the end-of-archive marker: tarfile stops there
            raise _BrokenTar(
                "unreadable", f"not a tar, or a corrupt member header ({exc})"
            ) from None


class _EndAwareReader:
    """Wraps the shard's file to remember whether the bytes ran out."""

    def __init__(self, f: io.RawIOBase) -> None:
        self._f = f
        self.at_end = False

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        if not data and size != 0:
            self.at_end = True
        return data
