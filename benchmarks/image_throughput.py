"""Image-side throughput of the count job: full-size RAM++ images/s per GPU, side by side.

Measures, in one run (random weights; speed does not depend on them):

  1. model only: RAM++ (open set, ``mean`` mode: K concepts x 1 embedding; optionally the closed
     set, 4,585 tags x 51 descriptions) on pre-made uint8 batches already on the device,
     normalised there and run through ``RamPlusTagger.probabilities`` as the tagging actor does,
     at several batch sizes and precisions; images/s, share of the H100's arithmetic limit
     (2,400 img/s at 325 GFLOP/image, rampp-spec.md section 6), FLOPs, peak GPU memory;
  2. the CPU stage: ``decode_image`` alone on synthetic LAION-sized JPEGs (256-1024 px, quality
     90, cut from the real test photos), in 1..N processes; and two shards through
     ``read_shard_rows`` (tar + caption search + decode) on one core, with and without images;
  3. the tagging actor alone: ``ImageTagWorker`` called in-process on Arrow batches of decoded
     rows (model + Arrow-to-tensor + host/device copies + score filtering, no Ray);
  4. end to end: ``run_count`` on webdataset shards (img2dataset layout, LAION captions, the
     synthetic JPEGs) with a random-weight checkpoint saved in the upstream layout, for image
     batch sizes x precisions x decode workers (reader actors) x tagging actors per GPU.

"CPU ms/img" is this process's CPU time per image: on a CPU the compute per core (stabler than
wall time on a shared machine), on a GPU the host's cost of feeding it. "steady img/s" is the
end-to-end rate between the completions of the first quarter of the shards and of the
second-to-last shard, without the run's fixed start-up (actors, model load) and drain; "img/s"
there is images / ``count_seconds`` (all of it).

The random head is calibrated so that about ``--tags-per-image`` concepts per image score above
the 0.5 floor, as a trained RAM++ does, instead of half of all K (which would make the output
tables, not the GPU, the bottleneck).

    # GPU machine (H100/H200): swin_l, the full grid, ~20 minutes
    .venv/bin/python benchmarks/image_throughput.py --closed-set --json results.json
    # CPU only (picks --quick: arch tiny, small data, + one swin_l model-only point), ~5 minutes
    .venv/bin/python benchmarks/image_throughput.py --json results.json
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freqscan.image.preprocess import decode_image
from freqscan.image.rampp import RamPlus, create_rampp, get_arch
from freqscan.image.tagger import ImageInput

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "tests" / "data" / "photos"
CAPTIONS = ROOT / "src" / "freqscan" / "data" / "laion-sample"

# rampp-spec.md section 6: 325 GFLOP per image at 384 px (closed set); issue 3 puts the H100's
# arithmetic limit at ~2,400 of them per second (780 TFLOP/s) and the end-to-end target at half.
ARITHMETIC_LIMIT = 2400.0
E2E_TARGET = 1200.0
PAPER_CONCEPTS = 4070
JPEG_QUALITY = 90
# open_clip model config for label embeddings of the swin_l width (512) at negligible cost: a
# random one-layer text tower (the embeddings' values do not matter for speed).
BENCH_CLIP = {
    "embed_dim": 512,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
}
Row = dict[str, Any]


# ----------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """What one run measures (resolved from the flags, the device and --quick)."""

    device: torch.device
    quick: bool
    arch: str
    batch_sizes: list[int]
    e2e_batch_sizes: list[int]
    precisions: list[str]
    decode_workers: list[int]
    decode_processes: list[int]
    tag_actors_per_gpu: list[int]
    concepts: int
    closed_set: bool
    compile: bool
    shards: int
    shard_size: int
    tags_per_image: int
    min_seconds: float
    warmup: int
    swin_l_probe: bool
    skip: set[str] = field(default_factory=set)
    workdir: str | None = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def parse_args(argv: Sequence[str] | None = None) -> tuple[Settings, str | None]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = {"type": int, "nargs": "+"}
    parser.add_argument("--arch", choices=["swin_l", "tiny"], help="swin_l on GPU, tiny on CPU")
    parser.add_argument("--quick", action="store_true", help="small sizes (default on CPU)")
    parser.add_argument("--batch-sizes", **ints, help="model-only batch sizes")
    parser.add_argument("--e2e-batch-sizes", **ints, help="tag-worker and end-to-end batch sizes")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=["fp32", "tf32", "bf16", "fp16"],
        help="fp32 is the pipeline's fp32 (no TF32); tf32 is model-only, not a pipeline setting",
    )
    parser.add_argument("--decode-workers", **ints, help="reader actors in the end-to-end runs")
    parser.add_argument("--decode-processes", **ints, help="processes for decode_image alone")
    parser.add_argument("--tag-actors-per-gpu", **ints, help="tagging actors sharing one GPU")
    parser.add_argument("--concepts", type=int, default=PAPER_CONCEPTS, help="open-set K")
    parser.add_argument("--closed-set", action="store_true", help="also model-only K=4585, D=51")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (model only)")
    parser.add_argument("--shards", type=int, help="end-to-end tar shards")
    parser.add_argument("--shard-size", type=int, help="images per shard")
    parser.add_argument("--tags-per-image", type=int, default=30, help="calibrated head output")
    parser.add_argument("--min-seconds", type=float, help="timed seconds per model-only point")
    parser.add_argument(
        "--no-swin-l-probe", action="store_true", help="CPU: skip the swin_l batch-1 point"
    )
    parser.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=["model", "decode", "worker", "e2e"],
        help="sections to leave out",
    )
    parser.add_argument("--workdir", help="keep shards and checkpoint here (default: temp dir)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    quick = args.quick or not cuda
    cpus = os.cpu_count() or 1
    if cuda and not quick:
        defaults: dict[str, Any] = {
            "arch": "swin_l",
            "batch_sizes": [32, 64, 128, 256],
            "e2e_batch_sizes": [64, 256],
            "precisions": ["fp32", "bf16"],
            "decode_workers": sorted({max(1, cpus // 4), max(1, cpus // 2), max(1, cpus - 2)}),
            "decode_processes": sorted({1, 2, 4, 8, cpus} & set(range(1, cpus + 1))),
            "tag_actors_per_gpu": [1],
            "shards": 64,
            "shard_size": 250,
            "min_seconds": 3.0,
            "warmup": 3,
        }
    else:
        defaults = {
            "arch": "swin_l" if cuda else "tiny",
            "batch_sizes": [32, 64] if cuda else [16, 64],
            "e2e_batch_sizes": [32, 64] if cuda else [16, 64],
            "precisions": ["fp32", "bf16"],
            "decode_workers": [max(1, min(2, cpus - 1))],
            "decode_processes": sorted({1, min(2, cpus)}),
            "tag_actors_per_gpu": [1],
            "shards": 4,
            "shard_size": 64,
            "min_seconds": 1.0 if cuda else 1.5,
            "warmup": 2 if cuda else 1,
        }

    def pick(name: str) -> Any:
        value = getattr(args, name, None)
        return defaults[name] if value is None else value

    return Settings(
        device=torch.device("cuda" if cuda else "cpu"),
        quick=quick,
        arch=pick("arch"),
        batch_sizes=pick("batch_sizes"),
        e2e_batch_sizes=pick("e2e_batch_sizes"),
        precisions=pick("precisions"),
        decode_workers=pick("decode_workers"),
        decode_processes=pick("decode_processes"),
        tag_actors_per_gpu=pick("tag_actors_per_gpu"),
        concepts=args.concepts,
        closed_set=args.closed_set,
        compile=args.compile,
        shards=pick("shards"),
        shard_size=pick("shard_size"),
        tags_per_image=args.tags_per_image,
        min_seconds=pick("min_seconds"),
        warmup=defaults["warmup"],
        swin_l_probe=not cuda and not args.no_swin_l_probe and pick("arch") != "swin_l",
        skip=set(args.skip),
        workdir=args.workdir,
    ), args.json


def machine_info(device: torch.device) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpus=torch.cuda.device_count(),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
        )
    return info


# ----------------------------------------------------------------------------- synthetic data


def _load_sources() -> list[Any]:
    from PIL import Image

    sources = []
    for path in sorted(PHOTOS.glob("*.jpg")) + sorted(PHOTOS.glob("*.png")):
        with Image.open(path) as img:
            sources.append(img.convert("RGB"))
    return sources


_SOURCES: list[Any] = []


def synthetic_jpeg(seed: int) -> bytes:
    """A LAION-sized JPEG (longer side log-uniform in 256-1024 px, common aspect ratios, quality
    90) cut from one of the real test photos, with mild noise so it compresses like a photo."""
    from PIL import Image

    if not _SOURCES:
        _SOURCES.extend(_load_sources())
    rng = np.random.default_rng(seed)
    long_side = int(math.exp(rng.uniform(math.log(256), math.log(1024))))
    aspect = float(rng.choice([1.0, 4 / 3, 3 / 2, 16 / 9, 3 / 4, 2 / 3]))
    if aspect >= 1:
        w, h = long_side, round(long_side / aspect)
    else:
        w, h = round(long_side * aspect), long_side
    if _SOURCES:
        src = _SOURCES[int(rng.integers(len(_SOURCES)))]
        sw, sh = src.size
        scale = rng.uniform(0.5, 1.0)
        cw = max(8, min(sw, round(min(sw, sh * aspect) * scale)))
        ch = max(8, min(sh, round(cw / aspect)))
        x0, y0 = int(rng.integers(sw - cw + 1)), int(rng.integers(sh - ch + 1))
        img = src.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(img, dtype=np.float32)
    else:  # no photos (a stripped checkout): smooth random colour fields
        small = rng.uniform(0, 255, (8, 8, 3)).astype(np.uint8)
        pixels = np.asarray(
            Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), np.float32
        )
    pixels = pixels + rng.normal(0, 3.0, pixels.shape)
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def make_jpegs(count: int, seed: int = 0) -> list[bytes]:
    seeds = range(seed, seed + count)
    workers = min(os.cpu_count() or 1, max(1, count // 64))
    if workers == 1:
        return [synthetic_jpeg(s) for s in seeds]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(synthetic_jpeg, seeds, chunksize=32))


def laion_captions() -> list[str]:
    import pyarrow.parquet as pq

    files = sorted(CAPTIONS.glob("part-*.parquet"))
    texts = [c for f in files for c in pq.read_table(f, columns=["TEXT"])["TEXT"].to_pylist()]
    return [t for t in texts if t]


def write_shards(out: Path, jpegs: list[bytes], captions: list[str], shard_size: int) -> None:
    """img2dataset layout: per sample ``key.jpg``, ``key.txt`` and ``key.json``."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(jpegs), shard_size)):
        with tarfile.open(out / f"{shard:05d}.tar", "w") as tar:
            for index, jpg in enumerate(jpegs[start : start + shard_size]):
                key = f"{shard:05d}{index:04d}"
                caption = captions[(start + index) % len(captions)]
                with Image.open(io.BytesIO(jpg)) as img:
                    width, height = img.size
                meta = {
                    "url": f"https://example.com/{key}.jpg",
                    "caption": caption,
                    "key": key,
                    "status": "success",
                    "width": width,
                    "height": height,
                    "original_width": width,
                    "original_height": height,
                }
                for ext, data in (
                    ("jpg", jpg),
                    ("json", json.dumps(meta).encode()),
                    ("txt", caption.encode()),
                ):
                    member = tarfile.TarInfo(f"{key}.{ext}")
                    member.size = len(data)
                    tar.addfile(member, io.BytesIO(data))


