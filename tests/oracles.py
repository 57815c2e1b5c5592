"""Brute-force references for every ranking, written from the definitions in plain numpy.

Nothing here calls treeseek's search code or its tree: LCA heights come from the tree's parent list (what
its taxonomy file holds), distances from the formulas, and rankings from one stable sort by (distance, id).
Tests compare treeseek's indexes against these.
"""
from __future__ import annotations

import numpy as np


# ---------------------------------------------------------------- the tree
def lca_heights(tree) -> tuple[np.ndarray, int]:
    """K x K matrix of height(LCA(a, b)) and the root's height, from the parent list of ``tree`` (a Hierarchy
    or its taxonomy-file dict). A leaf has height 0, any other node 1 + its tallest child's."""
    payload = tree if isinstance(tree, dict) else tree.to_dict()
    parent, n_leaves = [int(p) for p in payload["parent"]], int(payload["n_leaves"])
    children: dict[int, list[int]] = {}
    for node, up in enumerate(parent):
        children.setdefault(up, []).append(node)

    def height(node: int) -> int:
        return 0 if node not in children else 1 + max(height(child) for child in children[node])

    def ancestors(node: int) -> list[int]:
        path = [node]
        while parent[path[-1]] >= 0:
            path.append(parent[path[-1]])
        return path

    paths = [ancestors(leaf) for leaf in range(n_leaves)]
    out = np.zeros((n_leaves, n_leaves), dtype=np.int64)
    for a in range(n_leaves):
        above_a = set(paths[a])
        for b in range(n_leaves):
            out[a, b] = height(next(node for node in paths[b] if node in above_a))
    return out, height(parent.index(-1))


def lca_fractions(tree) -> np.ndarray:
    """height(LCA(a, b)) / height(root) for every pair of leaves (0 for a one-level tree of one leaf)."""
    heights, root = lca_heights(tree)
    return heights / root if root else heights.astype(np.float64)


# ----------------------------------------------------------- the distances
def unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def cosine(Q: np.ndarray, X: np.ndarray, unit_items: bool = False) -> np.ndarray:
    """1 - cos(q, x), clipped to [0, 2]; ``unit_items``: X holds stored unit vectors, taken as they are (a
    float16 copy is unit only to its rounding, and the index ranks with the copy)."""
    items = np.asarray(X, dtype=np.float64) if unit_items else unit(X)
    return np.clip(1.0 - unit(Q) @ items.T, 0.0, 2.0)


def hard_keys(method: str, Q, X, q_leaves, x_leaves, tree, alpha: float, unit_items: bool = False) -> np.ndarray:
    """Keys whose ascending order is the method's ranking: combined, flat, hierarchy, cosine or euclidean.

    ``hierarchy`` orders by LCA height first and cosine second: its key is 1 - cos + 4 * height(LCA), four
    times the LCA height in branchings, beyond cosine's range of 2."""
    if method == "euclidean":
        return np.sqrt(((np.asarray(Q, float)[:, None, :] - np.asarray(X, float)[None, :, :]) ** 2).sum(axis=2))
    distances = cosine(Q, X, unit_items)
    if method == "cosine":
        return distances
    q_leaves, x_leaves = np.asarray(q_leaves), np.asarray(x_leaves)
    if method == "flat":
        return distances + alpha * (q_leaves[:, None] != x_leaves[None, :])
    heights, root = lca_heights(tree)
    if method == "hierarchy":
        return distances + 4.0 * heights[np.ix_(q_leaves, x_leaves)]
    return distances + alpha * lca_fractions(tree)[np.ix_(q_leaves, x_leaves)]


def soft_keys(Q, X, q_posteriors, x_posteriors, tree, alpha: float, unit_items: bool = False) -> np.ndarray:
    """1 - cos + alpha * sum_a sum_b p(a|q) p(b|x) height(LCA(a, b)) / height(root)."""
    return cosine(Q, X, unit_items) + alpha * np.einsum("qa,ab,xb->qx", q_posteriors, lca_fractions(tree), x_posteriors)


def posteriors(model, X: np.ndarray, top_m: int | None = None, stored: bool = False) -> np.ndarray:
    """p(c | x) ∝ exp(-d_M²(x, c) / 2T) over the m nearest classes, renormalised, from the fitted PCA and tied
    Gaussians through scipy's Mahalanobis distance; ``stored`` rounds them to float32 as the index keeps them."""
    from scipy.spatial.distance import cdist

    assert model.covariance == "tied"
    Z = (np.asarray(X, np.float64) - model.pca_.mean_) @ model.pca_.components_.T
    gaussians = model.gaussians_
    squared = cdist(Z, gaussians.means_, "mahalanobis", VI=np.linalg.inv(gaussians.covariances_)) ** 2
    logits = -squared / (2.0 * model.temperature)
    out = np.zeros_like(logits)
    m = logits.shape[1] if top_m is None else top_m
    for row, values in enumerate(logits):
        kept = np.argsort(-values, kind="stable")[:m]
        weights = np.exp(values[kept] - values[kept].max())
        out[row, kept] = weights / weights.sum()
    return out.astype(np.float32).astype(np.float64) if stored else out


