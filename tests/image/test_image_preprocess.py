"""decode_image on real photos, and the webdataset reader handing over image bytes.

Expected pixels come from PIL and open_clip themselves, on the fully decoded image; the
comparisons are restricted to images that are not 2x larger than the target, where no JPEG draft
(reduced-scale decoding) is used.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
from PIL import Image
from shardkit import write_webdataset_shard

from freqscan.config import SourceConfig
from freqscan.image.preprocess import decode_image
from freqscan.image.tagger import ImageInput
from freqscan.records import IMAGE_TOO_LARGE, IMAGE_TRUNCATED, IMAGE_UNDECODABLE, ShardInfo
from freqscan.sources.webdataset import read_webdataset

PHOTOS = sorted((Path(__file__).parents[1] / "data" / "photos").glob("*.[jp][pn]g"))
JPEGS = [p for p in PHOTOS if p.suffix == ".jpg"]
PNG = next(p for p in PHOTOS if p.suffix == ".png")
RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def test_there_are_real_photos_of_both_formats():
    assert len(JPEGS) >= 5 and PNG.exists()


@pytest.mark.parametrize("resize", ["squash", "shorter_side_crop"])
@pytest.mark.parametrize("size", [32, 192, 384])
def test_every_photo_decodes_to_size_by_size_rgb_uint8(resize, size):
    spec = ImageInput(size, resize=resize)
    for path in PHOTOS:
        pixels, reason = decode_image(path.read_bytes(), spec)
        assert reason is None, path.name
        assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8, path.name
        assert pixels.std() > 5  # a real picture, not a blank


def _full(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


@pytest.mark.parametrize("resample", ["bilinear", "bicubic"])
@pytest.mark.parametrize("size", [192, 384])
def test_squash_equals_pils_resize_of_the_full_image_without_draft(resample, size):
    spec = ImageInput(size, resize="squash", resample=resample)
    compared = 0
    for path in PHOTOS:
        full = _full(path)
        if min(full.width // size, full.height // size) >= 2:
            continue  # JPEG draft would decode at reduced scale
        expected = np.asarray(full.resize((size, size), RESAMPLE[resample]))
        pixels, _ = decode_image(path.read_bytes(), spec)
        diff = np.abs(pixels.astype(int) - expected.astype(int))
        assert diff.max() <= 1, path.name
        compared += 1
    assert compared >= 5


def test_squash_of_large_jpegs_stays_close_to_the_full_resize():
    """With draft the pixels differ a little from a full decode; the picture stays the same."""
    spec = ImageInput(64)
    for path in JPEGS:
        full = _full(path)
        expected = np.asarray(full.resize((64, 64), Image.Resampling.BILINEAR), dtype=float)
        pixels, _ = decode_image(path.read_bytes(), spec)
        corr = np.corrcoef(pixels.astype(float).ravel(), expected.ravel())[0, 1]
        assert corr > 0.95, path.name


def test_shorter_side_crop_keeps_the_aspect_ratio_and_the_centre():
    spec = ImageInput(64, resize="shorter_side_crop")
    # A synthetic 200x100 image: left quarter red, centre green, right quarter blue.
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :50, 0] = 255
    img[:, 50:150, 1] = 255
    img[:, 150:, 2] = 255
    data = io.BytesIO()
    Image.fromarray(img).save(data, "PNG")
    pixels, reason = decode_image(data.getvalue(), spec)
    assert reason is None and pixels.shape == (64, 64, 3)
    # 200x100 -> 128x64, centre crop = columns 32..96 of 128 = the green middle.
    assert (pixels[:, 4:-4, 1] == 255).all() and (pixels[:, 4:-4, [0, 2]] == 0).all()
    squash, _ = decode_image(data.getvalue(), ImageInput(64))
    assert (squash[:, :10, 0] == 255).all() and (squash[:, -10:, 2] == 255).all()


@pytest.mark.parametrize("size", [224, 384])
def test_shorter_side_crop_equals_open_clips_own_transform_without_draft(size):
    """ImageInput(resize="shorter_side_crop") stands for open_clip's ``Resize(size)`` +
    ``CenterCrop(size)`` (freqscan.image.openclip_tagger: "equivalent to open_clip's
    transform"). Without JPEG draft the pixels should be the same."""
    transform = open_clip.image_transform(
        size, is_train=False, resize_mode="shortest", interpolation="bicubic"
    )
    resize_and_crop = transform.transforms[:-2]  # before ToTensor and Normalize
    spec = ImageInput(size, resize="shorter_side_crop", resample="bicubic")
    mismatched = []
    compared = 0
    for path in PHOTOS:
        full = _full(path)
        if min(full.size) >= 2 * size:
            continue  # JPEG draft would decode at reduced scale
        expected = full
        for step in resize_and_crop:
            expected = step(expected)
        pixels, _ = decode_image(path.read_bytes(), spec)
        if np.abs(pixels.astype(int) - np.asarray(expected).astype(int)).max() > 1:
            mismatched.append(f"{path.name} {full.size}")
        compared += 1
    assert compared >= 5
    assert mismatched == []


def test_corrupt_bytes_are_undecodable():
    spec = ImageInput(64)
    for data in (
        b"\x00not an image at all" * 10,
        b"\xff\xd8\xff\xe0placeholder\xff\xd9",  # a JPEG signature and nothing else
        b"GIF89a" + b"\x00" * 3,
        np.random.default_rng(0).bytes(2000),
    ):
        assert decode_image(data, spec) == (None, IMAGE_UNDECODABLE)


def test_an_empty_file_is_undecodable():
    assert decode_image(b"", ImageInput(64)) == (None, IMAGE_UNDECODABLE)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_a_cut_off_jpeg_is_truncated(fraction):
    spec = ImageInput(64)
    for path in JPEGS:
        data = path.read_bytes()
        if len(data) * fraction < 2048:
            continue  # cut inside the header: PIL cannot even identify it
        assert decode_image(data[: int(len(data) * fraction)], spec) == (None, IMAGE_TRUNCATED)


def test_a_jpeg_cut_inside_its_header_is_undecodable():
    data = JPEGS[0].read_bytes()
    assert decode_image(data[:20], ImageInput(64)) == (None, IMAGE_UNDECODABLE)


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_a_png_cut_short_is_truncated(fraction):
    data = PNG.read_bytes()
    pixels, reason = decode_image(data[: int(len(data) * fraction)], ImageInput(64))
    assert pixels is None and reason == IMAGE_TRUNCATED


def test_a_decompression_bomb_is_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # errors above 2x: 20,000 pixels
    assert decode_image(PNG.read_bytes(), ImageInput(64)) == (None, IMAGE_TOO_LARGE)
    small = io.BytesIO()
    Image.new("RGB", (100, 100), (1, 2, 3)).save(small, "PNG")  # 10,000: a warning only
    pixels, reason = decode_image(small.getvalue(), ImageInput(64))
    assert reason is None and (pixels == (1, 2, 3)).all()


@pytest.mark.parametrize(
    ("mode", "fmt", "color", "rgb"),
    [
        ("L", "JPEG", 77, (77, 77, 77)),
        ("RGBA", "PNG", (10, 20, 30, 5), (10, 20, 30)),
        ("P", "PNG", 3, None),
        ("RGB", "WEBP", (200, 100, 50), None),
    ],
)
def test_other_modes_and_formats_become_rgb(mode, fmt, color, rgb):
    data = io.BytesIO()
    Image.new(mode, (50, 40), color).save(
        data, fmt, **({"lossless": True} if fmt == "WEBP" else {})
    )
    pixels, reason = decode_image(data.getvalue(), ImageInput(32))
    assert reason is None and pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    if rgb is not None:
        assert (np.abs(pixels.astype(int) - rgb) <= 1).all()
    if fmt == "WEBP":
        assert (pixels == (200, 100, 50)).all()


# --- the webdataset reader ---------------------------------------------------------------


def _webp() -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (20, 10), (0, 128, 255)).save(data, "WEBP")
    return data.getvalue()