# ----------------------------------------------------------------------------- 1. model only


@functools.cache
def flops_per_image(arch: str, tags: int, descriptions: int, batch: int) -> float:
    """FLOPs of one forward per image, counted on the meta device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    a = get_arch(arch)
    with torch.device("meta"):
        model = RamPlus(a).eval()
        if (tags, descriptions) != (a.num_tags, a.descriptions_per_tag):
            model.set_label_embeddings(torch.empty(tags, descriptions, a.embed_width))
        x = torch.empty(batch, 3, a.img_size, a.img_size)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() / batch


def rampp_tagger(arch: str, tags: int | None, device: torch.device) -> Any:
    """RamPlusTagger with random weights: open set of ``tags`` random unit-norm label embeddings
    (mean mode, D=1), or the checkpoint's closed set when ``tags`` is None."""
    from freqscan.image.factory import RamPlusTagger

    torch.manual_seed(0)
    model = create_rampp(arch)
    if tags is not None:
        labels = torch.nn.functional.normalize(torch.randn(tags, 1, model.arch.embed_width), dim=-1)
        model.set_label_embeddings(labels)
    k = model.num_tags
    ids = np.arange(k, dtype=np.int64)
    return RamPlusTagger(model, "rampp", ids, np.full(k, 0.7), {}).to(device)