def hamming(query_codes: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
    """Differing bits between packed uint8 codes."""
    differing = np.bitwise_xor(query_codes[:, None, :], item_codes[None, :, :])
    return np.unpackbits(differing, axis=2).sum(axis=2).astype(np.float64)


# -------------------------------------------------------------- the ranking
def top_k(keys: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row the k smallest keys, exact ties by smaller id; padded with +inf and -1 to width k."""
    ids = np.asarray(ids, dtype=np.int64)
    D, I = np.full((len(keys), k), np.inf), np.full((len(keys), k), -1, dtype=np.int64)
    for row in range(len(keys)):
        order = np.lexsort((ids, keys[row]))[:k]
        D[row, : len(order)], I[row, : len(order)] = keys[row, order], ids[order]
    return D, I


# ------------------------------------------------------- a persistent index
def stored_items(index) -> dict:
    """The live items of a TreeIndex in id order, read from its segments' arrays: ids, unit vectors, the
    features as added (unit vector times stored length), stored leaves and labels."""
    parts = []
    for stored in index.stored_segments():
        alive = np.ones(len(stored), bool) if stored.segment.alive is None else stored.segment.alive
        vectors = np.asarray(stored.segment.vectors, dtype=np.float64)[alive]
        parts.append((stored.segment.ids[alive], vectors, vectors * stored.norms[alive, None],
                      stored.segment.leaves[alive], stored.labels[alive]))
    ids, vectors, features, leaves, labels = (np.concatenate(column) for column in zip(*parts))
    order = np.argsort(ids)
    return {"ids": ids[order], "vectors": vectors[order], "features": features[order], "leaves": leaves[order],
            "labels": labels[order]}


def novel(model, Q: np.ndarray) -> np.ndarray:
    """Whether each query is flagged as far from every known class: its smallest squared Mahalanobis distance to
    a leaf's Gaussian (scipy, from the fitted PCA and tied covariance) plus its squared distance from the PCA
    subspace over the model's residual variance, beyond the model's calibrated threshold."""
    from scipy.spatial.distance import cdist

    assert model.covariance == "tied"
    centred = np.asarray(Q, np.float64) - model.pca_.mean_
    Z = centred @ model.pca_.components_.T
    outside = np.sum((centred - Z @ model.pca_.components_) ** 2, axis=1)
    VI = np.linalg.inv(model.gaussians_.covariances_)
    score = (cdist(Z, model.gaussians_.means_, "mahalanobis", VI=VI) ** 2).min(axis=1)
    if model.residual_variance_ is not None:
        score = score + outside / model.residual_variance_
    return score > model.novelty_threshold_


def index_ranking(index, Q: np.ndarray, k: int, method: str = "combined", alpha: float | None = None,
                  added: np.ndarray | None = None, served: bool = False):
    """The exact top-k of a TreeIndex's live items by ``method``: queries at the model's leaves (soft: its
    posteriors, items' from ``added``, the features as added, row = id, or else their stored vectors restored to
    their lengths). ``served``: as the command line and the server rank, where a query far from every known
    class (``novel``) is ranked by cosine alone."""
    if served:
        flagged = novel(index.model, Q)
        D, I = index_ranking(index, Q, k, method, alpha, added)
        if flagged.any():
            D[flagged], I[flagged] = index_ranking(index, Q[flagged], k, "cosine")
        return D, I
    model, items = index.model, stored_items(index)
    alpha = model.alpha if alpha is None else alpha
    tree = model.hierarchy_
    if method == "soft":
        features = items["features"] if added is None else np.asarray(added)[items["ids"]]
        item_posteriors = posteriors(model, features, model.top_m, stored=True)
        keys = soft_keys(Q, items["vectors"], posteriors(model, Q, model.top_m), item_posteriors, tree, alpha,
                         unit_items=True)
        identity = np.hstack([items["vectors"], item_posteriors])
    else:
        keys = hard_keys(method, Q, items["vectors"], model.assign(Q), items["leaves"], tree, alpha, unit_items=True)
        identity = np.hstack([items["vectors"], items["leaves"][:, None]])
    # A matrix product may round two identical items' keys a unit apart; exact arithmetic ties them (by id).
    _, first, inverse = np.unique(identity, axis=0, return_index=True, return_inverse=True)
    return top_k(keys[:, first[inverse.ravel()]], items["ids"], k)


def queries(planted, n=40, seed=0):
    """Query rows near the planted data (perturbed copies of random items)."""
    rng = np.random.default_rng(seed)
    features = planted.features
    return features[rng.choice(len(features), n, replace=False)] + rng.normal(size=(n, features.shape[1]))


def hamming_ranking(hasher, features: np.ndarray, live_ids: np.ndarray, Q: np.ndarray, k: int):
    """The exact top-k by Hamming distance between the hasher's codes of the queries and of the live items'
    original features (row i of ``features`` is item i)."""
    live_ids = np.sort(np.asarray(live_ids, dtype=np.int64))
    return top_k(hamming(hasher.encode(Q), hasher.encode(features[live_ids])), live_ids, k)
