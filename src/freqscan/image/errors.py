"""The user-fixable error of image tagging; importable without torch, so the CLI can catch it."""

from __future__ import annotations

from freqscan.errors import UserError


class ImageSetupError(UserError, ValueError):
    """A checkpoint, open_clip model or weights file cannot be used; the message says why."""
