"""The ranking methods and their distances, written out plainly.

For a query q and a database item i with leaves l(q), l(i):

* ``euclidean``: ||q - i||
* ``cosine``:    D_cos = 1 - cos(q, i), clipped to [0, 2]
* ``combined``:  D = D_cos + alpha * height(LCA(l(q), l(i))) / height(root)   (paper eq. 3-6)
* ``flat``:      the same with a one-level tree: D_cos + alpha * [l(q) != l(i)]
* ``hierarchy``: rank by the LCA term first, ties broken by D_cos
* ``soft``:      D_cos + alpha * sum_a sum_b p(a|q) p(b|i) height(LCA(a, b)) / height(root), the expected
                 LCA height under the class posteriors (hard leaves are its zero-temperature limit)

Every ranking breaks exact ties by database order. The functions here score
the whole database and sort it fully; they are the reference that the fast
index is tested against, and what evaluation uses when it needs full rankings.
"""
from __future__ import annotations

import numpy as np

from treeseek import choices
from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy

METHODS = choices.METHODS


def normalize_rows(X: np.ndarray, norms: np.ndarray | None = None) -> np.ndarray:
    """Unit-length rows in float64; an all-zero row stays zero (cosine 0 to everything). ``norms``: the rows'
    lengths, when the caller has them already."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True) if norms is None else np.asarray(norms, np.float64)[:, None]
    return X / np.where(norms > 0, norms, 1.0)


def cosine_distances(Q: np.ndarray, X: np.ndarray, normalized: bool = False) -> np.ndarray:
    if not normalized:
        Q, X = normalize_rows(Q), normalize_rows(X)
    return np.clip(1.0 - Q @ X.T, 0.0, 2.0)


def euclidean_distances(Q: np.ndarray, X: np.ndarray) -> np.ndarray:
    Q = np.asarray(Q, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    squared = np.sum(Q**2, axis=1)[:, None] + np.sum(X**2, axis=1)[None, :] - 2.0 * Q @ X.T
    return np.sqrt(np.maximum(squared, 0.0))


def checked_alpha(alpha: float) -> float:
    """alpha as a float, refused unless it is finite and >= 0 (every ranking with a hierarchy term)."""
    alpha = float(alpha)
    if alpha < 0 or not np.isfinite(alpha):
        raise TreeseekError(f"alpha must be a finite number >= 0, got {alpha}")
    return alpha


def hierarchy_weight(method: str, alpha: float, hierarchy: Hierarchy) -> float:
    """Weight of the normalised LCA height in the ranking key.

    For ``hierarchy`` the weight exceeds the whole range of D_cos, so the key
    orders by LCA height first and D_cos second.
    """
    if method in ("combined", "flat", "soft"):
        return float(alpha)
    if method == "hierarchy":
        return 4.0 * max(hierarchy.max_height, 1)
    return 0.0


def method_hierarchy(method: str, hierarchy: Hierarchy) -> Hierarchy:
    """The tree a method ranks with: ``flat`` replaces it by a one-level tree."""
    return Hierarchy.flat(hierarchy.n_leaves) if method == "flat" else hierarchy


def ranking_keys(
    method: str,
    Q: np.ndarray,
    X: np.ndarray,
    query_leaves: np.ndarray | None = None,
    item_leaves: np.ndarray | None = None,
    hierarchy: Hierarchy | None = None,
    alpha: float = 1.0,
    query_posteriors: np.ndarray | None = None,
    item_posteriors: np.ndarray | None = None,
) -> np.ndarray:
    """nq x n matrix whose ascending order is the method's ranking (``soft`` needs the posteriors)."""
    if method == "euclidean":
        return euclidean_distances(Q, X)
    keys = cosine_distances(Q, X)
    if method == "cosine":
        return keys
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}")
    if method == "soft":
        return keys + float(alpha) * soft_hierarchy_distances(query_posteriors, item_posteriors, hierarchy)
    tree = method_hierarchy(method, hierarchy)
    lca = tree.normalized_lca[np.ix_(np.asarray(query_leaves), np.asarray(item_leaves))]
    return keys + hierarchy_weight(method, alpha, tree) * lca


def soft_hierarchy_distances(query_posteriors: np.ndarray, item_posteriors: np.ndarray,
                             hierarchy: Hierarchy) -> np.ndarray:
    """Expected normalised LCA height, sum_a sum_b p(a|q) p(b|i) h(LCA(a, b))/H, written out directly."""
    return np.asarray(query_posteriors) @ hierarchy.normalized_lca @ np.asarray(item_posteriors).T


def full_sort_search(keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of every row by a full stable sort: the brute-force reference."""
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(keys, order, axis=1), order
