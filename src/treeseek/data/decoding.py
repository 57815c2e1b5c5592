"""Decode image files into upright 8-bit RGB, whatever their mode, and say which ones cannot be read.

Images come from phones (EXIF orientation: the pixels are stored sideways and a tag says how to turn
them), from microscopes and scientific cameras (16-bit or floating-point grey levels, often a TIFF
whatever the file is called) and from strangers (decompression bombs: a few bytes that claim billions
of pixels). The pixel count is checked from the header, before anything is decoded.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
# Pillow's own bomb limit (about 89 megapixels, a 2 GB decode at most); callers may ask for a stricter one
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")  # grey levels that do not fit 8 bits


class UnreadableImage(Exception):
    """An image file that cannot be decoded."""


def load_rgb(path: str | Path | BinaryIO, name: str | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The image as upright 8-bit RGB.

    EXIF orientation is applied; grayscale, palette, CMYK and alpha images are converted (transparency
    over white); 16-bit, 32-bit and floating-point grey levels are scaled to 8 bits by the image's own
    range (lowest level black, highest white), since such files seldom use their type's whole range.

    Parameters
    ----------
    path : str, Path or binary file
        The image file.
    name : str, optional
        How errors call it (default: the path).
    max_pixels : int
        Largest width x height accepted; checked from the header, before decoding.

    Returns
    -------
    PIL.Image.Image
        An RGB image.
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey stripe
    label = name or path
    try:
        with warnings.catch_warnings():
            # our own check below replaces Pillow's warning, with the caller's limit and a plain message
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UnreadableImage(f"{label}: {width} x {height} pixels is more than the limit of "
                                          f"{max_pixels:,} pixels")
                image.load()
                return _to_rgb(ImageOps.exif_transpose(image))
    except UnidentifiedImageError:  # Pillow's message names the file object, not the file
        raise UnreadableImage(f"{label}: not an image file in a format Pillow can decode") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{label}: {exc}") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in HIGH_DEPTH_MODES:
        return _scaled_to_8_bits(image).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _scaled_to_8_bits(image: Image.Image) -> Image.Image:
    """Grey levels of any depth mapped linearly onto 0..255 by their own range (Pillow's convert clips)."""
    levels = np.asarray(image, dtype=np.float64)
    finite = levels[np.isfinite(levels)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scaled = (np.nan_to_num(levels, nan=low, posinf=high, neginf=low) - low) / (high - low or 1.0)
    return Image.fromarray(np.clip(np.rint(scaled * 255), 0, 255).astype(np.uint8), mode="L")


def array_to_image(array: np.ndarray) -> Image.Image:
    """An H x W (gray) or H x W x 3 uint8 array as an RGB image."""
    array = np.asarray(array, dtype=np.uint8)
    return Image.fromarray(array).convert("RGB")
