"""freqscan report: one self-contained HTML page, opened in headless Chromium.

The page is built from a real (text-only) output with every eval job's outputs in OUT/eval, then
rendered by Chromium: the screenshot must be a non-blank PNG of the window's size, the rendered
DOM must hold the headings and the embedded images, and Chromium must log no page error.
"""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from evalkit import assert_png, freqscan_output, run_cli
from PIL import Image

CHROMIUM = "/usr/bin/chromium"
WINDOW = (1200, 2000)
HEADINGS = ("Run summary", "Long tail", "Top 25 concepts", "Bottom 25 concepts", "Evaluation")


@pytest.fixture(scope="module")
def reported(tmp_path_factory, ray_local):
    """A copy of the shared output, with longtail, loglinear and correlate in OUT/eval."""
    out = tmp_path_factory.mktemp("report") / "out"
    shutil.copytree(freqscan_output(tmp_path_factory.mktemp("out")), out)
    perf = out.parent / "perf.csv"
    perf.write_text(
        "concept,metric\n"
        + "".join(f"{c},{m}\n" for c, m in zip(("dog", "cat", "car", "shirt", "tree", "bird"),
                                                  (60, 50, 70, 20, 40, 55), strict=True))
    )  # fmt: skip
    run_cli("eval", "longtail", "-c", out)
    run_cli("eval", "loglinear", "-c", out, "-p", perf)
    run_cli("eval", "correlate", out, "paper", "-t", "text")
    result = run_cli("report", out, "--top", "25")
    assert "self-contained HTML" in result.output
    return out, out / "report.html"


def test_report_is_self_contained(reported):
    out, page = reported
    text = page.read_text(encoding="utf-8")
    for heading in HEADINGS:
        assert heading in text
    assert "using text_count instead" in text  # text-only run, said so
    assert "<script" not in text
    assert not re.search(r'(src|href)="(https?:|file:|//)', text)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    # The report's own long-tail plot + longtail, loglinear and correlate plots from OUT/eval.
    assert len(uris) == 4
    for uri in uris:
        with Image.open(io.BytesIO(base64.b64decode(uri))) as img:
            assert img.format == "PNG" and img.size[0] >= 640
    assert "loglinear.csv" in text and "<td>perf</td>" in text  # its pooled row


def test_report_opens_in_headless_chromium(reported, tmp_path):
    if not os.path.exists(CHROMIUM):  # .ci/run installs Debian's chromium; see docs
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    _, page = reported
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    url = Path(page).resolve().as_uri()
    shot = tmp_path / "report.png"
    run = subprocess.run(
        [*flags, f"--screenshot={shot}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert_png(shot, WINDOW)
    # Page errors are logged as console messages ("Uncaught ..."), or as a failed load.
    log = run.stderr
    assert "Uncaught" not in log and "ERR_FILE_NOT_FOUND" not in log, log[-2000:]
    assert not re.search(r"CONSOLE\(\d+\)", log), log[-2000:]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for heading in HEADINGS:
        assert heading in dom.stdout
    assert dom.stdout.count('src="data:image/png;base64,') == 4
    assert "Uncaught" not in dom.stderr


def test_report_of_a_missing_output_is_a_user_error(tmp_path):
    result = run_cli("report", tmp_path / "nothing-here", code=2)
    assert "error:" in result.output and result.output.count("\n") == 1
