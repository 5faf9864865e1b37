"""``freqscan eval zeroshot``: per-class zero-shot accuracy of an open_clip model.

Images come from an ImageFolder directory (``ROOT/<class>/<image>``, classes sorted by name as in
torchvision) or from webdataset tars (``<key>.jpg|png|webp`` with the class in ``<key>.cls`` or
in a field of ``<key>.json``). Each class gets a zero-shot classifier from prompt templates: the
paper's prompt modes are ``simple`` (one template, ``"a photo of a {c}."``) and ``ensemble``
(open_clip's 80 OpenAI ImageNet templates); a text file of templates is a third mode. Images are
encoded once, in batches, on the GPU when there is one, and scored against every mode.

The output is the paper's result format (``<dataset>_<prompt>_results.json``: ``{model: {"full":
accuracy, "classwise": {class: accuracy}}}``, accuracies in percent), so it feeds
``freqscan eval loglinear --performance`` directly; a CSV per class and one per image come with it.
Unreadable images and samples without a class are counted and reported, never fatal. Template and
class name files are UTF-8; a byte-order mark is dropped (``utf-8-sig``).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from freqscan.evaluation._io import write_csv, write_json
from freqscan.evaluation.sources import EvalInputError

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp")
# Fields of a webdataset sample's .json tried in order for its class, unless one is named.
CLASS_FIELDS = ("label", "class", "cls", "classname", "class_name")
SIMPLE_TEMPLATE = "a photo of a {c}."
PROMPT_MODES = ("simple", "ensemble")
# Images per forward pass; 64 fits a ViT-L/14 in fp32 on a 16 GB GPU and keeps CPU runs moving.
DEFAULT_BATCH_SIZE = 64
# Classes per text forward pass when building the classifier (x templates per class).
CLASSES_PER_TEXT_BATCH = 10


def templates_for(mode: str) -> list[Callable[[str], str]]:
    """The templates of a prompt mode: ``simple``, ``ensemble``, or a file of templates.

    A template file has one template per line, with ``{c}`` (or ``{}``) where the class goes.
    """
    if mode == "simple":
        return [_template(SIMPLE_TEMPLATE)]
    if mode == "ensemble":
        from open_clip import OPENAI_IMAGENET_TEMPLATES

        return list(OPENAI_IMAGENET_TEMPLATES)
    path = Path(mode)
    if not path.is_file():
        raise EvalInputError(
            f"prompt mode {mode!r}: not one of {', '.join(PROMPT_MODES)} nor a template file"
        )
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    templates = [line for line in lines if line and not line.startswith("#")]
    bad = [t for t in templates if "{c}" not in t and "{}" not in t]
    if not templates or bad:
        raise EvalInputError(f"{path}: every template needs {{c}} where the class name goes")
    return [_template(t) for t in templates]


def _template(text: str) -> Callable[[str], str]:
    def fill(c: str) -> str:
        return text.replace("{c}", c).replace("{}", c)

    return fill


def prompt_name(mode: str) -> str:
    return mode if mode in PROMPT_MODES else Path(mode).stem


def class_text(name: str) -> str:
    """The words of a class name in a prompt: ``great_white_shark`` -> ``great white shark``."""
    return name.replace("_", " ").strip()


# ----------------------------------------------------------------------------- the images


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled image, still encoded.

    Args:
        key: Path in the ImageFolder or ``<tar>/<key>``.
        label: Class index into the set's class names.
        data: A callable returning the image bytes.
    """

    key: str
    label: int
    data: Callable[[], bytes]


@dataclass(slots=True)
class LabelledSet:
    """Class names, and the samples found (with the reasons others were skipped)."""

    name: str
    classnames: list[str]
    samples: list[Sample]
    skipped: Counter = field(default_factory=Counter)


