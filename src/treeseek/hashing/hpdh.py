"""Hierarchy-preserving deep hashing (Zhang et al. 2019), trained on frozen features.

For every level l of the hierarchy, with class centres C_l:
    L_l = -mean_i log softmax_k(-s_l/2 * ||u_i - c_{l,k}||^2)[y_i^l]
and the total is sum_l L_l + (10 * sum relu(|u| - 1.1) + 0.1 * ||sign(u) - u||^2) / (batch * bits).
Centres are not learned: after every epoch each fine centre becomes the mean output of its class,
and each coarser centre the mean of its children's centres. With one level this is DCWH.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..errors import TreeseekError
from ..features import check_features
from ..hierarchy import Hierarchy
from .codes import pack_codes


def hierarchy_level_labels(tree: Hierarchy, labels: np.ndarray) -> list[np.ndarray]:
    """Labels at every level below the root, finest first (level h: the lowest ancestor of height >= h)."""
    labels = np.asarray(labels, dtype=np.int64)
    levels = []
    for height in range(max(1, tree.max_height)):
        _, renumbered = np.unique(tree.labels_at_height(height)[labels], return_inverse=True)
        levels.append(renumbered.ravel())
    return levels


class HPDHHasher:
    """``fit(X, levels)`` learns the hash layer (``weight_``, ``bias_``), the input scaling and ``centres_``."""

    def __init__(self, bits: int = 64, scales: Sequence[float] | None = None, epochs: int = 150, lr: float = 1e-3,
                 momentum: float = 0.9, weight_decay: float = 5e-4, milestones: Sequence[int] = (50, 100),
                 batch_size: int = 64, seed: int = 0):
        self.bits, self.scales, self.epochs, self.lr = bits, scales, epochs, lr
        self.momentum, self.weight_decay, self.milestones = momentum, weight_decay, milestones
        self.batch_size, self.seed = batch_size, seed

    def fit(self, X: np.ndarray, levels: Sequence[np.ndarray], progress: bool = False) -> "HPDHHasher":
        import torch

        X = check_features(X, "training features").astype(np.float32)
        levels = [np.asarray(level, dtype=np.int64) for level in levels]
        if not levels or any(level.shape != (len(X),) for level in levels):
            raise TreeseekError("levels must be one label array per level, each with one label per row")
        if self.bits % 8 or self.bits <= 0:
            raise TreeseekError(f"bits must be a positive multiple of 8, got {self.bits}")
        scales = list(self.scales) if self.scales is not None else [1.0 / (l + 1) for l in range(len(levels))]
        if len(scales) != len(levels):
            raise TreeseekError(f"got {len(scales)} scales for {len(levels)} levels")
        self.mean_, self.std_ = X.mean(axis=0), float(X.std()) or 1.0
        torch.manual_seed(self.seed)
        layer = torch.nn.Linear(X.shape[1], self.bits)
        inputs = torch.from_numpy((X - self.mean_) / self.std_)
        targets = [torch.from_numpy(level) for level in levels]
        parents = [_parent_map(levels[l], levels[l + 1]) for l in range(len(levels) - 1)]
        optimizer = torch.optim.SGD(layer.parameters(), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.milestones), gamma=0.1)
        generator = np.random.default_rng(self.seed)
        centres = self._centres(layer, inputs, levels, parents)
        self.history_ = []
        for _ in tqdm(range(self.epochs), desc="HPDH epochs", disable=not progress):
            total = 0.0
            for batch in np.array_split(generator.permutation(len(X)), max(1, len(X) // self.batch_size)):
                u = layer(inputs[batch])
                loss = sum(torch.nn.functional.cross_entropy(-0.5 * s * _squared_distances(u, c), y[batch])
                           for s, c, y in zip(scales, centres, targets))
                loss = loss + (10 * torch.relu(u.abs() - 1.1).sum() + 0.1 * ((torch.sign(u) - u) ** 2).sum()) \
                    / (len(batch) * self.bits)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            schedule.step()
            centres = self._centres(layer, inputs, levels, parents)
            self.history_.append(total / len(X))
        self.weight_ = layer.weight.detach().numpy().astype(np.float64)
        self.bias_ = layer.bias.detach().numpy().astype(np.float64)
        self.centres_ = [c.numpy() for c in centres]
        return self

    @staticmethod
    def _centres(layer, inputs, levels, parents):
        import torch

        with torch.no_grad():
            u = layer(inputs).numpy()
        fine = np.zeros((levels[0].max() + 1, u.shape[1]))
        np.add.at(fine, levels[0], u)
        fine /= np.maximum(np.bincount(levels[0], minlength=len(fine)), 1)[:, None]
        centres = [fine]
        for parent in parents:
            coarse = np.zeros((parent.max() + 1, u.shape[1]))
            np.add.at(coarse, parent, centres[-1])
            centres.append(coarse / np.bincount(parent, minlength=len(coarse))[:, None])
        return [torch.from_numpy(c.astype(np.float32)) for c in centres]

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = (np.asarray(X, dtype=np.float64) - self.mean_) / self.std_
        return X @ self.weight_.T + self.bias_

    def encode(self, X: np.ndarray) -> np.ndarray:
        return pack_codes(self.transform(X))


def _squared_distances(u, centres):
    """||u_i - c_k||^2 without a square root, whose gradient at 0 would be NaN."""
    return (u * u).sum(1, keepdim=True) - 2 * u @ centres.T + (centres * centres).sum(1)


def _parent_map(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """For each group of a level, its group one level up (levels are nested)."""
    parent = np.zeros(fine.max() + 1, dtype=np.int64)
    parent[fine] = coarse
    return parent
