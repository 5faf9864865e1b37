"""Job config files (`freqscan count --config`): loading, checking, flag overrides, jobs/*.yaml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pyarrow.parquet as pq
import pytest
import typer
from conftest import SAMPLE_SHARDS
from typer.testing import CliRunner

from freqscan.cli import app, count, parse_count_args
from freqscan.config import ConfigError
from freqscan.jobconfig import (
    JobConfigError,
    OptionSpec,
    check_job_config,
    config_callback,
    load_job_config,
    option_specs,
    read_job_config,
)
from freqscan.query import run_query

JOBS = Path(__file__).parents[1] / "jobs"
OPTIONS = {
    "input": OptionSpec(str, multiple=True),
    "workers": OptionSpec(int),
    "threshold": OptionSpec(float),
    "method": OptionSpec(str),
    "verbose": OptionSpec(bool),
}


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_values_are_checked_and_normalised():
    raw = {"input": "a.tar", "workers": 4, "threshold": 1, "method": "paper", "verbose": False}
    assert check_job_config(raw, OPTIONS, "f.yaml") == {
        "input": ["a.tar"],  # one string for a repeatable option is a one-item list
        "workers": 4,
        "threshold": 1.0,
        "method": "paper",
        "verbose": False,
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"treshold": 0.7}, "f.yaml: unknown key 'treshold'; did you mean 'threshold'?"),
        ({"image-batch": 1}, "f.yaml: unknown key 'image-batch'; keys are the command's option"),
        ({"workers": "two"}, "f.yaml: workers: expected an integer, got 'two' (str)"),
        ({"workers": True}, "f.yaml: workers: expected an integer, got True (bool)"),
        ({"workers": 2.5}, "f.yaml: workers: expected an integer, got 2.5 (float)"),
        ({"threshold": "high"}, "f.yaml: threshold: expected a number, got 'high'"),
        ({"method": False}, "f.yaml: method: expected a string, got False (bool) (quote it"),
        ({"verbose": 1}, "f.yaml: verbose: expected true or false, got 1 (int)"),
        ({"workers": None}, "f.yaml: workers: has no value; give one, or remove the key"),
        ({"input": []}, "f.yaml: input: expected a non-empty list of a strings or one"),
        ({"input": ["a", 3]}, "f.yaml: input: expected a string, got 3 (int)"),
        ({3: "x"}, "f.yaml: unknown key 3"),
    ],
)
def test_bad_keys_and_values_name_the_file_and_the_key(raw, message):
    with pytest.raises(JobConfigError) as info:
        check_job_config(raw, OPTIONS, "f.yaml")
    assert str(info.value).startswith(message)


def test_files_that_cannot_be_used_are_refused_with_their_path(tmp_path):
    cases = {
        "missing.yaml": None,
        "broken.yaml": "input: [a, b\n",
        "list.yaml": "- input\n",
        "binary.yaml": b"\xff\xfe\x00",
    }
    expected = {
        "missing.yaml": "cannot read config file",
        "broken.yaml": "not valid YAML",
        "list.yaml": "expected a mapping of option names to values, got list",
        "binary.yaml": "cannot read config file",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(JobConfigError) as info:
            read_job_config(str(path))
        assert str(path) in str(info.value) and expected[name] in str(info.value), name


def test_a_comment_only_file_sets_nothing_and_fsspec_urls_are_read(tmp_path):
    assert read_job_config(write(tmp_path / "empty.yaml", "# nothing yet\n")) == {}
    import fsspec

    with fsspec.open("memory://jobs/t.yaml", "w") as f:
        f.write("workers: 3\n")
    assert load_job_config("memory://jobs/t.yaml", OPTIONS) == {"workers": 3}


def test_a_byte_order_mark_does_not_join_the_first_key(tmp_path):
    # PyYAML drops it, so a file saved by a Windows editor needs nothing of freqscan.
    path = tmp_path / "bom.yaml"
    path.write_text("workers: 3\nmethod: paper\n", encoding="utf-8-sig")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_job_config(str(path), OPTIONS) == {"workers": 3, "method": "paper"}


def test_the_count_commands_keys_are_its_parameter_names():
    specs = option_specs(count, exclude="config_file")
    assert specs["input"] == OptionSpec(str, multiple=True)
    assert specs["image_batch_size"] == OptionSpec(int)
    assert specs["gpus_per_tag_worker"] == OptionSpec(float)
    assert specs["tagger"] == OptionSpec(str)
    assert "ctx" not in specs and "config_file" not in specs


@pytest.mark.parametrize("path", sorted(JOBS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_job_config_loads_into_a_valid_count_config(path, tmp_path):
    config = parse_count_args(["--config", str(path), "--input", str(tmp_path)])
    name = path.stem
    assert config.source.input == (str(tmp_path),)
    assert config.dataset_name == name
    assert config.out == f"s3://YOUR-BUCKET/freqscan/{name}"
    assert config.concepts is None  # the paper's concepts
    assert config.text.method == "paper"
    raw = read_job_config(str(path))
    assert raw["input"].startswith(f"s3://YOUR-BUCKET/{name}/")
    if name == "laion2b-en":
        assert config.source.format == "parquet" and config.image is None
        assert (config.source.caption_column, config.source.url_column) == ("TEXT", "URL")
    else:
        assert config.source.format == "webdataset"
        assert config.image.tagger == "rampp" and config.image.threshold == 0.7
        assert config.image.checkpoint.endswith("ram_plus_swin_large_14m.pth")
        assert config.image.workers and config.image.gpus_per_worker == 1
    assert config.runtime.num_workers and config.max_failed_shards is not None


def test_flags_override_the_file(tmp_path):
    path = write(
        tmp_path / "job.yaml",
        "input: [a.parquet, b.parquet]\nformat: parquet\nmethod: paper\nworkers: 3\n"
        "dataset_name: from-file\n",
    )
    from_file = parse_count_args(["--config", path])
    # Relative paths are made absolute against the working directory, as flags are.
    assert from_file.source.input == (str(Path.cwd() / "a.parquet"), str(Path.cwd() / "b.parquet"))
    assert (from_file.text.method, from_file.runtime.num_workers) == ("paper", 3)
    assert from_file.config_file == path  # recorded in runs.config, outside the fingerprint
    assert parse_count_args(["--input", "a.parquet", "--format", "parquet"]).config_file is None

    overridden = parse_count_args(
        ["--input", "c.parquet", "--config", path, "--method", "normalized", "--workers", "1"]
    )
    # A repeated flag replaces the whole list.
    assert overridden.source.input == (str(Path.cwd() / "c.parquet"),)
    assert (overridden.text.method, overridden.runtime.num_workers) == ("normalized", 1)
    assert overridden.dataset_name == "from-file"


def test_boolean_and_list_flags_override_the_file_in_any_typer_command(tmp_path):
    # The callback is generic, so check it on a small command with a boolean and a list option.
    probe = typer.Typer()
    seen: dict[str, object] = {}

    @probe.command()
    def run(
        config: Annotated[
            str | None, typer.Option("--config", is_eager=True, callback=config_callback)
        ] = None,
        tag: Annotated[list[str] | None, typer.Option()] = None,
        fast: Annotated[bool, typer.Option()] = False,
    ) -> None:
        seen.update(tag=tag, fast=fast)

    path = write(tmp_path / "p.yaml", "tag: [a, b]\nfast: true\n")
    CliRunner().invoke(probe, ["--config", path])
    assert seen == {"tag": ["a", "b"], "fast": True}
    CliRunner().invoke(probe, ["--config", path, "--no-fast", "--tag", "c"])
    assert seen == {"tag": ["c"], "fast": False}


def test_the_cli_refuses_a_bad_config_with_exit_code_2(tmp_path):
    path = write(tmp_path / "bad.yaml", "treshold: 0.7\n")
    result = CliRunner().invoke(app, ["count", "--config", path], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    assert "bad.yaml: unknown key 'treshold'; did you mean 'threshold'?" in result.output
    with pytest.raises(ConfigError, match="did you mean 'threshold'"):
        parse_count_args(["--config", path])


@pytest.mark.usefixtures("ray_local")
@pytest.mark.timeout(300)
def test_a_real_count_records_the_flag_over_the_file_and_relative_paths_use_the_cwd(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    pq.write_table(pq.read_table(SAMPLE_SHARDS[0]).slice(0, 200), "part-0.parquet")
    Path("concepts.txt").write_text("dog\ncat\nshirt\nwoman\n")
    Path("job.yaml").write_text(
        "input: part-0.parquet\nconcepts: concepts.txt\nmethod: paper\ndataset_name: tiny\n"
    )
    result = CliRunner().invoke(
        app, ["count", "--config", "job.yaml", "--method", "normalized", "--out", "out"]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    recorded = json.loads(run_query("out", "SELECT config FROM runs").to_pylist()[0]["config"])
    assert recorded["text"]["method"] == "normalized"  # the flag, not the file's paper
    assert recorded["dataset_name"] == "tiny"
    # Paths are resolved against the current directory, like flags, and recorded absolute.
    assert (recorded["concepts"], recorded["source"]["input"]) == (
        str(tmp_path / "concepts.txt"),
        [str(tmp_path / "part-0.parquet")],
    )
    concepts = run_query("out", "SELECT count(*) AS n FROM frequencies").to_pylist()[0]["n"]
    assert concepts == 4
