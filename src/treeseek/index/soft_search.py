"""The soft ranking over an index: the exact group-by-group search of ``treeseek.search.soft_groups`` per segment.

Every segment stores its items' sparse posteriors (their ``top_m`` most probable classes), computed once when
the items were added, from the features as given, and saved beside the vectors; opening an index reads them
without recomputing anything. A segment saved without them (an index written before they existed), or whose
posteriors were computed at another temperature or ``top_m`` than the model's now, gets them computed in memory
on its first soft search, from the stored vectors restored to their length.
"""
from __future__ import annotations

import logging

import numpy as np

from treeseek.index.placement import restored_placement, soft_settings
from treeseek.index.stored_segment import StoredSegment
from treeseek.model import TreeseekModel
from treeseek.search.inner_product import augment, augment_leaves
from treeseek.search.soft_groups import SoftPosteriors, leaf_group_topk, soft_group_topk
from treeseek.search.topk import merge_smallest_k, no_candidates

logger = logging.getLogger(__name__)


def soft_topk(segments: list[StoredSegment], model: TreeseekModel, queries: np.ndarray, alpha: float,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(D, ids)`` of the soft ranking for raw query features; padded with inf and ``MISSING_ID``."""
    _, classes, weights = model.place(queries)
    unit = model.cosine_units(queries)[0]
    lca = model.hierarchy_.normalized_lca
    return _merged([soft_group_topk(stored.segment, ready_soft(stored, model), lca, unit, classes, weights, alpha,
                                    k)[:2] for stored in segments], len(queries), k)


def leaf_topk(segments: list[StoredSegment], tree, leaves: np.ndarray, unit: np.ndarray, alpha: float,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(D, ids)`` of D_cos + alpha * L[leaf(q), leaf(i)] (``combined`` over ``tree``, or ``flat``) by the
    same exact group-by-group search, each item's posterior being one-hot at its stored leaf; ``unit``: the
    queries' unit vectors in the model's cosine space (``TreeseekModel.cosine_units``)."""
    for stored in segments:
        if stored.one_hot_ is None:
            stored.one_hot_ = SoftPosteriors.one_hot(stored.segment)
    return _merged([leaf_group_topk(stored.segment, stored.one_hot_, tree.normalized_lca, unit, leaves, alpha, k)[:2]
                    for stored in segments], len(unit), k)


def _merged(parts: list[tuple[np.ndarray, np.ndarray]], n_queries: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k over the segments' own top-k: one segment's, already sorted and padded, is the answer as it is."""
    if len(parts) == 1:
        return parts[0]
    best_keys, best_ids = no_candidates(n_queries, k)
    for keys, ids in parts:
        best_keys, best_ids = merge_smallest_k(best_keys, best_ids, keys, ids, k)
    return best_keys, best_ids


def ready_soft(stored: StoredSegment, model: TreeseekModel) -> SoftPosteriors:
    """The segment's sparse posteriors under the model's settings, computed in memory when it lacks them."""
    settings = soft_settings(model)
    state = {key: (stored.soft_state or {}).get(key) for key in settings}
    if stored.soft is None or state != settings:
        logger.info("computing the soft posteriors of %d items (the segment was saved %s); rewriting the index "
                    "('treeseek index compact') stores them", len(stored),
                    "without them" if stored.soft is None else f"with {state}")
        _, classes, weights = restored_placement(model, stored.segment.vectors, stored.norms)
        stored.soft, stored.soft_state = SoftPosteriors.build(stored.segment, classes, weights), settings
    return stored.soft


def segment_vectors(stored: StoredSegment, model: TreeseekModel, factor: np.ndarray, rows: np.ndarray,
                    hard: bool = False) -> np.ndarray:
    """Augmented item vectors [x̂, Gᵀp] of a segment's rows, for inner-product engines: p is the item's stored
    posterior or, with ``hard``, its stored leaf (the paper's distance)."""
    unit = np.asarray(stored.segment.vectors[rows], dtype=np.float64)
    if hard:
        return augment_leaves(unit, stored.segment.leaves[rows], factor)
    return augment(unit, ready_soft(stored, model).dense(rows, model.n_leaves_), factor)
