"""Choose PCA size, covariance model, merge threshold t and alpha on a validation split.

The training features are split (stratified) into a fitting part and a
validation part. Every grid point is fitted on the fitting part only, and
scored by the combined method's mAP@10 with the validation images as queries
and the fitting part as database. t is searched on the data's own scale: each
candidate is the quantile of the class-pair Bhattacharyya coefficients that
leaves c x K pairs above t, for a few c, so the grid means the same thing on
any dataset. The whole grid is returned for the record.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .evaluation import evaluate_retrieval
from .features import FeatureSet
from .hierarchy.builders import VisualHierarchyBuilder
from .images.datasets import stratified_split
from .model import TreeseekModel
from .statistics import ClassGaussians, VariancePCA

DEFAULT_GRID = {
    "max_components": [64, 128, 256, None],  # None: as many as 95% of the variance needs
    "covariance": ["tied", "diag"],
    "edges_per_class": [0.25, 0.5, 1.0, 2.0],
    "alpha": [0.5, 1.0, 2.0, 3.0],
}
SELECTION_METRIC = "map@10"


@dataclass
class Selection:
    params: dict                      # the chosen TreeseekModel parameters
    score: float
    grid: list[dict] = field(default_factory=list)
    split: dict = field(default_factory=dict)


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
) -> Selection:
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
        for covariance in grid["covariance"]:
            gaussians = ClassGaussians(covariance).fit(z_fit, fit_y, n_classes)
            for edges in grid["edges_per_class"]:
                spec = threshold_spec(edges, n_classes)
                builder = VisualHierarchyBuilder(spec, covariance).fit(z_fit, fit_y, list(class_names))
                model = TreeseekModel(0.95, cap, covariance, "visual", spec)
                model.pca_, model.gaussians_, model.hierarchy_ = pca, gaussians, builder.hierarchy_
                model.class_names_ = list(class_names)
                for alpha in grid["alpha"]:
                    result = evaluate_retrieval(model, FeatureSet(val_x, val_y), FeatureSet(fit_x, fit_y),
                                                methods=["combined"], alpha=alpha, ks=(10,), progress=False,
                                                full_ranking=False)
                    results.append({
                        "max_components": cap, "pca_dim": int(pca.n_components_), "covariance": covariance,
                        "edges_per_class": edges, "threshold": spec, "threshold_value": builder.threshold_,
                        "tree_shape": builder.shape_, "alpha": alpha,
                        SELECTION_METRIC: result.metrics["combined"][SELECTION_METRIC],
                        "val_leaf_accuracy": result.info["query_leaf_accuracy"],
                    })
    best = max(results, key=lambda r: (np.nan_to_num(r[SELECTION_METRIC], nan=-1.0), -r["alpha"]))
    params = {"variance": 0.95, "max_components": best["max_components"], "covariance": best["covariance"],
              "hierarchy": "visual", "threshold": best["threshold"], "alpha": best["alpha"]}
    split = {"validation_fraction": validation_fraction, "seed": seed, "n_fit": int((~is_val).sum()),
             "n_validation": int(is_val.sum()), "metric": SELECTION_METRIC}
    return Selection(params, best[SELECTION_METRIC], results, split)
