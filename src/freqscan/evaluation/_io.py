"""Small output helpers shared by the evaluation jobs."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``None`` (JSON has neither), tuples as lists."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(json_safe(data), fh, indent=1, allow_nan=False, ensure_ascii=False)
        fh.write("\n")
    return path


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
    return path
