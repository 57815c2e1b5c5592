"""Choose PCA size, covariance model, merge threshold t and alpha on a validation split.

The training features are split (stratified) into a fitting part and a
validation part. Every grid point is fitted on the fitting part only, and
scored by the ranking method's mAP@10 (the paper's combined method unless told
otherwise) with the validation images as queries and the fitting part as
database. For the paper's ``visual`` tree, t is searched on the data's own scale: each
candidate is the quantile of the class-pair Bhattacharyya coefficients that
leaves c x K pairs above t, for a few c, so the grid means the same thing on
any dataset. Before a covariance model is scored, its Mahalanobis leaf accuracy on the validation images is
compared with the others' at the same PCA size: one more than ``LEAF_ACCURACY_MARGIN`` below the best is left
out. The chosen model is then scored with its cosine taken in each space of the grid (raw, centred, whitened) at
each alpha, the soft ranking's temperature is chosen at the best alpha, and a best alpha or temperature at an edge
of its grid is searched on past it (``refinement.widened``); a name tree tries the WordNet prior. The whole grid
is returned for the record, with what was left out and why.

``select_ranking`` then chooses, for fixed PCA and covariance, the tree builder, hard or soft
leaves with their temperature, and alpha, scored against a taxonomy when one is given.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from treeseek.data.datasets import stratified_split
from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.refinement import SELECTION_METRIC, refine_choice, with_wordnet_prior
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.builders import lca_agreement, make_builder
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel
from treeseek.statistics import ClassGaussians, VariancePCA
from treeseek.statistics.subclasses import MIN_SUBCLASS_SIZE

DEFAULT_GRID = {
    "max_components": [64, 128, 256, None],  # None: as many as 95% of the variance needs
    "covariance": ["tied", "diag"],
    "edges_per_class": [0.25, 0.5, 1.0, 2.0],
    "alpha": [0.5, 1.0, 2.0, 3.0],
    # scored at the chosen PCA size and covariance, with each alpha of the grid (``TreeseekModel.cosine``)
    "cosine": ["raw", "centred", "whitened"],
    # scored for the soft ranking at the chosen alpha, and widened like alpha
    "temperature": [1.0, 4.0, 16.0],
}
# a covariance model whose Mahalanobis leaves are this much less accurate on the validation images than another's
# at the same PCA size is not scored: on the collections of #31 (a flower set, a 200-class set) diagonal
# covariances at large PCA sizes fell to 13-20% leaf accuracy against 94% tied and never won, yet took half the grid
LEAF_ACCURACY_MARGIN = 0.1


@dataclass
class Selection:
    params: dict                      # the chosen TreeseekModel parameters
    score: float
    grid: list[dict] = field(default_factory=list)
    split: dict = field(default_factory=dict)
    method: str = "combined"          # the ranking method chosen with them
    notes: list[str] = field(default_factory=list)  # what the search did beyond its grid, in words


def threshold_spec(edges_per_class: float, n_classes: int) -> str:
    """The quantile spec that leaves about ``edges_per_class * K`` class pairs at or above t."""
    pairs = n_classes * (n_classes - 1) / 2
    quantile = 1.0 - min(1.0, edges_per_class * n_classes / max(pairs, 1.0))
    return f"q{quantile:.8f}"


def select_parameters(
    X: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    grid: dict | None = None,
    validation_fraction: float = 0.25,
    seed: int = 0,
    hierarchy: str = "visual",
    method: str = "combined",
    *,
    prune_margin: float | None = LEAF_ACCURACY_MARGIN,
    widen: bool = True,
) -> Selection:
    """Grid search for ``hierarchy`` ranked by ``method``; t is searched only for the paper's ``visual`` tree.

    ``prune_margin``: leave out covariance models whose validation leaf accuracy is more than this below the best
    (None: score them all); ``widen``: search alpha and the temperature on past an edge of their grids
    (``refinement.widened``)."""
    grid = {**DEFAULT_GRID, **(grid or {})}
    n_classes = len(class_names)
    is_val = stratified_split(y, validation_fraction, seed)
    fit_x, fit_y, val_x, val_y = X[~is_val], y[~is_val], X[is_val], y[is_val]
    caps = sorted({None if c is None else min(c, X.shape[1]) for c in grid["max_components"]},
                  key=lambda c: X.shape[1] + 1 if c is None else c)
    results = []
    seen_dims = set()
    for cap in caps:
        pca = VariancePCA(0.95, cap).fit(fit_x)
        if pca.n_components_ in seen_dims:  # a cap above the 95% size changes nothing
            continue
        seen_dims.add(pca.n_components_)
        z_fit = pca.transform(fit_x)
        z_val = pca.transform(val_x)
        fitted = {covariance: ClassGaussians(covariance).fit(z_fit, fit_y, n_classes)
                  for covariance in grid["covariance"]}
        accuracy = {covariance: float(np.mean(gaussians.assign(z_val) == val_y))
                    for covariance, gaussians in fitted.items()}
        for covariance, gaussians in fitted.items():
            if prune_margin is not None and accuracy[covariance] < max(accuracy.values()) - prune_margin:
                results.append({"max_components": cap, "pca_dim": int(pca.n_components_), "covariance": covariance,
                                "val_leaf_accuracy": accuracy[covariance], "step": "pruned", SELECTION_METRIC: None,
                                "pruned": f"leaf accuracy {accuracy[covariance]:.3f} against "
                                          f"{max(accuracy.values()):.3f}"})
                continue
            for edges in grid["edges_per_class"] if hierarchy == "visual" else [None]:
                spec = "auto" if edges is None else threshold_spec(edges, n_classes)
                builder = make_builder(hierarchy, spec, covariance).fit(z_fit, fit_y, list(class_names))
                model = TreeseekModel(0.95, max_components=cap, covariance=covariance, hierarchy=hierarchy,
                                      threshold=spec)
                model.pca_, model.gaussians_, model.hierarchy_ = pca, gaussians, builder.hierarchy_
                model.class_names_, model.class_hierarchy_ = list(class_names), builder.hierarchy_
                model.leaf_class_ = np.arange(n_classes)
                for alpha in grid["alpha"]:
                    result = evaluate_retrieval(model, FeatureSet(val_x, val_y), FeatureSet(fit_x, fit_y),
                                                methods=[method], alpha=alpha, ks=(10,), progress=False,
                                                full_ranking=False)
                    results.append({
                        "max_components": cap, "pca_dim": int(pca.n_components_), "covariance": covariance,
                        "edges_per_class": edges, "threshold": spec,
                        "threshold_value": getattr(builder, "threshold_", None),
                        "tree_shape": builder.shape_, "alpha": alpha,
                        SELECTION_METRIC: result.metrics[method][SELECTION_METRIC],
                        "val_leaf_accuracy": result.info["query_leaf_accuracy"],
                    })
    scored = [r for r in results if r.get("step") != "pruned"]
    best = max(scored, key=lambda r: (np.nan_to_num(r[SELECTION_METRIC], nan=-1.0), -r["alpha"]))
    params = {"variance": 0.95, "max_components": best["max_components"], "covariance": best["covariance"],
              "hierarchy": hierarchy, "threshold": best["threshold"], "alpha": best["alpha"]}
    split = {"validation_fraction": validation_fraction, "seed": seed, "n_fit": int((~is_val).sum()),
             "n_validation": int(is_val.sum()), "metric": SELECTION_METRIC}
    fitted = TreeseekModel(**params).fit(fit_x, fit_y, list(class_names))

    def score_of(model: TreeseekModel, alpha: float) -> float:
        return evaluate_retrieval(model, FeatureSet(val_x, val_y), FeatureSet(fit_x, fit_y), methods=[method],
                                  alpha=alpha, ks=(10,), progress=False, full_ranking=False).metrics[method][
            SELECTION_METRIC]

    refined, score, notes = refine_choice(fitted, best, grid, method, widen, results, score_of)
    lexicon, score, note = with_wordnet_prior(fitted.with_class_hierarchy(fitted.class_hierarchy_, **refined), fit_x,
                                         fit_y, list(class_names), refined["alpha"], score, score_of, results)
    refined.update(lexicon)
    notes += [note] if note else []
    pruned = [r for r in results if r.get("step") == "pruned"]
    if pruned:
        per_model = len(grid["alpha"]) * (len(grid["edges_per_class"]) if hierarchy == "visual" else 1)
        notes.append(f"{len(pruned)} covariance model(s) left out before scoring, their validation leaf accuracy "
                     f"more than {prune_margin:g} below the best at the same PCA size: "
                     f"{len(pruned) * per_model} grid points not scored")
    return Selection({**params, **refined}, score, results, split, method, notes)


RANKING_GRID = {
    # the paper's threshold tree, and linkage trees over Bhattacharyya or mean-to-mean distances
    "hierarchy": ["visual", "average:8", "average:8:euclidean", "average:8:cosine", "average:16:cosine",
                  "ward", "ward:8"],
    "temperature": [0.0, 1.0, 4.0, 16.0, 64.0],  # 0: hard leaves, the paper's combined method
    "alpha": [0.5, 1.0, 2.0, 4.0, 8.0, 16.0],
}


def validation_split(y: np.ndarray, validation_fraction: float = 0.25, max_queries: int = 2000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``select_ranking``'s split: (mask of the validation rows, at most ``max_queries`` of them as queries,
    stratified)."""
    is_val = stratified_split(y, validation_fraction, seed)
    val_rows = np.flatnonzero(is_val)
    if len(val_rows) > max_queries:
        val_rows = val_rows[stratified_split(y[val_rows], max_queries / len(val_rows), seed)]
    return is_val, val_rows