def _autocast(precision: str, device: torch.device) -> torch.autocast:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def time_calls(
    fn: Callable[[], object], warmup: int, min_seconds: float, min_iters: int = 2
) -> tuple[int, float, float]:
    """(iterations, wall seconds, CPU seconds of this process) of ``fn`` after ``warmup``
    calls; ``fn`` must synchronise."""
    for _ in range(warmup):
        fn()
    iters, start, cpu = 0, time.perf_counter(), time.process_time()
    while iters < min_iters or time.perf_counter() - start < min_seconds:
        fn()
        iters += 1
    return iters, time.perf_counter() - start, time.process_time() - cpu


def model_only_point(
    tagger: Any,
    batch: int,
    precision: str,
    settings: Settings,
    compiled: bool,
    warmup: int,
    min_iters: int,
) -> Row:
    device = settings.device
    size = tagger.input.size
    gen = torch.Generator(device="cpu").manual_seed(batch)
    batches = [
        torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8, generator=gen).to(device)
        for _ in range(2)
    ]
    state = {"i": 0}

    def step() -> None:
        # What ImageTagWorker does once the pixels are on the device: normalise, forward and
        # sigmoid under autocast, copy the (B, K) probabilities back (a synchronisation).
        images = batches[state["i"] % 2]
        state["i"] += 1
        with torch.inference_mode(), _autocast(precision, device):
            tagger.probabilities(images).float().cpu()

    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    row: Row = {"batch": batch, "precision": precision, "compile": compiled}
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        iters, seconds, cpu = time_calls(step, warmup, settings.min_seconds, min_iters)
        row.update(
            iters=iters,
            seconds=seconds,
            img_per_s=iters * batch / seconds,
            cpu_ms_per_image=1000 * cpu / (iters * batch),
        )
        if device.type == "cuda":
            row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    except torch.OutOfMemoryError:
        row["error"] = "out of memory"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        batches.clear()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def model_only(settings: Settings) -> list[Row]:
    plans: list[tuple[str, int | None, list[int], list[str], int, int]] = [
        (
            settings.arch,
            settings.concepts,
            settings.batch_sizes,
            settings.precisions,
            settings.warmup,
            2,
        )
    ]
    if settings.closed_set:
        plans.append(
            (settings.arch, None, settings.batch_sizes, settings.precisions, settings.warmup, 2)
        )
    if settings.swin_l_probe:  # CPU: prove the full-size code path, ~10 s per image
        plans.append(("swin_l", settings.concepts, [1], ["fp32"], 1, 1))
    rows: list[Row] = []
    for arch, tags, batch_sizes, precisions, warmup, min_iters in plans:
        tagger = rampp_tagger(arch, tags, settings.device)
        k, d = tagger.model.num_tags, tagger.model.descriptions_per_tag
        variants = [(tagger, False)]
        if settings.compile:
            compiled = rampp_tagger(arch, tags, settings.device)
            # One static graph per batch size and precision; allow that many recompilations.
            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(torch._dynamo.config, name):
                    setattr(torch._dynamo.config, name, 64)
            compiled.model = torch.compile(compiled.model, dynamic=False)
            variants.append((compiled, True))
        for precision in precisions:
            for batch in batch_sizes:
                for model, is_compiled in variants:
                    row = {"arch": arch, "tags": k, "descriptions": d}
                    row.update(
                        model_only_point(
                            model, batch, precision, settings, is_compiled, warmup, min_iters
                        )
                    )
                    flops = flops_per_image(arch, k, d, batch)
                    row["gflop_per_image"] = flops / 1e9
                    if "img_per_s" in row:
                        row["tflop_per_s"] = row["img_per_s"] * flops / 1e12
                        row["share_of_2400"] = row["img_per_s"] / ARITHMETIC_LIMIT
                    rows.append(row)
                    print_rows([row], MODEL_COLUMNS, header=len(rows) == 1)
        del tagger, variants
        if settings.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- 2. CPU stage


