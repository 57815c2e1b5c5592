"""Fine-tune a classifier on an image set (paper §4.2): cross-entropy, SGD, flips and ±30° rotations.

With ``gaussian`` settings the network is fine-tuned end to end as MAPLE trains it (``gaussian_latent``): the
head classifies sub-classes, a batch-hard triplet loss acts on the penultimate features, and every
``split_every`` epochs X-means splits the offered classes on those features and the head grows.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from treeseek.data.datasets import ImageSet, stratified_split
from treeseek.embed.backbones import load_backbone
from treeseek.embed.backbones.backbone import Backbone
from treeseek.embed.checkpoint import build_network, load_optimizer_state, load_weights, read_record, save_checkpoint
from treeseek.errors import TreeseekError
from treeseek.training.gaussian_latent import (
    GaussianTraining,
    batch_hard_triplet,
    grown_classifier,
    offered_classes,
    split_offered,
)
from treeseek.training.image_loader import default_workers, image_batches

logger = logging.getLogger(__name__)


def pretrained_network(base: Backbone, num_classes: int) -> torch.nn.Module:
    """The backbone's architecture and weights with a new, untrained ``num_classes`` head."""
    network = build_network(base.name, num_classes)
    network.load_state_dict({k: v for k, v in base.network.state_dict().items()
                             if not k.startswith(("_fc.", "linear."))}, strict=False)
    return network


def preprocessing_record(base: Backbone) -> dict:
    return {"input_size": base.input_size, "resize_size": base.resize_size, "mean": list(base.mean),
            "std": list(base.std), "feature_dim": base.feature_dim}


def train_classifier(
    images: ImageSet,
    out: str | Path,
    *,
    backbone_name: str = "efficientnet_lite0",
    weights: str | None = None,
    epochs: int = 10,
    lr: float = 0.01,
    batch_size: int = 32,
    freeze_backbone: bool = False,
    device: str = "auto",
    progress: bool = True,
    seed: int = 0,
    gaussian: GaussianTraining | None = None,
) -> list[dict]:
    """Train (or resume) into ``out``; returns the per-epoch history with validation accuracy.

    ``gaussian``: train as MAPLE does (sub-classes, triplet loss, X-means rounds); its ``epochs``, ``lr`` and
    ``batch_size`` are not used (these arguments are)."""
    out = Path(out)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    workers = default_workers(device)
    train_set = images.split("train") if "train" in set(images.splits.tolist()) else images
    is_val = stratified_split(train_set.labels, 0.2, seed)
    fit_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    base = load_backbone(backbone_name, weights)
    names = list(train_set.class_names)
    if gaussian is not None and len(names) < 2:
        raise TreeseekError("Gaussian training needs at least two classes: a class alone has nothing to be told "
                            "apart from")
    resumed = (out / "checkpoint.json").is_file()
    subclass_of_row, subclass_class = train_set.labels.copy(), np.arange(len(names))
    if resumed:
        record = read_record(out)
        if record["class_names"] != names or record["architecture"] != backbone_name:
            raise TreeseekError(f"{out} holds a checkpoint for other classes or another architecture")
        if "subclass_class" in record:
            subclass_class = np.asarray(record["subclass_class"], dtype=np.int64)
            subclass_of_row = np.asarray(record["subclass_of_row"], dtype=np.int64)
        network = build_network(backbone_name, len(subclass_class))
        load_weights(out, network)
        history, start_epoch = record["history"], record["epoch"]
    else:
        network = pretrained_network(base, len(names))
        history, start_epoch = [], 0
    network.to(device)
    optimizer = _sgd(network, freeze_backbone, lr)
    if resumed:
        load_optimizer_state(out, network, optimizer)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(seed + epoch)
        rng = np.random.default_rng(seed + epoch)
        network.train()
        if freeze_backbone:
            network.eval()
            _head(network).train()
        order = rng.permutation(fit_rows)
        losses = []
        targets = train_set.relabelled(subclass_of_row)  # its sub-classes are what the head learns
        for x, y in tqdm(image_batches(targets, base, order, batch_size, workers, seed, epoch, device != "cpu"),
                         desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress):
            if x is None:
                continue
            optimizer.zero_grad()
            features = network.features(x.to(device))
            y = y.to(device)
            loss = loss_fn(_head(network)(features), y)
            if gaussian is not None and gaussian.triplet_weight:
                classes = torch.from_numpy(subclass_class).to(device)[y]
                loss = loss + gaussian.triplet_weight * batch_hard_triplet(features, y, classes, gaussian.margin)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        network.eval()
        chosen = _predictions(network, train_set, val_rows, base, batch_size, device, workers)
        predicted = np.where(chosen >= 0, subclass_class[np.maximum(chosen, 0)], -1)
        accuracy = float(np.mean(predicted == train_set.labels[val_rows])) if len(val_rows) else float("nan")
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_accuracy": accuracy, "subclasses": int(len(subclass_class))})
        if gaussian is not None and gaussian.split_every and (epoch + 1) % gaussian.split_every == 0 \
                and epoch + 1 < epochs:
            offered = offered_classes(train_set.labels[val_rows], predicted, len(names), gaussian.fnr_threshold)
            rows = np.flatnonzero(np.isin(train_set.labels, offered))
            features = np.zeros((len(train_set), base.feature_dim))
            features[rows] = _features(network, train_set, rows, base, batch_size, device, workers)
            fitting = np.zeros(len(train_set), dtype=bool)
            fitting[fit_rows] = True
            grown = split_offered(features, train_set.labels, subclass_of_row, subclass_class, offered, fitting,
                                  gaussian)
            if grown is not None:
                subclass_of_row, new_class = grown
                _set_head(network, grown_classifier(_head(network), subclass_class, new_class))
                subclass_class = new_class
                optimizer = _sgd(network, freeze_backbone, lr)
                history[-1]["subclasses"] = int(len(subclass_class))
        logger.info("epoch %d/%d: loss %.4f, validation accuracy %.1f%%", epoch + 1, epochs,
                    history[-1]["train_loss"], 100 * accuracy)
        save_checkpoint(out, network.cpu(), optimizer, {
            "architecture": backbone_name, "class_names": names, "epoch": epoch + 1, "history": history,
            "hyperparameters": {"lr": lr, "batch_size": batch_size, "epochs": epochs, "freeze_backbone": freeze_backbone,
                                "momentum": 0.9, "weight_decay": 5e-4, "seed": seed},
            "preprocessing": preprocessing_record(base),
            **({} if gaussian is None else {
                "gaussian": asdict(gaussian), "subclass_class": subclass_class.tolist(),
                "subclass_of_row": subclass_of_row.tolist()}),
        })
        network.to(device)
    return history


