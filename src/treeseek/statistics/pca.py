"""PCA that keeps a fraction of the variance, with an optional cap on dimensions."""
from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from treeseek.errors import TreeseekError


class VariancePCA:
    """Keep the fewest components that explain ``variance`` of the training variance.

    ``max_components`` caps the result; ``variance=1.0`` keeps every component
    (up to the cap). Learned state: ``mean_``, ``components_``,
    ``explained_variance_``, ``explained_variance_ratio_``, ``n_components_``.
    """

    def __init__(self, variance: float = 0.95, max_components: int | None = None):
        self.variance = variance
        self.max_components = max_components

    def fit(self, X: np.ndarray) -> "VariancePCA":
        if not 0.0 < self.variance <= 1.0:
            raise TreeseekError(f"variance must be in (0, 1], got {self.variance}")
        if self.max_components is not None and self.max_components < 1:
            raise TreeseekError(f"max_components must be at least 1, got {self.max_components}")
        X = np.asarray(X, dtype=np.float64)
        if X.shape[0] < 2:
            raise TreeseekError("PCA needs at least two training vectors")
        pca = PCA(svd_solver="full").fit(X)
        ratio = pca.explained_variance_ratio_
        if self.variance >= 1.0:
            keep = len(ratio)
        else:
            keep = int(np.searchsorted(np.cumsum(ratio), self.variance) + 1)
        if self.max_components is not None:
            keep = min(keep, self.max_components)
        keep = max(1, min(keep, len(ratio)))
        self.mean_ = pca.mean_
        self.components_ = pca.components_[:keep]
        self.explained_variance_ = pca.explained_variance_[:keep]
        self.explained_variance_ratio_ = ratio[:keep]
        self.n_components_ = keep
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean_.shape[0]:
            raise TreeseekError(f"features have {X.shape[-1]} dimensions, the model expects {self.mean_.shape[0]}")
        return (X - self.mean_) @ self.components_.T

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        return self.fit(X).transform(X)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "pca_mean": self.mean_,
            "pca_components": self.components_,
            "pca_explained_variance": self.explained_variance_,
            "pca_explained_variance_ratio": self.explained_variance_ratio_,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], variance: float, max_components: int | None) -> "VariancePCA":
        pca = cls(variance, max_components)
        pca.mean_ = arrays["pca_mean"]
        pca.components_ = arrays["pca_components"]
        pca.explained_variance_ = arrays["pca_explained_variance"]
        pca.explained_variance_ratio_ = arrays["pca_explained_variance_ratio"]
        pca.n_components_ = pca.components_.shape[0]
        return pca