def _decode_worker(
    jpegs: list[bytes], spec: ImageInput, count: int, barrier: Any, results: Any
) -> None:
    barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        pixels, reason = decode_image(jpegs[i % len(jpegs)], spec)
        assert pixels is not None, reason
    results.put((start, time.perf_counter(), time.process_time() - cpu))


def decode_scaling(jpegs: list[bytes], spec: ImageInput, processes: int, per_process: int) -> Row:
    """decode_image in ``processes`` processes started together; images/s over all of them."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [
        ctx.Process(target=_decode_worker, args=(jpegs, spec, per_process, barrier, results))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    spans = [results.get() for _ in procs]
    for p in procs:
        p.join()
    wall = max(s[1] for s in spans) - min(s[0] for s in spans)
    images = processes * per_process
    return {
        "input_px": spec.size,
        "processes": processes,
        "images": images,
        "seconds": wall,
        "img_per_s": images / wall,
        "img_per_s_per_process": images / wall / processes,
        "ms_per_image_cpu": 1000 * sum(s[2] for s in spans) / images,
    }


def decode_stage(settings: Settings, jpegs: list[bytes]) -> list[Row]:
    sizes = sorted({get_arch("swin_l").img_size, get_arch(settings.arch).img_size}, reverse=True)
    per_process = 150 if settings.quick else 600
    rows = []
    for size in sizes:
        spec = ImageInput(size=size)
        for processes in settings.decode_processes:
            rows.append(decode_scaling(jpegs, spec, processes, per_process))
            print_rows(rows[-1:], DECODE_COLUMNS, header=len(rows) == 1)
    return rows


def reader_stage(shards: list[Path], concepts_path: Path, spec: ImageInput) -> list[Row]:
    """Shards through the reader actor's code (tar, caption search, decode) on one core."""
    from freqscan.concepts import load_concepts
    from freqscan.config import SourceConfig, TextConfig
    from freqscan.counting.shard import read_shard_rows
    from freqscan.records import ShardInfo
    from freqscan.text.matcher import ConceptMatcher
    from freqscan.text.pipeline import load_pipeline
    from freqscan.text.searcher import TextSearcher

    concepts = load_concepts(str(concepts_path))
    matcher = ConceptMatcher.build(concepts, load_pipeline(None), "normalized")
    source = SourceConfig(input=tuple(str(s) for s in shards), format="webdataset")
    infos = [ShardInfo(str(s), s.stat().st_size) for s in shards]

    def read(image: ImageInput | None) -> tuple[int, float, float]:
        searcher = TextSearcher(TextConfig(), matcher)  # fresh: an empty caption cache
        samples, wall, cpu = 0, time.perf_counter(), time.process_time()
        for info in infos:
            *_, last = read_shard_rows(info, source, searcher.search_samples, image)
            samples += json.loads(last.column("outcome")[0].as_py())["samples_read"]
        return samples, time.perf_counter() - wall, time.process_time() - cpu

    read(None)  # warm-up: spaCy's first batches, the OS cache of the shards
    rows = []
    for label, image in (("tar + captions", None), ("tar + captions + decode", spec)):
        samples, wall, cpu = read(image)
        rows.append(
            {
                "stage": label,
                "input_px": spec.size if image else None,
                "samples": samples,
                "seconds": wall,
                "cpu_seconds": cpu,
                "samples_per_s_per_core": samples / cpu,
            }
        )
    return rows


