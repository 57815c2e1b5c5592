"""Where the rankings take their cosine: on the raw features, centred on the training mean, or whitened.

``whitened`` is centred, then the coordinates along the principal components that PCA keeps are rescaled to
their mean variance, the rest left as it is: (I + V diag(s - 1) V^T)(x - mean) with s_j = sqrt(mean(lambda) /
lambda_j). Every map keeps the width and is invertible, so an index that stores unit vectors of this space and
their lengths can give the raw features back (``to_raw``) to place its items again.
"""
from __future__ import annotations

import numpy as np

from treeseek import choices
from treeseek.statistics.pca import VariancePCA

COSINE_SPACES = choices.COSINE_SPACES


def to_cosine_space(space: str, pca: VariancePCA, X: np.ndarray) -> np.ndarray:
    """The rows of X (raw features) in ``space``, as float64 of the same width."""
    X = np.asarray(X, dtype=np.float64)
    if space == "raw":
        return X
    centred = X - pca.mean_
    if space == "centred":
        return centred
    return centred + ((centred @ pca.components_.T) * (_scale(pca) - 1.0)) @ pca.components_


def to_raw(space: str, pca: VariancePCA, V: np.ndarray) -> np.ndarray:
    """The raw features of rows in ``space``: the inverse of ``to_cosine_space``."""
    V = np.asarray(V, dtype=np.float64)
    if space == "raw":
        return V
    if space == "whitened":
        V = V + ((V @ pca.components_.T) * (1.0 / _scale(pca) - 1.0)) @ pca.components_
    return V + pca.mean_


def _scale(pca: VariancePCA) -> np.ndarray:
    variances = np.maximum(pca.explained_variance_, np.finfo(float).tiny)
    return np.sqrt(variances.mean() / variances)
