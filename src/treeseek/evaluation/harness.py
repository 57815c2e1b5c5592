"""Rank a query set against a database with every method and score the rankings.

Two protocols: separate query and database sets, or leave-one-out within one
set (each query is removed from its own ranking). Queries and database items
get their leaves by Mahalanobis assignment, as in the paper; with
``use_database_labels`` the database uses its known labels instead. Labels of
queries are only used for scoring.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from treeseek import choices
from treeseek.errors import TreeseekError
from treeseek.evaluation import metrics as M
from treeseek.evaluation.conventions import TO_R, RankedBatch, aggregate, get_convention
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.builders import lca_agreement
from treeseek.io.features import FeatureSet, align_labels
from treeseek.search import METHODS, ranking_keys, smallest_k
from treeseek.search.distances import checked_alpha

CURVE_K = 100
# Karthik et al.'s conditional-risk rule (CRM, ICLR 2021) as a retrieval baseline: the query's class is the one
# of lowest expected LCA height under its posterior, argmin_c sum_a p(a|q) L[a, c], and the database is ranked
# as ``combined`` ranks it from that class. ``soft`` keeps the whole expectation per item instead of one class.
BASELINES = choices.BASELINES
EVALUATION_METHODS = (*METHODS, *BASELINES)


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


def evaluate_retrieval(
    model,
    queries: FeatureSet,
    database: FeatureSet | None = None,
    *,
    methods: Sequence[str] = EVALUATION_METHODS,
    alpha: float | None = None,
    ks: Sequence[int] = (1, 5, 10),
    taxonomy: Hierarchy | None = None,
    use_database_labels: bool = False,
    progress: bool = True,
    full_ranking: bool = True,
    convention: str = "treeseek",
    metrics: Sequence[str] | None = None,
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
        Rankings to score: ``treeseek.search.distances.METHODS`` and the ``crm`` baseline.
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
        Also score the metrics of the whole ranking (mAP, H-AP, MAP@R, R-precision: the costliest).
    convention : str
        Whose definitions the metrics follow (``treeseek.evaluation.conventions``): ``treeseek`` (default),
        ``barz``, ``hpdh``, ``deephash``, ``pml`` or ``bertinetto``.
    metrics : sequence of str, optional
        Only these metric families (or reported names) of the convention; default: all it defines.

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
    convention_type = get_convention(convention)
    unknown = [m for m in methods if m not in EVALUATION_METHODS]
    if unknown:
        raise TreeseekError(f"unknown method(s): {', '.join(unknown)}; choose from {', '.join(EVALUATION_METHODS)}")
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
        db_leaves = model.known_leaves(query_x, query_y) if use_database_labels else query_leaves
    else:
        db_x = model.check_dim(database.features, database.source)
        db_y = align_labels(FeatureSet(db_x, database.require_labels(), database.class_names, source=database.source),
                            model.class_names_)
        db_leaves = model.known_leaves(db_x, db_y) if use_database_labels else model.assign(db_x)
    n_db = len(db_x) - (1 if leave_one_out else 0)
    if n_db < 1:
        raise TreeseekError("leave-one-out needs at least two vectors")

    n_classes = model.n_classes_
    query_post = db_post = None
    if "soft" in methods or "crm" in methods:
        query_post = model.posteriors(query_x)
        db_post = np.eye(model.n_leaves_)[db_leaves] if use_database_labels else \
            (query_post if leave_one_out else model.posteriors(db_x))
    counts = np.bincount(db_y, minlength=n_classes)
    n_relevant = counts[query_y] - (1 if leave_one_out else 0)
    if taxonomy is not None and taxonomy.n_leaves != n_classes:
        raise TreeseekError(f"evaluation taxonomy has {taxonomy.n_leaves} classes, the model {n_classes}")
    scorer = convention_type(taxonomy, counts, leave_one_out)
    reported = scorer.metric_names(ks, full_ranking, only=metrics)
    k_max = max(CURVE_K, *ks, *(k for _, _, k in reported if k is not None))
    if any(scorer.families[family] & TO_R for _, family, _ in reported):  # MAP@R, R-precision: the first R ranks
        k_max = max(k_max, int(n_relevant.max(initial=0)))
    k_max = min(n_db, k_max)
    batch = int(max(1, min(1024, 2e7 // max(1, len(db_x)))))
    all_columns = np.arange(len(db_x))
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(methods) * len(query_x), desc="evaluate", unit="query", disable=not progress, leave=False)
    # every ranking but the Euclidean takes its cosine in the model's cosine space (TreeseekModel.cosine)
    query_c = model.cosine_features(query_x)
    db_c = query_c if leave_one_out else model.cosine_features(db_x)
    for method in methods:
        method_q, method_db = (query_x, db_x) if method == "euclidean" else (query_c, db_c)
        parts: dict[str, list] = {name: [] for name, _, _ in reported}
        curve_parts = []
        for start in range(0, len(query_x), batch):
            rows = np.arange(start, min(start + batch, len(query_x)))
            qy = query_y[rows]
            if method == "crm":  # the conditional-risk class, ranked as combined ranks a query's leaf
                risk_leaves = np.argmin(query_post[rows] @ model.hierarchy_.normalized_lca, axis=1)
                keys = ranking_keys("combined", method_q[rows], method_db, risk_leaves, db_leaves, model.hierarchy_,
                                    alpha)
            else:
                keys = ranking_keys(method, method_q[rows], method_db, query_leaves[rows], db_leaves, model.hierarchy_,
                                    alpha, None if query_post is None else query_post[rows], db_post)
            if leave_one_out:
                keys[np.arange(len(rows)), rows] = np.inf  # the query ranks last, then is cut off
            _, top = smallest_k(keys, all_columns, k_max)
            ranked = RankedBatch(db_y[top], qy, n_relevant[rows], _full_labels(keys, db_y, n_db),
                                 _full_ap(keys, db_y, qy, rows if leave_one_out else None))
            for name, family, k in reported:
                parts[name].append(scorer.score(family, ranked, k))
            curve_parts.append(M.average_precision_curve(ranked.relevant, n_relevant[rows], CURVE_K))
            bar.update(len(rows))
        curve = np.concatenate(curve_parts)
        results[method] = {name: aggregate(scores) for name, scores in parts.items()}
        with np.errstate(all="ignore"):
            curves[method] = np.nanmean(curve, axis=0) if np.any(n_relevant > 0) else np.full(curve.shape[1], np.nan)
    bar.close()
    info = {
        "protocol": "leave-one-out" if leave_one_out else "query-database",
        "n_queries": int(len(query_x)),
        "n_database": int(n_db),
        "alpha": alpha,
        "query_leaf_accuracy": float(np.mean(model.leaf_class_[query_leaves] == query_y)),
        "queries_without_relevant": int(np.sum(n_relevant == 0)),
        "database_leaves": "labels" if use_database_labels else "mahalanobis",
        "convention": convention,
    }
    if taxonomy is not None:  # how well the model's tree agrees with the evaluation taxonomy
        info["tree_shape"] = model.hierarchy_.shape()
        info["taxonomy_agreement"] = lca_agreement(model.class_hierarchy_, taxonomy)
    return EvaluationResult(results, curves, info)


def _full_labels(keys: np.ndarray, db_y: np.ndarray, n_db: int):
    """The whole ranking's labels, sorted on first use (ties by column, as ``smallest_k``)."""
    return functools.cache(lambda: db_y[np.argsort(keys, axis=1, kind="stable")[:, :n_db]])


def _full_ap(keys: np.ndarray, db_y: np.ndarray, query_y: np.ndarray, own_columns: np.ndarray | None):
    """AP over the whole ranking, without sorting it; ``own_columns``: each query's own column (leave-one-out)."""
    def compute():
        relevant_columns = db_y[None, :] == query_y[:, None]
        if own_columns is not None:
            relevant_columns[np.arange(len(query_y)), own_columns] = False
        return M.average_precision_from_keys(keys, relevant_columns)
    return functools.cache(compute)
