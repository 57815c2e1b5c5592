"""Blocks of rows scored for a batch of queries in float32, and the float64 distances computed once at the end.

D = clip(1 - q·x, 0, 2) + alpha * D_H. While the groups are scanned, every block is scored as FAISS would: one
float32 matrix product on the stored rows as they are (no float64 copy of the block), then the clip and the
hierarchy term, both in float32, in place. Each query keeps the ``width`` = k + margin smallest of these
approximate keys (``Candidates``), unordered. An approximate key is within ``slack`` of the float64 one
(``approximate_slack``), so once the scan ends the float64 top-k is among the candidates within 2 * slack of the
approximate k-th, provided that the (k + margin)-th candidate lies further than that: an item dropped from the
candidates lay above it. Only those few candidates are then recomputed in float64, each from its row as stored,
and sorted with ties broken by id (``exact_top_k``). A query whose margin was too narrow (many items within
slack of its k-th, as exact duplicates make) is reported and searched again with a wider one.
"""
from __future__ import annotations

import numpy as np

from treeseek.search.topk import MISSING_ID, smallest_k

QUERIES_PER_CHUNK = 8  # queries whose candidates are recomputed in float64 at once (bounds the gathered rows)
UNIT_ROUNDING = 2.0**-24  # float32's unit roundoff


class QueryBatch:
    """Unit queries in float64 and float32, with the slack of their approximate keys: rows of length at most
    ``row_norm``, hierarchy terms of at most ``alpha`` summed over ``width`` classes per item."""

    def __init__(self, unit_queries: np.ndarray, *, row_norm: float = 1.0, alpha: float = 1.0, width: int = 1):
        self.exact = np.asarray(unit_queries, dtype=np.float64)
        self.single = self.exact.astype(np.float32)
        self.slack = approximate_slack(self.exact.shape[1], row_norm, alpha, width)


def approximate_slack(dim: int, row_norm: float, alpha: float, width: int) -> float:
    """How far a float32 key may lie from the float64 one.

    The product: the rounding of the query, and of rows stored in float64, and the accumulation bound of a
    d-term dot product, (d + 4) u |x|. The cosine: 1 - p and its clip, 2u. The hierarchy term: heights and
    weights rounded to float32, their products and their sum over ``width`` classes, alpha (width + 4) u. The
    final sum, (2 + alpha) u. One percent more for the bounds' own rounding.
    """
    terms = (dim + 4) * float(row_norm) + 2 + float(alpha) * (width + 4) + 2 + float(alpha)
    return terms * UNIT_ROUNDING * 1.01