def read_classnames(path: str) -> list[str]:
    """Class names from a text file (one per line) or a JSON list."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if path.endswith(".json"):
        data = json.loads(text)
        if not isinstance(data, list):
            raise EvalInputError(f"{path}: expected a JSON list of class names")
        return [str(x) for x in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def image_folder(root: str, name: str | None = None) -> LabelledSet:
    """An ImageFolder: one sub-directory per class, classes sorted by name."""
    base = Path(root)
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise EvalInputError(f"{root}: no class sub-directories (expected ROOT/<class>/<image>)")
    samples: list[Sample] = []
    skipped: Counter = Counter()
    for label, cls in enumerate(classes):
        for path in sorted((base / cls).rglob("*")):
            if not path.is_file():
                continue
            if path.suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS:
                skipped["not_an_image_file"] += 1
                continue
            samples.append(Sample(f"{cls}/{path.relative_to(base / cls)}", label, path.read_bytes))
    return LabelledSet(name or base.name, classes, samples, skipped)


def _tar_groups(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Samples of a webdataset tar: members grouped by key (name up to the first dot)."""
    key: str | None = None
    group: dict[str, bytes] = {}
    with tarfile.open(path, "r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            if base.startswith(".") or "." not in base:
                continue
            dirname = os.path.dirname(member.name)
            stem, ext = base.split(".", 1)
            this = f"{dirname}/{stem}" if dirname else stem
            if this != key and key is not None:
                yield key, group
                group = {}
            key = this
            handle = tar.extractfile(member)
            group[ext.lower()] = handle.read() if handle else b""
    if key is not None:
        yield key, group


def webdataset(
    tars: Sequence[str],
    classnames: Sequence[str] | None = None,
    class_field: str | None = None,
    name: str | None = None,
) -> LabelledSet:
    """Labelled images from webdataset tars.

    Args:
        tars: Tar files.
        classnames: Class names; an integer class is an index into them. Without them, string
            classes are sorted to make the class list, and integer classes are their own names.
        class_field: Field of ``<key>.json`` holding the class (default: the first of
            :data:`CLASS_FIELDS` present); ``<key>.cls`` is used when there is one.
        name: Dataset name (default: the first tar's directory).
    """
    raw: list[tuple[str, Any, bytes]] = []
    skipped: Counter = Counter()
    for tar in tars:
        try:
            for key, parts in _tar_groups(tar):
                image = next((parts[e] for e in IMAGE_EXTENSIONS if e in parts), None)
                if image is None:
                    skipped["no_image"] += 1
                    continue
                label = _sample_class(parts, class_field)
                if label is None:
                    skipped["no_class"] += 1
                    continue
                raw.append((f"{Path(tar).name}/{key}", label, image))
        except (tarfile.TarError, OSError) as exc:
            skipped[f"unreadable_tar: {type(exc).__name__}"] += 1
    names = list(classnames) if classnames else None
    if names is None:
        strings = sorted({c for _, c, _ in raw if isinstance(c, str)})
        ints = sorted({c for _, c, _ in raw if isinstance(c, int)})
        names = strings + [str(i) for i in ints if str(i) not in strings]
    index = {n: i for i, n in enumerate(names)}
    samples = []
    for key, label, image in raw:
        if isinstance(label, int) and classnames:
            idx = label if 0 <= label < len(names) else None
        else:
            idx = index.get(str(label))
        if idx is None:
            skipped["class_not_in_classnames"] += 1
            continue
        samples.append(Sample(key, idx, lambda image=image: image))
    default = Path(tars[0]).parent.name if tars else "webdataset"
    return LabelledSet(name or default, names, samples, skipped)


def _sample_class(parts: dict[str, bytes], class_field: str | None) -> Any:
    if "cls" in parts and class_field is None:
        text = parts["cls"].decode("utf-8-sig", "replace").strip()
        return int(text) if text.lstrip("-").isdigit() else (text or None)
    if "json" not in parts:
        return None
    try:
        meta = json.loads(parts["json"])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict):
        return None
    fields = (class_field,) if class_field else CLASS_FIELDS
    for f in fields:
        value = meta.get(f)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int | str):
            return value
    return None


def load_labelled_set(
    inputs: Sequence[str],
    classnames: Sequence[str] | None = None,
    class_field: str | None = None,
    name: str | None = None,
) -> LabelledSet:
    """An ImageFolder directory, or webdataset tars (files, directories of them, or globs)."""
    import glob

    if len(inputs) == 1 and os.path.isdir(inputs[0]):
        tars = sorted(glob.glob(os.path.join(inputs[0], "*.tar")))
        if not tars:
            found = image_folder(inputs[0], name)
            if classnames:
                found = _rename_classes(found, classnames)
            return found
        inputs = tars
    tars = []
    for pattern in inputs:
        matched = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        for path in matched:
            if os.path.isdir(path):
                tars += sorted(glob.glob(os.path.join(path, "*.tar")))
            elif os.path.isfile(path):
                tars.append(path)
    if not tars:
        raise EvalInputError(f"{' '.join(inputs)}: no ImageFolder directory and no .tar files")
    return webdataset(tars, classnames, class_field, name)


def _rename_classes(found: LabelledSet, classnames: Sequence[str]) -> LabelledSet:
    """ImageFolder directories named by index or by a mapping given in ``classnames``."""
    if len(classnames) != len(found.classnames):
        raise EvalInputError(
            f"{len(classnames)} class names given for {len(found.classnames)} class directories"
        )
    found.classnames = list(classnames)
    return found


# ---------------------------------------------------------------------------- the model


