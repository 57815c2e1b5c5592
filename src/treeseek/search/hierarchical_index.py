"""Top-k of the hierarchy-aware distance, searched level by level on contiguous subtree blocks.

Items sit in a ``Segment``: grouped by leaf in depth-first order, so every
subtree is one slice. A query whose leaf is l is scored against the block of l
first, then against the ring of its parent (the parent's block minus l's), and
so on up to the root. Every item of the ring of the r-th ancestor a_r has its
LCA with the query at a_r, so D = D_cos + alpha * h(a_r)/H there, and every
item further out has D >= alpha * h(a_{r+1})/H. Once the k-th best D found is
below that bound, no item further out can enter the top-k and the query stops.
All queries that share an ancestor at a level are scored against its ring in
one batch, so a block is read once per level, not once per query.

With an exact backend the result equals a full stable sort of D; with an
approximate one each ring is searched approximately.
"""
from __future__ import annotations

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.search.backends import make_backend
from treeseek.search.distances import checked_alpha, hierarchy_weight, method_hierarchy, normalize_rows
from treeseek.search.segment import Segment
from treeseek.search.topk import MISSING_ID, merge_smallest_k, no_candidates

SEARCH_METHODS = ("combined", "flat", "hierarchy", "cosine")


def hierarchical_topk(segment: Segment, backend, tree: Hierarchy, weight: float, queries: np.ndarray,
                      query_leaves: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(D, ids, pairs scored) for unit ``queries``; D is padded with inf and ids with ``MISSING_ID``."""
    n_queries = len(queries)
    best_keys, best_ids = no_candidates(n_queries, k)
    if len(segment) == 0 or n_queries == 0:
        return best_keys, best_ids, 0
    # ancestor[l, r]: the r-th ancestor of leaf l, -1 past the root; without a hierarchy term, the root only
    if weight:
        ancestor = tree.ancestor_table
    else:
        ancestor = np.full((tree.n_leaves, 2), -1, dtype=np.int64)
        ancestor[:, 0] = tree.root
    scale = float(max(tree.max_height, 1))
    active = np.arange(n_queries)
    scored = 0
    for level in range(ancestor.shape[1] - 1):
        nodes = ancestor[query_leaves[active], level]
        active, nodes = active[nodes >= 0], nodes[nodes >= 0]
        for node in np.unique(nodes):
            rows = active[nodes == node]
            start, end = segment.block(tree, int(node))
            if end == start:
                continue
            exclude = None
            if level > 0:
                inner = ancestor[query_leaves[rows], level - 1]
                exclude = np.array([segment.block(tree, int(child)) for child in inner], dtype=np.int64)
                scored += int(np.sum((end - start) - (exclude[:, 1] - exclude[:, 0])))
            else:
                scored += len(rows) * (end - start)
            keys, ids = backend.ring_topk(queries[rows], start, end, exclude, k)
            keys = keys + weight * (tree.height[node] / scale)
            if level == 0:  # nothing found yet: the ring's top-k is the best so far
                best_keys[rows], best_ids[rows] = keys, ids
            else:
                best_keys[rows], best_ids[rows] = merge_smallest_k(best_keys[rows], best_ids[rows], keys, ids, k)
        following = ancestor[query_leaves[active], level + 1]
        bound = np.where(following >= 0, weight * (tree.height[following] / scale), 0.0)
        active = active[(following >= 0) & ~(best_keys[active, k - 1] < bound)]
        if len(active) == 0:
            break
    return best_keys, best_ids, scored


class HierarchicalIndex:
    """The level-by-level search over items whose leaves are given: ``add(vectors, leaves)`` then
    ``search(queries, query_leaves, k, method=..., alpha=...) -> (D, I)``.

    The building block of ``MemoryIndex``, which derives the leaves from a fitted model; its own tests
    give leaves that have nothing to do with the vectors. ``method`` is ``combined``, ``flat``,
    ``hierarchy`` or ``cosine`` (``treeseek.search.distances``); ``backend`` a name from
    ``treeseek.search.backends``. With the ``exact`` backend results equal a full stable sort of D.
    After a search, ``scored_fraction_`` is the share of (query, item) pairs that were scored.
    """

    def __init__(self, hierarchy: Hierarchy, *, backend: str = "exact", **backend_params):
        self.hierarchy = hierarchy
        self._backend_spec = (backend, backend_params)
        make_backend(backend, **backend_params)  # reject a bad name or parameter now, not at the first search
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._segment: Segment | None = None
        self._dim: int | None = None
        self.ntotal = 0

    def add(self, vectors: np.ndarray, leaves: np.ndarray, ids: np.ndarray | None = None) -> None:
        vectors = np.asarray(vectors)
        leaves = np.asarray(leaves, dtype=np.int64)
        if vectors.ndim != 2 or len(vectors) != len(leaves):
            raise TreeseekError("add() needs an N x d matrix and N leaves")
        if self._dim is not None and vectors.shape[1] != self._dim:
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
        if self._segment is not None:
            self._parts.insert(0, (self._segment.vectors, self._segment.leaves, self._segment.ids))
        vectors, leaves, ids = (np.concatenate(arrays) for arrays in zip(*self._parts))
        self._parts = []
        self._segment, _ = Segment.sorted_from(self.hierarchy, vectors, leaves, ids)
        name, params = self._backend_spec
        self._backend = make_backend(name, **params).build(self._segment)

    def segment(self) -> Segment:
        """The items laid out by leaf (everything added so far sorted in)."""
        self._consolidate()
        if self._segment is None:  # nothing added
            return Segment.sorted_from(self.hierarchy, np.zeros((0, self._dim or 0)), np.zeros(0), np.zeros(0))[0]
        return self._segment

    def search(self, queries: np.ndarray, query_leaves: np.ndarray, k: int, *, method: str = "combined",
               alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        if method not in SEARCH_METHODS:
            raise TreeseekError(f"method {method!r} cannot use a hierarchical index")
        tree = method_hierarchy(method, self.hierarchy)
        weight = hierarchy_weight(method, checked_alpha(alpha), tree)
        self._consolidate()
        queries = normalize_rows(queries)
        query_leaves = np.asarray(query_leaves, dtype=np.int64)
        if queries.ndim != 2 or len(queries) != len(query_leaves):
            raise TreeseekError("search() needs an nq x d matrix and nq leaves")
        if self._dim is not None and queries.shape[1] != self._dim:
            raise TreeseekError(f"queries have {queries.shape[1]} dimensions, the index holds {self._dim}")
        if k < 1:
            raise TreeseekError(f"k must be at least 1, got {k}")
        if len(query_leaves) and (query_leaves.min() < 0 or query_leaves.max() >= self.hierarchy.n_leaves):
            raise TreeseekError(f"query leaf ids must be in [0, {self.hierarchy.n_leaves})")
        if self._segment is None:
            (keys, ids), scored = no_candidates(len(queries), k), 0
        else:
            keys, ids, scored = hierarchical_topk(self._segment, self._backend, tree, weight, queries, query_leaves, k)
        self.scored_fraction_ = scored / max(1, len(queries) * self.ntotal)
        return keys, np.where(ids == MISSING_ID, -1, ids)