# ----------------------------------------------------------------------------- e2e setup


@dataclass
class E2EData:
    root: Path
    shards: Path
    checkpoint: Path
    clip_config: Path
    concepts: Path
    cache: Path
    images: int


def write_concepts(path: Path, k: int) -> None:
    """The first K paper concepts by name (one default prompt each; label building is a one-off
    cached cost, not measured), padded with made-up names if K > 4,070."""
    from freqscan.concepts import load_concepts

    names = [c.name for c in load_concepts()][:k]
    names += [f"benchmark concept {i}" for i in range(k - len(names))]
    path.write_text(json.dumps(names))


def clip_config_for(arch: str, root: Path) -> Path:
    from freqscan.image.text_encoder import TINY_CLIP_CONFIG

    width = get_arch(arch).embed_width
    if json.loads(TINY_CLIP_CONFIG.read_text())["embed_dim"] == width:
        return TINY_CLIP_CONFIG
    path = root / f"freqscan-bench-clip-{width}.json"
    path.write_text(json.dumps({**BENCH_CLIP, "embed_dim": width}, indent=2))
    return path


def image_config(data: E2EData, arch: str, **kwargs: Any) -> Any:
    from freqscan.config import ImageConfig

    return ImageConfig(
        tagger="rampp",
        checkpoint=str(data.checkpoint),
        arch=arch,
        description_mode="mean",
        text_encoder=str(data.clip_config),
        text_encoder_pretrained="",
        embedding_cache=str(data.cache),
        **kwargs,
    )


def calibrated_checkpoint(
    data: E2EData, arch: str, jpegs: list[bytes], tags_per_image: int, device: torch.device
) -> None:
    """Save a random RAM++ whose fc bias puts ~``tags_per_image`` of the run's concepts above
    probability 0.5, in the upstream layout (closed-set label_embed kept)."""
    from freqscan.concepts import load_concepts
    from freqscan.image.factory import label_embeddings_for
    from freqscan.image.rampp_checkpoint import save_upstream_checkpoint
    from freqscan.image.tagger import normalize

    torch.manual_seed(0)
    model = create_rampp(arch)
    closed = model.label_embed.detach().clone()
    d = model.descriptions_per_tag
    concepts = load_concepts(str(data.concepts))
    # Also fills the run's label-embedding cache, so no run pays for it.
    labels = label_embeddings_for(image_config(data, arch), concepts, device)
    assert labels is not None
    model.set_label_embeddings(torch.from_numpy(labels.embeddings), torch.from_numpy(labels.mask))
    spec = ImageInput(size=model.arch.img_size)
    probe = min(len(jpegs), 64 if device.type == "cuda" or arch == "tiny" else 2)
    pixels = np.stack([decode_image(j, spec)[0] for j in jpegs[:probe]])  # type: ignore[misc]
    model.to(device)
    with torch.inference_mode():
        logits = model(normalize(torch.from_numpy(pixels).to(device), spec)).float().cpu()
    share = min(1.0, tags_per_image / logits.shape[1])
    cut = torch.quantile(logits.flatten(), 1 - share)
    with torch.no_grad():
        model.fc.bias.sub_(cut.to(model.fc.bias.device))
    model.to("cpu")
    model.set_label_embeddings(closed.view(-1, d, closed.shape[-1]))
    save_upstream_checkpoint(model, data.checkpoint)


def prepare_e2e(settings: Settings, jpegs: list[bytes], root: Path) -> E2EData:
    data = E2EData(
        root=root,
        shards=root / "shards",
        checkpoint=root / f"ram_plus_{settings.arch}_random.pth",
        clip_config=clip_config_for(settings.arch, root),
        concepts=root / f"concepts-{settings.concepts}.json",
        cache=root / "label-cache",
        images=len(jpegs),
    )
    write_concepts(data.concepts, settings.concepts)
    write_shards(data.shards, jpegs, laion_captions(), settings.shard_size)
    calibrated_checkpoint(data, settings.arch, jpegs, settings.tags_per_image, settings.device)
    return data


# ----------------------------------------------------------------------------- 3. tag worker