@dataclass(frozen=True, slots=True)
class ZeroShotModel:
    """An open_clip model with its preprocessing and tokenizer.

    Args:
        name: Architecture (``ViT-B-32``, ``RN50``, or one added with ``add_model_config``).
        pretrained: Tag (``openai``, ``laion400m_e32``...), a local checkpoint path, or ``None``
            for random weights.
        key: Model key of the result files: ``backbone<name>_pretrained<tag or file stem>``,
            the paper's format.
    """

    name: str
    pretrained: str | None
    key: str
    model: Any
    preprocess: Any
    tokenizer: Any
    device: str


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(
    name: str,
    pretrained: str | None = None,
    *,
    device: str | None = None,
    precision: str = "fp32",
    model_config: str | None = None,
) -> ZeroShotModel:
    """Build an open_clip model and its eval transform.

    Args:
        name: open_clip architecture name.
        pretrained: Pretrained tag, local weights file, or ``None`` (random weights).
        device: ``cuda``, ``cpu``... (default: ``cuda`` when available).
        precision: open_clip precision (``fp32``, ``fp16``, ``bf16``...).
        model_config: A JSON architecture config to register first (its file name, without
            ``.json``, is the architecture name).
    """
    import open_clip

    if model_config:
        if not Path(model_config).is_file():
            raise EvalInputError(f"--model-config {model_config}: no such file")
        open_clip.add_model_config(model_config)
    if name not in open_clip.list_models():
        raise EvalInputError(
            f"model {name!r} is not an open_clip architecture; pass --model-config for a custom "
            f"one (known: {', '.join(open_clip.list_models()[:8])}, ...)"
        )
    device = device or default_device()
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained or None, device=device, precision=precision
        )
    except RuntimeError as exc:
        raise EvalInputError(f"model {name!r} with weights {pretrained!r}: {exc}") from exc
    model.eval()
    if pretrained and os.path.isfile(pretrained):
        tag = Path(pretrained).stem
    else:
        tag = pretrained or "random"
    return ZeroShotModel(
        name=name,
        pretrained=pretrained,
        key=f"backbone{name}_pretrained{tag}",
        model=model,
        preprocess=preprocess,
        tokenizer=open_clip.get_tokenizer(name),
        device=device,
    )


# ----------------------------------------------------------------------- the evaluation


@dataclass(frozen=True, slots=True)
class PromptResult:
    """Accuracy of one prompt mode.

    Args:
        prompt: Mode name.
        templates: Number of templates.
        predictions: Predicted class index per evaluated image.
        per_class: Class -> (correct, images).
    """

    prompt: str
    templates: int
    predictions: tuple[int, ...]
    per_class: dict[str, tuple[int, int]]

    @property
    def accuracy(self) -> dict[str, float]:
        """Class -> accuracy in percent (classes with at least one image)."""
        return {c: 100.0 * k / n for c, (k, n) in self.per_class.items() if n}

    @property
    def overall(self) -> float:
        total = sum(n for _, n in self.per_class.values())
        return 100.0 * sum(k for k, _ in self.per_class.values()) / total if total else 0.0


@dataclass(frozen=True, slots=True)
class ZeroShotResult:
    """A zero-shot evaluation of one model on one labelled set, for one or more prompt modes."""

    model_key: str
    model_name: str
    pretrained: str | None
    device: str
    dataset: str
    classnames: tuple[str, ...]
    keys: tuple[str, ...]
    labels: tuple[int, ...]
    prompts: tuple[PromptResult, ...]
    skipped: dict[str, int]
    seconds: float


