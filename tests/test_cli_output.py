"""What the CLI prints is the data as it is, and a user's mistake is one line, never a traceback.

Covers issue 13's items on output: captions and concept names holding rich markup or emoji codes
print unaltered; piped tables keep every column; bad --out, unreachable weights, missing or
mixed inputs and bad option values fail with exit code 2 and one clear line; Ray's known
harmless native line stays off stderr; `freqscan --help` does not import the heavy libraries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from shardkit import write_caption_parquet, write_webdataset_shard
from typer.testing import CliRunner

from freqscan.cli import app
from freqscan.query import run_query
from freqscan.runtime.native_stderr import harmless_ray_lines_dropped

REPO = Path(__file__).parents[1]
# Real LAION captions start like these; markup would eat the brackets and the emoji code.
CAPTIONS = [
    "[macyskorea] a dog on a sofa",
    "[pdf] cat care manual",
    "a [/b] dog :x: sofa",
    "plain dog",
]
CONCEPTS = "dog\ncat\n[/b] sofa\n"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def marked_up(ray_local, tmp_path_factory):
    """A count whose captions and one concept name hold markup; its CLI result and paths."""
    root = tmp_path_factory.mktemp("markup")
    shards = root / "data"
    shards.mkdir()
    write_caption_parquet(shards / "part-0.parquet", CAPTIONS)
    concepts = root / "concepts.txt"
    concepts.write_text(CONCEPTS)
    out = root / "out"
    result = invoke(
        "count", "--input", str(shards), "--out", str(out), "--concepts", str(concepts),
        "--dataset-name", "[b]data",
    )  # fmt: skip
    return result, str(out)


def test_count_summary_prints_markup_names_as_written(marked_up):
    result, out = marked_up
    assert result.exit_code == 0, result.output
    # The run committed and its summary printed: the concept named like a closing tag is there.
    assert "[/b] sofa" in result.output
    counts = {
        r["concept"]: r["text_count"]
        for r in run_query(out, "SELECT concept, text_count FROM frequencies").to_pylist()
    }
    # "[/b] sofa" (paper rules aside) matches the caption holding both words.
    assert counts["dog"] == 3 and counts["cat"] == 1 and counts["[/b] sofa"] == 1


def test_show_prints_captions_verbatim(marked_up):
    _, out = marked_up
    result = invoke("show", out, "dog", "--examples", "10")
    assert result.exit_code == 0, result.output
    for caption in ("[macyskorea] a dog on a sofa", "a [/b] dog :x: sofa", "plain dog"):
        assert caption in result.output
    assert "✖" not in result.output and "❌" not in result.output
    sofa = invoke("show", out, "[/b] sofa")
    assert sofa.exit_code == 0 and sofa.output.startswith("[/b] sofa (id "), sofa.output


def test_query_table_and_csv_print_cells_verbatim(marked_up):
    _, out = marked_up
    sql = "SELECT caption FROM hits ORDER BY key"
    table = invoke("query", out, sql)
    assert table.exit_code == 0, table.output
    for caption in CAPTIONS[:3]:
        assert caption in table.output
    as_csv = invoke("query", out, sql, "--csv")
    assert as_csv.output.splitlines()[1:4] == [
        "[macyskorea] a dog on a sofa",
        "[pdf] cat care manual",
        "a [/b] dog :x: sofa",
    ]


def test_piped_history_keeps_every_column(marked_up):
    _, out = marked_up
    result = invoke("history", out)
    assert result.exit_code == 0, result.output
    run_id = run_query(out, "SELECT run_id FROM runs").column("run_id")[0].as_py()
    # CliRunner's output is not a terminal (80 columns, as in a pipe): the version number,
    # the whole run id and the markup-named dataset all show.
    row = next(line for line in result.output.splitlines() if run_id in line)
    assert row.split()[:2] == ["1", run_id] and "[b]data" in row


def test_show_says_why_an_added_concept_has_no_examples(marked_up, tmp_path):
    _, out = marked_up
    added = tmp_path / "more.txt"
    added.write_text("manual\n")
    assert invoke("add-concepts", out, str(added)).exit_code == 0
    result = invoke("show", out, "manual")
    assert result.exit_code == 0, result.output
    assert "text_count 1 of 4 samples" in result.output
    assert "no example captions: hits holds none of its samples" in result.output


def test_bad_show_examples_is_a_usage_error(marked_up):
    _, out = marked_up
    result = invoke("show", out, "dog", "--examples", "-1")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--examples" in result.output


@pytest.mark.parametrize(
    "make_out, reason",
    [
        (lambda tmp: str(tmp / "a-file" / "out"), "Not a directory"),
        (lambda tmp: "/proc/freqscan-test-out", "No such file or directory"),
    ],
)
def test_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch, make_out, reason):
    from freqscan.runtime import pipeline

    loaded = []  # spaCy is the first slow step of planning; the refusal comes before it
    monkeypatch.setattr(pipeline, "load_pipeline", lambda *a: loaded.append(a))
    (tmp_path / "a-file").write_text("")
    shard = tmp_path / "part-0.parquet"
    write_caption_parquet(shard, ["a dog"])
    out = make_out(tmp_path)
    result = invoke("count", "--input", str(shard), "--out", out)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: --out {out}: cannot write there ({reason})"
    assert loaded == []


def test_missing_and_mixed_inputs_name_the_problem(tmp_path):
    missing = tmp_path / "nope"
    result = invoke("count", "--input", str(missing))
    assert result.exit_code == 2
    assert result.output.strip() == f"error: input {missing}: no such file or directory"
    result = invoke("count", "--input", f"{missing}/*.tar")
    assert result.output.strip() == f"error: input {missing}/*.tar: the glob matches nothing"

    tar, parquet = tmp_path / "a.tar", tmp_path / "b.parquet"
    write_webdataset_shard(tar, [{"key": "0", "txt": "a dog"}])
    write_caption_parquet(parquet, ["a dog"])
    result = invoke("count", "--input", str(tar), "--input", str(parquet))
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: --input mixes formats: webdataset (.tar) in {tar}; parquet in {parquet}; a run "
        "counts one format: count them in separate runs"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("")
    result = invoke("count", "--input", str(empty))
    assert result.output.strip() == f"error: input {empty}: no .tar or .parquet shards"


def test_unreachable_open_clip_weights_are_one_line(tmp_path, monkeypatch):
    # No network and an empty cache: open_clip cannot fetch ViT-B-16's `openai` weights.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    photo = (REPO.parent / "shared" / "data" / "images" / "rampp_demo2.jpg").read_bytes()
    shard = tmp_path / "00000.tar"
    write_webdataset_shard(shard, [{"key": "0", "txt": "a dog", "jpg": photo}])
    concepts = tmp_path / "c.txt"
    concepts.write_text("dog\n")
    result = invoke(
        "count", "--input", str(shard), "--out", str(tmp_path / "out"), "--concepts",
        str(concepts), "--tagger", "openclip", "--embedding-cache", str(tmp_path / "emb"),
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(
        "error: could not fetch the open_clip weights of 'ViT-B-16' pretrained='openai' ("
    )
    assert line.endswith("--text-encoder-pretrained /models/open_clip_pytorch_model.bin")


def test_harmless_ray_line_is_dropped_and_everything_else_passes(capfd):
    harmless = (
        b"[2026-12-04 17:43:37,551 E 4722 4722] core_worker.cc:2465: Actor with class name: "
        b"'MapWorker(MapBatches(ShardReadWorker))' and ID: 'ab' has constructor arguments in "
        b"the object store and max_restarts > 0. If the arguments in the object store go out of "
        b"scope or are lost, the actor restart will fail.\n"
    )
    with harmless_ray_lines_dropped():
        os.write(2, b"E core_worker.cc:1: something real\n")
        os.write(2, harmless)
        os.write(2, b"last line without newline")
        print("python's stderr", file=sys.stderr)
    err = capfd.readouterr().err
    assert "something real" in err and "last line without newline" in err
    assert "python's stderr" in err
    assert "constructor arguments" not in err


def test_a_real_count_prints_no_ray_noise(tmp_path):
    shard = tmp_path / "part-0.parquet"
    write_caption_parquet(shard, ["a dog", "a cat"])
    concepts = tmp_path / "c.txt"
    concepts.write_text("dog\n")
    done = subprocess.run(
        [sys.executable, "-m", "freqscan", "count", "--input", str(shard), "--out",
         str(tmp_path / "out"), "--concepts", str(concepts), "--workers", "1"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "counted 2 of 2 samples" in done.stdout
    assert "core_worker.cc" not in done.stderr, done.stderr


def test_cli_start_up_imports_no_heavy_library():
    heavy = ["ray", "torch", "spacy", "scipy", "matplotlib", "open_clip", "timm", "PIL", "duckdb"]
    heavy += ["pyarrow", "deltalake", "pandas", "numpy"]
    code = f"import sys, freqscan.cli; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