def _head(network: torch.nn.Module) -> torch.nn.Linear:
    return network._fc if hasattr(network, "_fc") else network.linear


def _set_head(network: torch.nn.Module, head: torch.nn.Linear) -> None:
    setattr(network, "_fc" if hasattr(network, "_fc") else "linear", head)


def _sgd(network: torch.nn.Module, freeze_backbone: bool, lr: float) -> torch.optim.Optimizer:
    parameters = _head(network).parameters() if freeze_backbone else network.parameters()
    return torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=5e-4)


def _predictions(network, images, rows, backbone, batch_size, device, workers) -> np.ndarray:
    """The head's choice for every row (an unreadable image: -1, never right)."""
    out = np.full(len(images), -1, dtype=np.int64)
    for row, x in _each_image(images, rows, backbone, batch_size, workers):
        out[row] = network(x.to(device)).argmax(1).cpu().numpy()
    return out[rows]


def _features(network, images, rows, backbone, batch_size, device, workers) -> np.ndarray:
    """Penultimate features of every row (an unreadable image: zeros)."""
    out = np.zeros((len(images), backbone.feature_dim))
    for row, x in _each_image(images, rows, backbone, batch_size, workers):
        out[row] = network.features(x.to(device)).cpu().numpy()
    return out[rows]


def _each_image(images, rows, backbone, batch_size, workers):
    """(row numbers, inputs) batches without augmentation, in inference mode: each image labelled by its row,
    so that an unreadable one dropped from its batch shifts nothing."""
    numbered = images.relabelled(np.arange(len(images)))
    with torch.inference_mode():
        for x, row in image_batches(numbered, backbone, rows, batch_size, workers):
            if x is not None:
                yield row.numpy(), x