@pytest.fixture
def image_shard(tmp_path):
    jpg, png, webp = JPEGS[0].read_bytes(), PNG.read_bytes(), _webp()
    samples = [
        {"key": "000000000", "txt": "a jpg", "jpg": jpg, "json": {"url": "http://x/0"}},
        {"key": "000000001", "txt": "a png", "png": png},
        {"key": "000000002", "txt": "a webp", "webp": webp},
        {"key": "000000003", "txt": "no image", "json": {"url": "http://x/3"}},
        {"key": "000000004", "txt": "a mask only", "seg.png": png},
        {"key": "000000005", "txt": "upper case", "JPG": jpg},
        {"key": "000000006", "txt": "a jpeg", "jpeg": jpg},
    ]
    path = tmp_path / "00000.tar"
    write_webdataset_shard(path, samples)
    expected = [jpg, png, webp, None, None, jpg, jpg]
    return ShardInfo(str(path), os.path.getsize(path)), expected


CONFIG = SourceConfig(input=("unused",), format="webdataset")


def test_read_webdataset_with_images_returns_the_image_bytes(image_shard):
    shard, expected = image_shard
    samples = list(read_webdataset(shard, CONFIG, images=True))
    assert [s.key for s in samples] == [f"{i:09d}" for i in range(7)]
    assert [s.image for s in samples] == expected
    assert samples[0].url == "http://x/0" and samples[0].caption == "a jpg"
    assert samples[3].caption == "no image" and samples[3].skip is None
    # What came back decodes.
    for s in samples:
        if s.image is not None:
            assert decode_image(s.image, ImageInput(32))[1] is None


def test_read_webdataset_without_images_does_not_read_image_bytes(image_shard, monkeypatch):
    shard, _ = image_shard
    read = []
    real = tarfile.TarFile.extractfile

    def spy(self, member):
        read.append(member.name if isinstance(member, tarfile.TarInfo) else member)
        return real(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", spy)
    samples = list(read_webdataset(shard, CONFIG))
    assert all(s.image is None for s in samples)
    assert [s.caption for s in samples][:3] == ["a jpg", "a png", "a webp"]
    assert read and all(name.endswith((".txt", ".json")) for name in read), read
    read.clear()
    list(read_webdataset(shard, CONFIG, images=True))
    assert any(name.endswith(".jpg") for name in read)
    assert not any(name.endswith(".seg.png") for name in read)