def _validation_sets(X: np.ndarray, y: np.ndarray, taxonomy: Hierarchy | None, validation_fraction: float,
                     max_queries: int, seed: int):
    """``validation_split``'s fitting part ``(fit_x, fit_y)``, its queries and database as feature sets, and the
    split's record, whose ``metric`` is mAHP@250 against ``taxonomy`` when one is given, else mAP@10."""
    is_val, val_rows = validation_split(y, validation_fraction, max_queries, seed)
    fit_x, fit_y = X[~is_val], y[~is_val]
    split = {"validation_fraction": validation_fraction, "seed": seed, "n_fit": int((~is_val).sum()),
             "n_validation_queries": int(len(val_rows)),
             "metric": "mahp@250" if taxonomy is not None else SELECTION_METRIC}
    return fit_x, fit_y, FeatureSet(X[val_rows], y[val_rows]), FeatureSet(fit_x, fit_y), split


def select_ranking(
    X: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    params: dict | None = None,
    taxonomy: Hierarchy | None = None,
    grid: dict | None = None,
    validation_fraction: float = 0.25,
    max_queries: int = 2000,
    seed: int = 0,
) -> Selection:
    """Choose the tree builder, hard or soft leaves (with the temperature) and alpha on a validation split.

    ``params`` fixes the rest of the model (PCA, covariance, threshold). Every point is scored by
    mAHP@250 against ``taxonomy`` when one is given (how semantic the ranking is), else by mAP@10;
    at most ``max_queries`` validation images (stratified) are the queries.
    """
    grid = {**RANKING_GRID, **(grid or {})}
    fit_x, fit_y, queries, database, split = _validation_sets(X, y, taxonomy, validation_fraction, max_queries, seed)
    metric = split["metric"]
    base = TreeseekModel(**{**(params or {}), "hierarchy": "visual"}).fit(fit_x, fit_y, class_names)
    results = []
    for kind in grid["hierarchy"]:
        builder = make_builder(kind, base.threshold, base.covariance).fit(base.pca_.transform(fit_x), fit_y,
                                                                          list(class_names), split=base.split_)
        model = base.with_class_hierarchy(builder.hierarchy_, hierarchy=kind)
        agreement = lca_agreement(model.class_hierarchy_, taxonomy) if taxonomy is not None else None
        for temperature in grid["temperature"]:
            method = "soft" if temperature > 0 else "combined"
            model.temperature = temperature or base.temperature  # unused by hard leaves
            for alpha in grid["alpha"]:
                result = evaluate_retrieval(model, queries, database, methods=[method], alpha=alpha, ks=(10,),
                                            taxonomy=taxonomy, progress=False, full_ranking=False)
                scores = result.metrics[method]
                results.append({"hierarchy": kind, "tree_shape": model.hierarchy_.shape(),
                                "taxonomy_agreement": agreement, "method": method, "temperature": temperature,
                                "alpha": alpha, **{m: scores[m] for m in (SELECTION_METRIC, "mahp@250")
                                                   if m in scores}})
    best = max(results, key=lambda r: (np.nan_to_num(r[metric], nan=-1.0),
                                       np.nan_to_num(r[SELECTION_METRIC], nan=-1.0), -r["alpha"]))
    chosen = {**base.get_params(), "hierarchy": best["hierarchy"], "alpha": best["alpha"],
              "temperature": best["temperature"] or base.temperature}  # hard leaves: keep the default
    return Selection(chosen, best[metric], results, split, best["method"])


