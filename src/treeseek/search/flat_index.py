"""Exact full-scan search for the baselines that ignore the hierarchy."""
from __future__ import annotations

import numpy as np

from ..errors import TreeseekError
from .distances import cosine_distances, euclidean_distances, normalize_rows
from .topk import MISSING_ID, smallest_k


class FlatIndex:
    """``add(vectors)`` then ``search(queries, k) -> (D, I)`` by ``euclidean`` or ``cosine`` distance."""

    def __init__(self, metric: str = "euclidean"):
        if metric not in ("euclidean", "cosine"):
            raise TreeseekError(f"metric must be euclidean or cosine, got {metric!r}")
        self.metric = metric
        self._vectors: list[np.ndarray] = []
        self._ids: list[np.ndarray] = []
        self.ntotal = 0

    def add(self, vectors: np.ndarray, ids: np.ndarray | None = None) -> None:
        vectors = np.asarray(vectors, dtype=np.float64)
        if vectors.ndim != 2:
            raise TreeseekError("add() needs an N x d matrix")
        if self.ntotal and vectors.shape[1] != self._vectors[0].shape[1]:
            raise TreeseekError(f"vectors have {vectors.shape[1]} dimensions, the index holds {self._vectors[0].shape[1]}")
        self._vectors.append(normalize_rows(vectors) if self.metric == "cosine" else vectors)
        self._ids.append(np.arange(self.ntotal, self.ntotal + len(vectors)) if ids is None else np.asarray(ids, np.int64))
        self.ntotal += len(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if k < 1:
            raise TreeseekError(f"k must be at least 1, got {k}")
        vectors = np.concatenate(self._vectors) if self._vectors else np.zeros((0, np.shape(queries)[1]))
        ids = np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64)
        queries = np.asarray(queries, dtype=np.float64)
        if queries.ndim != 2 or queries.shape[1] != vectors.shape[1]:
            raise TreeseekError(f"queries have {queries.shape[-1]} dimensions, the index holds {vectors.shape[1]}")
        out_keys, out_ids = [], []
        chunk = max(1, int(2e7 // max(1, len(vectors))))
        for start in range(0, len(queries), chunk):
            part = queries[start : start + chunk]
            if self.metric == "cosine":
                keys = cosine_distances(normalize_rows(part), vectors, normalized=True)
            else:
                keys = euclidean_distances(part, vectors)
            best_keys, best_ids = smallest_k(keys, ids, k)
            out_keys.append(best_keys)
            out_ids.append(np.where(best_ids == MISSING_ID, -1, best_ids))
        return np.concatenate(out_keys), np.concatenate(out_ids)
