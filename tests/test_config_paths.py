"""A config's local paths are absolute, so a run's recorded config works from any directory."""

from __future__ import annotations

import json
from pathlib import Path

from freqscan.config import CountConfig, SourceConfig
from freqscan.fingerprint import fingerprint_differences


def config(**kwargs) -> CountConfig:
    inputs = kwargs.pop("input", ("shards/part-0.parquet", "more/*.parquet", "s3://b/x/*.parquet"))
    return CountConfig(source=SourceConfig(input=inputs), dataset_name="d", **kwargs)


def test_local_paths_are_made_absolute_urls_and_set_names_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = config(out="out/", concepts="lists/concepts.txt")
    assert made.source.input == (
        f"{tmp_path}/shards/part-0.parquet",
        f"{tmp_path}/more/*.parquet",  # still a glob
        "s3://b/x/*.parquet",
    )
    assert (made.out, made.concepts) == (f"{tmp_path}/out", f"{tmp_path}/lists/concepts.txt")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert config(out="~/o").out == f"{tmp_path}/home/o"  # as fsspec would open it
    assert config(out="s3://b/o", concepts="s3://b/c.json").concepts == "s3://b/c.json"
    for name in (None, "paper", "rampp"):  # built-in concept sets, not files
        assert config(out="o", concepts=name).concepts == name


def test_a_recorded_config_reads_back_the_same_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recorded = json.dumps(config(out="out", concepts="c.csv").to_dict())
    monkeypatch.chdir(Path("/"))
    assert CountConfig.from_dict(json.loads(recorded)) == config(
        input=tuple(f"{tmp_path}/{p}" for p in ("shards/part-0.parquet", "more/*.parquet"))
        + ("s3://b/x/*.parquet",),
        out=f"{tmp_path}/out",
        concepts=f"{tmp_path}/c.csv",
    )


def test_relative_paths_an_older_run_recorded_compare_as_resolved_here(tmp_path, monkeypatch):
    def fingerprint(inputs: list[str], concepts: str | None) -> str:
        return json.dumps({"source": {"input": inputs, "format": "parquet"}, "concepts": concepts})

    older = fingerprint(["shards"], "c.txt")  # as typed, by a freqscan before absolute paths
    monkeypatch.chdir(tmp_path)
    assert (
        fingerprint_differences(older, fingerprint([f"{tmp_path}/shards"], f"{tmp_path}/c.txt"))
        == []
    )
    monkeypatch.chdir(tmp_path / "..")
    assert fingerprint_differences(
        older, fingerprint([f"{tmp_path}/shards"], f"{tmp_path}/c.txt")
    ) == [
        f"concepts: '{tmp_path.parent}/c.txt' -> '{tmp_path}/c.txt'",
        f"source.input: ['{tmp_path.parent}/shards'] -> ['{tmp_path}/shards']",
    ]


def test_image_files_are_made_absolute_and_open_clip_names_kept(tmp_path, monkeypatch):
    from freqscan.config import ImageConfig

    monkeypatch.chdir(tmp_path)
    files = ImageConfig(
        tagger="rampp",
        checkpoint="models/ram_plus.pth",
        text_encoder="configs/tiny-clip.json",
        text_encoder_pretrained="weights/clip.bin",
    )
    assert (files.checkpoint, files.text_encoder, files.text_encoder_pretrained) == (
        f"{tmp_path}/models/ram_plus.pth",
        f"{tmp_path}/configs/tiny-clip.json",
        f"{tmp_path}/weights/clip.bin",
    )
    url = ImageConfig(tagger="rampp", checkpoint="s3://b/models/ram_plus.pth")
    assert url.checkpoint == "s3://b/models/ram_plus.pth"
    assert (url.text_encoder, url.text_encoder_pretrained) == ("ViT-B-16", "openai")
    random_weights = ImageConfig(tagger="openclip", text_encoder_pretrained="")
    assert random_weights.text_encoder_pretrained == ""
