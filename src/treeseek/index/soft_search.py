"""The soft-leaf ranking over an index, as one exact inner-product search per segment.

D = D_cos + alpha * p_qᵀ L p_i = (1 + alpha) - <[x̂_q, alpha Gᵀp_q], [x̂_i, Gᵀp_i]>
(``treeseek.search.inner_product``). Each segment's live rows, in id order, become augmented vectors
in a FAISS flat inner-product index, built in memory on first use and rebuilt after removals; the
posteriors come from the stored vectors restored to their original length. Per-segment top-k are merged.
"""
from __future__ import annotations

import numpy as np

from treeseek.index.stored_segment import StoredSegment
from treeseek.model import TreeseekModel
from treeseek.search.inner_product import InnerProductIndex, augment, augment_leaves, tree_factor
from treeseek.search.topk import MISSING_ID, merge_smallest_k, no_candidates

CHUNK = 1 << 15


def soft_topk(segments: list[StoredSegment], model: TreeseekModel, queries: np.ndarray, alpha: float,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(D, ids)`` of the soft ranking for raw query features; padded with inf and ``MISSING_ID``."""
    factor = tree_factor(model.hierarchy_)
    augmented = augment(queries, model.posteriors(queries), factor, alpha)
    best_keys, best_ids = no_candidates(len(queries), k)
    for stored in segments:
        index, ids = _inner_product_index(stored, model, factor)
        if len(ids) == 0:
            continue
        keys, positions = index.search(augmented, min(k, len(ids)), alpha)
        found = positions >= 0
        best_keys, best_ids = merge_smallest_k(best_keys, best_ids, keys,
                                               np.where(found, ids[np.maximum(positions, 0)], MISSING_ID), k)
    return best_keys, best_ids


def _inner_product_index(stored: StoredSegment, model: TreeseekModel, factor: np.ndarray):
    rows = stored.live_rows_by_id()
    # a segment only loses rows, so their count names its state; the posteriors depend on the model's T and m
    key = (id(model), model.temperature, model.top_m, len(rows))
    if stored.soft_ is None or stored.soft_[0] != key:
        index = InnerProductIndex()
        for start in range(0, len(rows), CHUNK):  # chunks bound the float64 copies, not the index
            index.add(segment_vectors(stored, model, factor, rows[start : start + CHUNK]))
        stored.soft_ = (key, index, stored.segment.ids[rows])
    return stored.soft_[1], stored.soft_[2]


def segment_vectors(stored: StoredSegment, model: TreeseekModel, factor: np.ndarray, rows: np.ndarray,
                    hard: bool = False) -> np.ndarray:
    """Augmented item vectors [x̂, Gᵀp] of a segment's rows: p is the posterior of the stored vector restored
    to its length or, with ``hard``, the stored leaf (the paper's distance)."""
    unit = np.asarray(stored.segment.vectors[rows], dtype=np.float64)
    if hard:
        return augment_leaves(unit, stored.segment.leaves[rows], factor)
    return augment(unit, model.posteriors(unit * stored.norms[rows, None]), factor)
