"""Fine-tune a classifier on an image set (paper §4.2): cross-entropy, SGD, flips and ±30° rotations."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from treeseek.data.datasets import ImageSet, stratified_split
from treeseek.embed.backbones import load_backbone
from treeseek.embed.backbones.backbone import Backbone
from treeseek.embed.checkpoint import build_network, load_optimizer_state, load_weights, read_record, save_checkpoint
from treeseek.errors import TreeseekError
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
) -> list[dict]:
    """Train (or resume) into ``out``; returns the per-epoch history with validation accuracy."""
    out = Path(out)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    workers = default_workers(device)
    train_set = images.split("train") if "train" in set(images.splits.tolist()) else images
    is_val = stratified_split(train_set.labels, 0.2, seed)
    fit_rows, val_rows = np.flatnonzero(~is_val), np.flatnonzero(is_val)
    base = load_backbone(backbone_name, weights)
    names = list(train_set.class_names)
    resumed = (out / "checkpoint.json").is_file()
    network = build_network(backbone_name, len(names)) if resumed else pretrained_network(base, len(names))
    if resumed:
        record = read_record(out)
        if record["class_names"] != names or record["architecture"] != backbone_name:
            raise TreeseekError(f"{out} holds a checkpoint for other classes or another architecture")
        load_weights(out, network)
        history, start_epoch = record["history"], record["epoch"]
    else:
        history, start_epoch = [], 0
    network.to(device)
    head = network._fc if hasattr(network, "_fc") else network.linear
    parameters = head.parameters() if freeze_backbone else network.parameters()
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=5e-4)
    if resumed:
        load_optimizer_state(out, network, optimizer)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(seed + epoch)
        rng = np.random.default_rng(seed + epoch)
        network.train()
        if freeze_backbone:
            network.eval()
            head.train()
        order = rng.permutation(fit_rows)
        losses = []
        for x, y in tqdm(image_batches(train_set, base, order, batch_size, workers, seed, epoch, device != "cpu"),
                         desc=f"epoch {epoch + 1}/{epochs}", leave=False, disable=not progress):
            if x is None:
                continue
            optimizer.zero_grad()
            loss = loss_fn(network(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        accuracy = _accuracy(network, train_set, val_rows, base, batch_size, device, workers)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)) if losses else float("nan"),
                        "val_accuracy": accuracy})
        logger.info("epoch %d/%d: loss %.4f, validation accuracy %.1f%%", epoch + 1, epochs,
                    history[-1]["train_loss"], 100 * accuracy)
        save_checkpoint(out, network.cpu(), optimizer, {
            "architecture": backbone_name, "class_names": names, "epoch": epoch + 1, "history": history,
            "hyperparameters": {"lr": lr, "batch_size": batch_size, "epochs": epochs, "freeze_backbone": freeze_backbone,
                                "momentum": 0.9, "weight_decay": 5e-4, "seed": seed},
            "preprocessing": preprocessing_record(base),
        })
        network.to(device)
    return history


def _accuracy(network, images, rows, backbone, batch_size, device, workers) -> float:
    network.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in image_batches(images, backbone, rows, batch_size, workers):
            if x is None:
                continue
            correct += int((network(x.to(device)).argmax(1).cpu() == y).sum())
            total += len(y)
    return correct / total if total else float("nan")