def sample_rows(jpegs: list[bytes], spec: ImageInput, rows: int) -> Any:
    """An Arrow batch as the reader stage hands it to the tagging stage."""
    import pyarrow as pa

    from freqscan.counting.shard import SAMPLE_ROWS

    decoded = [decode_image(j, spec)[0] for j in jpegs[: min(rows, 64)]]
    pixels = [decoded[i % len(decoded)].tobytes() for i in range(rows)]  # type: ignore[union-attr]
    return pa.Table.from_pylist(
        [
            {"shard": "bench.tar", "key": f"{i:09d}", "text_concept_ids": [], "image": p}
            for i, p in enumerate(pixels)
        ],
        schema=SAMPLE_ROWS,
    )


def arrow_to_pixels_ms(table: Any, size: int, repeats: int = 3) -> float:
    """Milliseconds per batch of the Arrow rows -> stacked uint8 array conversion, written as
    ``ImageTagWorker._probabilities`` does it (one ``as_py`` per row, then ``np.stack``)."""
    images = table.column("image")
    start = time.perf_counter()
    for _ in range(repeats):
        present = np.flatnonzero(images.is_valid().to_numpy(zero_copy_only=False))
        pixels = [images[int(i)].as_py() for i in present]
        np.stack([np.frombuffer(p, np.uint8).reshape(size, size, 3) for p in pixels])
    return 1000 * (time.perf_counter() - start) / repeats


def tag_worker_stage(
    settings: Settings,
    data: E2EData,
    jpegs: list[bytes],
    model_rows: list[Row],
    floor: float = 0.5,
) -> list[Row]:
    """ImageTagWorker in this process (no Ray): model + Arrow/host work per batch."""
    from freqscan.concepts import load_concepts
    from freqscan.image.factory import label_embeddings_for
    from freqscan.runtime.tagging import ImageTagWorker

    concepts = load_concepts(str(data.concepts))
    spec = ImageInput(size=get_arch(settings.arch).img_size)
    rows = []
    for precision in pipeline_precisions(settings):
        config = image_config(data, settings.arch, precision=precision)
        labels = label_embeddings_for(config, concepts, "cpu")
        worker = ImageTagWorker(config, concepts, labels, floor)
        for batch in settings.e2e_batch_sizes:
            table = sample_rows(jpegs, spec, batch)
            kept: list[int] = []

            def call(table: Any = table, kept: list[int] = kept, worker: Any = worker) -> None:
                out = worker(table)
                kept.append(sum(len(v) for v in out.column("image_concept_ids").to_pylist()))

            iters, seconds, cpu = time_calls(call, settings.warmup, settings.min_seconds)
            rows.append(
                {
                    "arch": settings.arch,
                    "batch": batch,
                    "precision": precision,
                    "iters": iters,
                    "seconds": seconds,
                    "img_per_s": iters * batch / seconds,
                    "cpu_ms_per_image": 1000 * cpu / (iters * batch),
                    "scores_kept_per_image": kept[-1] / batch,
                    "arrow_to_pixels_ms": arrow_to_pixels_ms(table, spec.size),
                }
            )
            base = model_rate(model_rows, settings.arch, batch, precision)
            if base:
                rows[-1]["vs_model_only"] = rows[-1]["img_per_s"] / base
            print_rows(rows[-1:], WORKER_COLUMNS, header=len(rows) == 1)
        del worker, call
        if settings.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# ----------------------------------------------------------------------------- 4. end to end


class ShardClock:
    """Progress reporter recording when each shard's counts were complete."""

    def __init__(self) -> None:
        self.done: list[tuple[float, int]] = []

    def start(self, shards: int) -> None:
        self.done.clear()

    def shard_done(self, samples_read: int) -> None:
        self.done.append((time.perf_counter(), samples_read))

    def steady_rate(self) -> float | None:
        """Samples/s between two shard completions: that of the first quarter of the shards and
        the second-to-last one. This leaves out the run's start-up (actors, model load, pipeline
        fill) and drain; since a tagging batch can straddle shards, each completion can come up
        to one batch late, which affects both ends alike."""
        if len(self.done) < 3:
            return None
        first, last = max(0, math.ceil(len(self.done) / 4) - 1), len(self.done) - 2
        if last <= first:
            return None
        t0, t1 = self.done[first][0], self.done[last][0]
        samples = sum(n for _, n in self.done[first + 1 : last + 1])
        return samples / (t1 - t0) if t1 > t0 else None


