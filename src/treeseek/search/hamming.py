"""Hamming search over packed codes with FAISS binary indexes: ``add`` then ``search(queries, k)``."""
from __future__ import annotations

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.search.threads import faiss_threads_for


class HammingIndex:
    """``kind`` is ``flat`` (exact; ties broken by smaller id, like a stable full sort) or ``hnsw``
    (sub-linear, approximate, for large collections)."""

    def __init__(self, bits: int, kind: str = "flat", m: int = 16, ef_search: int = 128):
        import faiss

        if bits % 8 or bits <= 0:
            raise TreeseekError(f"bits must be a positive multiple of 8, got {bits}")
        if kind not in ("flat", "hnsw"):
            raise TreeseekError(f"kind must be flat or hnsw, got {kind!r}")
        self.bits, self.kind, self.ef_search = bits, kind, ef_search
        self.index_ = faiss.IndexBinaryFlat(bits) if kind == "flat" else faiss.IndexBinaryHNSW(bits, m)

    @property
    def ntotal(self) -> int:
        return int(self.index_.ntotal)

    def add(self, codes: np.ndarray) -> None:
        self.index_.add(self._check(codes, "codes"))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids), nearest first; rows with fewer than k items are padded with -1."""
        queries = self._check(queries, "queries")
        if k < 1:
            raise TreeseekError(f"k must be at least 1, got {k}")
        if self.kind == "hnsw":
            self.index_.hnsw.efSearch = max(self.ef_search, k)
            with faiss_threads_for(len(queries)):
                distances, ids = self.index_.search(queries, k)
            return distances, ids
        # FAISS orders equal distances arbitrarily. Ask for 4k neighbours: where the last of them is farther
        # than the k-th, every tie of the k-th is among them and sorting them by (distance, id) is exact.
        wide = min(self.ntotal, 4 * k) or k
        with faiss_threads_for(len(queries)):
            distances, ids = self.index_.search(queries, wide)
        kth = distances[:, min(k, wide) - 1].astype(np.int64)
        if self.ntotal < k:
            kth[:] = self.bits
        order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), distances), axis=1)
        distances, ids = np.take_along_axis(distances, order, 1), np.take_along_axis(ids, order, 1)
        unsure = np.flatnonzero((wide < self.ntotal) & (distances[:, -1] <= kth))
        out_d = np.full((len(queries), k), np.iinfo(np.int32).max, dtype=distances.dtype)
        out_i = np.full((len(queries), k), -1, dtype=np.int64)
        n = min(k, wide)
        out_d[:, :n], out_i[:, :n] = distances[:, :n], ids[:, :n]
        for first in range(0, len(unsure), 64):  # rows whose ties run past 4k: every item up to the k-th
            rows = unsure[first : first + 64]
            limits, found_d, found_i = self.index_.range_search(queries[rows], int(kth[rows].max()) + 1)
            for offset, row in enumerate(rows):
                d, i = found_d[limits[offset] : limits[offset + 1]], found_i[limits[offset] : limits[offset + 1]]
                keep = d <= kth[row]
                best = np.lexsort((i[keep], d[keep]))[:k]
                out_d[row, : len(best)], out_i[row, : len(best)] = d[keep][best], i[keep][best]
        return out_d, out_i

    def _check(self, codes, what):
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if codes.ndim != 2 or codes.shape[1] * 8 != self.bits:
            raise TreeseekError(f"{what} must be n x {self.bits // 8} packed bytes, got shape {codes.shape}")
        return codes
