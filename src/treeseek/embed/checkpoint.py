"""Classifier checkpoints: safetensors tensors plus a JSON record; nothing is pickled.

A checkpoint directory holds ``weights.safetensors`` (the network with its new
head), ``optimizer.safetensors`` (SGD momentum buffers) and ``checkpoint.json``
(architecture, classes, preprocessing, epoch, history). The JSON is written
last, so it only ever points at complete tensor files.

A *projection* checkpoint (``treeseek train --gaussian``) holds only a linear embedding of a base backbone's
features and its sub-class classifier; the record names the base network and the digest of its weights,
which must match when it is loaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save
from torch import nn

from treeseek.embed.backbones.backbone import Backbone
from treeseek.errors import TreeseekError
from treeseek.io.files import atomic_write_bytes, atomic_write_json, file_digest, read_json

CHECKPOINT_FORMAT = "treeseek-classifier"
CHECKPOINT_VERSION = 1
PROJECTION = "projection"  # the architecture of a linear embedding of a base backbone's features


def build_network(architecture: str, num_classes: int) -> torch.nn.Module:
    """An untrained network of a supported architecture with a ``num_classes`` head."""
    if architecture == "efficientnet_lite0":
        from treeseek.embed.backbones.efficientnet_lite import EfficientNetLite0

        return EfficientNetLite0(num_classes)
    from treeseek.embed.backbones.cifar_resnet import DEPTHS, CifarResNet

    if architecture in DEPTHS:
        return CifarResNet(DEPTHS[architecture], num_classes)
    raise TreeseekError(f"training supports efficientnet_lite0 and the CIFAR ResNets, not {architecture!r}")


def save_checkpoint(directory: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer, record: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in network.state_dict().items()}
    atomic_write_bytes(directory / "weights.safetensors", save(state))
    names = {id(p): n for n, p in network.named_parameters()}
    buffers = {}
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            momentum = optimizer.state.get(parameter, {}).get("momentum_buffer")
            if momentum is not None and id(parameter) in names:  # e.g. a hash layer, which is stored elsewhere
                buffers[names[id(parameter)]] = momentum.detach().cpu().contiguous()
    atomic_write_bytes(directory / "optimizer.safetensors", save(buffers))
    atomic_write_json(directory / "checkpoint.json", {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                                                      **record})


def read_record(directory: Path) -> dict:
    record = read_json(directory / "checkpoint.json", "checkpoint")
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise TreeseekError(f"{directory} is not a treeseek classifier checkpoint")
    if record.get("version") != CHECKPOINT_VERSION:
        raise TreeseekError(f"{directory}: checkpoint version {record.get('version')} is not supported")
    return record


def load_weights(directory: Path, network: torch.nn.Module) -> None:
    try:
        state = load_file(str(directory / "weights.safetensors"))
    except Exception as exc:
        raise TreeseekError(f"{directory}/weights.safetensors is unreadable: {exc}") from None
    missing, unexpected = network.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("num_batches_tracked")] or unexpected:
        raise TreeseekError(f"{directory}: weights do not match the recorded architecture")


def load_optimizer_state(directory: Path, network: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    path = directory / "optimizer.safetensors"
    if not path.is_file():
        return
    buffers = load_file(str(path))
    for name, parameter in network.named_parameters():
        if name in buffers:
            optimizer.state[parameter]["momentum_buffer"] = buffers[name].to(parameter.device)


class ProjectedNetwork(nn.Module):
    """A base network's features, embedded by a linear projection; ``forward`` gives the sub-class logits."""

    def __init__(self, base: nn.Module, projection: nn.Linear, head: nn.Linear):
        super().__init__()
        self.base, self.projection, self.head = base, projection, head

    def features(self, x):
        return self.projection(self.base.features(x))

    def forward(self, x):
        return self.head(self.features(x))


def save_projection(directory: Path, base: Backbone, base_weights: str | None, arrays: dict[str, np.ndarray],
                    record: dict) -> None:
    """Write a projection checkpoint: ``arrays`` holds ``projection.weight``/``.bias`` (applied to the base's raw
    features) and ``head.weight``/``.bias``; ``record`` adds classes, history and settings."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)) for name, array in arrays.items()}
    atomic_write_bytes(directory / "weights.safetensors", save(tensors))
    embed_dim = int(arrays["projection.weight"].shape[0])
    atomic_write_json(directory / "checkpoint.json", {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "architecture": PROJECTION,
        "base": {"name": base.name, "weights": base_weights, "weights_digest": base.weights_digest},
        "preprocessing": {"input_size": base.input_size, "resize_size": base.resize_size, "mean": list(base.mean),
                          "std": list(base.std), "feature_dim": embed_dim},
        **record})


def load_projected_backbone(directory: Path, record: dict, base: Backbone) -> Backbone:
    """A projection checkpoint over ``base``, the network its record names (loaded by the caller)."""
    spec = record["base"]
    if base.weights_digest != spec["weights_digest"]:
        raise TreeseekError(f"{directory} was trained on other weights of {spec['name']} than those found now")
    try:
        tensors = load_file(str(directory / "weights.safetensors"))
    except Exception as exc:
        raise TreeseekError(f"{directory}/weights.safetensors is unreadable: {exc}") from None
    layers = {}
    for name in ("projection", "head"):
        weight = tensors[f"{name}.weight"]
        layers[name] = nn.Linear(weight.shape[1], weight.shape[0])
        layers[name].load_state_dict({"weight": weight, "bias": tensors[f"{name}.bias"]})
    network = ProjectedNetwork(base.network, layers["projection"], layers["head"]).eval()
    preprocessing = record["preprocessing"]
    return Backbone(str(directory), network, base.input_size, base.resize_size, base.mean, base.std,
                    preprocessing["feature_dim"], file_digest(directory / "weights.safetensors"))


def load_trained_backbone(directory: Path) -> Backbone:
    """A checkpoint as a backbone: its penultimate layer gives the features."""
    record = read_record(directory)
    # trained with sub-classes (train --gaussian --end-to-end), the head has one output per sub-class
    network = build_network(record["architecture"], len(record.get("subclass_class", record["class_names"])))
    load_weights(directory, network)
    spec = record["preprocessing"]
    return Backbone(str(directory), network.eval(), spec["input_size"], spec["resize_size"], tuple(spec["mean"]),
                    tuple(spec["std"]), spec["feature_dim"], file_digest(directory / "weights.safetensors"))
