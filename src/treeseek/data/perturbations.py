"""The paper's robustness perturbations (§4.2), with sizes scaled to the image.

The paper's sizes are for its 224-pixel inputs: an 11 x 11 Gaussian blur kernel and a 70 x 70
black patch. Here both scale with the shorter side of each image (a 32-pixel CIFAR image gets a
3 x 3 kernel and a 10 x 10 patch). The saturation factor is drawn from {0.1, 0.5, 1, 2, 5}. Every
random choice comes from a generator seeded by (seed, item), so a perturbed set is reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance
from scipy.ndimage import gaussian_filter

from treeseek.data.datasets import ImageSet
from treeseek.errors import TreeseekError

PERTURBATIONS = ("blur", "saturation", "occlusion")
REFERENCE_SIZE, BLUR_KERNEL, PATCH = 224, 11, 70
SATURATION_FACTORS = (0.1, 0.5, 1.0, 2.0, 5.0)


def blur_kernel_size(image: Image.Image) -> int:
    """The 11-pixel kernel scaled to the image, odd and at least 3."""
    size = round(BLUR_KERNEL * min(image.size) / REFERENCE_SIZE)
    return max(3, size + (size % 2 == 0))


def patch_size(image: Image.Image) -> int:
    return max(1, round(PATCH * min(image.size) / REFERENCE_SIZE))


def gaussian_blur(image: Image.Image) -> Image.Image:
    """Gaussian blur with a k x k kernel (k from ``blur_kernel_size``) and OpenCV's default sigma for k."""
    k = blur_kernel_size(image)
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    pixels = np.asarray(image, dtype=np.float64)
    blurred = gaussian_filter(pixels, sigma=(sigma, sigma, 0), mode="reflect", truncate=((k - 1) / 2) / sigma)
    return Image.fromarray(np.clip(np.rint(blurred), 0, 255).astype(np.uint8))


def saturate(image: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(image).enhance(factor)


def occlude(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A black square patch at a uniformly random position, wholly inside the image."""
    side = patch_size(image)
    width, height = image.size
    left, top = int(rng.integers(0, max(width - side, 0) + 1)), int(rng.integers(0, max(height - side, 0) + 1))
    pixels = np.array(image)
    pixels[top : top + side, left : left + side] = 0
    return Image.fromarray(pixels)


def perturb(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    if kind == "blur":
        return gaussian_blur(image)
    if kind == "saturation":
        return saturate(image, float(rng.choice(SATURATION_FACTORS)))
    if kind == "occlusion":
        return occlude(image, rng)
    raise TreeseekError(f"unknown perturbation {kind!r}: choose from {', '.join(PERTURBATIONS)}")


@dataclass
class PerturbedImageSet(ImageSet):
    """An ``ImageSet`` whose images come back perturbed (use a separate feature cache for it)."""

    perturbation: str = "blur"
    seed: int = 0

    def image(self, i: int):
        return perturb(super().image(i), self.perturbation, np.random.default_rng((self.seed, int(i))))


def perturbed(images: ImageSet, kind: str, seed: int = 0) -> PerturbedImageSet:
    if kind not in PERTURBATIONS:
        raise TreeseekError(f"unknown perturbation {kind!r}: choose from {', '.join(PERTURBATIONS)}")
    return PerturbedImageSet(images.items, images.labels, images.class_names, images.splits, images.root,
                             images.skipped, kind, seed)
