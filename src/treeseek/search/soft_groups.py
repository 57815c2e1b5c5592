"""The soft ranking, searched exactly group by group over sparse posteriors, without widening any vector.

Every item keeps its posterior over its m most probable classes (``SoftPosteriors``). For a query with
posterior p_q, v = L p_q is the expected normalised LCA height between the query and each class, and an
item's hierarchy term is the m-term sum D_H = Σ_b p_i[b] v[b].

Items sit in a ``Segment`` grouped by leaf (their most probable class). In the group of leaf l every item
gives l a weight of at least ``floor_l`` and the rest of its mass to classes in ``U_l``, so, D_H being linear
in that weight,

    D_H >= B_l = min(v[l], floor_l * v[l] + (1 - floor_l) * min over U_l of v),

and since D_cos >= 0 no item of the group has D = D_cos + alpha D_H below alpha B_l. Each query scans its
groups in increasing order of that bound, in rounds that grow geometrically, and stops once the next bound
exceeds its k-th best D. What it skips cannot enter the top-k, nor tie with it, so the result equals a full
float64 sort of D with ties broken by id. Small groups are scanned in tiles of neighbouring groups (siblings, in
depth-first order), bounded by their smallest bound, so that a scan is one matrix product of useful size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from treeseek.search.segment import Segment
from treeseek.search.topk import MISSING_ID, merge_smallest_k, no_candidates

QUERY_CHUNK = 64            # queries whose group bounds are computed at once (bounds the gathered matrix)
TILE_ROWS = 1024            # neighbouring groups are scanned together up to this many rows: one product, one merge
KEYS_PER_BLOCK = 2 ** 22    # bound on the query x item key matrix of one scanned block
FIRST_ROUND_FACTOR = 2      # the first round scans groups holding about this many times k items
ROUND_GROWTH = 4            # each later round may scan this many times more items than the one before


@dataclass
class SoftPosteriors:
    """The sparse posteriors of a segment's rows and, per leaf group, what bounds their hierarchy term.

    ``classes`` and ``weights`` are n x m, row-aligned with the segment; ``floors`` (K, by leaf rank) is the
    smallest weight an item of the group gives the group's own leaf; ``union[union_start[r]:union_start[r+1]]``
    are the other classes that the items of the group of rank r give weight to.
    """

    classes: np.ndarray
    weights: np.ndarray
    floors: np.ndarray
    union_start: np.ndarray
    union: np.ndarray

    ARRAYS = ("classes", "weights", "floors", "union_start", "union")

    @classmethod
    def build(cls, segment: Segment, classes: np.ndarray, weights: np.ndarray) -> "SoftPosteriors":
        """From the posteriors of the segment's rows, in row order."""
        n_classes = segment.tree.n_leaves
        classes = np.asarray(classes).astype(np.int16 if n_classes <= np.iinfo(np.int16).max else np.int32)
        weights = np.asarray(weights, dtype=np.float32)
        leaves = segment.leaves[:, None]
        own = np.where(classes == leaves, weights, 0).sum(axis=1)
        ranks = np.repeat(np.arange(n_classes), np.diff(segment.leaf_start))
        floors = np.ones(n_classes)
        np.minimum.at(floors, ranks, own.astype(np.float64))
        others = (weights > 0) & (classes != leaves)
        pairs = np.unique(np.broadcast_to(ranks[:, None], classes.shape)[others].astype(np.int64) * n_classes
                          + classes[others])
        union_start = np.searchsorted(pairs // n_classes, np.arange(n_classes + 1)).astype(np.int64)
        return cls(classes, weights, floors, union_start, (pairs % n_classes).astype(classes.dtype))

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS}

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.to_arrays().values())


