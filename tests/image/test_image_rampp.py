"""RAM++ port: parity with a literal reference, the upstream state-dict layout, checkpoints, dtypes.

Everything runs on the ``tiny`` arch on CPU except the key-list check, which builds the real
Swin-L model on the meta device (no memory, no init).
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from rampp_reference import (
    reference_image_embeds,
    reference_logits,
    relative_position_index,
    shifted_window_mask,
)
from torch import nn

from freqscan.image.rampp import RamPlus, create_rampp, get_arch
from freqscan.image.rampp_checkpoint import (
    REAL_CHECKPOINT_NAME,
    RampCheckpointError,
    checkpoint_sha256,
    from_upstream,
    load_rampp,
    save_upstream_checkpoint,
    to_upstream,
    upstream_state_dict,
)

TINY = get_arch("tiny")
KEYS_TSV = Path(__file__).parent / "data" / "rampp-state-dict-keys.tsv"
SWIN = dict(
    patch_size=TINY.patch_size,
    depths=TINY.depths,
    num_heads=TINY.num_heads,
    window_size=TINY.window_size,
)


def _randomize(model: RamPlus, seed: int) -> None:
    """Non-trivial weights: LayerNorms away from identity, strong position bias, a sharp softmax."""
    g = torch.Generator().manual_seed(seed)

    def noise(t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=g) * std

    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    norm_params = {id(p) for m in norms for p in (m.weight, m.bias)}
    with torch.no_grad():
        for module in norms:
            module.weight.copy_(1 + noise(module.weight, 0.1))
            module.bias.copy_(noise(module.bias, 0.05))
        for name, param in model.named_parameters():
            if id(param) in norm_params:
                continue
            if name == "label_embed":
                param.copy_(F.normalize(noise(param, 1.0), dim=-1))
            elif name == "reweight_scale":
                param.fill_(3.0)  # exp = 20: description weights far from uniform
            elif name.endswith("relative_position_bias_table"):
                param.copy_(noise(param, 0.5))
            else:
                param.copy_(noise(param, 0.08))


@pytest.fixture(scope="module")
def rampp_model() -> RamPlus:
    torch.manual_seed(0)
    model = create_rampp("tiny")
    _randomize(model, seed=1)
    return model


@pytest.fixture(scope="module")
def rampp_images() -> torch.Tensor:
    return torch.randn(
        2, 3, TINY.img_size, TINY.img_size, generator=torch.Generator().manual_seed(2)
    )


@pytest.fixture(scope="module")
def rampp_reference_embeds(rampp_model, rampp_images) -> torch.Tensor:
    """The literal Swin + image_proj, once: the open-set tests only change label_embed."""
    sd = upstream_state_dict(rampp_model)
    return torch.stack([reference_image_embeds(sd, img, **SWIN) for img in rampp_images])


def _reference(model: RamPlus, embeds: torch.Tensor, mask: torch.Tensor | None = None):
    return reference_logits(
        upstream_state_dict(model),
        embeds,
        head_heads=TINY.head_heads,
        descriptions_per_tag=model.descriptions_per_tag,
        mask=mask,
    )


def _open_set(model: RamPlus, d: int, seed: int) -> tuple[RamPlus, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    open_model = copy.deepcopy(model)
    embeddings = F.normalize(torch.randn(7, d, TINY.embed_width, generator=g), dim=-1)
    open_model.set_label_embeddings(embeddings)
    return open_model, embeddings


def test_image_embeds_match_reference(rampp_model, rampp_images, rampp_reference_embeds):
    with torch.no_grad():
        port = rampp_model.image_embeds(rampp_images)
    # 48x48 / 4 grid -> 6x6 = 36 tokens behind the pooled one.
    assert port.shape == (2, 37, TINY.embed_width)
    torch.testing.assert_close(port, rampp_reference_embeds, rtol=0, atol=1e-5)


def test_closed_set_logits_match_reference(rampp_model, rampp_images, rampp_reference_embeds):
    with torch.no_grad():
        logits = rampp_model(rampp_images)
    assert logits.shape == (2, TINY.num_tags)
    assert logits.std() > 0.1  # weights are not trivial
    torch.testing.assert_close(
        logits, _reference(rampp_model, rampp_reference_embeds), rtol=0, atol=1e-5
    )


def test_open_set_masked_reweighting_matches_reference(
    rampp_model, rampp_images, rampp_reference_embeds
):
    model, embeddings = _open_set(rampp_model, d=3, seed=3)
    # Concepts 0-2 have 1, 2 and 3 real descriptions, at varying positions.
    mask = torch.tensor(
        [[True, False, False], [False, True, True], [True, True, True]]
        + [[True, True, False]] * 2
        + [[False, False, True]] * 2
    )
    model.set_label_embeddings(embeddings, mask)
    assert (model.num_tags, model.descriptions_per_tag) == (7, 3)
    with torch.no_grad():
        logits = model(rampp_images)
    torch.testing.assert_close(
        logits, _reference(model, rampp_reference_embeds, mask), rtol=0, atol=1e-5
    )

    # A masked description gets weight exactly 0: its padding value never reaches a logit.
    changed = embeddings.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), TINY.embed_width) * 100
    model.set_label_embeddings(changed, mask)
    with torch.no_grad():
        assert torch.equal(model(rampp_images), logits)


def test_mean_mode_matches_reference(rampp_model, rampp_images, rampp_reference_embeds):
    model, _ = _open_set(rampp_model, d=1, seed=4)
    with torch.no_grad():
        logits = model(rampp_images)
    assert logits.shape == (2, 7)
    torch.testing.assert_close(logits, _reference(model, rampp_reference_embeds), rtol=0, atol=1e-5)


def test_set_label_embeddings_rejects_bad_input(rampp_model):
    model = copy.deepcopy(rampp_model)
    embeddings = torch.randn(4, 2, TINY.embed_width)
    with pytest.raises(ValueError, match="tags without any real description: \\[3\\]"):
        model.set_label_embeddings(embeddings, torch.tensor([[True, False]] * 3 + [[False, False]]))
    with pytest.raises(ValueError, match="mask must be bool"):
        model.set_label_embeddings(embeddings, torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="embeddings must be"):
        model.set_label_embeddings(torch.randn(4, 2, TINY.embed_width + 1))


def test_get_arch_lists_known_names():
    with pytest.raises(ValueError, match="known: swin_l, tiny"):
        get_arch("swin_b")


def test_swin_buffers_have_upstream_values(rampp_model):
    sd = upstream_state_dict(rampp_model)
    grids = [TINY.img_size // TINY.patch_size // 2**i for i in range(len(TINY.depths))]
    ws = TINY.window_size
    for i, grid in enumerate(grids):
        for j in range(TINY.depths[i]):
            prefix = f"visual_encoder.layers.{i}.blocks.{j}."
            index = sd[prefix + "attn.relative_position_index"]
            assert index.dtype == torch.int64
            assert torch.equal(index, relative_position_index(ws))
            if j % 2 and grid > ws:
                assert torch.equal(sd[prefix + "attn_mask"], shifted_window_mask(grid, ws, ws // 2))
            else:
                assert prefix + "attn_mask" not in sd


def test_swin_l_state_dict_matches_upstream_key_list():
    expected = {}
    for line in KEYS_TSV.read_text().splitlines():
        if not line.startswith("#"):
            key, shape, kind = line.split("\t")
            expected[key] = (shape, kind)
    assert len(expected) == 402

    with torch.device("meta"):
        model = RamPlus(get_arch("swin_l"))
    state = upstream_state_dict(model)
    params = {
        k
        for k, v in to_upstream(model.state_dict(keep_vars=True), model.arch).items()
        if isinstance(v, nn.Parameter)
    }
    got = {k: (str(list(v.shape)), "param" if k in params else "buffer") for k, v in state.items()}
    assert got == expected
    dtypes = {v.dtype for k, v in state.items() if k.endswith("relative_position_index")}
    assert dtypes == {torch.int64}
    assert {v.dtype for k, v in state.items() if k.endswith("attn_mask")} == {torch.float32}
    assert REAL_CHECKPOINT_NAME == "ram_plus_swin_large_14m.pth"


def test_downsample_moves_to_the_previous_stage_upstream(rampp_model):
    sd = upstream_state_dict(rampp_model)
    for i in range(len(TINY.depths) - 1):
        upstream = sd[f"visual_encoder.layers.{i}.downsample.reduction.weight"]
        timm_module = rampp_model.visual_encoder.layers[i + 1].downsample
        assert torch.equal(upstream, timm_module.reduction.weight)
    last = len(TINY.depths) - 1
    assert not any(k.startswith(f"visual_encoder.layers.{last}.downsample") for k in sd)
    back = from_upstream(sd, TINY)
    assert back.keys() == rampp_model.state_dict().keys()


def test_checkpoint_round_trip(rampp_model, rampp_images, tmp_path):
    path = tmp_path / "rampp.pth"
    save_upstream_checkpoint(rampp_model, path)
    loaded = load_rampp(str(path), "tiny")
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(rampp_images), rampp_model(rampp_images))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert checkpoint_sha256(str(path)) == digest


def test_a_checkpoint_url_is_fetched_once_per_version(
    rampp_model, rampp_images, tmp_path, monkeypatch
):
    import fsspec

    import freqscan.image.rampp_checkpoint as checkpoints

    monkeypatch.setattr(checkpoints, "CHECKPOINT_CACHE", tmp_path / "cache")
    local = tmp_path / "rampp.pth"
    save_upstream_checkpoint(rampp_model, local)
    url = f"memory://{tmp_path.name}/models/rampp.pth"  # an object store, in this process
    fs = fsspec.filesystem("memory")
    fs.pipe_file(url, local.read_bytes())
    with torch.no_grad():
        assert torch.equal(load_rampp(url, "tiny")(rampp_images), rampp_model(rampp_images))
    assert checkpoint_sha256(url) == checkpoint_sha256(local)
    cached = checkpoints.local_checkpoint(url)
    assert cached.parent == tmp_path / "cache" and cached.name.endswith("-rampp.pth")
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # fetched once

    fs.pipe_file(url, b"re-uploaded, not a checkpoint")  # a new version: fetched again
    with pytest.raises(RampCheckpointError, match="weights_only=True"):
        load_rampp(url, "tiny")
    assert len(list(cached.parent.iterdir())) == 2
    with pytest.raises(RampCheckpointError, match="not found"):
        load_rampp(f"memory://{tmp_path.name}/models/absent.pth", "tiny")


def test_released_checkpoint_quirks_load(rampp_model, rampp_images, tmp_path):
    """A bare state dict with logit_scale, without reweight_scale and the Swin buffers loads."""
    sd = to_upstream(rampp_model.state_dict(), TINY)
    del sd["reweight_scale"]
    sd["logit_scale"] = torch.tensor(4.6)
    path = tmp_path / "released.pth"
    torch.save(sd, path)
    loaded = load_rampp(path, TINY)
    assert loaded.reweight_scale.item() == pytest.approx(math.log(1 / 0.07))
    expected = copy.deepcopy(rampp_model)
    with torch.no_grad():
        expected.reweight_scale.fill_(math.log(1 / 0.07))
        torch.testing.assert_close(loaded(rampp_images), expected(rampp_images), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda sd: sd.update(text_decoder_bias=torch.zeros(1)),
            "unexpected keys: text_decoder_bias",
        ),
        (lambda sd: sd.pop("wordvec_proj.bias"), "missing keys: wordvec_proj.bias"),
        (lambda sd: sd.update({"fc.weight": torch.zeros(2, 64)}), "fc.weight [2, 64]"),
        (
            lambda sd: sd.update(
                {"visual_encoder.layers.3.downsample.norm.weight": torch.zeros(1)}
            ),
            "unexpected keys: visual_encoder.layers.3.downsample.norm.weight",
        ),
    ],
    ids=["unexpected", "missing", "shape", "downsample-of-last-stage"],
)
def test_bad_checkpoints_fail_naming_the_key(rampp_model, tmp_path, edit, named):
    sd = upstream_state_dict(rampp_model)
    edit(sd)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(RampCheckpointError, match=named.replace("[", "\\[")):
        load_rampp(path, "tiny")


def test_unloadable_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(RampCheckpointError, match="not found"):
        load_rampp(tmp_path / "absent.pth", "tiny")
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": {}, "config": Path("x")}, pickled)
    with pytest.raises(RampCheckpointError, match="weights_only=True"):
        load_rampp(pickled, "tiny")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RampCheckpointError, match="weights_only=True"):
        load_rampp(junk, "tiny")


def test_bf16_autocast_is_close_to_fp32(rampp_model, rampp_images):
    model, _ = _open_set(rampp_model, d=3, seed=5)
    with torch.no_grad():
        fp32 = model(rampp_images).sigmoid()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = model(rampp_images)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float().sigmoid(), fp32, rtol=0, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_model_runs(rampp_model, rampp_images, dtype):
    """model.half() as upstream supports it: the reweighting stays in the model's dtype."""
    model = copy.deepcopy(rampp_model).to(dtype)
    with torch.no_grad():
        probs = model(rampp_images.to(dtype)).float().sigmoid()
        fp32 = rampp_model(rampp_images).sigmoid()
    torch.testing.assert_close(probs, fp32, rtol=0, atol=5e-2)
