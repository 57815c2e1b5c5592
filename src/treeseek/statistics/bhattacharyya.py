"""Bhattacharyya distance and coefficient between every pair of class Gaussians (paper eq. 1-2).

D_B = 1/8 (m1-m2)^T S^-1 (m1-m2) + 1/2 ln(det S / sqrt(det S1 det S2)),  S = (S1+S2)/2
BC  = exp(-D_B)

Log-determinants come from Cholesky factors, never from ``det``, which
under- or overflows in a few hundred dimensions.
"""
from __future__ import annotations

import numpy as np

from treeseek.statistics.gaussians import ClassGaussians, _squared_euclidean


def bhattacharyya_distance(gaussians: ClassGaussians) -> np.ndarray:
    """K x K symmetric matrix of Bhattacharyya distances, zero on the diagonal."""
    means, covs = gaussians.means_, gaussians.covariances_
    if gaussians.covariance == "tied":
        # Equal covariances: the log-determinant term vanishes.
        whitener = np.linalg.inv(np.linalg.cholesky(covs))
        distance = _squared_euclidean(means @ whitener.T, means @ whitener.T) / 8.0
    elif gaussians.covariance == "diag":
        distance = _diagonal(means, covs)
    else:
        distance = _full(means, covs)
    np.fill_diagonal(distance, 0.0)
    return np.maximum(distance, 0.0)


def bhattacharyya_coefficient(gaussians: ClassGaussians) -> np.ndarray:
    """K x K matrix of overlaps in [0, 1]; 1 on the diagonal."""
    return np.exp(-bhattacharyya_distance(gaussians))


def _diagonal(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    k = len(means)
    log_var = np.log(variances)
    out = np.zeros((k, k))
    for i in range(k):
        avg = 0.5 * (variances[i] + variances)
        quad = np.sum((means[i] - means) ** 2 / avg, axis=1) / 8.0
        logdet = 0.5 * np.sum(np.log(avg) - 0.5 * (log_var[i] + log_var), axis=1)
        out[i] = quad + logdet
    return 0.5 * (out + out.T)


def _full(means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    k = len(means)
    own_logdet = 2.0 * np.sum(np.log(np.diagonal(np.linalg.cholesky(covs), axis1=1, axis2=2)), axis=1)
    out = np.zeros((k, k))
    for i in range(k - 1):
        others = slice(i + 1, k)
        avg = 0.5 * (covs[i] + covs[others])
        chol = np.linalg.cholesky(avg)
        diff = (means[others] - means[i])[..., None]
        z = np.linalg.solve(chol, diff)[..., 0]  # chol is lower-triangular: z = L^-1 diff
        quad = np.sum(z**2, axis=1) / 8.0
        logdet = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
        out[i, others] = quad + 0.5 * (logdet - 0.5 * (own_logdet[i] + own_logdet[others]))
    return out + out.T


def mixture_bhattacharyya_coefficient(gaussians: ClassGaussians, component_class: np.ndarray,
                                      n_classes: int) -> np.ndarray:
    """Overlap between classes that are mixtures of the Gaussians ``gaussians`` (one per sub-class).

    The Bhattacharyya coefficient of two mixtures has no closed form; this is the standard upper bound
    ``sum_ij sqrt(w_i v_j) BC(a_i, b_j)`` (the square root of a sum is at most the sum of the square roots),
    capped at 1, with each sub-class weighed by its share of its class's training samples. A class of one
    Gaussian gives exactly ``bhattacharyya_coefficient``.
    """
    component_class = np.asarray(component_class, dtype=np.int64)
    weights = gaussians.counts_ / np.bincount(component_class, weights=gaussians.counts_, minlength=n_classes)[
        component_class]
    membership = np.zeros((n_classes, len(component_class)))
    membership[component_class, np.arange(len(component_class))] = np.sqrt(weights)
    overlap = np.minimum(membership @ bhattacharyya_coefficient(gaussians) @ membership.T, 1.0)
    np.fill_diagonal(overlap, 1.0)
    return overlap
