"""Exact top-k of the hierarchy-aware distance without scoring the whole database.

Items are kept grouped by leaf in depth-first order, so every subtree is one
contiguous block. A query whose leaf is l is scored against the block of l
first, then against the block of l's parent, and so on up to the root. Every
item outside the block of the r-th ancestor a_r has its LCA with the query at
a_{r+1} or above, hence D >= alpha * h(a_{r+1})/H; once the k-th best D found
is below that bound, no item outside can enter the top-k and the query stops.
All queries that share an ancestor at a level are scored against its block in
one matrix product, so a block is read once per level, not once per query.
Blocks are plain slices: no ID selector, no gather of vectors.
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
        if len(query_leaves) and (query_leaves.min() < 0 or query_leaves.max() >= self.hierarchy.n_leaves):
            raise TreeseekError(f"query leaf ids must be in [0, {self.hierarchy.n_leaves})")
        tree = self.hierarchy
        best_keys = np.full((len(queries), k), np.inf)
        best_ids = np.full((len(queries), k), MISSING_ID, dtype=np.int64)
        # ancestor[l, r]: the r-th ancestor of leaf l, -1 past the root; without a hierarchy term, the root only
        if self._weight:
            ancestor = tree.ancestor_table
        else:
            ancestor = np.full((tree.n_leaves, 2), -1, dtype=np.int64)
            ancestor[:, 0] = tree.root
        depth = ancestor.shape[1] - 1
        active = np.arange(len(queries))
        scored = 0
        for level in range(depth):
            nodes = ancestor[query_leaves[active], level]
            active, nodes = active[nodes >= 0], nodes[nodes >= 0]
            # Every query under the same ancestor reads that block once, in one product.
            for node in np.unique(nodes):
                rows = active[nodes == node]
                scored += self._score_block(int(node), queries, query_leaves, rows, best_keys, best_ids, k)
            following = ancestor[query_leaves[active], level + 1]
            bound = np.where(following >= 0, self._weight * (tree.height[following] / float(max(tree.max_height, 1))), 0)
            unfinished = (following >= 0) & ~(best_keys[active, k - 1] < bound)
            active = active[unfinished]
            if len(active) == 0:
                break
        self.scored_fraction_ = scored / max(1, len(queries) * self.ntotal)
        return best_keys, np.where(best_ids == MISSING_ID, -1, best_ids)

    def _score_block(self, node, queries, query_leaves, rows, best_keys, best_ids, k) -> int:
        """Replace the candidates of ``rows`` by the top-k of the whole block of ``node``."""
        start, end = self._item_block(node)
        if end == start:
            return 0
        block_ids = self._ids[start:end]
        lca = self.hierarchy.normalized_lca
        chunk = max(1, int(2e7 // (end - start)))
        for first in range(0, len(rows), chunk):
            part = rows[first : first + chunk]
            keys = np.clip(1.0 - queries[part] @ self._vectors[start:end].T, 0.0, 2.0)
            if self._weight:
                keys += self._weight * lca[np.ix_(query_leaves[part], self._leaves[start:end])]
            best_keys[part], best_ids[part] = smallest_k(keys, block_ids, k)
        return len(rows) * (end - start)
