"""The fitted pipeline: PCA -> class Gaussians -> hierarchy, saved as a directory.

A model directory holds ``model.json`` (parameters, class names, hierarchy,
fit report) and one ``arrays-<sha256>.npz`` with the PCA and Gaussians. The
array file is written first under a content-derived name, then ``model.json``
is atomically replaced to point at it, so a crash at any moment leaves a
loadable model. Nothing is pickled.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from treeseek import __version__, choices
from treeseek.data.datasets import stratified_split
from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.builders import make_builder
from treeseek.hierarchy.subclass_tree import with_subclasses
from treeseek.io.features import check_features
from treeseek.io.files import atomic_write_json, drop_other_arrays, load_named_arrays, read_json, save_named_arrays
from treeseek.statistics import COVARIANCE_MODELS, ClassGaussians, VariancePCA
from treeseek.statistics.cosine_space import COSINE_SPACES, to_cosine_space, to_raw
from treeseek.statistics.gaussians import top_posteriors
from treeseek.statistics.subclasses import SubclassSplit, check_max_subclasses, split_classes

logger = logging.getLogger(__name__)

MODEL_FORMAT = "treeseek-model"
MODEL_VERSION = 1


# Chosen on validation splits of Caltech-101 and CIFAR-10 (benchmarks/bench_trees.py, README): a tree by
# average linkage over cosine distances between class means, cut into 8 levels, beat the paper's
# threshold tree on mAHP@250 on both; soft leaves at temperature 4 beat hard leaves on mAP@10 and mAHP@250.
DEFAULT_HIERARCHY = choices.DEFAULT_HIERARCHY
DEFAULT_TEMPERATURE = 4.0
DEFAULT_TOP_M = 8
# rows whose n x K class distances are held at once (8 MB at 1,000 classes), read again by each pass that follows
# the product: a probe on 2 cores placed fastest in blocks of 512 to 1,024, against 4,096 before
PLACE_ROWS = 1024
_SMALLEST_FLOAT32_NORM = 1e-15  # rows at least this long: their squares sum in float32 with no underflow
NOVELTY_HOLDOUT = 0.2   # of the training samples, held out to calibrate the out-of-distribution score
NOVELTY_QUANTILES = 1001  # the held-out scores kept, as quantiles, to turn a score into a p-value


@dataclass(frozen=True)
class Novelty:
    """Per query: ``scores`` (``TreeseekModel.novelty``'s out-of-distribution score), ``p_values`` (the share of
    held-out known-class images that score at least as much; NaN for a model without calibration) and
    ``flagged`` (no known class is close)."""

    scores: np.ndarray
    p_values: np.ndarray
    flagged: np.ndarray


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
        Keep only the m most probable leaves of each posterior.
    subclasses : int
        At most this many Gaussians per class, found by X-means (``statistics.subclasses``); a class split in
        several becomes an inner node over one leaf per sub-class. 1: one Gaussian per class (the paper).
    cosine : str
        Where the cosine term of every ranking is taken (``cosine_features``): ``raw`` features (the paper's),
        ``centred`` on the training mean, or ``whitened`` (centred, and the kept principal components rescaled to
        equal variance; the rest left as it is).
    novelty_quantile : float
        The share of held-out images of known classes whose out-of-distribution score passes as known: a query
        scoring above it is flagged (``novelty``), and its results are ranked by the visual distance alone.

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
        subclasses: int = 1,
        novelty_quantile: float = 0.99,
        cosine: str = "raw",
    ):
        self.variance = variance
        self.max_components = max_components
        self.covariance = covariance
        self.hierarchy = hierarchy
        self.threshold = threshold
        self.alpha = alpha
        self.temperature = temperature  # of the class posteriors that the ``soft`` method ranks with
        self.top_m = top_m
        self.subclasses = subclasses
        self.novelty_quantile = novelty_quantile
        self.cosine = cosine

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in
                ("variance", "max_components", "covariance", "hierarchy", "threshold", "alpha",
                 "temperature", "top_m", "subclasses", "novelty_quantile", "cosine")}

    def fit(self, X: np.ndarray, y: np.ndarray, class_names: Sequence[str] | None = None) -> "TreeseekModel":
        X = check_features(X, "training features")
        y = np.asarray(y, dtype=np.int64)
        if y.shape != (len(X),):
            raise TreeseekError(f"training labels have shape {y.shape}, expected ({len(X)},)")
        if self.covariance not in COVARIANCE_MODELS:
            raise TreeseekError(f"covariance must be one of {', '.join(COVARIANCE_MODELS)}, got {self.covariance!r}")
        check_max_subclasses(self.subclasses)
        if self.cosine not in COSINE_SPACES:
            raise TreeseekError(f"cosine must be one of {', '.join(COSINE_SPACES)}, got {self.cosine!r}")
        if not 0.0 < self.novelty_quantile < 1.0:
            raise TreeseekError(f"novelty_quantile must lie in (0, 1), got {self.novelty_quantile}")
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
        split = split_classes(Z, y, n_classes, self.subclasses, class_names=names)
        self.gaussians_ = ClassGaussians(self.covariance).fit(Z, split.labels, split.n_components)
        builder = make_builder(self.hierarchy, self.threshold, self.covariance).fit(Z, y, names, split=split)
        self.class_hierarchy_: Hierarchy = builder.hierarchy_
        # unnamed classes placed in a taxonomy by position take the taxonomy's names
        self.class_names_ = names if class_names is not None else self.class_hierarchy_.names[:n_classes]
        self.leaf_class_ = split.component_class
        self.hierarchy_: Hierarchy = with_subclasses(self.class_hierarchy_, split.component_class,
                                                     split.names(self.class_names_))
        residuals = self._residuals(X, Z)
        hidden = X.shape[1] - Z.shape[1]  # dimensions PCA leaves out
        self.residual_variance_ = float(max(residuals.mean() / hidden, np.finfo(float).tiny)) if hidden else None
        self.novelty_reference_ = self._held_out_novelty(Z, residuals, split)
        self.split_ = split  # the training rows' sub-classes: for tuning, not saved
        pca_dim = self.pca_.n_components_
        self.fit_info_ = {
            "n_train": int(len(X)),
            "input_dim": int(X.shape[1]),
            "pca_dim": int(self.pca_.n_components_),
            "explained_variance": float(self.pca_.explained_variance_ratio_.sum()),
            "tree_shape": [int(s) for s in getattr(builder, "shape_", self.hierarchy_.shape())],
            "tree_height": self.hierarchy_.max_height,
            "threshold": getattr(builder, "threshold_", None),
            "train_leaf_accuracy": float(np.mean(self.leaf_class_[self.gaussians_.assign(Z)] == y)),
            "subclasses": int(split.n_components),
            "split_classes": [self.class_names_[c] for c in np.flatnonzero(np.bincount(split.component_class) > 1)],
            "novelty_threshold": self.novelty_threshold_,
            # how a name tree's class names resolved in WordNet: coverage, domain and each class's synset
            **({"wordnet": builder.wordnet_} if getattr(builder, "wordnet_", None) else {}),
            # their covariances rest on shrinkage (or, with a single sample, on the pooled one)
            "classes_with_fewer_samples_than_dims": int(np.sum(np.bincount(y, minlength=n_classes) < pca_dim)),
        }
        return self

    def with_class_hierarchy(self, class_hierarchy: Hierarchy, **params) -> "TreeseekModel":
        """A model sharing this one's PCA, Gaussians and calibration over another tree of the same classes (the
        validation searches compare trees this way); ``params`` change hyper-parameters that need no refit."""
        model = TreeseekModel(**{**self.get_params(), **params})
        model.__dict__.update({name: value for name, value in vars(self).items() if name.endswith("_")})
        model.class_hierarchy_ = class_hierarchy
        model.hierarchy_ = with_subclasses(class_hierarchy, self.leaf_class_, self.leaf_names_)
        return model

    def _residuals(self, X: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """Squared length of each row's part outside the PCA subspace."""
        centred = np.asarray(X, dtype=np.float64) - self.pca_.mean_
        return np.maximum(np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", Z, Z), 0.0)

    def _novelty_scores(self, distances: np.ndarray, residuals: np.ndarray) -> np.ndarray:
        """The smallest squared Mahalanobis distance to a leaf, plus the part outside PCA in units of the
        training residual variance (the Mahalanobis distance of probabilistic PCA): a picture unlike the
        collection differs mostly in the directions PCA left out."""
        outside = 0.0 if getattr(self, "residual_variance_", None) is None else residuals / self.residual_variance_
        return distances.min(axis=1) + outside

    def _held_out_novelty(self, Z: np.ndarray, residuals: np.ndarray, split: SubclassSplit) -> np.ndarray | None:
        """Out-of-distribution scores of held-out known-class samples (``NOVELTY_HOLDOUT`` of each sub-class,
        scored by Gaussians fitted on the rest, in this model's PCA space), as sorted quantiles; sets the flag's
        threshold at their ``novelty_quantile``. Without any class of two samples, the training scores serve."""
        held = stratified_split(split.labels, NOVELTY_HOLDOUT, seed=0)
        if held.any():
            rest = ClassGaussians(self.covariance).fit(Z[~held], split.labels[~held], split.n_components)
            scores = self._novelty_scores(rest.mahalanobis(Z[held]), residuals[held])
        else:
            scores = self._novelty_scores(self.gaussians_.mahalanobis(Z), residuals)
        self.novelty_threshold_ = float(np.quantile(scores, self.novelty_quantile))
        return np.quantile(scores, np.linspace(0.0, 1.0, NOVELTY_QUANTILES)) if len(scores) > NOVELTY_QUANTILES \
            else np.sort(scores)

    # ------------------------------------------------------------------ usage
    @property
    def n_classes_(self) -> int:
        return len(self.class_names_)

    @property
    def n_leaves_(self) -> int:
        """Leaves of the tree: the classes, or their sub-classes where a class was split."""
        return self.hierarchy_.n_leaves

    @property
    def leaf_names_(self) -> list[str]:
        return self.class_names_ if self.n_leaves_ == self.n_classes_ else self.hierarchy_.names[: self.n_leaves_]

    @property
    def posterior_width_(self) -> int:
        """How many leaves ``place`` keeps per row: ``top_m``, or every leaf."""
        return self.n_leaves_ if self.top_m is None else min(int(self.top_m), self.n_leaves_)

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

    def cosine_features(self, X: np.ndarray) -> np.ndarray:
        """The rows in the space where the rankings take their cosine (``cosine``; ``statistics.cosine_space``),
        as float64 of the same width."""
        return to_cosine_space(self.cosine, self.pca_, X)

    def features_from_cosine(self, V: np.ndarray) -> np.ndarray:
        """The raw features of rows in the cosine space: the inverse of ``cosine_features``."""
        return to_raw(self.cosine, self.pca_, V)

    def cosine_units(self, X: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(unit rows, lengths)`` of ``cosine_features(X)``: what an index stores and scans; a zero row stays
        zero. ``out``: where to write the unit rows (in its own dtype, with no float64 copy of them)."""
        if out is not None and self.cosine == "raw" and np.asarray(X).dtype == np.float32:
            # float32 rows stored in float32 or narrower: scaled in float32, within two roundings of the float64
            # unit row, which ``out`` rounds anyway, at a third of the cost of widening them
            norms = np.sqrt(np.einsum("ij,ij->i", X, X).astype(np.float64))
            if len(norms) and norms.min() >= _SMALLEST_FLOAT32_NORM:  # else squares may underflow: float64 below
                scale = (1.0 / norms).astype(np.float32)[:, None]
                return np.multiply(X, scale, out=out, casting="same_kind"), norms
        V = self.cosine_features(X)
        norms = np.sqrt(np.einsum("ij,ij->i", V, V))  # no n x d temporary, unlike np.linalg.norm
        scale = (1.0 / np.where(norms > 0, norms, 1.0))[:, None]
        if out is not None and not np.may_share_memory(V, X):
            # V is this call's own float64 copy: scaled in place and then cast once, which is cheaper than
            # numpy's buffered cast of every block of a product written straight into ``out``
            np.multiply(V, scale, out=V)
            np.copyto(out, V, casting="same_kind")
            return out, norms
        return np.multiply(V, scale, out=out, casting="same_kind"), norms

    def assign(self, X: np.ndarray) -> np.ndarray:
        """Leaf of every row by Mahalanobis distance in PCA space (paper eq. 4): its class, or its sub-class."""
        return self.gaussians_.assign(self.check_dim(X, "features"), projection=self.pca_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class of every row: that of its leaf."""
        return self.leaf_class_[self.assign(X)]

    def known_leaves(self, X: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Leaf of every row whose class is known: the nearest sub-class of that class (the class's own leaf when
        it was not split)."""
        labels = np.asarray(labels, dtype=np.int64)
        if self.n_leaves_ == self.n_classes_:
            return labels.copy()
        distances = self.gaussians_.mahalanobis(self.check_dim(X, "features"), projection=self.pca_)
        distances[self.leaf_class_[None, :] != labels[:, None]] = np.inf
        return np.argmin(distances, axis=1)

    def posteriors(self, X: np.ndarray) -> np.ndarray:
        """Leaf posteriors p(l | x) from the Gaussians, at the model's temperature (``soft`` method)."""
        return self.gaussians_.posteriors(self.check_dim(X, "features"), self.temperature, self.top_m,
                                          projection=self.pca_)

    def place(self, X: np.ndarray, *, check_input: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(leaves, classes, weights)`` of every row from one pass over the Mahalanobis distances: the nearest
        leaf (``assign``) and the posteriors of the ``top_m`` most probable leaves, n x m by decreasing weight
        (``posteriors`` in sparse form). ``check_input=False`` (as in scikit-learn's trees) skips the check of
        X, for a caller that has checked it already (an index adding a large collection chunk by chunk)."""
        X = self.check_dim(X, "features") if check_input else X
        blocks = [slice(first, first + PLACE_ROWS) for first in range(0, max(len(X), 1), PLACE_ROWS)]  # >= 1 block
        workers = min(os.cpu_count() or 1, len(blocks) // 2)
        if workers > 1:
            # each thread places whole blocks on one BLAS thread: BLAS's own threads would spin, holding the other
            # cores, through the passes over the class distances that follow each product on one core
            with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
                placed = list(pool.map(lambda rows: self._place_block(X[rows]), blocks))
        else:
            placed = [self._place_block(X[rows]) for rows in blocks]
        return tuple(np.concatenate(part) for part in zip(*placed))

    def _place_block(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        classes, weights = top_posteriors(self.gaussians_.mahalanobis(X, projection=self.pca_), self.temperature,
                                          self.top_m)
        return classes[:, 0], classes, weights  # nearest first, ties by index: the argmin

    def novelty(self, X: np.ndarray) -> Novelty:
        """How far every row is from every known class: the out-of-distribution score and its flag.

        The score is the smallest squared Mahalanobis distance to a leaf's Gaussian (MAPLE's uncertainty), plus
        the row's squared distance from the PCA subspace over the training residual variance; its p-value is the share of held-out images of known classes that score at least as much; a row is flagged
        when its score passes ``novelty_threshold_``, the held-out scores' ``novelty_quantile``.
        """
        X = self.check_dim(X, "features")
        Z = self.pca_.transform(X)
        scores = self._novelty_scores(self.gaussians_.mahalanobis(Z), self._residuals(X, Z))
        reference = getattr(self, "novelty_reference_", None)
        if reference is None:  # a model saved before the score was calibrated
            return Novelty(scores, np.full(len(scores), np.nan), np.zeros(len(scores), dtype=bool))
        p_values = 1.0 - np.searchsorted(reference, scores, side="left") / len(reference)
        return Novelty(scores, p_values, scores > self.novelty_threshold_)

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        novelty = {} if self.novelty_reference_ is None else {
            "novelty_reference": self.novelty_reference_, "novelty_threshold": np.asarray(self.novelty_threshold_),
            **({} if self.residual_variance_ is None else {"residual_variance": np.asarray(self.residual_variance_)})}
        arrays_name = save_named_arrays(directory, {**self.pca_.to_arrays(), **self.gaussians_.to_arrays(),
                                                    "leaf_class": self.leaf_class_, **novelty})
        atomic_write_json(directory / "model.json", {
            "format": MODEL_FORMAT,
            "version": MODEL_VERSION,
            "treeseek_version": __version__,
            "params": self.get_params(),
            "class_names": self.class_names_,
            "hierarchy": self.hierarchy_.to_dict(),
            **({} if self.class_hierarchy_ is self.hierarchy_ else {"class_hierarchy": self.class_hierarchy_.to_dict()}),
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
            model.class_hierarchy_ = Hierarchy.from_dict(meta["class_hierarchy"]) if "class_hierarchy" in meta \
                else model.hierarchy_
            model.class_names_ = [str(n) for n in meta["class_names"]]
            # models saved before sub-classes and the novelty score: one leaf per class, no calibration
            model.leaf_class_ = np.asarray(arrays.get("leaf_class", np.arange(len(model.class_names_))), np.int64)
            model.novelty_reference_ = arrays.get("novelty_reference")
            model.novelty_threshold_ = float(arrays["novelty_threshold"]) if "novelty_threshold" in arrays else None
            model.residual_variance_ = float(arrays["residual_variance"]) if "residual_variance" in arrays else None
            model.fit_info_ = meta.get("fit_info", {})
        except (KeyError, TypeError) as exc:
            raise TreeseekError(f"{directory}/model.json is incomplete: missing {exc}") from None
        n_leaves = len(model.leaf_class_)
        if model.hierarchy_.n_leaves != n_leaves or model.gaussians_.n_classes_ != n_leaves or \
                model.class_hierarchy_.n_leaves != model.n_classes_ or \
                (n_leaves and not 0 <= model.leaf_class_.min() <= model.leaf_class_.max() < model.n_classes_):
            raise TreeseekError(f"{directory}: hierarchy, Gaussians and class names disagree on the number of classes")
        return model
