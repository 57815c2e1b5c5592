"""Unsupervised codes: the sign of the top principal components, and ITQ (Gong & Lazebnik 2011)."""
from __future__ import annotations

import numpy as np

from treeseek.codes.packing import pack_codes
from treeseek.errors import TreeseekError
from treeseek.io.features import check_features


class SignPCAHasher:
    """``fit`` learns ``mean_`` and ``components_`` (bits x d); a code is the sign of the projection.

    Parameters
    ----------
    bits : int
        Code length: a multiple of 8, at most the feature dimension and the number of training samples.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(40, 16))
    >>> SignPCAHasher(8).fit(X).encode(X[:2]).shape   # packed: 8 bits in one byte per item
    (2, 1)
    """

    def __init__(self, bits: int = 64):
        self.bits = bits

    def fit(self, X: np.ndarray, levels=None, progress: bool = False) -> "SignPCAHasher":
        X = check_features(X, "training features").astype(np.float64)
        if self.bits % 8 or not 0 < self.bits <= X.shape[1]:
            raise TreeseekError(f"bits must be a multiple of 8 between 8 and the feature dimension {X.shape[1]}")
        if self.bits > len(X):  # the SVD finds at most one direction per sample
            raise TreeseekError(f"{self.bits} bits need at least {self.bits} training samples (principal directions), "
                                f"got {len(X)}")
        self.mean_ = X.mean(axis=0)
        self.components_ = np.linalg.svd(X - self.mean_, full_matrices=False)[2][: self.bits]
        self.rotation_ = np.eye(self.bits)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        return ((np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T) @ self.rotation_

    def encode(self, X: np.ndarray) -> np.ndarray:
        return pack_codes(self.transform(X))


class ITQHasher(SignPCAHasher):
    """PCA to ``bits`` dimensions, then the rotation that brings the data closest to its binary codes (Gong and
    Lazebnik's iterative quantisation).

    Parameters
    ----------
    bits : int
        Code length (as ``SignPCAHasher``).
    n_iter : int
        Alternations of rotation and quantisation.
    seed : int
        Of the initial random rotation.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(40, 16))
    >>> codes = ITQHasher(8, seed=0).fit(X).encode(X)
    >>> codes.dtype, codes.shape
    (dtype('uint8'), (40, 1))
    """

    def __init__(self, bits: int = 64, *, n_iter: int = 50, seed: int = 0):
        super().__init__(bits)
        self.n_iter, self.seed = n_iter, seed

    def fit(self, X: np.ndarray, levels=None, progress: bool = False) -> "ITQHasher":
        super().fit(X)
        V = (np.asarray(X, dtype=np.float64) - self.mean_) @ self.components_.T
        rotation = np.linalg.qr(np.random.default_rng(self.seed).standard_normal((self.bits, self.bits)))[0]
        for _ in range(self.n_iter):
            B = np.sign(V @ rotation)
            # orthogonal Procrustes: the rotation that best maps V onto B
            U, _, Wt = np.linalg.svd(V.T @ B)
            rotation = U @ Wt
        self.rotation_ = rotation
        return self
