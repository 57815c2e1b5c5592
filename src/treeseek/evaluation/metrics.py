"""Retrieval metrics, vectorised over a batch of queries.

Each function takes the ranking already turned into per-position values
(nq x n, best first): ``relevant`` (same class as the query), a similarity
``s`` or a gain ``g`` from an evaluation taxonomy. ``n`` is the ranking
length (the database, minus the query itself in leave-one-out); a cut-off k
larger than n uses the whole ranking. R is the number of relevant items in
the database for each query. With P(i) the precision at rank i and rel(i) in
{0, 1}:

* precision@k   = (1/m) sum_{i<=m} rel(i),  m = min(k, n)
* mAP@k         = (1/min(k, R)) sum_{i<=m} P(i) rel(i)       (standard)
* mAP_paper@k   = (1/k) sum_{i<=m} P(i) rel(i)                (the paper's normalisation)
* mAP           = (1/R) sum_{i<=n} P(i) rel(i)                (full ranking)
* HP@j          = sum_{i<=j} s(i) / sum_{i<=j} s*(i)          s* = the database's similarities sorted
                                                              descending (ideal ranking); 0/0 counts as 1
* mAHP@k        = trapezoid average of HP@1..HP@m, i.e. trapz(HP)/(m-1); HP@1 when m = 1.
                  (Barz & Denzler's code divides by k instead of k-1, so its values are (k-1)/k of these.)
* nDCG@k        = sum_{i<=m} g(i)/log2(i+1) / the same for the ideal order; g = number of tree levels
                  shared below the root (0/0 counts as 1)
* severity@k    = mean height(LCA) over all mistakes (rel = 0) in every query's top m (Bertinetto et al. 2020);
                  NaN when there are none.

Queries with R = 0 have no defined AP: the AP metrics average over the others.
"""
from __future__ import annotations

import numpy as np


def _cut(values: np.ndarray, k: int) -> np.ndarray:
    return values[:, : min(k, values.shape[1])]


def precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    top = _cut(relevant, k)
    return top.sum(axis=1) / top.shape[1]


def precision_hits(relevant: np.ndarray) -> np.ndarray:
    """sum over ranks of P(i) * rel(i), cumulated along the ranking."""
    rel = relevant.astype(np.float64)
    precision = np.cumsum(rel, axis=1) / np.arange(1, rel.shape[1] + 1)
    return np.cumsum(precision * rel, axis=1)


def average_precision_at_k(
    relevant: np.ndarray, n_relevant: np.ndarray, k: int, normalization: str = "standard", hits: np.ndarray | None = None
) -> np.ndarray:
    """Per-query AP@k; NaN where the query has no relevant item.

    ``hits`` may pass ``precision_hits(relevant)`` when several k share one ranking.
    """
    hits = precision_hits(relevant) if hits is None else hits
    total = hits[:, min(k, hits.shape[1]) - 1]
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    denominator = np.full_like(n_relevant, float(k)) if normalization == "paper" else np.minimum(k, n_relevant)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, total / denominator, np.nan)


def average_precision(relevant: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """Per-query AP over the full ranking; NaN where the query has no relevant item."""
    total = precision_hits(relevant)[:, -1]
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, total / n_relevant, np.nan)


