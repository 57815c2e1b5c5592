"""The ``Backbone`` a registry entry or a checkpoint gives: the network, its preprocessing and an identity."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TF_LITE_MEAN, TF_LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3  # the Lite models' (x - 127) / 128


@dataclass
class Backbone:
    name: str
    network: nn.Module          # has .features(x) -> N x feature_dim, and forward(x) -> logits
    input_size: int
    resize_size: int            # shorter side before the centre crop
    mean: tuple
    std: tuple
    feature_dim: int
    weights_digest: str

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Resize the shorter side, centre-crop, scale to [0, 1], normalise: a 3 x S x S float32 array.

        The crop is taken before resampling (``resize`` with a source box), with the same scale and
        centre as resizing the whole image and cropping after: the same pixels, but memory that does
        not grow with the aspect ratio (a 20000 x 1 strip would otherwise become 5,120,000 x 256)."""
        width, height = image.size
        scale = self.resize_size / min(width, height)
        size = (max(self.input_size, round(width * scale)), max(self.input_size, round(height * scale)))
        left, top = (size[0] - self.input_size) // 2, (size[1] - self.input_size) // 2
        step_x, step_y = width / size[0], height / size[1]  # source pixels per resized pixel, per axis
        box = (left * step_x, top * step_y, (left + self.input_size) * step_x, (top + self.input_size) * step_y)
        image = image.resize((self.input_size, self.input_size), Image.BILINEAR, box=box)
        array = np.asarray(image, dtype=np.float32) / 255.0
        return ((array - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).transpose(2, 0, 1)

    def describe(self) -> dict:
        return {"name": self.name, "input_size": self.input_size, "resize_size": self.resize_size,
                "mean": list(self.mean), "std": list(self.std), "feature_dim": self.feature_dim,
                "weights_digest": self.weights_digest}

    def cache_key(self) -> str:
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:20]