DEFAULT_MAX_SUBCLASSES = 4  # the most X-means may split a class into, when sub-classes are on


def select_subclasses(
    X: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    params: dict | None = None,
    *,
    method: str = "soft",
    candidates: Sequence[int] = (1, DEFAULT_MAX_SUBCLASSES),
    taxonomy: Hierarchy | None = None,
    validation_fraction: float = 0.25,
    max_queries: int = 2000,
    seed: int = 0,
) -> Selection:
    """Whether classes are split into sub-class Gaussians (``--subclasses auto``), chosen on a validation split.

    Each candidate maximum (1: off) is fitted with ``params`` on the fitting part and scored by ``method`` with
    the validation images as queries: mAHP@250 against ``taxonomy`` when given, else mAP@10. A split is kept
    only when it scores strictly higher than the model without; when no class is large enough to split, the
    answer is 1 without a search.
    """
    fit_x, fit_y, queries, database, split = _validation_sets(X, y, taxonomy, validation_fraction, max_queries, seed)
    metric = split["metric"]
    counts = np.bincount(fit_y, minlength=len(class_names))
    results = []
    for maximum in sorted(set(candidates)):
        if maximum > 1 and counts.max() < 2 * MIN_SUBCLASS_SIZE:
            continue
        model = TreeseekModel(**{**(params or {}), "subclasses": int(maximum)}).fit(fit_x, fit_y, class_names)
        result = evaluate_retrieval(model, queries, database, methods=[method], ks=(10,), taxonomy=taxonomy,
                                    progress=False, full_ranking=False)
        results.append({"subclasses": int(maximum), "leaves": model.n_leaves_,
                        "split_classes": len(model.fit_info_["split_classes"]),
                        "val_leaf_accuracy": result.info["query_leaf_accuracy"],
                        **{m: result.metrics[method][m] for m in (SELECTION_METRIC, "mahp@250")
                           if m in result.metrics[method]}})
    best = max(results, key=lambda r: (np.nan_to_num(r[metric], nan=-1.0), -r["subclasses"]))
    return Selection({**(params or {}), "subclasses": best["subclasses"]}, best[metric], results, split, method)
