"""The fitted pipeline: PCA -> class Gaussians -> hierarchy, saved as a directory.

A model directory holds ``model.json`` (parameters, class names, hierarchy,
fit report) and one ``arrays-<sha256>.npz`` with the PCA and Gaussians. The
array file is written first under a content-derived name, then ``model.json``
is atomically replaced to point at it, so a crash at any moment leaves a
loadable model. Nothing is pickled.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from treeseek import __version__
from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.builders import make_builder
from treeseek.io.features import check_features
from treeseek.io.files import atomic_write_json, drop_other_arrays, load_named_arrays, read_json, save_named_arrays
from treeseek.statistics import COVARIANCE_MODELS, ClassGaussians, VariancePCA
from treeseek.statistics.gaussians import top_posteriors

logger = logging.getLogger(__name__)

MODEL_FORMAT = "treeseek-model"
MODEL_VERSION = 1


# Chosen on validation splits of Caltech-101 and CIFAR-10 (benchmarks/bench_trees.py, README): a tree by
# average linkage over cosine distances between class means, cut into 8 levels, beat the paper's
# threshold tree on mAHP@250 on both; soft leaves at temperature 4 beat hard leaves on mAP@10 and mAHP@250.
DEFAULT_HIERARCHY = "average:8:cosine"
DEFAULT_TEMPERATURE = 4.0
DEFAULT_TOP_M = 8


class TreeseekModel:
    """PCA of the features, a Gaussian per class and a tree over the classes: where each image belongs.

    Hyper-parameters in ``__init__``; ``fit`` learns ``pca_``, ``gaussians_``, ``hierarchy_``.

    Parameters
    ----------
    variance : float
        Fraction of the variance PCA keeps.
    max_components : int, optional
        Cap on the PCA dimensions.
    covariance : str
        The class Gaussians' covariance model: ``tied`` (shared), ``full`` or ``diag``.
    hierarchy : str
        A linkage tree (``average:8:cosine``, the default; see ``make_builder``), ``visual`` (the paper's
        threshold builder), ``ward``, or a taxonomy file path.
    threshold : float or str
        The visual builder's t: a number, ``auto`` or a quantile ``qX`` of the class-pair Bhattacharyya
        coefficients.
    alpha : float
        Default weight of the hierarchy term of the rankings.
    temperature : float
        Of the class posteriors p(c|x) that the ``soft`` ranking uses.
    top_m : int, optional
        Keep only the m most probable classes of each posterior.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(90, 6)) + np.repeat(np.eye(6)[:3] * 8, 30, axis=0)
    >>> model = TreeseekModel(hierarchy="average").fit(X, np.repeat([0, 1, 2], 30), ["cat", "dog", "car"])
    >>> model.n_classes_, model.assign(X[[0, 45, 89]]).tolist()
    (3, [0, 1, 2])
    """

    def __init__(
        self,
        variance: float = 0.95,
        *,
        max_components: int | None = None,
        covariance: str = "tied",
        hierarchy: str = DEFAULT_HIERARCHY,
        threshold: float | str = "auto",
        alpha: float = 1.0,
        temperature: float = DEFAULT_TEMPERATURE,
        top_m: int | None = DEFAULT_TOP_M,
    ):
        self.variance = variance
        self.max_components = max_components
        self.covariance = covariance
        self.hierarchy = hierarchy
        self.threshold = threshold
        self.alpha = alpha
        self.temperature = temperature  # of the class posteriors that the ``soft`` method ranks with
        self.top_m = top_m

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in
                ("variance", "max_components", "covariance", "hierarchy", "threshold", "alpha",
                 "temperature", "top_m")}

    def fit(self, X: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None = None) -> "TreeseekModel":
        X = check_features(X, "training features")
        y = np.asarray(y, dtype=np.int64)
        if y.shape != (len(X),):
            raise TreeseekError(f"training labels have shape {y.shape}, expected ({len(X)},)")
        if self.covariance not in COVARIANCE_MODELS:
            raise TreeseekError(f"covariance must be one of {', '.join(COVARIANCE_MODELS)}, got {self.covariance!r}")
        n_classes = len(class_names) if class_names is not None else int(y.max()) + 1
        names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(n_classes)]
        if y.min() < 0 or y.max() >= n_classes:
            raise TreeseekError(f"training labels must lie in [0, {n_classes})")
        empty = np.flatnonzero(np.bincount(y, minlength=n_classes) == 0)
        if len(empty):
            raise TreeseekError(f"class '{names[empty[0]]}' has no training samples")
        ranges = np.ptp(X, axis=0)
        spread = float(ranges.max())
        if spread == 0:
            raise TreeseekError(f"training features: all {len(X)} vectors are the same, so there is nothing to learn "
                                f"(were they extracted from blank images, or by a broken network?)")
        if not np.var(X, axis=0, dtype=np.float64).sum() > 0:  # the squares underflow
            raise TreeseekError(f"training features vary too little to measure (at most {spread:.3g}); rescale them")
        constant = int(np.sum(ranges == 0))
        if constant:
            logger.warning("%d of the %d feature dimensions are the same in every training vector; they carry "
                           "nothing and PCA drops them", constant, X.shape[1])
        self.pca_ = VariancePCA(self.variance, self.max_components).fit(X)
        Z = self.pca_.transform(X)
        self.gaussians_ = ClassGaussians(self.covariance).fit(Z, y, n_classes)
        builder = make_builder(self.hierarchy, self.threshold, self.covariance).fit(Z, y, names)
        self.hierarchy_: Hierarchy = builder.hierarchy_
        # unnamed classes placed in a taxonomy by position take the taxonomy's names
        self.class_names_ = names if class_names is not None else self.hierarchy_.names[:n_classes]
        pca_dim = self.pca_.n_components_
        self.fit_info_ = {
            "n_train": int(len(X)),
            "input_dim": int(X.shape[1]),
            "pca_dim": int(self.pca_.n_components_),
            "explained_variance": float(self.pca_.explained_variance_ratio_.sum()),
            "tree_shape": [int(s) for s in getattr(builder, "shape_", self.hierarchy_.shape())],
            "tree_height": self.hierarchy_.max_height,
            "threshold": getattr(builder, "threshold_", None),
            "train_leaf_accuracy": float(np.mean(self.gaussians_.assign(Z) == y)),
            # their covariances rest on shrinkage (or, with a single sample, on the pooled one)
            "classes_with_fewer_samples_than_dims": int(np.sum(np.bincount(y, minlength=n_classes) < pca_dim)),
        }
        return self

    # ------------------------------------------------------------------ usage
    @property
    def n_classes_(self) -> int:
        return len(self.class_names_)

    @property
    def posterior_width_(self) -> int:
        """How many classes ``place`` keeps per row: ``top_m``, or every class."""
        return self.n_classes_ if self.top_m is None else min(int(self.top_m), self.n_classes_)

    @property
    def input_dim_(self) -> int:
        return int(self.pca_.mean_.shape[0])

    def check_dim(self, X: np.ndarray, source: str) -> np.ndarray:
        X = check_features(X, source)
        if X.shape[1] != self.input_dim_:
            raise TreeseekError(f"{source}: features have {X.shape[1]} dimensions, the model expects {self.input_dim_}")
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        return self.pca_.transform(self.check_dim(X, "features"))

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Leaf of every row by Mahalanobis distance in PCA space (paper eq. 4)."""
        return self.gaussians_.assign(self.transform(X))

    def posteriors(self, X: np.ndarray) -> np.ndarray:
        """Class posteriors p(c | x) from the Gaussians, at the model's temperature (``soft`` method)."""
        return self.gaussians_.posteriors(self.transform(X), self.temperature, self.top_m)

    def place(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(leaves, classes, weights)`` of every row from one pass over the Mahalanobis distances: the nearest
        class (``assign``) and the posteriors of the ``top_m`` most probable classes, n x m by decreasing weight
        (``posteriors`` in sparse form)."""
        distances = self.gaussians_.mahalanobis(self.transform(X))
        classes, weights = top_posteriors(distances, self.temperature, self.top_m)
        return np.argmin(distances, axis=1), classes, weights

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays_name = save_named_arrays(directory, {**self.pca_.to_arrays(), **self.gaussians_.to_arrays()})
        atomic_write_json(directory / "model.json", {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "treeseek_version": __version__,
            "params": self.get_params(),
            "class_names": self.class_names_,
            "hierarchy": self.hierarchy_.to_dict(),
            "arrays": arrays_name,
            "fit_info": self.fit_info_,
        })
        drop_other_arrays(directory, arrays_name)

    @classmethod
    def load(cls, directory: str | Path) -> "TreeseekModel":
        directory = Path(directory)
        if not directory.is_dir():
            raise TreeseekError(f"model directory not found: {directory}")
        meta = read_json(directory / "model.json", "model file")
        if not isinstance(meta, dict) or meta.get("format") != MODEL_FORMAT:
            raise TreeseekError(f"{directory} is not a treeseek model directory")
        if meta.get("version") != MODEL_VERSION:
            raise TreeseekError(
                f"{directory} was written in model format {meta.get('version')}; this treeseek reads {MODEL_VERSION}"
            )
        try:
            model = cls(**meta["params"])
            arrays = load_named_arrays(directory, meta["arrays"], "model arrays")
            model.pca_ = VariancePCA.from_arrays(arrays, model.variance, model.max_components)
            model.gaussians_ = ClassGaussians.from_arrays(arrays, model.covariance)
            model.hierarchy_ = Hierarchy.from_dict(meta["hierarchy"])
            model.class_names_ = [str(n) for n in meta["class_names"]]
            model.fit_info_ = meta.get("fit_info", {})
        except (KeyError, TypeError) as exc:
            raise TreeseekError(f"{directory}/model.json is incomplete: missing {exc}") from None
        if model.hierarchy_.n_leaves != model.n_classes_ or model.gaussians_.n_classes_ != model.n_classes_:
            raise TreeseekError(f"{directory}: hierarchy, Gaussians and class names disagree on the number of classes")
        return model
