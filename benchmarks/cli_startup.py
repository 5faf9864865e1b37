"""Start-up time of the `freqscan` command: this tree against a git ref, side by side.

    python benchmarks/cli_startup.py [--ref 3eb7d54] [--runs 10] [--json out.json]

Times `python -c "import freqscan.cli"` (what `freqscan --help` and every refused flag pay
before printing anything) and the whole `freqscan --help`, alternating the two trees run by run
so that both see the same machine load. The ref is checked out into a temporary git worktree and
put first on PYTHONPATH, so both run with this virtual environment's libraries.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import emit

REPO = Path(__file__).parents[1]
HEAVY = ("ray", "torch", "spacy", "scipy", "matplotlib", "duckdb", "pyarrow", "deltalake", "pandas")


def env_for(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src)}


def import_seconds(src: Path) -> float:
    """Seconds a fresh interpreter spends in ``import freqscan.cli``, from ``src``."""
    code = (
        "import time; t0 = time.perf_counter(); import freqscan.cli; "
        "print(time.perf_counter() - t0)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env_for(src), capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def help_seconds(src: Path) -> float:
    """Wall seconds of the whole ``freqscan --help`` (interpreter start included), from ``src``."""
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "freqscan", "--help"],
        env=env_for(src),
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - t0


def heavy_modules(src: Path) -> list[str]:
    code = f"import sys, freqscan.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env_for(src), capture_output=True, text=True, check=True
    )
    return [m for m in done.stdout.strip().split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD", help="The git ref to compare with.")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.ref],
            check=True,
            capture_output=True,
        )
        try:
            trees = {"ref": old / "src", "this": REPO / "src"}
            times: dict[str, dict[str, list[float]]] = {
                k: {"import": [], "help": []} for k in trees
            }
            for _ in range(args.runs):  # alternating, so both trees see the same load
                for name, src in trees.items():
                    times[name]["import"].append(import_seconds(src))
                    times[name]["help"].append(help_seconds(src))
            heavy = {name: heavy_modules(src) for name, src in trees.items()}
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=True
            )
    median = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    emit(
        {
            "ref": args.ref,
            "runs": args.runs,
            "median_import_s": {n: round(m["import"], 3) for n, m in median.items()},
            "median_help_s": {n: round(m["help"], 3) for n, m in median.items()},
            "ratio_ref_over_this": {
                k: round(median["ref"][k] / median["this"][k], 2) for k in ("import", "help")
            },
            "heavy_modules_imported": heavy,
        },
        args.json,
    )


if __name__ == "__main__":
    main()
