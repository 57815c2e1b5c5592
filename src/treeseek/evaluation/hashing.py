"""HPDH's protocol (test split against train split; mAP over the full ranking, mAHP@250, nDCG averaged over
k = 1..100), with treeseek's definitions of those metrics by default and HPDH's own with
``convention="hpdh"`` (``treeseek.evaluation.conventions``: its code takes the plain mean of HP@1..250 on
level matches, and discounts nDCG differently).

By default nDCG's gain is the number of hierarchy levels a result shares with the query
(``Hierarchy.shared_levels``); mAHP's similarity is 1 - height(LCA)/H.

Binary codes tie often (a 16-bit code has 17 possible distances), so how ties are ordered moves the
scores. Database order would be a bias: most datasets list images class by class, so a tie between
two classes would always favour the earlier class. Ties are ranked in a fixed random order of the
database instead (``tie_seed``), which estimates the score expected under any order without bias.

Two diagnostics split mAHP@250 into its parts: ``precision@250``, the share of the top 250 that is
of the query's class, and ``wrong similarity@250``, the mean similarity to the query of the others
(None when there are none).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from treeseek.codes.packing import hamming_distances
from treeseek.evaluation import metrics as M
from treeseek.evaluation.conventions import RankedBatch, aggregate, get_convention
from treeseek.hierarchy import Hierarchy


def evaluate_distances(distances: Callable[[slice], np.ndarray], n_queries: int, query_labels: np.ndarray,
                       db_labels: np.ndarray, tree: Hierarchy, k_hp: int = 250, k_ndcg: int = 100,
                       chunk: int = 256, tie_seed: int | None = 0, convention: str = "treeseek") -> dict:
    """``distances(rows)`` gives the query-rows x database distance matrix; returns the three means (with
    another ``convention``: the metrics that convention defines, at k = ``k_hp`` where they take a cut-off).

    Equal distances are ranked in a random order of the database fixed by ``tie_seed`` (``None``:
    database order)."""
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    tie_order = (np.arange(len(db_labels)) if tie_seed is None
                 else np.random.default_rng(tie_seed).permutation(len(db_labels)))
    counts = np.bincount(db_labels, minlength=tree.n_leaves)
    if convention != "treeseek":
        return _as_convention(distances, n_queries, query_labels, db_labels, tree, counts, tie_order, k_hp, chunk,
                              get_convention(convention))
    similarity, gains = 1.0 - tree.normalized_lca, tree.shared_levels.astype(np.float64)
    ideal_sim = M.ideal_values(similarity, counts, k_hp, False)
    ideal_gain = M.ideal_values(gains, counts, k_ndcg, False)
    ap, ahp, ndcg, same, wrong_sum, wrong_count = [], [], [], [], 0.0, 0
    for first in range(0, n_queries, chunk):
        rows = slice(first, min(first + chunk, n_queries))
        labels = query_labels[rows]
        order = np.argsort(distances(rows)[:, tie_order], axis=1, kind="stable")
        ranked = db_labels[tie_order][order]
        relevant = ranked == labels[:, None]
        ap.append(M.average_precision(relevant, relevant.sum(axis=1)))
        top_similarity = similarity[labels[:, None], ranked[:, :k_hp]]
        ahp.append(M.average_hierarchical_precision(top_similarity, ideal_sim[labels], k_hp))
        wrong = ~relevant[:, :k_hp]
        same.append(relevant[:, :k_hp].mean(axis=1))
        wrong_sum += float(top_similarity[wrong].sum())
        wrong_count += int(wrong.sum())
        gain = gains[labels[:, None], ranked[:, :k_ndcg]]
        ndcg.append(np.mean([M.ndcg_at_k(gain, ideal_gain[labels], k) for k in range(1, k_ndcg + 1)], axis=0))
    return {"map": float(np.nanmean(np.concatenate(ap))), f"mahp@{k_hp}": float(np.mean(np.concatenate(ahp))),
            f"ndcg@1-{k_ndcg}": float(np.mean(np.concatenate(ndcg))),
            f"precision@{k_hp}": float(np.mean(np.concatenate(same))),
            f"wrong similarity@{k_hp}": wrong_sum / wrong_count if wrong_count else None}


def _as_convention(distances, n_queries, query_labels, db_labels, tree, counts, tie_order, k, chunk, convention):
    scorer = convention(tree, counts, False)
    reported = scorer.metric_names((k,))
    parts: dict[str, list] = {name: [] for name, _, _ in reported}
    for first in range(0, n_queries, chunk):
        rows = slice(first, min(first + chunk, n_queries))
        labels = query_labels[rows]
        ranked = db_labels[tie_order][np.argsort(distances(rows)[:, tie_order], axis=1, kind="stable")]
        relevant = ranked == labels[:, None]
        n_relevant = counts[labels]
        batch = RankedBatch(ranked, labels, n_relevant, lambda ranked=ranked: ranked,
                            lambda relevant=relevant, n_relevant=n_relevant: M.average_precision(relevant, n_relevant))
        for name, family, cut in reported:
            parts[name].append(scorer.score(family, batch, cut))
    return {name: aggregate(scores) for name, scores in parts.items()}


def evaluate_codes(query_codes, db_codes, query_labels, db_labels, tree: Hierarchy, **kwargs) -> dict:
    """The protocol on packed codes ranked by Hamming distance."""
    return evaluate_distances(lambda rows: hamming_distances(query_codes[rows], db_codes).astype(np.int16),
                              len(query_codes), query_labels, db_labels, tree, **kwargs)
