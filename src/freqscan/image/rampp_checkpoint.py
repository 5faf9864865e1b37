"""RAM++ checkpoints: the upstream state-dict layout <-> :class:`RamPlus`, strictly.

Upstream builds its own copy of the Microsoft Swin code (timm-0.4.12 layout); :class:`RamPlus`
uses timm >= 0.9. Everything else already has upstream's names, so the whole difference is this
one transform (``from_upstream``; ``to_upstream`` undoes 1, and ``upstream_state_dict`` adds the
buffers of 2 back with their values):

1. timm moved each Swin patch merging to the start of the next stage: upstream
   ``visual_encoder.layers.i.downsample.*`` is timm ``visual_encoder.layers.(i+1).downsample.*``.
2. ``...blocks.j.attn.relative_position_index`` and ``...blocks.j.attn_mask`` are dropped if
   present: timm keeps them as non-persistent buffers that it regenerates from the shapes alone.
3. The top-level ``logit_scale`` is dropped if present: the released checkpoint is reported to
   carry it, and RAM++ never defines or uses it (spec 3.4).
4. ``reweight_scale`` is set to log(1/0.07) if absent: the released checkpoint is reported to lack
   it, in which case upstream keeps its initial value (spec 3.4).

Anything else missing, unexpected or of the wrong shape raises :class:`RampCheckpointError`
naming the keys; upstream's own loader (``strict=False``) would ignore it silently.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import fsspec
import torch

from freqscan.image.errors import ImageSetupError
from freqscan.image.rampp import DEFAULT_REWEIGHT_SCALE, RamPlus, RamPlusArch, get_arch

REAL_CHECKPOINT_NAME = "ram_plus_swin_large_14m.pth"
# A checkpoint given as a URL (s3://, gs://, https://) is fetched once per machine into this
# cache, keyed by the URL and the object's version: torch.load(mmap=True) needs a local file.
CHECKPOINT_CACHE = Path.home() / ".cache" / "freqscan" / "checkpoints"

_DOWNSAMPLE = re.compile(r"^visual_encoder\.layers\.(\d+)\.downsample\.")
_SWIN_BUFFER = re.compile(
    r"^visual_encoder\.layers\.\d+\.blocks\.\d+\.(attn_mask|attn\.relative_position_index)$"
)
_EXTRA_KEYS = ("logit_scale",)
# Errors name at most this many keys; a wrong architecture would otherwise list hundreds.
_MAX_NAMED = 8


class RampCheckpointError(ImageSetupError):
    """A RAM++ checkpoint cannot be loaded; the message says which file or keys and why."""


def _shift_downsample(key: str, offset: int) -> str:
    return _DOWNSAMPLE.sub(
        lambda m: f"visual_encoder.layers.{int(m.group(1)) + offset}.downsample.", key
    )


@functools.cache
def _port_shapes(arch: RamPlusArch) -> dict[str, torch.Size]:
    """Key -> shape of RamPlus(arch).state_dict(), from a model on the meta device (no memory)."""
    with torch.device("meta"):
        model = RamPlus(arch)
    return {k: v.shape for k, v in model.state_dict().items()}


def _names(keys: list[str]) -> str:
    more = f" (+{len(keys) - _MAX_NAMED} more)" if len(keys) > _MAX_NAMED else ""
    return ", ".join(keys[:_MAX_NAMED]) + more


def _check_keys(keys: list[str], expected: list[str], what: str) -> None:
    present = set(keys)
    missing = [k for k in expected if k not in present]
    unexpected = sorted(present.difference(expected))
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if problems:
        raise RampCheckpointError(f"{what}: " + "; ".join(problems))


def from_upstream(state: Mapping[str, torch.Tensor], arch: RamPlusArch) -> dict[str, torch.Tensor]:
    """An upstream-layout state dict -> the state dict of :class:`RamPlus` (the transform above).

    Raises:
        RampCheckpointError: missing, unexpected or wrongly shaped keys, named.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in _EXTRA_KEYS or _SWIN_BUFFER.match(key):
            continue
        out[_shift_downsample(key, +1)] = value
    if "reweight_scale" not in out:
        out["reweight_scale"] = torch.tensor(DEFAULT_REWEIGHT_SCALE)
    shapes = _port_shapes(arch)
    _check_keys(
        [_shift_downsample(k, -1) for k in out],
        [_shift_downsample(k, -1) for k in shapes],
        f"not a RAM++ {arch.name} state dict",
    )
    wrong = [
        f"{_shift_downsample(k, -1)} {list(v.shape)} (expected {list(shapes[k])})"
        for k, v in out.items()
        if v.shape != shapes[k]
    ]
    if wrong:
        raise RampCheckpointError(f"wrong shapes for RAM++ {arch.name}: {_names(wrong)}")
    return out


