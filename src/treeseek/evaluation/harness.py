"""Rank a query set against a database with every method and score the rankings.

Two protocols: separate query and database sets, or leave-one-out within one
set (each query is removed from its own ranking). Queries and database items
get their leaves by Mahalanobis assignment, as in the paper; with
``use_database_labels`` the database uses its known labels instead. Labels of
queries are only used for scoring.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from treeseek.errors import TreeseekError
from treeseek.evaluation import metrics as M
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.builders import lca_agreement
from treeseek.io.features import FeatureSet, align_labels
from treeseek.search import METHODS, ranking_keys, smallest_k
from treeseek.search.distances import checked_alpha

MAHP_K = 250
CURVE_K = 100


@dataclass
class EvaluationResult:
    metrics: dict[str, dict[str, float]]          # method -> metric name -> mean value
    curves: dict[str, np.ndarray]                  # method -> mAP@1..mAP@CURVE_K
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "metrics": self.metrics,
            "map_curves": {m: [None if np.isnan(v) else float(v) for v in c] for m, c in self.curves.items()},
            "info": self.info,
        }


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


def evaluate_retrieval(
    model,
    queries: FeatureSet,
    database: FeatureSet | None = None,
    *,
    methods: Sequence[str] = METHODS,
    alpha: float | None = None,
    ks: Sequence[int] = (1, 5, 10),
    taxonomy: Hierarchy | None = None,
    use_database_labels: bool = False,
    progress: bool = True,
    full_ranking: bool = True,
) -> EvaluationResult:
    """Score every ranking method on a query set against the brute-force full rankings.

    Parameters
    ----------
    model : TreeseekModel
        A fitted model: it places queries and items at leaves.
    queries : FeatureSet
        Query features with labels.
    database : FeatureSet, optional
        Database features with labels; without it, leave-one-out within ``queries``.
    methods : sequence of str
        Rankings to score (``treeseek.search.distances.METHODS``).
    alpha : float, optional
        Weight of the hierarchy term (default: the model's).
    ks : sequence of int
        Cut-offs of the @k metrics.
    taxonomy : Hierarchy, optional
        Evaluation taxonomy for mAHP@250, nDCG@k and mistake severity.
    use_database_labels : bool
        Place database items at their known labels instead of the model's leaves.
    progress : bool
        Show a progress bar.
    full_ranking : bool
        Also score mAP over the whole ranking (the costliest metric).

    Returns
    -------
    EvaluationResult
        ``metrics[method][name]``, the mAP@k ``curves`` and ``info`` about the protocol.

    Examples
    --------
    >>> from treeseek.hierarchy.synthetic import planted_hierarchy
    >>> from treeseek.model import TreeseekModel
    >>> data = planted_hierarchy((2, 2), dim=8, samples_per_class=15, seed=0)
    >>> model = TreeseekModel(hierarchy="average").fit(data.features, data.labels)
    >>> result = evaluate_retrieval(model, FeatureSet(data.features, data.labels), methods=["cosine", "combined"],
    ...                             ks=(5,), progress=False)
    >>> result.info["protocol"], sorted(result.metrics)
    ('leave-one-out', ['combined', 'cosine'])
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise TreeseekError(f"unknown method(s): {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not ks or min(ks) < 1:
        raise TreeseekError("every k must be a positive integer")
    alpha = checked_alpha(model.alpha if alpha is None else alpha)
    leave_one_out = database is None
    query_x = model.check_dim(queries.features, queries.source)
    query_y = align_labels(FeatureSet(query_x, queries.require_labels(), queries.class_names, source=queries.source),
                           model.class_names_)
    query_leaves = model.assign(query_x)
    if leave_one_out:
        db_x, db_y = query_x, query_y
        db_leaves = query_y if use_database_labels else query_leaves
    else:
        db_x = model.check_dim(database.features, database.source)
        db_y = align_labels(FeatureSet(db_x, database.require_labels(), database.class_names, source=database.source),
                            model.class_names_)
        db_leaves = db_y if use_database_labels else model.assign(db_x)
    n_db = len(db_x) - (1 if leave_one_out else 0)
    if n_db < 1:
        raise TreeseekError("leave-one-out needs at least two vectors")

    n_classes = model.n_classes_
    query_post = db_post = None
    if "soft" in methods:
        query_post = model.posteriors(query_x)
        db_post = np.eye(n_classes)[db_y] if use_database_labels else \
            (query_post if leave_one_out else model.posteriors(db_x))
    counts = np.bincount(db_y, minlength=n_classes)
    n_relevant = counts[query_y] - (1 if leave_one_out else 0)
    if taxonomy is not None:
        if taxonomy.n_leaves != n_classes:
            raise TreeseekError(f"evaluation taxonomy has {taxonomy.n_leaves} classes, the model {n_classes}")
        similarity = 1.0 - taxonomy.normalized_lca
        gains = taxonomy.shared_levels
        k_h = max(MAHP_K, *ks)
        ideal_sim = ideal_values(similarity, counts, k_h, leave_one_out)
        ideal_gain = ideal_values(gains, counts, k_h, leave_one_out)

    k_max = min(n_db, max(*ks, CURVE_K, MAHP_K if taxonomy is not None else 1))
    batch = int(max(1, min(1024, 2e7 // max(1, len(db_x)))))
    all_columns = np.arange(len(db_x))
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(methods) * len(query_x), desc="evaluate", unit="query", disable=not progress, leave=False)
    for method in methods:
        parts: dict[str, list[np.ndarray]] = {}
        severity = {k: [0.0, 0] for k in ks}
        for start in range(0, len(query_x), batch):
            rows = np.arange(start, min(start + batch, len(query_x)))
            qy = query_y[rows]
            keys = ranking_keys(method, query_x[rows], db_x, query_leaves[rows], db_leaves, model.hierarchy_, alpha,
                                None if query_post is None else query_post[rows], db_post)
            if leave_one_out:
                keys[np.arange(len(rows)), rows] = np.inf  # the query ranks last, then is cut off
            _, top = smallest_k(keys, all_columns, k_max)
            ranked_y = db_y[top]
            relevant = ranked_y == qy[:, None]
            r = n_relevant[rows]
            hits = M.precision_hits(relevant)
            values = {}
            if full_ranking:
                relevant_columns = db_y[None, :] == qy[:, None]
                if leave_one_out:
                    relevant_columns[np.arange(len(rows)), rows] = False
                values["map"] = M.average_precision_from_keys(keys, relevant_columns)
            for k in ks:
                values[f"precision@{k}"] = M.precision_at_k(relevant, k)
                values[f"map@{k}"] = M.average_precision_at_k(relevant, r, k, hits=hits)
                values[f"map_paper@{k}"] = M.average_precision_at_k(relevant, r, k, "paper", hits=hits)
            values["_curve"] = M.average_precision_curve(relevant, r, CURVE_K, hits=hits)
            if taxonomy is not None:
                sim = similarity[qy[:, None], ranked_y]
                gain = gains[qy[:, None], ranked_y]
                for k in sorted({*ks, MAHP_K}):
                    values[f"mahp@{k}"] = M.average_hierarchical_precision(sim, ideal_sim[qy], k)
                for k in ks:
                    values[f"ndcg@{k}"] = M.ndcg_at_k(gain, ideal_gain[qy], k)
                    total, count = M.mistake_severity_at_k(taxonomy.lca_heights[qy[:, None], ranked_y], relevant, k)
                    severity[k][0] += total
                    severity[k][1] += count
            for name, value in values.items():
                parts.setdefault(name, []).append(value)
            bar.update(len(rows))
        curve = np.concatenate(parts.pop("_curve"))
        method_metrics = {name: _nanmean(np.concatenate(chunks)) for name, chunks in parts.items()}
        for k, (total, count) in severity.items() if taxonomy is not None else ():
            method_metrics[f"severity@{k}"] = total / count if count else float("nan")
        results[method] = method_metrics
        with np.errstate(all="ignore"):
            curves[method] = np.nanmean(curve, axis=0) if np.any(n_relevant > 0) else np.full(curve.shape[1], np.nan)
    bar.close()
    info = {
        "protocol": "leave-one-out" if leave_one_out else "query-database",
        "n_queries": int(len(query_x)),
        "n_database": int(n_db),
        "alpha": alpha,
        "query_leaf_accuracy": float(np.mean(query_leaves == query_y)),
        "queries_without_relevant": int(np.sum(n_relevant == 0)),
        "database_leaves": "labels" if use_database_labels else "mahalanobis",
    }
    if taxonomy is not None:  # how well the model's tree agrees with the evaluation taxonomy
        info["tree_shape"] = model.hierarchy_.shape()
        info["taxonomy_agreement"] = lca_agreement(model.hierarchy_, taxonomy)
    return EvaluationResult(results, curves, info)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else float("nan")
