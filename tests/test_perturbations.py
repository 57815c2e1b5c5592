"""Robustness perturbations: blur kernel, saturation, occlusion, sizes scaled to the image, reproducible."""
import numpy as np
import pytest
from PIL import Image

from treeseek.data.datasets import ImageSet
from treeseek.data.perturbations import (
    blur_kernel_size,
    gaussian_blur,
    patch_size,
    perturb,
    perturbed,
    saturate,
)
from treeseek.errors import TreeseekError


def test_blur_spreads_an_impulse_over_exactly_the_kernel_and_keeps_flat_images():
    pixels = np.zeros((224, 224, 3), dtype=np.uint8)
    pixels[112, 112] = 255
    blurred = np.asarray(gaussian_blur(Image.fromarray(pixels)))[..., 0].astype(float)
    rows, cols = np.nonzero(blurred)
    assert blur_kernel_size(Image.fromarray(pixels)) == 11
    assert rows.min() >= 112 - 5 and rows.max() <= 112 + 5 and cols.min() >= 107 and cols.max() <= 117
    assert blurred[112, 112] == blurred.max() and np.allclose(blurred, blurred.T)
    flat = Image.new("RGB", (50, 40), (10, 120, 200))
    assert np.array_equal(np.asarray(gaussian_blur(flat)), np.asarray(flat))


def test_sizes_scale_with_the_shorter_side():
    assert blur_kernel_size(Image.new("RGB", (32, 32))) == 3
    assert patch_size(Image.new("RGB", (32, 32))) == 10
    assert patch_size(Image.new("RGB", (448, 300))) == round(70 * 300 / 224)


def test_occlusion_blacks_out_one_square_patch_inside_the_image():
    white = Image.new("RGB", (64, 48), (255, 255, 255))
    for seed in range(10):
        out = np.asarray(perturb(white, "occlusion", np.random.default_rng(seed)))
        black = np.all(out == 0, axis=2)
        side = patch_size(white)
        assert black.sum() == side * side
        rows, cols = np.nonzero(black)
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side


def test_saturation_uses_the_papers_factors():
    colour = Image.new("RGB", (8, 8), (200, 100, 50))
    assert np.array_equal(np.asarray(saturate(colour, 1.0)), np.asarray(colour))
    grey = np.asarray(saturate(colour, 0.0))
    assert np.all(grey == grey[..., :1])  # factor 0 is greyscale; the paper's 0.1 is nearly so
    factors = set()
    for seed in range(40):
        out = np.asarray(perturb(colour, "saturation", np.random.default_rng(seed))).astype(int)
        factors.add(tuple(out[0, 0]))
    assert 3 <= len(factors) <= 5


def test_perturbed_sets_are_reproducible_and_refuse_unknown_kinds():
    items = [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    images = ImageSet(items, np.arange(4), ["a", "b", "c", "d"], np.array(["test"] * 4))
    first, second = perturbed(images, "occlusion", seed=3), perturbed(images, "occlusion", seed=3)
    assert all(np.array_equal(np.asarray(first.image(i)), np.asarray(second.image(i))) for i in range(4))
    assert not np.array_equal(np.asarray(first.image(1)), np.asarray(images.image(1)))
    with pytest.raises(TreeseekError, match="unknown perturbation"):
        perturbed(images, "rain")
