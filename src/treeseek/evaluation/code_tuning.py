"""Choose HPDH's level scales on a validation split.

The paper sets s_l by hand (fine 1, coarser levels smaller). How much the coarse levels should pull
depends on the data: with thousands of images per class, mAHP@250 rewards fine precision, which a
strong coarse pull trades away. Scales here are s_0 = 1 and s_l = w / (l + 1) for the coarser levels,
and w is chosen by mAHP@250 of codes trained on the fitting part, with the validation part as queries.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from treeseek.codes.hpdh import HPDHHasher, hierarchy_level_labels
from treeseek.data.datasets import stratified_split
from treeseek.evaluation.hashing import evaluate_codes
from treeseek.hierarchy import Hierarchy

COARSE_WEIGHTS = (1.0, 0.3, 0.1)


def level_scales(n_levels: int, coarse_weight: float) -> list[float]:
    """s_0 = 1, s_l = coarse_weight / (l + 1); coarse_weight = 1 is the paper's pattern."""
    return [1.0] + [coarse_weight / (level + 1) for level in range(1, n_levels)]


def select_coarse_weight(X: np.ndarray, y: np.ndarray, tree: Hierarchy, bits: int = 32,
                         weights: Sequence[float] = COARSE_WEIGHTS, validation_fraction: float = 0.25,
                         seed: int = 0, **hasher_params) -> tuple[float, list[dict]]:
    """(the best coarse weight, one record per candidate), scored by validation mAHP@250."""
    is_val = stratified_split(y, validation_fraction, seed)
    levels = hierarchy_level_labels(tree, y[~is_val])
    records = []
    for weight in weights:
        hasher = HPDHHasher(bits, scales=level_scales(len(levels), weight), seed=seed, **hasher_params)
        hasher.fit(X[~is_val], levels)
        scores = evaluate_codes(hasher.encode(X[is_val]), hasher.encode(X[~is_val]), y[is_val], y[~is_val], tree)
        records.append({"coarse_weight": weight, **scores})
    best = max(records, key=lambda r: (r["mahp@250"], r["map"]))
    return best["coarse_weight"], records
