"""Helpers of the evaluation tests: a test-local CLI, the paper's files, one real output.

Not a conftest.py: a second ``conftest`` module on sys.path would shadow tests/conftest.py for
the modules that import from it. pytest puts this folder on sys.path, so tests import from here.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from freqscan.cli import app

SAMPLE_SHARD = resources.files("freqscan.data") / "laion-sample" / "part-00000.parquet"


def run_cli(*args, code: int = 0):
    """Invoke the freqscan CLI and check its exit code."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


@cache
def paper_bundle() -> dict:
    """The paper's JSON files as shipped with freqscan: file name -> parsed content.

    Read with plain ``json`` so expected values never go through freqscan's loaders.
    """
    path = resources.files("freqscan.data") / "paper_eval" / "cc3m_paper_files.json.gz"
    with gzip.open(str(path), "rt", encoding="utf-8") as fh:
        return json.load(fh)


_OUTPUTS: dict[str, str] = {}


# Captions of the bundled LAION sample in the test output: enough for a long tail, few enough
# for a count of a few seconds on 2 cores.
OUTPUT_CAPTIONS = 1000


def freqscan_output(base: Path) -> str:
    """A real text-only freqscan output of the first 1,000 captions of the bundled LAION sample
    (two 500-row shards); counted once per session, by whichever test module asks first."""
    if "out" not in _OUTPUTS:
        import pyarrow.parquet as pq

        shards = base / "laion-1000"
        shards.mkdir()
        table = pq.read_table(str(SAMPLE_SHARD)).slice(0, OUTPUT_CAPTIONS)
        half = OUTPUT_CAPTIONS // 2
        pq.write_table(table.slice(0, half), shards / "part-00000.parquet")
        pq.write_table(table.slice(half), shards / "part-00001.parquet")
        out = base / "out"
        result = CliRunner().invoke(
            app,
            [
                "count",
                "--input",
                str(shards),
                "--format",
                "parquet",
                "--out",
                str(out),
                "--dataset-name",
                "laion-1000",
            ],
        )
        assert result.exit_code == 0, result.output
        _OUTPUTS["out"] = str(out)
    return _OUTPUTS["out"]


def assert_png(path, size: tuple[int, int]) -> np.ndarray:
    """The PNG has this size, and is a picture (many colours, not one flat fill)."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == size
        pixels = np.asarray(img.convert("RGB"))
    packed = pixels.astype(np.uint32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.uint32)
    colours = np.unique(packed)
    assert len(colours) > 20, f"{path}: only {len(colours)} colours"
    # Some ink: not a blank canvas with a few stray pixels.
    assert (pixels.min(axis=2) < 200).mean() > 0.01
    return pixels
