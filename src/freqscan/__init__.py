"""freqscan: how often each concept appears in a multimodal pretraining set."""

__version__ = "0.1.0"
