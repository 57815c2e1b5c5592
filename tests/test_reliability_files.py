"""Real-world image files decode right and cheaply, and a killed extraction resumes (issue 25)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from treeseek.data.decoding import UnreadableImage, load_rgb
from treeseek.embed.extraction import extract_features

import reliability_workers as workers


# ------------------------------------------------------------------------------------------------ image files
@pytest.fixture(scope="module")
def photo(caltech_subset) -> Image.Image:
    """A real photo, wider than it is tall."""
    return Image.open(sorted((caltech_subset / "airplanes").iterdir())[0]).convert("RGB")


def test_exif_orientation_is_applied_when_decoding(photo, tmp_path):
    upright = tmp_path / "upright.png"
    photo.save(upright)
    stored_sideways = photo.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways stores
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways = tmp_path / "sideways.png"
    stored_sideways.save(sideways, exif=exif)
    assert Image.open(sideways).size == (photo.height, photo.width)
    np.testing.assert_array_equal(np.asarray(load_rgb(sideways)), np.asarray(photo))


def test_an_exif_rotated_photo_embeds_like_the_upright_one(photo, tmp_path):
    from treeseek.embed.backbones import load_backbone

    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 270 degrees clockwise to display"
    sideways = tmp_path / "sideways.jpg"
    photo.transpose(Image.Transpose.ROTATE_270).save(sideways, quality=95, exif=exif)
    upright = tmp_path / "upright.jpg"
    photo.save(upright, quality=95)
    backbone = load_backbone("efficientnet_lite0")

    def embed(picture):
        import torch

        with torch.inference_mode():
            return backbone.network.features(torch.from_numpy(backbone.preprocess(picture))[None]).numpy()[0]

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    reference = embed(load_rgb(upright))
    assert cosine(embed(load_rgb(sideways)), reference) >= 0.99
    # the pixels as stored, not turned: what decoding gave before, and far from the upright photo
    assert cosine(embed(Image.open(sideways).convert("RGB")), reference) < 0.95


def test_16_bit_grey_levels_are_scaled_by_their_range(tmp_path):
    levels = np.array([[0, 1000, 2000], [3000, 4000, 4095]], dtype=np.uint16)  # a 12-bit camera in 16 bits
    path = tmp_path / "microscope.png"
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode.startswith("I")
    expected = np.rint(levels / 4095 * 255).astype(np.uint8)  # by hand: lowest level black, highest white
    decoded = np.asarray(load_rgb(path))
    np.testing.assert_array_equal(decoded, np.repeat(expected[:, :, None], 3, axis=2))


def test_a_16_bit_png_decodes_like_its_8_bit_copy(photo, tmp_path):
    grey = np.asarray(photo.convert("L"), dtype=np.float64)
    eight = np.rint((grey - grey.min()) / np.ptp(grey) * 255).astype(np.uint8)  # spans 0..255
    Image.fromarray(eight).save(tmp_path / "eight.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # the same levels in 16 bits
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / "sixteen.png")),
                                  np.asarray(load_rgb(tmp_path / "eight.png")))


def test_float_tiff_named_jpg_decodes(tmp_path):
    levels = np.linspace(-1.0, 3.0, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "looks_like.jpg"
    Image.fromarray(levels, mode="F").save(path, format="TIFF")
    decoded = np.asarray(load_rgb(path))[:, :, 0]
    np.testing.assert_array_equal(decoded, np.rint((levels - -1.0) / 4.0 * 255).astype(np.uint8))


def test_a_pixel_bomb_is_refused_from_its_header_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 10_000)).save(bomb)  # 120 megapixels in a few kilobytes
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UnreadableImage, match=r"bomb.png: 12000 x 10000 pixels is more than the limit"):
        load_rgb(bomb)
    with pytest.raises(UnreadableImage, match="more than the limit of 1,000,000"):
        load_rgb(tmp_path / "bomb.png", max_pixels=1_000_000)


MEMORY_PROBE = """
import resource, sys
from PIL import Image
from treeseek.embed.backbones.backbone import Backbone
from treeseek.data.decoding import load_rgb
backbone = Backbone("probe", None, 224, 256, (0.5,) * 3, (0.25,) * 3, 1, "")
backbone.preprocess(Image.new("RGB", (300, 200)))  # warm up: Pillow's and numpy's own allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
array = backbone.preprocess(load_rgb(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert array.shape == (3, 224, 224), array.shape
print((after - before) / 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("size", [(20_000, 1), (1, 80_000)])
def test_a_long_strip_is_processed_in_little_memory(size, tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 30, 30)).save(strip)
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(strip)], capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert float(probe.stdout) < 200, f"{probe.stdout.strip()} MB more at peak"


def test_crop_before_resize_gives_the_pixels_of_resize_then_crop(photo):
    from treeseek.embed.backbones.backbone import Backbone

    backbone = Backbone("probe", None, 224, 256, (0.0,) * 3, (1.0,) * 3, 1, "")
    width, height = photo.size  # the reference: resize the whole image, then crop its centre
    scale = 256 / min(width, height)
    size = (max(224, round(width * scale)), max(224, round(height * scale)))
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    whole = photo.resize(size, Image.BILINEAR).crop((left, top, left + 224, top + 224))
    reference = np.asarray(whole, dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.abs(backbone.preprocess(photo) - reference).max() <= 1.01 / 255  # rounding of one level at most


# -------------------------------------------------------------------------------------- work that survives
@pytest.mark.slow
def test_a_killed_extraction_resumes_where_it_stopped(tmp_path):
    folder, cache, count = tmp_path / "images", tmp_path / "cache", 60
    files = workers.tiny_images(folder, count)
    child = subprocess.Popen([sys.executable, workers.__file__, "extract", str(folder), str(count), str(cache)],
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    cache_file = None
    while time.monotonic() < deadline and cache_file is None:  # wait for a few committed batches
        found = list(cache.glob("*.npz")) if cache.is_dir() else []
        if found and len(np.load(found[0])["fingerprints"]) >= 12:
            cache_file = found[0]
        time.sleep(0.05)
    assert cache_file is not None, "the extraction committed nothing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    committed = len(np.load(cache_file)["fingerprints"])
    assert 12 <= committed < count  # killed midway, with part of the work on disk

    images = workers.image_set(files)
    resumed, kept, stats = extract_features(workers.tiny_backbone(), images, batch_size=4, cache_dir=cache,
                                            progress=False)
    assert stats["from_cache"] == committed and stats["computed"] == count - committed
    uninterrupted, _, _ = extract_features(workers.tiny_backbone(), images, batch_size=7, progress=False)
    np.testing.assert_array_equal(resumed, uninterrupted)
    assert kept.all()
