"""Decode image files into RGB, whatever their mode, and say which ones cannot be read."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class UnreadableImage(Exception):
    """An image file that cannot be decoded."""


def load_rgb(path: str | Path | BinaryIO, name: str | None = None) -> Image.Image:
    """The image as 8-bit RGB (grayscale, palette, CMYK and alpha images are converted).

    ``path`` is a file path or a binary file object; ``name`` is how errors call it (default: the path)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey stripe
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                if image.mode == "RGB":
                    return image.copy()
                if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
                    rgba = image.convert("RGBA")
                    background = Image.new("RGB", rgba.size, (255, 255, 255))
                    background.paste(rgba, mask=rgba.getchannel("A"))
                    return background
                return image.convert("RGB")
    except UnidentifiedImageError:  # Pillow's message names the file object, not the file
        raise UnreadableImage(f"{name or path}: not an image file in a format Pillow can decode") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"{name or path}: {exc}") from None


def array_to_image(array: np.ndarray) -> Image.Image:
    """An H x W (gray) or H x W x 3 uint8 array as an RGB image."""
    array = np.asarray(array, dtype=np.uint8)
    return Image.fromarray(array).convert("RGB")
