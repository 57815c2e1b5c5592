"""Exact top-k of the hierarchy-aware distance without scoring the whole database.

Items are kept grouped by leaf in depth-first order, so every subtree is one
contiguous block. A query whose leaf is l looks at the block of l first, then
at the rest of its parent's block, and so on up to the root: ring r holds the
items whose LCA with the query is l's r-th ancestor a_r, so all of them share
D_H = h(a_r)/H. Any item beyond ring r has D >= alpha * h(a_{r+1})/H, so once
the k-th best D found is below that bound, no later ring can enter the top-k.
Contiguous blocks are plain slices: no ID selector, no gather.
"""
from __future__ import annotations

import numpy as np

from ..errors import TreeseekError
from ..hierarchy import Hierarchy
from .distances import hierarchy_weight, method_hierarchy, normalize_rows
from .topk import MISSING_ID, smallest_k


class HierarchicalIndex:
    """``add(vectors, leaves)`` then ``search(queries, query_leaves, k) -> (D, I)``.

    ``method`` is ``combined``, ``flat``, ``hierarchy`` or ``cosine`` (see
    ``treeseek.search.distances``). Results equal a full stable sort of D.
    After a search, ``scored_fraction_`` is the share of (query, item) pairs
    that were scored.
    """

    def __init__(self, hierarchy: Hierarchy, alpha: float = 1.0, method: str = "combined"):
        if method not in ("combined", "flat", "hierarchy", "cosine"):
            raise TreeseekError(f"method {method!r} cannot use a hierarchical index")
        if alpha < 0 or not np.isfinite(alpha):
            raise TreeseekError(f"alpha must be a finite number >= 0, got {alpha}")
        self.hierarchy = method_hierarchy(method, hierarchy)
        self.alpha = float(alpha)
        self.method = method
        self._weight = hierarchy_weight(method, alpha, self.hierarchy)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._vectors = np.zeros((0, 0))
        self._ids = np.zeros(0, dtype=np.int64)
        self._leaves = np.zeros(0, dtype=np.int64)
        self._leaf_start = np.zeros(self.hierarchy.n_leaves + 1, dtype=np.int64)
        self.ntotal = 0

    def add(self, vectors: np.ndarray, leaves: np.ndarray, ids: np.ndarray | None = None) -> None:
        vectors = np.asarray(vectors)
        leaves = np.asarray(leaves, dtype=np.int64)
        if vectors.ndim != 2 or len(vectors) != len(leaves):
            raise TreeseekError("add() needs an N x d matrix and N leaves")
        if self.ntotal and vectors.shape[1] != self._dim:
            raise TreeseekError(f"vectors have {vectors.shape[1]} dimensions, the index holds {self._dim}")
        if len(leaves) and (leaves.min() < 0 or leaves.max() >= self.hierarchy.n_leaves):
            raise TreeseekError(f"leaf ids must be in [0, {self.hierarchy.n_leaves})")
        ids = np.arange(self.ntotal, self.ntotal + len(vectors)) if ids is None else np.asarray(ids, dtype=np.int64)
        self._dim = vectors.shape[1]
        self._parts.append((normalize_rows(vectors), leaves, ids))
        self.ntotal += len(vectors)

    def _consolidate(self) -> None:
        if not self._parts:
            return
        old = [(self._vectors, self._leaves, self._ids)] if len(self._ids) else []
        vectors, leaves, ids = (np.concatenate(arrays) for arrays in zip(*(old + self._parts)))
        self._parts = []
        order = np.lexsort((ids, self.hierarchy.leaf_rank[leaves]))
        self._vectors, self._leaves, self._ids = vectors[order], leaves[order], ids[order]
        counts = np.bincount(self.hierarchy.leaf_rank[self._leaves], minlength=self.hierarchy.n_leaves)
        self._leaf_start = np.concatenate([[0], np.cumsum(counts)])

    def _item_block(self, node: int) -> tuple[int, int]:
        start, end = self.hierarchy.block[node]
        return int(self._leaf_start[start]), int(self._leaf_start[end])

    def search(self, queries: np.ndarray, query_leaves: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        self._consolidate()
        queries = normalize_rows(queries)
        query_leaves = np.asarray(query_leaves, dtype=np.int64)
        if queries.ndim != 2 or len(queries) != len(query_leaves):
            raise TreeseekError("search() needs an nq x d matrix and nq leaves")
        if self.ntotal and queries.shape[1] != self._dim:
            raise TreeseekError(f"queries have {queries.shape[1]} dimensions, the index holds {self._dim}")
        if k < 1:
            raise TreeseekError(f"k must be at least 1, got {k}")
        out_keys = np.full((len(queries), k), np.inf)
        out_ids = np.full((len(queries), k), -1, dtype=np.int64)
        scored = 0
        for leaf in np.unique(query_leaves):
            rows = np.flatnonzero(query_leaves == leaf)
            keys, ids, n_scored = self._search_leaf(queries[rows], int(leaf), k)
            out_keys[rows], out_ids[rows] = keys, np.where(ids == MISSING_ID, -1, ids)
            scored += n_scored
        self.scored_fraction_ = scored / max(1, len(queries) * self.ntotal)
        return out_keys, out_ids

    def _search_leaf(self, queries: np.ndarray, leaf: int, k: int) -> tuple[np.ndarray, np.ndarray, int]:
        tree = self.hierarchy
        rings = [tree.root] if self._weight == 0 else tree.ancestors(leaf)
        best_keys = np.full((len(queries), k), np.inf)
        best_ids = np.full((len(queries), k), MISSING_ID, dtype=np.int64)
        active = np.arange(len(queries))
        inner: tuple[int, int] | None = None  # item block of the previous ring's node
        scored = 0
        for position, node in enumerate(rings):
            start, end = self._item_block(node)
            slices = [(start, end)] if inner is None else [(start, inner[0]), (inner[1], end)]
            slices = [(a, b) for a, b in slices if b > a]
            inner = (start, end)
            if slices:
                penalty = self._weight * (tree.height[node] / float(tree.max_height)) if tree.max_height else 0.0
                ring_ids = np.concatenate([self._ids[a:b] for a, b in slices])
                sims = np.concatenate([queries[active] @ self._vectors[a:b].T for a, b in slices], axis=1)
                ring_keys = np.clip(1.0 - sims, 0.0, 2.0) + penalty
                scored += ring_keys.size
                merged_keys = np.concatenate([best_keys[active], ring_keys], axis=1)
                merged_ids = np.concatenate([best_ids[active], np.broadcast_to(ring_ids, ring_keys.shape)], axis=1)
                best_keys[active], best_ids[active] = smallest_k(merged_keys, merged_ids, k)
            if position + 1 < len(rings):
                next_node = rings[position + 1]
                bound = self._weight * (tree.height[next_node] / float(tree.max_height))
                active = active[~(best_keys[active, k - 1] < bound)]
                if len(active) == 0:
                    break
        return best_keys, best_ids, scored