def e2e_run(
    data: E2EData,
    settings: Settings,
    out: Path,
    precision: str,
    batch: int,
    workers: int,
    actors_per_gpu: int,
    shards: list[str] | None = None,
) -> Row:
    from freqscan.config import CountConfig, RuntimeConfig, SourceConfig
    from freqscan.runtime.pipeline import run_count

    extra: dict[str, Any] = {}
    if settings.cuda:  # one GPU: the numbers are per GPU
        extra = {"workers": actors_per_gpu, "gpus_per_worker": 1 / actors_per_gpu}
    config = CountConfig(
        source=SourceConfig(input=tuple(shards or [str(data.shards)]), format="webdataset"),
        out=str(out),
        dataset_name="bench",
        concepts=str(data.concepts),
        image=image_config(data, settings.arch, batch_size=batch, precision=precision, **extra),
        runtime=RuntimeConfig(num_workers=workers),
    )
    clock = ShardClock()
    summary = run_count(config, progress=clock)
    shutil.rmtree(out, ignore_errors=True)
    if summary.failed_shards:
        raise RuntimeError(f"benchmark shards failed: {summary.failed_shards[:3]}")
    images = summary.images_decoded
    return {
        "arch": settings.arch,
        "batch": batch,
        "precision": precision,
        "decode_workers": workers,
        "tag_actors": actors_per_gpu if settings.cuda else 1,
        "images": images,
        "count_seconds": summary.count_seconds,
        "run_seconds": summary.seconds,
        "img_per_s": images / summary.count_seconds,
        "steady_img_per_s": clock.steady_rate(),
    }


