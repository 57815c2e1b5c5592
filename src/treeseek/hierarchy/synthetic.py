"""Features with a planted class hierarchy, for tests, demos and benchmarks.

Every node of the planted tree (leaves included) owns an offset direction, and
a class mean is the sum of the offsets of its ancestors. Directions are
orthonormal when the dimension allows, so all siblings at a level are equally
far apart and non-siblings are farther; features are class mean + isotropic
Gaussian noise. With equal scales at every level, siblings at any level
overlap by the same Bhattacharyya coefficient, which is what a single merge
threshold (the paper's t) can recover.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from treeseek.hierarchy import Hierarchy


@dataclass
class PlantedData:
    features: np.ndarray       # N x d
    labels: np.ndarray         # N int64, leaf class of each row
    hierarchy: Hierarchy       # the planted tree
    class_names: list[str]
    groups: list[np.ndarray]   # groups[l][k]: planted group of class k at level l+1 (finest first)


def planted_hierarchy(
    branching: Sequence[int] = (3, 3, 4),
    dim: int = 64,
    samples_per_class: int = 40,
    scale: float | Sequence[float] = 3.0,
    noise: float = 1.0,
    offset: float = 0.0,
    seed: int = 0,
    dtype=np.float32,
) -> PlantedData:
    """``branching`` lists the number of children per node from the root down.

    ``scale`` is the length of each level's offsets in units of the noise (one
    number, or one per level from the root down). ``offset`` adds a shared mean
    so that cosine and Euclidean rankings differ.
    """
    rng = np.random.default_rng(seed)
    depth = len(branching)
    scales = [float(scale)] * depth if np.isscalar(scale) else [float(s) for s in scale]
    n_classes = int(np.prod(branching))
    digits = np.array(np.unravel_index(np.arange(n_classes), tuple(branching))).T  # path of each class
    prefixes = [np.ravel_multi_index(digits[:, : level + 1].T, tuple(branching[: level + 1])) for level in range(depth)]
    n_offsets = sum(int(p.max()) + 1 for p in prefixes) + (1 if offset else 0)
    directions = _directions(rng, n_offsets, dim)
    means = offset * directions[-1] * np.ones((n_classes, 1)) if offset else np.zeros((n_classes, dim))
    used = 0
    for level, prefix in enumerate(prefixes):
        means += scales[level] * np.sqrt(0.5) * directions[used + prefix]
        used += int(prefix.max()) + 1
    labels = np.repeat(np.arange(n_classes), samples_per_class)
    features = means[labels] + noise * rng.standard_normal((len(labels), dim))
    names = [f"c{'.'.join(map(str, row))}" for row in digits]
    groups = prefixes[:-1][::-1]
    return PlantedData(features.astype(dtype), labels, Hierarchy.from_groups(groups, names), names, groups)


def _directions(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    if count <= dim:
        return np.linalg.qr(rng.standard_normal((dim, count)))[0].T
    rows = rng.standard_normal((count, dim))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)