def encode_images(zs: ZeroShotModel, samples: Sequence[Sample], batch_size: int, skipped: Counter):
    """Normalised image features of the decodable samples, and which samples they are."""
    import torch
    from PIL import Image, UnidentifiedImageError

    features, kept = [], []
    batch, batch_idx = [], []

    def flush() -> None:
        if not batch:
            return
        with torch.no_grad():
            images = torch.stack(batch).to(zs.device)
            feats = zs.model.encode_image(images, normalize=True)
        features.append(feats.float().cpu())
        kept.extend(batch_idx)
        batch.clear()
        batch_idx.clear()

    for i, sample in enumerate(samples):
        try:
            with Image.open(io.BytesIO(sample.data())) as img:
                tensor = zs.preprocess(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            skipped["undecodable_image"] += 1
            continue
        batch.append(tensor)
        batch_idx.append(i)
        if len(batch) >= batch_size:
            flush()
    flush()
    if not features:
        raise EvalInputError("no image could be decoded")
    return torch.cat(features), kept


def class_weights(zs: ZeroShotModel, classnames: Sequence[str], templates) -> Any:
    """``[dim, classes]`` zero-shot classifier: per class, the normalised mean of the normalised
    text embeddings of its prompts (open_clip's ``build_zero_shot_classifier``)."""
    import open_clip

    return (
        open_clip.build_zero_shot_classifier(
            zs.model,
            zs.tokenizer,
            [class_text(c) for c in classnames],
            templates,
            num_classes_per_batch=CLASSES_PER_TEXT_BATCH,
            device=zs.device,
        )
        .float()
        .cpu()
    )


def zero_shot(
    zs: ZeroShotModel,
    data: LabelledSet,
    prompt_modes: Sequence[str] = ("simple",),
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> ZeroShotResult:
    """Per-class accuracy of ``zs`` on ``data`` for each prompt mode."""
    if not data.samples:
        raise EvalInputError(f"{data.name}: no labelled images")
    start = time.perf_counter()
    skipped = Counter(data.skipped)
    features, kept = encode_images(zs, data.samples, batch_size, skipped)
    labels = [data.samples[i].label for i in kept]
    results = []
    for mode in prompt_modes:
        templates = templates_for(mode)
        weights = class_weights(zs, data.classnames, templates)
        predictions = (features @ weights).argmax(dim=1).tolist()
        per_class = {c: [0, 0] for c in data.classnames}
        for label, pred in zip(labels, predictions, strict=True):
            entry = per_class[data.classnames[label]]
            entry[1] += 1
            entry[0] += int(pred == label)
        results.append(
            PromptResult(
                prompt=prompt_name(mode),
                templates=len(templates),
                predictions=tuple(predictions),
                per_class={c: (k, n) for c, (k, n) in per_class.items()},
            )
        )
    return ZeroShotResult(
        model_key=zs.key,
        model_name=zs.name,
        pretrained=zs.pretrained,
        device=zs.device,
        dataset=data.name,
        classnames=tuple(data.classnames),
        keys=tuple(data.samples[i].key for i in kept),
        labels=tuple(labels),
        prompts=tuple(results),
        skipped=dict(skipped),
        seconds=time.perf_counter() - start,
    )


def write_outputs(result: ZeroShotResult, out: str | Path) -> dict[str, Path]:
    """Write, per prompt mode, ``<dataset>_<prompt>_results.json`` (the paper's format; other
    models already in the file are kept) and ``<dataset>_<prompt>_accuracy.png``, plus
    ``zeroshot_<dataset>_per_class.csv``, ``zeroshot_<dataset>_predictions.csv`` and
    ``zeroshot_<dataset>.json`` (the run's summary)."""
    from freqscan.evaluation import plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for pr in result.prompts:
        path = out / f"{result.dataset}_{pr.prompt}_results.json"
        existing: dict = {}
        if path.is_file():
            try:
                existing = json.loads(path.read_text(encoding="utf-8-sig"))
            except json.JSONDecodeError:
                existing = {}
        existing[result.model_key] = {"full": pr.overall, "classwise": pr.accuracy}
        paths[f"results_{pr.prompt}"] = write_json(path, existing)
        acc = pr.accuracy
        fig = plots.accuracy_figure(
            list(acc),
            list(acc.values()),
            f"{result.model_name}, {result.dataset}, {pr.prompt}: {pr.overall:.1f}%",
        )
        paths[f"plot_{pr.prompt}"] = plots.save(
            fig, out / f"{result.dataset}_{pr.prompt}_accuracy.png"
        )
    paths["per_class"] = write_csv(
        out / f"zeroshot_{result.dataset}_per_class.csv",
        ("model", "dataset", "prompt", "concept", "correct", "images", "accuracy"),
        (
            (result.model_key, result.dataset, pr.prompt, c, k, n, 100.0 * k / n if n else None)
            for pr in result.prompts
            for c, (k, n) in pr.per_class.items()
        ),
    )
    paths["predictions"] = write_csv(
        out / f"zeroshot_{result.dataset}_predictions.csv",
        ("model", "prompt", "key", "label", "prediction"),
        (
            (result.model_key, pr.prompt, key, result.classnames[y], result.classnames[p])
            for pr in result.prompts
            for key, y, p in zip(result.keys, result.labels, pr.predictions, strict=True)
        ),
    )
    paths["summary"] = write_json(
        out / f"zeroshot_{result.dataset}.json",
        {
            "model": result.model_key,
            "architecture": result.model_name,
            "pretrained": result.pretrained,
            "device": result.device,
            "dataset": result.dataset,
            "classes": len(result.classnames),
            "images": len(result.keys),
            "skipped": result.skipped,
            "seconds": result.seconds,
            "prompts": {
                pr.prompt: {"templates": pr.templates, "accuracy": pr.overall}
                for pr in result.prompts
            },
        },
    )
    return paths
