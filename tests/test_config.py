import pytest

from freqscan.config import ConfigError, CountConfig, SourceConfig, TextConfig


def test_round_trip_through_dict():
    config = CountConfig(
        source=SourceConfig(input=("a/*.tar",), format="webdataset"),
        out="out",
        dataset_name="cc3m",
        text=TextConfig(method="paper"),
    )
    assert CountConfig.from_dict(config.to_dict()) == config


def test_unknown_keys_and_values_are_refused():
    data = CountConfig(source=SourceConfig(input=("x",)), out="o", dataset_name="d").to_dict()
    data["text"]["methd"] = "paper"
    with pytest.raises(ConfigError, match="unknown config key"):
        CountConfig.from_dict(data)
    with pytest.raises(ConfigError, match="method: 'lemma' is not one of paper, normalized"):
        TextConfig(method="lemma")
    with pytest.raises(ConfigError, match="format"):
        SourceConfig(input=("x",), format="csv")
    with pytest.raises(ConfigError, match="at least one"):
        SourceConfig(input=())
