"""CLIP text encoder for open-set label embeddings (and the open_clip tagger's shared model).

A model is an open_clip architecture name or a path to an open_clip model-config JSON; weights are
an open_clip pretrained tag, a local weights file, or none (a seeded random model, for tests and
for trying things out without weights). ``TextEncoderSpec.identity`` names the exact weights so
that cached embeddings are never reused across encoders.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F

from freqscan.image.errors import ImageSetupError

TINY_CLIP_CONFIG = Path(
    str(resources.files("freqscan.image").joinpath("configs/freqscan-tiny-clip.json"))
)
"""A 32-d, two-layer CLIP config shipped for tests and weight-free trials (64 px images)."""

# Random init is seeded so that two loads of the same spec are the same model; otherwise label
# embeddings cached under its identity would not match a freshly built image tower.
RANDOM_INIT_SEED = 0
_RANDOM = f"random-seed{RANDOM_INIT_SEED}"
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class TextEncoderSpec:
    """Which CLIP encodes text.

    Args:
        model: An open_clip model name (``open_clip.list_models()``), or the path of an open_clip
            model-config JSON, registered under its file stem. RAM++ was trained against OpenAI's
            ViT-B/16, hence the default.
        pretrained: An open_clip pretrained tag for ``model``, the path of a local weights file,
            or ``""`` for seeded random weights. A tag trained with QuickGELU (such as
            ``openai``) builds the model with QuickGELU; for a local copy of such weights use an
            architecture that has it (``ViT-B-16-quickgelu``).
    """

    model: str = "ViT-B-16"
    pretrained: str = "openai"

    def identity(self) -> str:
        """A stable name of the exact encoder, for cache keys.

        Built-in names and tags stand for themselves; a config file adds the sha256 of its
        contents and a weights file is named by the sha256 of its bytes.
        """
        name, config = _resolve_model(self.model)
        model_part = name if config is None else f"{name}@sha256:{_sha256_bytes(config)}"
        kind, value = _resolve_weights(name, self.pretrained)
        if kind == "file":
            weights_part = f"sha256:{_file_sha256(value)}"
        else:
            weights_part = value if kind == "tag" else _RANDOM
        return f"open_clip:{model_part}:{weights_part}"


def load_clip(
    spec: TextEncoderSpec, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Callable[[Sequence[str]], torch.Tensor]]:
    """Build the CLIP model of ``spec`` in eval mode on ``device``, with its tokenizer.

    The tokenizer pads or truncates to the model's context (77 for CLIP); truncation keeps the
    end-of-text token, whose feature is the text embedding.

    Raises:
        ValueError: Unknown model name, bad config file, unknown tag or missing weights file.
        ImageSetupError: A tag's weights could not be downloaded (no network).
    """
    name, _ = _resolve_model(spec.model)
    kind, value = _resolve_weights(name, spec.pretrained)
    # open_clip only warns when a QuickGELU-trained tag meets a GELU architecture (ViT-B-16 +
    # openai) and then loads the weights into the wrong activation; follow the tag instead.
    quick_gelu = kind == "tag" and bool(open_clip.get_pretrained_cfg(name, value).get("quick_gelu"))
    pretrained = None if kind == "random" else value
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = open_clip.create_model(
                name, pretrained=pretrained, device=device, force_quick_gelu=quick_gelu
            )
    except RuntimeError as exc:
        if kind == "tag":  # a known tag fails when its weights cannot be downloaded
            raise ImageSetupError(
                f"could not fetch the open_clip weights of {name!r} pretrained={value!r} "
                f"({exc}); without network, download them elsewhere and pass the file: "
                "--text-encoder-pretrained /models/open_clip_pytorch_model.bin"
            ) from None
        if kind != "file":
            raise
        raise ValueError(f"{value}: weights do not fit open_clip model {name!r}: {exc}") from exc
    return model.eval(), open_clip.get_tokenizer(name)


def encode_texts(
    model: torch.nn.Module,
    tokenizer: Callable[[Sequence[str]], torch.Tensor],
    texts: Sequence[str],
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """L2-normalised text embeddings, float32 (N, C), on the model's device in batches.

    On CUDA the encoder runs under fp16 autocast, as ``clip.load`` keeps OpenAI's weights in
    fp16 there (the embeddings RAM++ was trained with); on CPU it runs in fp32.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not texts:
        raise ValueError("no texts to encode")
    device = next(model.parameters()).device
    chunks = []
    with (
        torch.inference_mode(),
        torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"),
    ):
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(list(texts[start : start + batch_size])).to(device)
            features = model.encode_text(tokens).float()
            chunks.append(F.normalize(features, dim=-1).cpu().numpy())
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _resolve_model(model: str) -> tuple[str, Path | None]:
    """(open_clip model name, config file or None), registering a config file with open_clip."""
    if Path(model).suffix.lower() != ".json":
        if model not in open_clip.list_models():
            raise ValueError(
                f"unknown open_clip model {model!r}; use a name from open_clip.list_models() "
                f"(e.g. ViT-B-16) or the path of a model-config .json"
            )
        return model, None
    path = Path(model)
    try:
        config = json.loads(path.read_text("utf-8-sig"))  # a BOM from Windows editors
    except FileNotFoundError as exc:
        raise ValueError(f"{model}: model config file not found") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"{model}: model config is not valid JSON ({exc})") from exc
    required = ("embed_dim", "vision_cfg", "text_cfg")
    if not isinstance(config, dict) or not all(k in config for k in required):
        raise ValueError(f"{model}: not an open_clip model config (needs keys {required})")
    name = path.stem
    if name not in open_clip.list_models():
        open_clip.add_model_config(path)
    # The open_clip registry is keyed by file stem, so a second file with the same stem would
    # silently replace the first one for everybody in this process.
    elif open_clip.get_model_config(name) != config:
        raise ValueError(
            f"{model}: an open_clip model named {name!r} with a different config is already "
            f"registered; rename the file"
        )
    return name, path


def _resolve_weights(name: str, pretrained: str) -> tuple[str, str]:
    """("random" | "tag" | "file", value), in open_clip's order: a known tag wins over a file."""
    if not pretrained:
        return "random", ""
    if open_clip.get_pretrained_cfg(name, pretrained):
        return "tag", pretrained
    if os.path.isfile(pretrained):
        return "file", os.path.abspath(pretrained)
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise ValueError(
        f"pretrained {pretrained!r} is neither an open_clip tag of {name!r} (available: {tags}) "
        f"nor an existing weights file"
    )


def _sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_sha256(path: str) -> str:
    st = os.stat(path)
    return _file_sha256_memo(path, st.st_size, st.st_mtime_ns, st.st_ino)


# Weights files are hundreds of MB; hash each version once per process. The stat fields stand
# in for the content, so a rewrite (new inode or mtime) is hashed again.
@lru_cache(maxsize=64)
def _file_sha256_memo(path: str, size: int, mtime_ns: int, inode: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
