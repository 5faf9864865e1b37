"""decode_caption: the one place a raw caption becomes text or a skip reason."""

from __future__ import annotations

import pytest

from freqscan.sources.captions import decode_caption


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a dog", ("a dog", None)),
        (b"caf\xc3\xa9", ("caf\u00e9", None)),
        (" <p>A</p>\n", (" <p>A</p>\n", None)),  # never cleaned here
        (None, (None, "missing_caption")),
        ("", (None, "empty_caption")),
        (" \t\n\u3000".encode(), (None, "empty_caption")),
        (b"caf\xe9", (None, "invalid_utf8")),
        (b"\xff" + b"x" * 50, (None, "invalid_utf8")),  # invalid wins over too long
        ("x" * 10, ("x" * 10, None)),
        ("x" * 11, (None, "caption_too_long")),
        ("\u00e9" * 10, ("\u00e9" * 10, None)),  # characters, not bytes
    ],
)
def test_decode_caption(raw, expected):
    assert decode_caption(raw, max_chars=10) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("\ufeffdog".encode(), ("dog", None)),  # a .txt member written by a Windows editor
        ("\ufeffdog", ("dog", None)),  # a text column
        ("\ufeff \n".encode(), (None, "empty_caption")),
        ("\ufeff" + "x" * 10, ("x" * 10, None)),  # the mark is no character of the caption
        ("a\ufeffb", ("a\ufeffb", None)),  # only a leading one is an encoding's mark
    ],
)
def test_a_leading_byte_order_mark_is_dropped(raw, expected):
    assert decode_caption(raw, max_chars=10) == expected