def end_to_end(settings: Settings, data: E2EData, model_rows: list[Row]) -> list[Row]:
    import logging

    import ray
    import ray.data

    cpus = os.cpu_count() or 1
    for name in ("ray", "ray.data"):  # as run_count does when it starts Ray itself
        logging.getLogger(name).setLevel(logging.ERROR)
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.init(
        num_cpus=cpus,
        num_gpus=1 if settings.cuda else 0,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    rows: list[Row] = []
    try:
        if not settings.quick and pipeline_precisions(settings):
            # Pays for Ray's worker start, imports and the OS cache of shards and checkpoint.
            first = sorted(str(p) for p in data.shards.glob("*.tar"))[:2]
            e2e_run(
                data,
                settings,
                data.root / "out-warmup",
                pipeline_precisions(settings)[-1],
                settings.e2e_batch_sizes[0],
                settings.decode_workers[0],
                1,
                first,
            )
        for precision in pipeline_precisions(settings):
            for batch in settings.e2e_batch_sizes:
                for actors in settings.tag_actors_per_gpu if settings.cuda else [1]:
                    for workers in settings.decode_workers:
                        if workers + actors > cpus:
                            print(f"skip: {workers} readers + {actors} taggers > {cpus} CPUs")
                            continue
                        row = e2e_run(
                            data,
                            settings,
                            data.root / f"out-{len(rows)}",
                            precision,
                            batch,
                            workers,
                            actors,
                        )
                        base = model_rate(model_rows, settings.arch, batch, precision)
                        if base:
                            row["vs_model_only"] = row["img_per_s"] / base
                            if row["steady_img_per_s"]:
                                row["steady_vs_model_only"] = row["steady_img_per_s"] / base
                        row["vs_target_1200"] = (row["steady_img_per_s"] or 0) / E2E_TARGET
                        rows.append(row)
                        print_rows(rows[-1:], E2E_COLUMNS, header=len(rows) == 1)
    finally:
        ray.shutdown()
    return rows


def pipeline_precisions(settings: Settings) -> list[str]:
    """The precisions ImageConfig accepts (tf32 is a model-only variant)."""
    return [p for p in settings.precisions if p != "tf32"]


def model_rate(rows: list[Row], arch: str, batch: int, precision: str) -> float | None:
    for row in rows:
        if (
            row["arch"] == arch
            and row["batch"] == batch
            and row["precision"] == precision
            and not row["compile"]
            and row["descriptions"] == 1
        ):
            return row.get("img_per_s")
    return None


# ----------------------------------------------------------------------------- output

Column = tuple[str, str, str]  # key, heading, format
MODEL_COLUMNS: list[Column] = [
    ("arch", "arch", "{}"),
    ("tags", "K", "{}"),
    ("descriptions", "D", "{}"),
    ("batch", "batch", "{}"),
    ("precision", "precision", "{}"),
    ("compile", "compile", "{}"),
    ("img_per_s", "img/s", "{:.1f}"),
    ("share_of_2400", "of 2,400", "{:.1%}"),
    ("gflop_per_image", "GFLOP/img", "{:.1f}"),
    ("tflop_per_s", "TFLOP/s", "{:.2f}"),
    ("peak_mem_gib", "peak GiB", "{:.1f}"),
    ("cpu_ms_per_image", "CPU ms/img", "{:.2f}"),
    ("error", "error", "{}"),
]
DECODE_COLUMNS: list[Column] = [
    ("input_px", "input px", "{}"),
    ("processes", "processes", "{}"),
    ("images", "images", "{}"),
    ("img_per_s", "img/s", "{:.0f}"),
    ("img_per_s_per_process", "img/s/process", "{:.0f}"),
    ("ms_per_image_cpu", "CPU ms/img", "{:.2f}"),
]
READER_COLUMNS: list[Column] = [
    ("stage", "reader stage (one core)", "{}"),
    ("input_px", "input px", "{}"),
    ("samples", "samples", "{}"),
    ("cpu_seconds", "CPU s", "{:.2f}"),
    ("samples_per_s_per_core", "samples/s/core", "{:.0f}"),
]
WORKER_COLUMNS: list[Column] = [
    ("arch", "arch", "{}"),
    ("batch", "batch", "{}"),
    ("precision", "precision", "{}"),
    ("img_per_s", "img/s", "{:.1f}"),
    ("vs_model_only", "vs model", "{:.0%}"),
    ("cpu_ms_per_image", "CPU ms/img", "{:.2f}"),
    ("arrow_to_pixels_ms", "Arrow->pixels ms/batch", "{:.1f}"),
    ("scores_kept_per_image", "scores kept/img", "{:.1f}"),
]
E2E_COLUMNS: list[Column] = [
    ("arch", "arch", "{}"),
    ("batch", "batch", "{}"),
    ("precision", "precision", "{}"),
    ("decode_workers", "readers", "{}"),
    ("tag_actors", "taggers", "{}"),
    ("images", "images", "{}"),
    ("count_seconds", "count s", "{:.1f}"),
    ("img_per_s", "img/s", "{:.1f}"),
    ("steady_img_per_s", "steady img/s", "{:.1f}"),
    ("vs_model_only", "vs model", "{:.0%}"),
    ("steady_vs_model_only", "steady vs model", "{:.0%}"),
]


def print_rows(rows: Iterable[Row], columns: list[Column], header: bool = True) -> None:
    widths = [max(len(h), 9) for _, h, _ in columns]
    if header:
        print("  ".join(h.rjust(w) for (_, h, _), w in zip(columns, widths, strict=True)))
    for row in rows:
        cells = []
        for (key, _, fmt), width in zip(columns, widths, strict=True):
            value = row.get(key)
            cells.append(("-" if value is None else fmt.format(value)).rjust(width))
        print("  ".join(cells), flush=True)


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    settings, json_path = parse_args(argv)
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(settings.device),
        "device": settings.device.type,
        "settings": {
            k: sorted(v) if isinstance(v, set) else v
            for k, v in vars(settings).items()
            if k != "device"
        },
        "load_average_at_start": os.getloadavg(),
        "arithmetic_limit_img_per_s": ARITHMETIC_LIMIT,
        "e2e_target_img_per_s": E2E_TARGET,
    }
    machine = results["machine"]
    print(f"machine: {machine['cpu']}, {machine['cpus']} CPUs, torch {machine['torch']}")
    if settings.cuda:
        print(f"GPU: {machine['gpu']} ({machine['gpu_memory_gib']} GiB), CUDA {machine['cuda']}")
    else:
        # A tagging actor holds one CPU and Ray gives it OMP_NUM_THREADS=1: measure the model
        # the same way, so that model-only, tag-worker and end-to-end rates compare.
        torch.set_num_threads(1)
        print(
            "No CUDA device: running on the CPU with --quick settings (arch tiny, small data, "
            "one torch thread); these numbers prove the code paths, not GPU throughput."
        )

    swin_l_px = get_arch("swin_l").img_size
    n_images = settings.shards * settings.shard_size
    t0 = time.perf_counter()
    jpegs = make_jpegs(max(n_images, 64))
    results["jpegs"] = {
        "count": len(jpegs),
        "mean_kb": float(np.mean([len(j) for j in jpegs]) / 1024),
        "seconds_to_make": time.perf_counter() - t0,
    }
    print(f"made {len(jpegs)} JPEGs, mean {results['jpegs']['mean_kb']:.0f} kB")

    model_rows: list[Row] = []
    if "model" not in settings.skip:
        section("1. model only (uint8 batches on the device; normalise + forward + sigmoid)")
        model_rows = model_only(settings)
    results["model_only"] = model_rows

    if "decode" not in settings.skip:
        section("2. CPU stage: decode_image alone, processes started together")
        results["decode"] = decode_stage(settings, jpegs[:200])

    root = Path(settings.workdir or tempfile.mkdtemp(prefix="freqscan-image-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if {"decode", "worker", "e2e"} - settings.skip:
            data = prepare_e2e(settings, jpegs[:n_images], root)
            if "decode" not in settings.skip:
                shards = sorted(data.shards.glob("*.tar"))[:2]
                reader = reader_stage(shards, data.concepts, ImageInput(size=swin_l_px))
                print()
                print_rows(reader, READER_COLUMNS)
                results["reader"] = reader
            if "worker" not in settings.skip:
                section("3. ImageTagWorker alone, in this process (model + Arrow/host work)")
                results["tag_worker"] = tag_worker_stage(settings, data, jpegs, model_rows)
            if "e2e" not in settings.skip:
                section(
                    f"4. end to end: run_count, {settings.shards} x {settings.shard_size} images"
                )
                results["end_to_end"] = end_to_end(settings, data, model_rows)
    finally:
        if not settings.workdir:
            shutil.rmtree(root, ignore_errors=True)

    results["load_average_at_end"] = os.getloadavg()
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {json_path}")


if __name__ == "__main__":
    main()
