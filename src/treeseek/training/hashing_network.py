"""End-to-end HPDH: the backbone and the hash layer learn together, as in the paper (meant for a GPU).

The result is two ordinary treeseek artefacts: a classifier checkpoint directory, usable anywhere as
``--backbone``, whose features the returned ``HPDHHasher`` encodes. The hasher's input scaling is
taken from the backbone's features before training and kept fixed, so the two always agree.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from treeseek.codes.hpdh import HPDHHasher, group_counts, hierarchy_level_labels, hpdh_loss, level_centres, parent_maps
from treeseek.data.datasets import ImageSet
from treeseek.embed.backbones import load_backbone
from treeseek.embed.checkpoint import save_checkpoint
from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.training.classifier import preprocessing_record, pretrained_network
from treeseek.training.image_loader import default_workers, image_batches

logger = logging.getLogger(__name__)


def train_end_to_end(hasher: HPDHHasher, images: ImageSet, tree: Hierarchy, backbone_name: str,
                     weights: str | None, out: str | Path, device: str = "auto", progress: bool = True,
                     workers: int | None = None) -> HPDHHasher:
    """Fit ``hasher`` and fine-tune the backbone on the train split of ``images``; the backbone goes to ``out``."""
    hasher.check_params()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    workers = default_workers(device) if workers is None else workers
    train_set = images.split("train") if "train" in set(images.splits.tolist()) else images
    if tree.n_leaves != len(train_set.class_names):
        raise TreeseekError(f"the hierarchy has {tree.n_leaves} leaves for {len(train_set.class_names)} classes")
    class_levels = hierarchy_level_labels(tree, np.arange(tree.n_leaves))  # group of every class, per level
    scales = hasher.level_scales(len(class_levels))
    parents = parent_maps(class_levels)
    base = load_backbone(backbone_name, weights)
    torch.manual_seed(hasher.seed)
    network = pretrained_network(base, len(train_set.class_names)).to(device)
    layer = hasher.hash_head(base.feature_dim).to(device)
    groups = hasher.class_groups(parents, device)

    def outputs(scaled: bool):
        """Eval-mode outputs for every readable training image (features, or hash-layer outputs)."""
        network.eval()
        rows, labels = [], []
        with torch.no_grad():
            for x, y in image_batches(train_set, base, range(len(train_set)), 4 * hasher.batch_size, workers):
                if x is not None:
                    features = network.features(x.to(device))
                    rows.append((layer((features - mean) / hasher.std_) if scaled else features).cpu().numpy())
                    labels.append(y.numpy())
        if not rows:
            raise TreeseekError("no readable training images")
        return np.concatenate(rows).astype(np.float64), np.concatenate(labels)

    features, _ = outputs(scaled=False)
    hasher.mean_, hasher.std_ = features.mean(axis=0), float(features.std()) or 1.0
    mean = torch.as_tensor(hasher.mean_, dtype=torch.float32, device=device)

    def centres():
        u, labels = outputs(scaled=True)
        return [c.to(device) for c in level_centres(u, [level[labels] for level in class_levels], parents)]

    optimizer, schedule = hasher.optimizer([*network.parameters(), *layer.parameters()])
    current = [c.to(device) for c in hasher.first_centres(centres, group_counts(class_levels))]
    hasher.history_ = []
    for epoch in range(hasher.epochs):
        network.train()
        order = np.random.default_rng((hasher.seed, epoch)).permutation(len(train_set))
        total, seen = 0.0, 0
        batches = image_batches(train_set, base, order, hasher.batch_size, workers, hasher.seed, epoch,
                                device != "cpu")
        for x, y in tqdm(batches, desc=f"epoch {epoch + 1}/{hasher.epochs}", leave=False, disable=not progress):
            if x is None:
                continue
            u = layer((network.features(x.to(device)) - mean) / hasher.std_)
            targets = [torch.as_tensor(level[y.numpy()], device=device) for level in class_levels]
            loss = hpdh_loss(u, current, targets, scales, groups, hasher.coarse_loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + float(loss.detach()) * len(y), seen + len(y)
        schedule.step()
        current = centres()
        hasher.history_.append(total / max(seen, 1))
        if progress:
            logger.info("epoch %d/%d: loss %.4f", epoch + 1, hasher.epochs, hasher.history_[-1])
    hasher.keep_layer(layer, current)
    save_checkpoint(Path(out), network.cpu(), optimizer, {
        "architecture": backbone_name, "class_names": list(train_set.class_names), "epoch": hasher.epochs,
        "history": [{"epoch": i + 1, "hpdh_loss": loss} for i, loss in enumerate(hasher.history_)],
        "hyperparameters": {"trained_by": "hpdh end to end", "bits": hasher.bits, "lr": hasher.lr,
                            "batch_size": hasher.batch_size, "seed": hasher.seed},
        "preprocessing": preprocessing_record(base)})
    return hasher
