"""ImageConfig and CountConfig: image settings refused with a message that says why, and a
config with an image section round-trips through its dict (and JSON)."""

from __future__ import annotations

import json

import pytest

from freqscan.config import ConfigError, CountConfig, ImageConfig, SourceConfig

WDS = SourceConfig(input=("shards/*.tar",), format="webdataset")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tagger": "clip"}, "tagger: 'clip' is not one of rampp, rampp-closed, openclip"),
        ({"tagger": "rampp", "checkpoint": None}, "tagger rampp needs --checkpoint"),
        ({"tagger": "rampp", "checkpoint": ""}, "tagger rampp needs --checkpoint"),
        ({"tagger": "rampp-closed", "checkpoint": None}, "tagger rampp-closed needs --checkpoint"),
        ({"description_mode": "max"}, "description_mode: 'max' is not one of reweight, mean"),
        ({"precision": "int8"}, "precision: 'int8' is not one of auto, fp32, bf16, fp16"),
        ({"threshold": 0.6, "score_floor": 0.7}, "threshold 0.6 is below the score floor 0.7"),
        ({"threshold": 1.0}, r"threshold must be in \[0, 1\)"),
        ({"threshold": -0.1}, r"threshold must be in \[0, 1\)"),
        ({"score_floor": 1.5}, r"score_floor must be in \[0, 1\)"),
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"workers": 0}, "workers must be positive"),
        ({"gpus_per_worker": -1.0}, "gpus_per_worker must be >= 0"),
        ({"clip_temperature": 0.0}, "clip_temperature must be positive"),
    ],
)
def test_invalid_image_settings_are_refused(kwargs, message):
    kwargs = {"checkpoint": "ram_plus.pth", **kwargs}
    with pytest.raises(ConfigError, match=message):
        ImageConfig(**kwargs)


def test_valid_image_settings():
    assert ImageConfig(tagger="openclip").checkpoint is None  # open_clip needs no checkpoint
    config = ImageConfig(checkpoint="c.pth", threshold=0.5, score_floor=0.5)
    assert (config.threshold, config.score_floor) == (0.5, 0.5)  # equal is allowed
    assert ImageConfig(checkpoint="c.pth", score_floor=0.0).score_floor == 0.0


def test_a_threshold_below_the_default_floor_is_a_config_error():
    """--threshold 0.3 without --score-floor: the floor defaults to 0.5, so the threshold cannot
    be applied. It must be refused as a ConfigError (a clean CLI message), whether at
    construction or when the run's thresholds are resolved, not as a bare ValueError (which
    `freqscan count` does not catch: the user gets a traceback)."""
    from freqscan.concepts import Concept, ConceptSet
    from freqscan.image.factory import run_thresholds

    concepts = ConceptSet((Concept("dog"),), "test")
    with pytest.raises(ConfigError, match="below the score floor"):
        run_thresholds(ImageConfig(checkpoint="c.pth", threshold=0.3), concepts)


def test_a_closed_set_floor_above_its_lowest_tag_threshold_is_a_config_error():
    """rampp-closed with --score-floor 0.6 and per-tag thresholds (some as low as 0.45): those
    tags' counts would be wrong; refused as a ConfigError, not a bare ValueError."""
    from freqscan.image.factory import rampp_tag_concepts, run_thresholds

    with pytest.raises(ConfigError, match="below the score floor"):
        run_thresholds(
            ImageConfig(tagger="rampp-closed", checkpoint="c.pth", score_floor=0.6),
            rampp_tag_concepts(),
        )


def test_tagging_needs_webdataset_shards():
    with pytest.raises(ConfigError, match="--tagger needs images: parquet shards hold captions"):
        CountConfig(
            source=SourceConfig(input=("captions.parquet",), format="parquet"),
            out="out",
            dataset_name="d",
            image=ImageConfig(checkpoint="c.pth"),
        )
    # Without a tagger, parquet is fine.
    assert CountConfig(source=SourceConfig(input=("c.parquet",)), out="o", dataset_name="d")


def test_closed_set_refuses_a_concept_file():
    with pytest.raises(ConfigError, match="rampp-closed counts RAM\\+\\+'s own 4,585 tags"):
        CountConfig(
            source=WDS,
            out="out",
            dataset_name="d",
            concepts="concepts.json",
            image=ImageConfig(tagger="rampp-closed", checkpoint="c.pth"),
        )
    # The open set takes one, the closed set runs without.
    for image, concepts in (
        (ImageConfig(tagger="rampp", checkpoint="c.pth"), "concepts.json"),
        (ImageConfig(tagger="rampp-closed", checkpoint="c.pth"), None),
    ):
        assert (
            CountConfig(source=WDS, out="o", dataset_name="d", concepts=concepts, image=image).image
            == image
        )


def test_round_trip_with_an_image_config():
    config = CountConfig(
        source=WDS,
        out="s3://bucket/out",
        dataset_name="cc3m",
        concepts="concepts.json",
        image=ImageConfig(
            tagger="rampp",
            checkpoint="/models/ram_plus_swin_large_14m.pth",
            arch="tiny",
            description_mode="reweight",
            text_encoder="ViT-B-16",
            text_encoder_pretrained="",
            threshold=0.75,
            score_floor=0.55,
            clip_center=0.2,
            clip_temperature=0.02,
            batch_size=16,
            precision="bf16",
            workers=2,
            gpus_per_worker=0.5,
            embedding_cache="/tmp/cache",
        ),
    )
    data = config.to_dict()
    assert data["image"]["threshold"] == 0.75 and data["image"]["tagger"] == "rampp"
    assert CountConfig.from_dict(data) == config
    assert CountConfig.from_dict(json.loads(json.dumps(data))) == config
    # Defaults (None thresholds) survive too, and a text-only config keeps image None.
    default = CountConfig(
        source=WDS, out="o", dataset_name="d", image=ImageConfig(tagger="openclip")
    )
    assert CountConfig.from_dict(json.loads(json.dumps(default.to_dict()))) == default
    text_only = CountConfig(source=WDS, out="o", dataset_name="d")
    assert text_only.to_dict()["image"] is None
    assert CountConfig.from_dict(text_only.to_dict()) == text_only


def test_unknown_image_keys_and_invalid_image_values_are_refused_from_a_dict():
    data = CountConfig(
        source=WDS, out="o", dataset_name="d", image=ImageConfig(checkpoint="c.pth")
    ).to_dict()
    data["image"]["treshold"] = 0.8
    with pytest.raises(ConfigError, match="unknown config key.*image.treshold"):
        CountConfig.from_dict(data)
    del data["image"]["treshold"]
    data["image"]["tagger"] = "ram"
    with pytest.raises(ConfigError, match="tagger: 'ram'"):
        CountConfig.from_dict(data)
    # A stored image config on a parquet source is refused like the flags are.
    data["image"]["tagger"] = "rampp"
    data["source"]["format"] = "parquet"
    with pytest.raises(ConfigError, match="--tagger needs images"):
        CountConfig.from_dict(data)