def average_precision_from_keys(keys: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """AP of the ranking by ascending ``keys`` (ties by column) without building the ranking.

    The rank of a relevant item is the number of keys below it, plus the equal
    keys in earlier columns; a sort of the key values (no index) is enough.
    ``relevant`` is an nq x n mask over the columns of ``keys``.
    """
    ordered = np.sort(keys, axis=1)
    out = np.full(len(keys), np.nan)
    for row in range(len(keys)):
        columns = np.flatnonzero(relevant[row])
        if len(columns) == 0:
            continue
        values = keys[row, columns]
        below = np.searchsorted(ordered[row], values, side="left")
        tied = np.searchsorted(ordered[row], values, side="right") - below > 1
        for t in np.flatnonzero(tied):
            below[t] += np.count_nonzero(keys[row, : columns[t]] == values[t])
        ranks = np.sort(below) + 1
        out[row] = np.mean(np.arange(1, len(ranks) + 1) / ranks)
    return out


def _ratio(achieved: np.ndarray, ideal: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ideal > 0, achieved / np.where(ideal > 0, ideal, 1.0), 1.0)


def hierarchical_precision_curve(similarity: np.ndarray, ideal_similarity: np.ndarray, k: int) -> np.ndarray:
    """HP@1..HP@m per query (nq x m); ``ideal_similarity`` is sorted descending per query."""
    m = min(k, similarity.shape[1])
    achieved = np.cumsum(similarity[:, :m], axis=1)
    ideal = np.cumsum(ideal_similarity[:, :m], axis=1)
    return _ratio(achieved, ideal)


def average_hierarchical_precision(similarity: np.ndarray, ideal_similarity: np.ndarray, k: int) -> np.ndarray:
    curve = hierarchical_precision_curve(similarity, ideal_similarity, k)
    if curve.shape[1] == 1:
        return curve[:, 0]
    return np.trapezoid(curve, axis=1) / (curve.shape[1] - 1)


def ndcg_at_k(gain: np.ndarray, ideal_gain: np.ndarray, k: int) -> np.ndarray:
    top = _cut(gain, k).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
    return _ratio(top @ discount, ideal_gain[:, : top.shape[1]].astype(np.float64) @ discount)


def mistake_severity_at_k(lca_height: np.ndarray, relevant: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, (sum of LCA heights over the mistakes in the top k, number of mistakes): pooled over all
    queries, their ratio is severity@k."""
    mistakes = ~_cut(relevant, k)
    return np.where(mistakes, _cut(lca_height, k), 0).sum(axis=1).astype(np.float64), mistakes.sum(axis=1)


def average_precision_curve(
    relevant: np.ndarray, n_relevant: np.ndarray, k_max: int, hits: np.ndarray | None = None
) -> np.ndarray:
    """Per-query AP@1..AP@m (standard normalisation), nq x m; NaN rows where R = 0."""
    hits = _cut(precision_hits(relevant) if hits is None else hits, k_max)
    ks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    n_relevant = np.asarray(n_relevant, dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, hits / np.minimum(ks[None, :], n_relevant), np.nan)


def map_at_r(relevant: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """MAP@R (Musgrave et al. 2020): (1/R) sum_{i<=R} P(i) rel(i) over the first R ranks; NaN where R = 0.

    ``relevant`` must reach rank max(R) (the full ranking does)."""
    hits = precision_hits(relevant)
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    cut = np.clip(n_relevant, 1, hits.shape[1]) - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, hits[np.arange(len(hits)), cut] / n_relevant, np.nan)


def r_precision(relevant: np.ndarray, n_relevant: np.ndarray) -> np.ndarray:
    """R-precision: the share of relevant items among the first R ranks; NaN where R = 0."""
    found = np.cumsum(relevant, axis=1)
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    cut = np.clip(n_relevant, 1, found.shape[1]) - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_relevant > 0, found[np.arange(len(found)), cut] / n_relevant, np.nan)


def hierarchical_distance_at_k(lca_height: np.ndarray, k: int) -> np.ndarray:
    """HD@k (Karthik et al. 2021; Bertinetto et al.'s hdist@k): the mean height(LCA) of the top k, per query."""
    return _cut(lca_height, k).mean(axis=1)


def pop_relevance(shared: np.ndarray, depth: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """HAPPIER's "pop" relevance of every ranked item (Ramzi et al. 2022): w = (shared levels / the query's
    depth)^alpha, divided by how many items of the ranking share that many levels with the query (so each level
    weighs w in all). ``shared`` is nq x n over the whole ranking; 0 shared levels is irrelevant."""
    shared = np.asarray(shared, dtype=np.int64)
    weight = (shared / np.asarray(depth, dtype=np.float64)[:, None]) ** alpha
    out = np.zeros(shared.shape)
    for row in range(len(shared)):
        counts = np.bincount(shared[row])
        out[row] = weight[row] / counts[shared[row]]
    out[shared == 0] = 0.0
    return out


def hierarchical_average_precision(relevance: np.ndarray) -> np.ndarray:
    """H-AP (Ramzi et al. 2022) of rankings given each ranked item's relevance in [0, 1] (nq x n, best first):
    sum over relevant items of H-rank(i) / rank(i), over the sum of their relevances, with
    H-rank(i) = rel(i) + sum over items j ranked before i of min(rel(i), rel(j)). On 0/1 relevance it is AP.
    NaN where nothing is relevant."""
    out = np.full(len(relevance), np.nan)
    for row, rel in enumerate(np.asarray(relevance, dtype=np.float64)):
        values = np.unique(rel[rel > 0])
        if len(values) == 0:
            continue
        # items before each rank at each relevance value: min(rel(i), rel(j)) sums over those counts
        at_value = (rel[:, None] == values[None, :]).astype(np.float64)
        before = np.cumsum(at_value, axis=0) - at_value
        h_rank = rel + np.sum(before * np.minimum(rel[:, None], values[None, :]), axis=1)
        positive = rel > 0
        ranks = np.flatnonzero(positive) + 1.0
        out[row] = np.sum(h_rank[positive] / ranks) / rel[positive].sum()
    return out


def ideal_values(matrix: np.ndarray, counts: np.ndarray, k: int, leave_one_out: bool) -> np.ndarray:
    """Row c: the k largest ``matrix[c, label(i)]`` over database items i, descending.

    This is the ideal ranking for a query of class c; in leave-one-out the
    query itself is not in its database, so one item of class c is removed.
    """
    rows = np.zeros((matrix.shape[0], k))
    for c in range(matrix.shape[0]):
        available = counts.copy()
        if leave_one_out:
            available[c] = max(available[c] - 1, 0)  # classes absent from the set have no query
        order = np.argsort(-matrix[c], kind="stable")
        values = np.repeat(matrix[c, order], available[order])[:k]
        rows[c, : len(values)] = values
    return rows
