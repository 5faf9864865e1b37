"""Decode a raw caption, or say why the sample is skipped; shared by every reader.

Captions are passed on unchanged (HTML, odd whitespace and all): cleaning is the text method's
job, so that ``paper`` can keep the paper's quirks and ``normalized`` can fix them. Only a leading
byte-order mark goes: it is an encoding artifact, and spaCy would make it part of the first word
(``"\\ufeffdog"`` is no ``dog``).
"""

from __future__ import annotations

from freqscan.records import (
    SKIP_CAPTION_TOO_LONG,
    SKIP_EMPTY_CAPTION,
    SKIP_INVALID_UTF8,
    SKIP_MISSING_CAPTION,
)


def decode_caption(raw: bytes | str | None, max_chars: int) -> tuple[str | None, str | None]:
    """Decode one caption.

    Args:
        raw: The caption as stored: UTF-8 bytes, text, or ``None`` when the sample has none.
        max_chars: Captions with more characters than this are skipped.

    Returns:
        ``(caption, None)`` for a usable caption, else ``(None, skip_reason)`` with one of
        ``missing_caption``, ``invalid_utf8``, ``empty_caption``, ``caption_too_long``.
    """
    if raw is None:
        return None, SKIP_MISSING_CAPTION
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, SKIP_INVALID_UTF8
    raw = raw.removeprefix("\ufeff")  # from bytes or text: parquet text columns hold them too
    if not raw.strip():
        return None, SKIP_EMPTY_CAPTION
    if len(raw) > max_chars:
        return None, SKIP_CAPTION_TOO_LONG
    return raw, None