def to_upstream(state: Mapping[str, torch.Tensor], arch: RamPlusArch) -> dict[str, torch.Tensor]:
    """The state dict of :class:`RamPlus` -> upstream's layout (step 1 undone).

    The Swin buffers of step 2 may be included (``upstream_state_dict`` does); the tensors are
    not copied.

    Raises:
        RampCheckpointError: keys that :class:`RamPlus` for ``arch`` does not have, or lacks.
    """
    keys = [k for k in state if not _SWIN_BUFFER.match(k)]
    _check_keys(keys, list(_port_shapes(arch)), f"not a RamPlus {arch.name} state dict")
    return {_shift_downsample(k, -1): v for k, v in state.items()}


def upstream_state_dict(model: RamPlus) -> dict[str, torch.Tensor]:
    """What upstream's ``model.state_dict()`` holds for the same weights.

    Includes the Swin buffers of step 2 (``relative_position_index`` int64, ``attn_mask`` float)
    with the values timm generated. Key order is not upstream's.
    """
    state = model.state_dict()
    state.update((k, b) for k, b in model.named_buffers() if _SWIN_BUFFER.match(k))
    return to_upstream(state, model.arch)


def save_upstream_checkpoint(model: RamPlus, path: str | Path) -> None:
    """Write ``{"model": upstream_state_dict(model)}``, the layout of upstream's checkpoints."""
    torch.save({"model": upstream_state_dict(model)}, path)


def read_checkpoint(
    path: str | Path,
    arch: str | RamPlusArch = "swin_l",
    map_location: str | torch.device = "cpu",
    mmap: bool = False,
) -> dict[str, torch.Tensor]:
    """Read an upstream-layout RAM++ checkpoint and apply the transform (strict key check).

    Args:
        path: A ``.pth`` holding ``{"model": state_dict, ...}`` or a bare state dict; a local
            path or an fsspec URL (fetched once per machine, :func:`local_checkpoint`).
        arch: Architecture (name or object) the checkpoint must match.
        map_location: Device for the tensors.
        mmap: Map the file instead of reading it (a cheap check of keys and shapes).

    Raises:
        RampCheckpointError: the file is missing, cannot be loaded with ``weights_only=True``, or
            its keys or shapes do not match ``arch``.
    """
    if isinstance(arch, str):
        arch = get_arch(arch)
    path = local_checkpoint(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:
        # weights_only refuses arbitrary pickled objects (loading them would run their code);
        # on junk bytes its unpickler fails with whatever it hits (IndexError, EOFError...).
        raise RampCheckpointError(
            f"{path} cannot be loaded with torch.load(weights_only=True): "
            f"{type(err).__name__}: {err}"
        ) from err
    state = obj.get("model", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise RampCheckpointError(
            f"{path} holds no state dict: expected {{'model': {{name: tensor}}}} "
            "or {name: tensor}"
        )
    return from_upstream(state, arch)


def load_rampp(
    path: str | Path,
    arch: str | RamPlusArch = "swin_l",
    map_location: str | torch.device = "cpu",
) -> RamPlus:
    """Load an upstream-layout RAM++ checkpoint strictly, as an eval-mode model on ``map_location``.

    Raises:
        RampCheckpointError: as :func:`read_checkpoint`.
    """
    if isinstance(arch, str):
        arch = get_arch(arch)
    state = read_checkpoint(path, arch, map_location)
    # Random init on the target device is cheap next to reading the file; timm then also
    # generates its non-persistent buffers there.
    with torch.device(map_location):
        model = RamPlus(arch)
    model.load_state_dict(state, strict=True)
    return model.eval()


def local_checkpoint(path: str | Path) -> Path:
    """A local file holding the checkpoint: ``path`` itself, or a URL's cached copy.

    Raises:
        RampCheckpointError: the file or object does not exist.
    """
    text = str(path)
    if "://" not in text:
        local = Path(text)
    else:
        fs, remote = fsspec.core.url_to_fs(text)
        if not fs.isfile(remote):
            raise RampCheckpointError(f"RAM++ checkpoint not found: {text}")
        key = hashlib.sha256(f"{text}\0{fs.ukey(remote)}".encode()).hexdigest()[:16]
        local = CHECKPOINT_CACHE / f"{key}-{PurePosixPath(remote).name}"
        if not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            partial = local.with_name(f"{local.name}.{os.getpid()}.partial")
            fs.get_file(remote, str(partial))
            # Atomic: the actors of one node fetching at once never read a half-written file.
            partial.replace(local)
    if not local.is_file():
        raise RampCheckpointError(f"RAM++ checkpoint not found: {text}")
    return local


def checkpoint_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a checkpoint (local or URL), read in 1 MiB chunks (~1.3 GB)."""
    digest = hashlib.sha256()
    with open(local_checkpoint(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
