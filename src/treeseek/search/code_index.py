"""An in-memory index of binary codes over a fitted hasher: the Hamming ranking through the search contract."""
from __future__ import annotations

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.search.contract import Capabilities, Ranking, check_request, search_excluding
from treeseek.search.hamming import HammingIndex


class CodeIndex:
    """Items as the hasher's packed codes; ``search`` ranks them by Hamming distance to the queries' codes.

    Parameters
    ----------
    hasher
        A fitted hasher (``treeseek.codes``): ``encode(X)`` gives packed codes of ``bits`` bits.
    kind : str
        ``flat`` (exact, ties by smaller id) or ``hnsw`` (sub-linear, approximate).

    Examples
    --------
    >>> import numpy as np
    >>> from treeseek.codes import SignPCAHasher
    >>> X = np.random.default_rng(0).normal(size=(50, 16))
    >>> index = CodeIndex(SignPCAHasher(8).fit(X))
    >>> index.add(X)[:2]
    array([0, 1])
    >>> D, I = index.search(X[:2], 3, ranking=Ranking("hamming"))
    >>> I[:, 0].tolist(), D[:, 0].tolist()
    ([0, 1], [0.0, 0.0])
    """

    capabilities = Capabilities(("hamming",), reasons={
        method: f"an index of binary codes ranks by hamming distance only, not {method}"
        for method in ("soft", "combined", "flat", "hierarchy", "cosine", "euclidean")})

    def __init__(self, hasher, *, kind: str = "flat"):
        self.hasher = hasher
        self.index_ = HammingIndex(hasher.bits, kind)
        self.ids_ = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids_)

    def add(self, X: np.ndarray, ids=None) -> np.ndarray:
        """Encode and add raw feature rows; returns their ids (default: the next n integers)."""
        codes = self.hasher.encode(np.asarray(X, dtype=np.float64))
        ids = np.arange(len(self), len(self) + len(codes)) if ids is None else np.asarray(ids, dtype=np.int64)
        if ids.shape != (len(codes),):
            raise TreeseekError(f"got {ids.size} ids for {len(codes)} items")
        self.index_.add(codes)
        self.ids_ = np.concatenate([self.ids_, ids])
        return ids

    def search(self, X: np.ndarray, k: int, *, ranking: Ranking = Ranking("hamming"),
               exclude_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """The search contract: Hamming distances as float64 ascending, ids; padded with +inf and -1."""
        check_request("an index of binary codes", self.capabilities, k, ranking)
        if ranking.rerank:
            raise TreeseekError("an index of binary codes keeps no vectors to re-rank by; search an index that "
                                "stores codes ('treeseek index codes') to re-rank")
        if ranking.hamming_index != self.index_.kind:
            raise TreeseekError(f"this index of codes is {self.index_.kind}, not {ranking.hamming_index}")
        X = np.asarray(X, dtype=np.float64)
        expected = getattr(self.hasher, "mean_", np.zeros(0)).shape[0]
        if X.ndim != 2 or X.shape[1] != expected:
            raise TreeseekError(f"queries have {X.shape[-1]} dimensions, the hasher expects {expected}")
        return search_excluding(self._topk, X, int(k), exclude_ids)

    def _topk(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        distances, rows = self.index_.search(self.hasher.encode(X), k)
        found = rows >= 0
        return np.where(found, distances, np.inf), np.where(found, self.ids_[np.maximum(rows, 0)], -1)