def expected_heights(lca: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """v = L p for sparse posteriors (rows of ``classes``/``weights``): nq x K."""
    n, m = classes.shape
    posteriors = sparse.csr_matrix((np.asarray(weights, np.float64).ravel(), np.asarray(classes).ravel(),
                                    np.arange(0, n * m + 1, m)), shape=(n, lca.shape[0]))
    return np.asarray(posteriors @ lca)


def group_bounds(segment: Segment, soft: SoftPosteriors, heights: np.ndarray) -> np.ndarray:
    """B (nq x K, by leaf rank): no item of a group has a hierarchy term below its bound; inf for empty groups."""
    own = heights[:, segment.tree.leaf_order]
    nearest_other = own.copy()
    filled = np.flatnonzero(np.diff(soft.union_start) > 0)
    for first in range(0, len(heights), QUERY_CHUNK):
        rows = slice(first, first + QUERY_CHUNK)
        gathered = heights[rows][:, soft.union]
        nearest_other[rows, filled] = np.minimum.reduceat(gathered, soft.union_start[filled], axis=1)
    bounds = np.minimum(own, soft.floors * own + (1.0 - soft.floors) * nearest_other)
    bounds[:, np.diff(segment.leaf_start) == 0] = np.inf
    return bounds


def soft_group_topk(segment: Segment, soft: SoftPosteriors, lca: np.ndarray, unit_queries: np.ndarray,
                    query_classes: np.ndarray, query_weights: np.ndarray, alpha: float,
                    k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(D, ids, pairs scored) of the k best items by D = D_cos + alpha D_H; padded with inf and ``MISSING_ID``.

    ``lca`` is the K x K matrix of normalised LCA heights; the queries are unit rows with sparse posteriors.
    """
    n_queries = len(unit_queries)
    best_keys, best_ids = no_candidates(n_queries, k)
    if len(segment) == 0 or n_queries == 0:
        return best_keys, best_ids, 0
    heights = expected_heights(lca, query_classes, query_weights)
    tiles = _tiles(segment.leaf_start)
    bounds = alpha * np.minimum.reduceat(group_bounds(segment, soft, heights), tiles[:-1], axis=1)
    order = np.argsort(bounds, axis=1, kind="stable")
    sorted_bounds = np.take_along_axis(bounds, order, axis=1)
    rows_of = segment.leaf_start[tiles]
    sizes = np.diff(rows_of)
    covered = np.cumsum(sizes[order], axis=1)  # items in a query's first j+1 groups
    done = np.zeros(n_queries, dtype=np.int64)  # groups of each query scanned so far, in its order
    budget = FIRST_ROUND_FACTOR * k
    scored = 0
    while True:
        kth = best_keys[:, k - 1]
        reachable = np.sum(~(kth[:, None] < sorted_bounds), axis=1)  # groups whose bound does not exceed kth
        already = np.where(done > 0, covered[np.arange(n_queries), np.maximum(done - 1, 0)], 0)
        within_budget = np.sum(covered < (already + budget)[:, None], axis=1) + 1
        until = np.minimum(reachable, np.maximum(within_budget, done + 1))
        query_rows, positions = np.nonzero(np.arange(order.shape[1]) < until[:, None])
        fresh = positions >= done[query_rows]
        query_rows, groups = query_rows[fresh], order[query_rows[fresh], positions[fresh]]
        if len(groups) == 0:
            break
        scored += _scan(segment, soft, heights, unit_queries, alpha, k, query_rows, rows_of, groups, best_keys,
                        best_ids)
        done = np.maximum(done, until)
        budget *= ROUND_GROWTH
    best_ids[np.isinf(best_keys)] = MISSING_ID
    return best_keys, best_ids, scored


def _tiles(leaf_start: np.ndarray) -> np.ndarray:
    """Group indices where tiles start, and the number of groups at the end: consecutive groups are joined until
    a tile holds ``TILE_ROWS`` rows (a group larger than that is a tile of its own)."""
    starts, rows = [0], 0
    for group, size in enumerate(np.diff(leaf_start)[:-1]):
        rows += int(size)
        if rows >= TILE_ROWS:
            starts.append(group + 1)
            rows = 0
    return np.array(starts + [len(leaf_start) - 1], dtype=np.int64)


def _scan(segment, soft, heights, unit_queries, alpha, k, query_rows, rows_of, groups, best_keys, best_ids) -> int:
    """Score every (query, tile) pair and merge into the running top-k in place; returns pairs scored."""
    by_group = np.argsort(groups, kind="stable")
    query_rows, groups = query_rows[by_group], groups[by_group]
    cuts = np.flatnonzero(np.diff(groups)) + 1
    scored = 0
    for rows, group in zip(np.split(query_rows, cuts), groups[np.concatenate([[0], cuts])]):
        start, end = int(rows_of[group]), int(rows_of[group + 1])
        step = max(1, KEYS_PER_BLOCK // len(rows))
        for lo in range(start, end, step):
            hi = min(end, lo + step)
            keys = _block_keys(segment, soft, heights[rows], unit_queries[rows], alpha, lo, hi)
            best_keys[rows], best_ids[rows] = merge_smallest_k(best_keys[rows], best_ids[rows], keys,
                                                               segment.ids[lo:hi], k)
        scored += len(rows) * (end - start)
    return scored


def _block_keys(segment, soft, heights, unit_queries, alpha, lo, hi) -> np.ndarray:
    """D of the queries against the rows [lo, hi): float64, inf for removed rows."""
    block = np.asarray(segment.vectors[lo:hi], dtype=np.float64)
    keys = np.clip(1.0 - unit_queries @ block.T, 0.0, 2.0)
    classes, weights = soft.classes[lo:hi], soft.weights[lo:hi].astype(np.float64)
    hierarchy = np.zeros_like(keys)
    for column in range(classes.shape[1]):
        hierarchy += heights[:, classes[:, column]] * weights[:, column]
    keys += alpha * hierarchy
    if segment.alive is not None:
        keys[:, ~segment.alive[lo:hi]] = np.inf
    return keys
