"""eval zeroshot with a tiny random open_clip model on a small labelled set made here.

The per-class accuracies of the command must equal a direct computation in this file: every
image encoded alone, every prompt encoded alone, the mean of the normalised prompt embeddings
per class, the arg-max of the cosine similarity.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile

import numpy as np
import open_clip
import pytest
import torch
from evalkit import assert_png, run_cli
from PIL import Image

from freqscan.evaluation.zeroshot import SIMPLE_TEMPLATE

ARCH = "freqscan-eval-tiny-clip"  # not the shipped tiny config: another config, another name
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
CLASSES = ("golden_retriever", "red fox", "tabby cat")
IMAGES_PER_CLASS = 4


def _image(label: int, i: int) -> bytes:
    rng = np.random.default_rng(100 * label + i)
    base = np.zeros((40, 48, 3), dtype=np.float64)
    base[..., label] = 200  # one colour channel per class
    base[:: 2 + i, :, (label + 1) % 3] = 120  # stripes that differ per image
    pixels = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


# What the tiny model is fitted to answer, per image: class 0 right 4/4, class 1 3/4, class 2
# 2/4, so the per-class accuracies differ and the predictions are not one class for everything.
FIT_LABELS = ((0, 0, 0, 0), (1, 1, 1, 0), (2, 2, 0, 1))
FIT_STEPS = 30


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A registered tiny architecture, randomly initialised (seeded) then fitted for a few steps
    to :data:`FIT_LABELS` with the simple prompt, saved as a local weights file.

    A random tiny CLIP answers one class for every image; the short fit makes the comparison
    with the direct computation tell something.
    """
    root = tmp_path_factory.mktemp("model")
    config = root / f"{ARCH}.json"
    config.write_text(json.dumps(CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=None)
    tokenizer = open_clip.get_tokenizer(ARCH)
    images = torch.stack(
        [
            preprocess(Image.open(io.BytesIO(_image(label, i))).convert("RGB"))
            for label in range(len(CLASSES))
            for i in range(IMAGES_PER_CLASS)
        ]
    )
    targets = torch.tensor([t for row in FIT_LABELS for t in row])
    texts = tokenizer([SIMPLE_TEMPLATE.replace("{c}", c.replace("_", " ")) for c in CLASSES])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(FIT_STEPS):
        logits = (
            10
            * model.encode_image(images, normalize=True)
            @ model.encode_text(texts, normalize=True).T
        )
        loss = torch.nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = root / "tiny-random.pt"
    torch.save(model.state_dict(), weights)
    return config, weights


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The same 12 images as an ImageFolder and as a webdataset tar (plus two bad samples)."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "toyset"
    images = {}
    for label, cls in enumerate(CLASSES):
        (folder / cls).mkdir(parents=True)
        for i in range(IMAGES_PER_CLASS):
            data = _image(label, i)
            (folder / cls / f"{i:02d}.png").write_bytes(data)
            images[f"{cls}/{i:02d}.png"] = (label, data)
    tars = root / "toyset-wds"
    tars.mkdir()
    with tarfile.open(tars / "00000.tar", "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for n, (_key, (label, data)) in enumerate(sorted(images.items())):
            add(f"{n:05d}.png", data)
            if n % 2:  # class name in the .json ...
                add(f"{n:05d}.json", json.dumps({"label": CLASSES[label]}).encode())
            else:  # ... or its index in a .cls
                add(f"{n:05d}.cls", str(label).encode())
        add("00100.png", b"not a png at all")
        add("00100.cls", b"0")
        add("00101.png", _image(0, 9))
        add("00101.json", b'{"caption": "no class here"}')
    classnames = root / "classnames.txt"
    classnames.write_text("\n".join(CLASSES) + "\n")
    return folder, tars, classnames, images


def direct_accuracies(weights, images, templates) -> tuple[dict[str, float], dict[str, str]]:
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(weights))
    model.eval()
    tokenizer = open_clip.get_tokenizer(ARCH)
    with torch.no_grad():
        class_embeddings = []
        for cls in CLASSES:
            text = cls.replace("_", " ")
            embs = [model.encode_text(tokenizer([t(text)]), normalize=True)[0] for t in templates]
            mean = torch.stack(embs).mean(dim=0)
            class_embeddings.append(mean / mean.norm())
        classifier = torch.stack(class_embeddings)
        correct = {cls: 0 for cls in CLASSES}
        predictions = {}
        for key, (label, data) in images.items():
            image = preprocess(Image.open(io.BytesIO(data)).convert("RGB")).unsqueeze(0)
            feature = model.encode_image(image, normalize=True)[0]
            predicted = int(torch.argmax(classifier @ feature))
            correct[CLASSES[label]] += int(predicted == label)
            predictions[key] = CLASSES[predicted]
    return {cls: 100.0 * k / IMAGES_PER_CLASS for cls, k in correct.items()}, predictions


def test_imagefolder_and_webdataset_equal_direct_computation(tmp_path, tiny_model, labelled):
    config, weights = tiny_model
    folder, tars, classnames, images = labelled
    simple = [lambda c: SIMPLE_TEMPLATE.replace("{c}", c)]
    ensemble = open_clip.OPENAI_IMAGENET_TEMPLATES
    expected = {
        "simple": direct_accuracies(weights, images, simple),
        "ensemble": direct_accuracies(weights, images, ensemble),
    }
    # The fitted model answers what it was fitted to with the simple prompt.
    assert expected["simple"][0] == {"golden_retriever": 100.0, "red fox": 75.0, "tabby cat": 50.0}
    outs = {}
    for name, inputs, extra in (
        ("folder", [folder], []),
        ("wds", [tars / "00000.tar"], ["--classnames", classnames, "--dataset-name", "toyset"]),
    ):
        out = tmp_path / name
        result = run_cli(
            "eval",
            "zeroshot",
            *inputs,
            "--model",
            ARCH,
            "--pretrained",
            weights,
            "--model-config",
            config,
            "--prompt",
            "simple",
            "--prompt",
            "ensemble",
            "--batch-size",
            "5",
            "--device",
            "cpu",
            *extra,
            "--out",
            out,
        )
        assert "12 images, 3 classes" in result.output
        outs[name] = out
    key = f"backbone{ARCH}_pretrainedtiny-random"
    for prompt, (want, want_predictions) in expected.items():
        for name, out in outs.items():
            data = json.loads((out / f"toyset_{prompt}_results.json").read_text())
            got = data[key]["classwise"]
            assert got == pytest.approx(want, abs=1e-9), (name, prompt)
            assert data[key]["full"] == pytest.approx(sum(want.values()) / len(want))
        # Per image, too (the ImageFolder keys are the direct computation's keys).
        with open(outs["folder"] / "zeroshot_toyset_predictions.csv", newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if r["prompt"] == prompt]
        assert {r["key"]: r["prediction"] for r in rows} == want_predictions
    # The webdataset's two bad samples are counted, not fatal.
    summary = json.loads((outs["wds"] / "zeroshot_toyset.json").read_text())
    assert summary["skipped"] == {"undecodable_image": 1, "no_class": 1}
    assert summary["images"] == 12 and summary["device"] == "cpu"
    per_class = (outs["folder"] / "zeroshot_toyset_per_class.csv").read_text().splitlines()
    assert per_class[0] == "model,dataset,prompt,concept,correct,images,accuracy"
    assert len(per_class) == 1 + 2 * len(CLASSES)
    predictions = (outs["folder"] / "zeroshot_toyset_predictions.csv").read_text().splitlines()
    assert len(predictions) == 1 + 2 * 12
    assert_png(outs["folder"] / "toyset_simple_accuracy.png", (640, 480))


def test_zeroshot_output_feeds_loglinear(tmp_path, tiny_model, labelled):
    config, weights = tiny_model
    folder, *_ = labelled
    zs_out = tmp_path / "zs"
    run_cli(
        "eval",
        "zeroshot",
        folder,
        "-m",
        ARCH,
        "--pretrained",
        weights,
        "--model-config",
        config,
        "--prompt",
        "simple",
        "--out",
        zs_out,
    )
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps({"golden retriever": 0, "red fox": 40, "tabby cat": 2000}))
    ll_out = tmp_path / "ll"
    run_cli("eval", "loglinear", "-c", counts, "-p", zs_out, "-t", "text", "--out", ll_out)
    data = json.loads((ll_out / "loglinear.json").read_text())
    (series,) = data["series"]
    assert series["prompt"] == "simple" and series["datasets"] == ["toyset"]
    assert series["pooled"]["binned"]["n_points"] == 3  # golden_retriever matched its spaces


def test_zeroshot_user_errors(tmp_path, tiny_model, labelled):
    folder, *_ = labelled
    result = run_cli("eval", "zeroshot", folder, "-m", "no-such-arch", code=2)
    assert "not an open_clip architecture" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("eval", "zeroshot", empty, "-m", ARCH, code=2)
    assert "no class sub-directories" in result.output
