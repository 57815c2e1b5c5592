"""One Gaussian per class, in three covariance models.

* ``"full"``: a covariance per class, as the paper writes it, shrunk with
  Ledoit-Wolf so that it stays well-conditioned when a class has fewer samples
  than dimensions. A class with a single sample borrows the pooled covariance.
* ``"tied"``: one pooled within-class covariance (Ledoit-Wolf), shared by all
  classes. This is what the authors' code effectively uses; it is also the
  most accurate and by far the fastest model on real features.
* ``"diag"``: per-class variances, shrunk towards the pooled variances with the
  weight of one sample, so that a single-sample class is still defined.
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import solve_triangular
from sklearn.covariance import ledoit_wolf

from treeseek.errors import TreeseekError
from treeseek.statistics.row_selection import smallest_per_row

COVARIANCE_MODELS = ("full", "tied", "diag")
_RIDGE = 1e-9  # relative to the mean variance: only guards exact singularity


class ClassGaussians:
    """Fit ``N(mean_k, cov_k)`` per class; Mahalanobis distances and assignment (paper eq. 4).

    Learned state: ``means_`` (K x d), ``counts_`` (K), and ``covariances_``
    with shape (K, d, d) for ``full``, (d, d) for ``tied`` or (K, d) for ``diag``.
    """

    def __init__(self, covariance: str = "tied"):
        self.covariance = covariance

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int | None = None) -> "ClassGaussians":
        if self.covariance not in COVARIANCE_MODELS:
            raise TreeseekError(f"covariance must be one of {', '.join(COVARIANCE_MODELS)}, got {self.covariance!r}")
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y)
        n_classes = int(y.max()) + 1 if n_classes is None else n_classes
        counts = np.bincount(y, minlength=n_classes)
        if np.any(counts == 0):
            raise TreeseekError(f"class {int(np.flatnonzero(counts == 0)[0])} has no training samples")
        means = np.zeros((n_classes, X.shape[1]))
        np.add.at(means, y, X)
        means /= counts[:, None]
        centred = X - means[y]
        if not np.any(centred):  # Mahalanobis distances need a covariance that is not zero
            raise TreeseekError("no class varies: every class has a single training sample, or identical ones; "
                                "the class Gaussians need classes with at least two different samples")
        pooled, _ = ledoit_wolf(centred, assume_centered=True)
        self.means_ = means
        self.counts_ = counts
        if self.covariance == "tied":
            self.covariances_ = _with_ridge(pooled)
        elif self.covariance == "diag":
            pooled_var = centred.var(axis=0) * len(X) / max(len(X) - n_classes, 1)
            sums = np.zeros_like(means)
            np.add.at(sums, y, centred**2)
            variances = (sums + pooled_var) / (counts[:, None] + 1.0)
            self.covariances_ = np.maximum(variances, _RIDGE * pooled_var.mean())
        else:
            covs = np.empty((n_classes, X.shape[1], X.shape[1]))
            order = np.argsort(y, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(counts)])
            for k in range(n_classes):
                rows = centred[order[bounds[k] : bounds[k + 1]]]
                covs[k] = pooled if len(rows) < 2 else ledoit_wolf(rows, assume_centered=True)[0]
                covs[k] = _with_ridge(covs[k])
            self.covariances_ = covs
        self._prepare()
        return self

    @property
    def n_classes_(self) -> int:
        return self.means_.shape[0]

    def _prepare(self) -> None:
        """What every distance computation needs and only the fitted state determines, computed once: a query's
        distances then cost one product with the means, not a recomputation of the whitened means."""
        if self.covariance == "tied":
            self._whitener = np.linalg.inv(np.linalg.cholesky(self.covariances_))
            self._whitened_means = self.means_ @ self._whitener.T
            self._whitened_norms = np.sum(self._whitened_means**2, axis=1)
            # -2 m, 1, |m|^2 per class (exact: -2 is a power of two), for ``_tied_distances``'s one product
            self._widened_means = np.vstack([-2.0 * self._whitened_means.T, np.ones((1, self.n_classes_)),
                                             self._whitened_norms[None, :]])
            self._projected_whitening = None  # (PCA components, whitening of the rows before that PCA)
        elif self.covariance == "diag":
            self._inverse_variances = 1.0 / self.covariances_
            self._scaled_means = self.means_ * self._inverse_variances
            self._means_term = np.sum(self.means_**2 * self._inverse_variances, axis=1)
            self._minus_twice_scaled_means = -2.0 * self._scaled_means.T
        else:
            self._cholesky = np.linalg.cholesky(self.covariances_)

    def mahalanobis(self, X: np.ndarray, *, projection=None) -> np.ndarray:
        """Squared Mahalanobis distance of every row of ``X`` to every class (N x K).

        ``projection``: a fitted PCA (``mean_``, ``components_``, ``transform``) into the Gaussians' space, whose
        input ``X`` then is. With a tied covariance the projection and the whitening are one product: its matrix is
        computed once per projection.
        """
        X = np.asarray(X)
        width = self.means_.shape[1] if projection is None else projection.components_.shape[1]
        if X.ndim != 2 or X.shape[1] != width:
            raise TreeseekError(f"vectors have {X.shape[-1]} dimensions, the Gaussians expect {width}")
        if projection is None:
            X = np.asarray(X, dtype=np.float64)
        elif self.covariance == "tied":  # centred only: the whitening below includes the projection
            X = np.subtract(X, projection.mean_, dtype=np.float64)  # float32 rows widen here, with no copy first
        else:
            X = projection.transform(X)
        if self.covariance == "tied":
            return self._tied_distances(X, self._whitening(projection))
        # the n x K result is written once and updated in place: a fresh n x K temporary per term cost more than
        # the product itself
        if self.covariance == "diag":
            out = X @ self._minus_twice_scaled_means
            out += (X**2) @ self._inverse_variances.T
            out += self._means_term
            return np.maximum(out, 0.0, out=out)
        out = np.empty((X.shape[0], self.n_classes_))
        for k in range(self.n_classes_):
            z = solve_triangular(self._cholesky[k], (X - self.means_[k]).T, lower=True, check_finite=False)
            out[:, k] = np.einsum("ij,ij->j", z, z)
        return out

    def _whitening(self, projection) -> np.ndarray:
        """The d x p matrix that takes rows to the whitened space: after ``projection`` (centred) when given."""
        if projection is None:
            return self._whitener.T
        cached = self._projected_whitening
        if cached is None or cached[0] is not projection.components_:
            cached = (projection.components_, np.ascontiguousarray((self._whitener @ projection.components_).T))
            self._projected_whitening = cached
        return cached[1]

    def _tied_distances(self, X: np.ndarray, whitening: np.ndarray) -> np.ndarray:
        """|w|^2 - 2 w.m + |m|^2 for the whitened rows w = X @ whitening and means m, as one product: each row is
        widened by its squared length and a one, each mean by a one and its squared length. The two n x K passes
        that would add the lengths afterwards cost a third of the product."""
        p = whitening.shape[1]
        widened = np.empty((X.shape[0], p + 2))
        whitened = np.matmul(X, whitening, out=widened[:, :p])
        widened[:, p] = np.einsum("ij,ij->i", whitened, whitened)
        widened[:, p + 1] = 1.0
        out = widened @ self._widened_means
        return np.maximum(out, 0.0, out=out)

    def assign(self, X: np.ndarray, batch_size: int = 65536, *, projection=None) -> np.ndarray:
        """Index of the nearest class by Mahalanobis distance, for every row of ``X`` (``projection``: as in
        ``mahalanobis``)."""
        X = np.asarray(X)
        if len(X) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.argmin(self.mahalanobis(X[i : i + batch_size], projection=projection), axis=1)
                               for i in range(0, len(X), batch_size)])

    def posteriors(self, X: np.ndarray, temperature: float = 1.0, top_m: int | None = None, *,
                   projection=None) -> np.ndarray:
        """p(c | x) proportional to exp(-d_M^2(x, c) / (2 T)): with a tied covariance and T = 1 the LDA posterior.

        As T goes to 0 this becomes the one-hot ``assign``; ``top_m`` keeps each row's m largest, renormalised
        (``top_posteriors``). ``projection``: as in ``mahalanobis``.
        """
        classes, weights = top_posteriors(self.mahalanobis(X, projection=projection), temperature, top_m)
        dense = np.zeros((len(classes), self.n_classes_))
        np.put_along_axis(dense, classes, weights, axis=1)
        return dense

    def to_arrays(self, prefix: str = "gauss_") -> dict[str, np.ndarray]:
        return {f"{prefix}means": self.means_, f"{prefix}counts": self.counts_, f"{prefix}covariances": self.covariances_}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], covariance: str, prefix: str = "gauss_") -> "ClassGaussians":
        gaussians = cls(covariance)
        gaussians.means_ = arrays[f"{prefix}means"]
        gaussians.counts_ = arrays[f"{prefix}counts"]
        gaussians.covariances_ = arrays[f"{prefix}covariances"]
        gaussians._prepare()
        return gaussians


def top_posteriors(squared_distances: np.ndarray, temperature: float,
                   top_m: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The posteriors exp(-d^2 / (2 T)) of each row's ``top_m`` nearest classes (all when None), renormalised.

    Returns ``(classes, weights)``, both n x m, each row by decreasing weight: the sparse form that the soft
    ranking stores per item. Classes at exactly equal distance come smaller index first, so that the first
    class of a row is its ``argmin``, and a cut through such a tie keeps the smaller indices.
    """
    if not temperature > 0:
        raise TreeseekError(f"temperature must be > 0, got {temperature}")
    if top_m is not None and top_m < 1:
        raise TreeseekError(f"top_m must be at least 1, got {top_m}")
    squared_distances = np.asarray(squared_distances, dtype=np.float64)
    n_classes = squared_distances.shape[1]
    classes, nearest = smallest_per_row(squared_distances, n_classes if top_m is None else top_m)
    logits = -nearest / (2.0 * temperature)
    weights = np.exp(logits - logits[:, :1])
    return classes, weights / weights.sum(axis=1, keepdims=True)


def _with_ridge(cov: np.ndarray) -> np.ndarray:
    ridge = _RIDGE * max(np.trace(cov) / cov.shape[0], np.finfo(float).tiny)
    return cov + ridge * np.eye(cov.shape[0])


def _squared_euclidean(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    out = np.sum(A**2, axis=1)[:, None] + np.sum(B**2, axis=1)[None, :] - 2.0 * A @ B.T
    return np.maximum(out, 0.0)
