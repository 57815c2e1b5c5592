"""The combined distance, hard or soft, as one maximum inner-product search.

With L the normalised LCA heights of a tree, S = 1 - L factors as S = G Gᵀ with one column per node:
G[a, n] = sqrt((h(parent(n)) - h(n)) / H) when n is a or one of its ancestors. (The common ancestors
of a and b are the ancestors of their LCA, and those weights telescope to 1 - h(LCA)/H.) For class
posteriors p_q, p_i the soft hierarchical distance, the expected normalised LCA height, is
    D_H = p_qᵀ L p_i = 1 - (Gᵀp_q)·(Gᵀp_i),
so, for unit feature vectors x̂,
    D = D_cos + α D_H = (1 + α) - <[x̂_q, α Gᵀp_q], [x̂_i, Gᵀp_i]>.
One-hot posteriors give the paper's hard distance. Any inner-product engine answers the top-k.
"""
from __future__ import annotations

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.search.distances import normalize_rows
from treeseek.search.threads import faiss_threads_for


def tree_factor(tree: Hierarchy) -> np.ndarray:
    """K x n_nodes matrix G with G Gᵀ = 1 - normalised LCA heights."""
    if tree.max_height == 0:
        return np.ones((tree.n_leaves, 1))
    parent_height = np.array([tree.height[p] if p >= 0 else tree.height[n] for n, p in enumerate(tree.parent)])
    weights = np.sqrt((parent_height - tree.height) / tree.max_height)
    G = np.zeros((tree.n_leaves, tree.n_nodes))
    for leaf in range(tree.n_leaves):
        path = tree.ancestors(leaf)
        G[leaf, path] = weights[path]
    return G


def augment(features: np.ndarray, posteriors: np.ndarray, factor: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """[x̂, alpha Gᵀp]: items use alpha = 1 and queries the ranking's alpha (float32, FAISS's type)."""
    return _joined(features, np.asarray(posteriors) @ factor, alpha)


def augment_leaves(features: np.ndarray, leaves: np.ndarray, factor: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``augment`` with one-hot posteriors at ``leaves`` (the paper's hard distance), without the K-wide one-hots."""
    return _joined(features, factor[np.asarray(leaves, dtype=np.int64)], alpha)


def _joined(features: np.ndarray, tree_part: np.ndarray, alpha: float) -> np.ndarray:
    return np.hstack([normalize_rows(features), alpha * tree_part]).astype(np.float32)


def distances_from_similarities(similarities: np.ndarray, alpha: float) -> np.ndarray:
    """D = (1 + alpha) - <query vector, item vector>: the one place the combined distance is recovered from an
    inner product, for FAISS here, the index's segments and external engines alike."""
    return (1.0 + alpha) - np.asarray(similarities, dtype=np.float64)


class InnerProductIndex:
    """Top-k of D = (1 + alpha) - <query, item> over augmented vectors, through a FAISS inner-product index.

    Item vectors do not depend on alpha (``augment`` with alpha 1); each search gives its queries' alpha.

    ``factory`` is a FAISS index_factory string: ``Flat`` (exact, the default), or an approximate one
    such as ``IVF1024,Flat`` (trained on the first batch added; ``nprobe`` lists searched) or ``HNSW32``.
    """

    def __init__(self, factory: str = "Flat", nprobe: int = 16):
        self.factory, self.nprobe = factory, nprobe
        self.index_ = None

    def add(self, augmented_items: np.ndarray) -> None:
        import faiss

        items = np.ascontiguousarray(augmented_items, dtype=np.float32)
        if self.index_ is None:
            try:
                self.index_ = faiss.index_factory(items.shape[1], self.factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as error:
                raise TreeseekError(f"FAISS cannot build index {self.factory!r}: {str(error).splitlines()[0]}") from None
            if hasattr(self.index_, "nprobe"):
                self.index_.nprobe = self.nprobe
        if not self.index_.is_trained:
            self.index_.train(items)
        self.index_.add(items)

    def search(self, augmented_queries: np.ndarray, k: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """(D, positions) of the k best items, padded with +inf and -1; the queries were augmented with ``alpha``."""
        with faiss_threads_for(len(augmented_queries)):
            similarity, ids = self.index_.search(np.ascontiguousarray(augmented_queries, dtype=np.float32), k)
        return np.where(ids >= 0, distances_from_similarities(similarity, alpha), np.inf), ids