class Candidates:
    """Per query, the ``width`` smallest approximate keys seen so far and their rows, in no order, with the k-th
    and the width-th of them (``kth``, ``last``; inf until that many are held)."""

    def __init__(self, n_queries: int, k: int, width: int):
        self.k, self.width = k, width
        self.keys = np.full((n_queries, width), np.inf, dtype=np.float32)
        self.rows = np.full((n_queries, width), -1, dtype=np.int64)
        self.kth = np.full(n_queries, np.inf, dtype=np.float32)
        self.last = np.full(n_queries, np.inf, dtype=np.float32)

    def add_block(self, query_rows: np.ndarray, approximate: np.ndarray, first_row: int,
                  ceiling: np.ndarray | None = None) -> None:
        """Merge the approximate keys of the block whose rows start at ``first_row`` (inf: rows not to take).
        ``ceiling`` (per query of ``query_rows``), when given, is a width-th key known from elsewhere."""
        limit = self.last[query_rows] if ceiling is None else np.minimum(self.last[query_rows], ceiling)
        unfilled = np.flatnonzero(np.isinf(limit))
        if len(unfilled) and approximate.shape[1] > self.width:  # the block's own width-th bounds what stays
            limit[unfilled] = np.partition(approximate[unfilled], self.width - 1, axis=1)[:, self.width - 1]
        passing = approximate <= limit[:, None]
        if len(unfilled):  # an inf key (a removed row) passes an inf limit
            passing &= np.isfinite(approximate)
        passed = np.flatnonzero(passing)  # one pass, and a 1-D one: several times faster than a 2-D nonzero
        if len(passed) == 0:
            return
        pair_rows, pair_columns = np.divmod(passed, passing.shape[1])
        counts = np.bincount(pair_rows, minlength=len(query_rows))
        slots = np.arange(len(pair_rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        new_keys = np.full((len(query_rows), int(counts.max())), np.inf, dtype=np.float32)
        new_rows = np.full(new_keys.shape, -1, dtype=np.int64)
        new_keys[pair_rows, slots] = approximate[pair_rows, pair_columns]
        new_rows[pair_rows, slots] = pair_columns + first_row
        self._keep(query_rows, new_keys, new_rows)

    def absorb(self, other: "Candidates", query_rows: np.ndarray) -> None:
        """Merge another's candidates of ``query_rows`` (another thread's share of the tiles: other items)."""
        self._keep(query_rows, other.keys[query_rows], other.rows[query_rows])

    def _keep(self, query_rows: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> None:
        merged_keys = np.hstack([self.keys[query_rows], keys])
        merged_rows = np.hstack([self.rows[query_rows], rows])
        order = np.argpartition(merged_keys, [self.k - 1, self.width - 1], axis=1)[:, : self.width]
        kept = np.take_along_axis(merged_keys, order, axis=1)
        self.keys[query_rows], self.rows[query_rows] = kept, np.take_along_axis(merged_rows, order, axis=1)
        self.kth[query_rows], self.last[query_rows] = kept[:, self.k - 1], kept[:, self.width - 1]


def approximate_keys(queries: QueryBatch, query_rows: np.ndarray, vectors: np.ndarray, extra: np.ndarray,
                     alive: np.ndarray | None) -> np.ndarray:
    """float32 keys of the query ``rows`` against a block of stored unit rows, ``extra`` (float32, queries x
    rows) being the hierarchy term; removed rows (``alive`` False) get inf."""
    if vectors.dtype == np.float64:  # rows held in float64 (in memory): multiplied as they are, rounded after
        products = _products(vectors, queries.exact[query_rows]).astype(np.float32)
    else:
        block = vectors if vectors.dtype == np.float32 else np.asarray(vectors, dtype=np.float32)
        products = _products(block, queries.single[query_rows])
    keys = np.subtract(np.float32(1.0), products, out=products)
    np.clip(keys, np.float32(0.0), np.float32(2.0), out=keys)
    keys += extra
    if alive is not None:
        keys[:, ~alive] = np.inf
    return keys


def exact_top_k(candidates: Candidates, queries: QueryBatch, vectors: np.ndarray, ids: np.ndarray,
                exact_extra) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(D, ids, resolved): the float64 top-k of each query whose margin sufficed (see the module); the rows of the
    others (``resolved`` False) are to be searched again with a wider margin.

    ``exact_extra(query_rows, rows)`` gives the float64 hierarchy term of each query (rows of the batch) and item
    (rows of the segment), broadcast, computed in each item's own order."""
    k, slack = candidates.k, queries.slack
    kth = candidates.kth.astype(np.float64)
    last = candidates.last.astype(np.float64)
    resolved = np.isinf(kth) | np.isinf(last) | (last > kth + 2 * slack)
    done = np.flatnonzero(resolved)
    rows = candidates.rows[done]
    wanted = (rows >= 0) & (candidates.keys[done] <= (kth[done] + 2 * slack)[:, None])
    rows = np.where(wanted, rows, 0)
    ascending = np.argsort(rows, axis=1)  # each query's rows read in storage order: neighbours share cache lines
    rows, wanted = np.take_along_axis(rows, ascending, axis=1), np.take_along_axis(wanted, ascending, axis=1)
    keys = np.full(rows.shape, np.inf)
    for first in range(0, len(done), QUERIES_PER_CHUNK):  # a few queries at a time: their rows stay in cache
        chunk = slice(first, first + QUERIES_PER_CHUNK)
        # einsum sums each pair's d products in the same order: duplicates of an item get equal distances; it
        # widens the stored rows to float64 itself (exactly), in its buffer rather than in a gathered copy
        dots = np.einsum("qcd,qd->qc", vectors[rows[chunk]], queries.exact[done[chunk]])
        keys[chunk] = np.clip(1.0 - dots, 0.0, 2.0) + exact_extra(done[chunk, None], rows[chunk])
    keys[~wanted] = np.inf
    keys_out = np.full((len(kth), k), np.inf)
    ids_out = np.full((len(kth), k), MISSING_ID, dtype=np.int64)
    keys_out[done], found = smallest_k(keys, np.where(wanted, ids[rows], MISSING_ID), k)
    ids_out[done] = np.where(np.isinf(keys_out[done]), MISSING_ID, found)
    return keys_out, ids_out, resolved


def _products(block: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """queries x block rows inner products, C-ordered. OpenBLAS multiplies a few queries by a tile of rows up to
    2x faster as block @ queries.T than as queries @ block.T (bench: 2,048 x 256 float32 rows, 4 to 35 queries)."""
    return np.ascontiguousarray((block @ queries.T).T)
