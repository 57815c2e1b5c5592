"""Sub-classes: X-means splits a class that is not one Gaussian into the Gaussians it is made of.

The visual hierarchy (Bhattacharyya overlap, Mahalanobis leaves) assumes one Gaussian per class. A species seen
from two sides, or a product on and off a model, is two. Following MAPLE (Venkataramanan et al., ICCV Workshops
2023, the paper's reference [13]), each class is split by X-means (Pelleg & Moore 2000): a cluster is bisected
with 2-means and the split is kept when the Bayesian information criterion prefers it, until no split is kept or
the class has ``max_subclasses`` parts.

Two choices differ from the textbook X-means, both because it over-splits classes that are one Gaussian:

* The BIC is that of a Gaussian mixture with full covariances (EM, ``sklearn.mixture.GaussianMixture``), not
  of the hard 2-means partition with one shared variance: the hard partition of a single Gaussian always gains
  about R/pi in log-likelihood, and a shared variance mistakes an elongated class for two.
* Each class is clustered on its own first principal components (at most ``CLUSTER_DIMS``): the distance
  between two modes adds variance along the direction that joins them, so that direction leads, while the
  mixture's parameters, and the penalty for them, stay few.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from treeseek.errors import TreeseekError

logger = logging.getLogger(__name__)

MIN_SUBCLASS_SIZE = 8  # members a sub-class needs: its mean, and the pooled covariance, rest on them
CLUSTER_DIMS = 8  # principal components of a class that X-means looks at


@dataclass(frozen=True)
class SubclassSplit:
    """Which sub-class every training row belongs to, and the class of every sub-class.

    ``labels[i]`` is row i's sub-class; sub-classes are numbered class by class, so ``component_class`` is
    non-decreasing and a class that was not split has exactly one sub-class.
    """

    labels: np.ndarray           # (n,) sub-class of every row
    component_class: np.ndarray  # (C,) class of every sub-class

    @property
    def n_components(self) -> int:
        return len(self.component_class)

    @classmethod
    def whole(cls, y: np.ndarray, n_classes: int) -> "SubclassSplit":
        """One sub-class per class: the classes themselves."""
        return cls(np.asarray(y, dtype=np.int64), np.arange(n_classes))

    def is_whole(self) -> bool:
        return self.n_components == len(np.unique(self.component_class))

    def names(self, class_names: list[str]) -> list[str]:
        """A class that was not split keeps its name; the parts of one that was are ``name~1``, ``name~2``..."""
        counts = np.bincount(self.component_class, minlength=len(class_names))
        seen = np.zeros(len(class_names), dtype=np.int64)
        out = []
        for cls_ in self.component_class:
            seen[cls_] += 1
            out.append(class_names[cls_] if counts[cls_] == 1 else f"{class_names[cls_]}~{seen[cls_]}")
        return out


def check_max_subclasses(max_subclasses) -> int:
    if isinstance(max_subclasses, bool) or not isinstance(max_subclasses, (int, np.integer)) or max_subclasses < 1:
        raise TreeseekError(f"the maximum number of sub-classes per class must be an integer >= 1, "
                            f"got {max_subclasses!r}")
    return int(max_subclasses)


def split_classes(Z: np.ndarray, y: np.ndarray, n_classes: int, max_subclasses: int, *, min_size: int = MIN_SUBCLASS_SIZE, seed: int = 0,
                  class_names: list[str] | None = None) -> SubclassSplit:
    """X-means in every class of ``(Z, y)``, at most ``max_subclasses`` parts each.

    Parameters
    ----------
    Z : array of shape (n, d)
        Training vectors (PCA space).
    y : array of shape (n,)
        Their classes, in ``[0, n_classes)``.
    n_classes : int
        How many classes there are.
    max_subclasses : int
        Most parts per class (1: no split).
    min_size : int
        Fewest members of a part; a class with fewer than twice as many is never split.
    seed : int
        Of the 2-means and EM initialisations.
    class_names : list of str, optional
        For the error message.

    Returns
    -------
    SubclassSplit

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> two_modes = np.r_[rng.normal(-6, 1, (60, 2)), rng.normal(6, 1, (60, 2))]
    >>> split = split_classes(two_modes, np.zeros(120, int), 1, 4)
    >>> split.n_components, sorted(np.bincount(split.labels).tolist())
    (2, [60, 60])
    """
    max_subclasses = check_max_subclasses(max_subclasses)
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y, minlength=n_classes)
    if max_subclasses > 1 and counts.max(initial=0) < 2 * min_size:
        largest = int(np.argmax(counts))
        name = class_names[largest] if class_names is not None else str(largest)
        raise TreeseekError(f"no class is large enough to split into sub-classes: a split needs 2 x {min_size} "
                            f"samples, and the largest class ('{name}') has {counts[largest]}")
    if max_subclasses == 1:
        return SubclassSplit.whole(y, n_classes)
    Z = np.asarray(Z, dtype=np.float64)
    labels = np.empty(len(y), dtype=np.int64)
    component_class: list[int] = []
    for cls_ in range(n_classes):
        rows = np.flatnonzero(y == cls_)
        parts = _xmeans(_leading_components(Z[rows]), max_subclasses, min_size, seed) if len(rows) >= 2 * min_size else \
            np.zeros(len(rows), dtype=np.int64)
        labels[rows] = len(component_class) + parts
        component_class.extend([cls_] * (int(parts.max()) + 1))
    split = SubclassSplit(labels, np.asarray(component_class, dtype=np.int64))
    logger.info("X-means: %d of %d classes split, %d sub-classes", int(np.sum(np.bincount(split.component_class) > 1)),
                n_classes, split.n_components)
    return split


def _xmeans(W: np.ndarray, max_parts: int, min_size: int, seed: int) -> np.ndarray:
    """Part of every row: bisect the parts while the BIC prefers two Gaussians to one and both are big enough."""
    parts = np.zeros(len(W), dtype=np.int64)
    open_parts = [0]
    n_parts = 1
    while open_parts and n_parts < max_parts:
        part = open_parts.pop(0)
        rows = np.flatnonzero(parts == part)
        halves = _bisected(W[rows], min_size, seed)
        if halves is None:
            continue
        parts[rows[halves == 1]] = n_parts
        open_parts += [part, n_parts]
        n_parts += 1
    return parts


def _leading_components(X: np.ndarray) -> np.ndarray:
    """``X`` centred and projected on its first principal components (at most ``CLUSTER_DIMS``, and few enough
    that every part of a split keeps several members per parameter of its covariance)."""
    centred = X - X.mean(axis=0)
    dims = max(1, min(CLUSTER_DIMS, X.shape[1], len(X) // (4 * MIN_SUBCLASS_SIZE)))
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:dims].T


def _bisected(W: np.ndarray, min_size: int, seed: int) -> np.ndarray | None:
    """The 2-means halves of ``W`` when the BIC of a two-Gaussian mixture beats one Gaussian's, else None."""
    if len(W) < 2 * min_size:
        return None
    start = KMeans(2, n_init=3, random_state=seed).fit(W)
    mixture = GaussianMixture(2, covariance_type="full", means_init=start.cluster_centers_, random_state=seed).fit(W)
    halves = mixture.predict(W)
    if np.bincount(halves, minlength=2).min() < min_size:
        return None
    if mixture.bic(W) >= GaussianMixture(1, covariance_type="full").fit(W).bic(W):
        return None
    return halves
