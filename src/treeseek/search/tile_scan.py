"""One block of rows scored for a batch of queries: float32 products, float64 exactness near the cut.

D = clip(1 - q·x, 0, 2) + alpha * D_H. The cosine part is computed as FAISS would, one float32 matrix
product on the stored rows as they are (no float64 copy of the block); the hierarchy part in float64. For
unit rows the float32 product is within ``slack`` = (d + 4) * 2^-24 * max|x| of the float64 one (the
rounding of the query, and of rows stored in float64, plus the accumulation bound of a d-term dot product),
and clipping keeps that. So a row
whose approximate D exceeds the running k-th best by more than ``slack`` cannot enter the top-k, nor can one
that exceeds the block's own k-th approximate D by more than twice ``slack``. Only the rows left, a little
more than k per query on the first block and usually none on later ones, are recomputed in float64 from the
rows as stored and merged: the top-k equals that of a float64 scan. Rows held in float64 (an in-memory
index) are multiplied in float64 at once; only the hierarchy term is then recomputed near the cut.
"""
from __future__ import annotations

import numpy as np

from treeseek.search.topk import merge_smallest_k, no_candidates

PAIRS_PER_CHUNK = 8192  # (query, row) pairs recomputed in float64 at once: bounds the gathered copy
EXTRA_SLACK = 1e-12     # how far the block's added term may be from the exact one (a float64 rounding)


class QueryBatch:
    """Unit queries in float64 and float32, with the slack of their float32 products against rows of length
    at most ``row_norm``."""

    def __init__(self, unit_queries: np.ndarray, row_norm: float = 1.0):
        self.exact = np.asarray(unit_queries, dtype=np.float64)
        self.single = self.exact.astype(np.float32)
        self.slack = (self.exact.shape[1] + 4) * 2.0**-24 * float(row_norm) * 1.01
        self.double_slack = (self.exact.shape[1] + 4) * 2.0**-53 * float(row_norm) * 1.01  # summation orders


def merge_scored_block(best_keys: np.ndarray, best_ids: np.ndarray, queries: QueryBatch, rows: np.ndarray,
                       vectors: np.ndarray, extra: np.ndarray, exact_extra, ids: np.ndarray,
                       alive: np.ndarray | None, k: int,
                       ceiling: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The running top-k of the query ``rows`` merged with a block: ``vectors`` its stored unit rows, ``extra``
    the term added to each (query, row) cosine distance, to within ``EXTRA_SLACK``, and ``exact_extra(pair_rows,
    pair_columns)`` the same term exactly as the reference computes it, for the pairs recomputed (so that equal
    items get equal distances whatever block they are in); ``ids`` its ids, ``alive`` its live rows. ``ceiling``
    (per query of ``rows``), when given, is a k-th best known from elsewhere: nothing above it can enter."""
    if vectors.dtype == np.float64:  # rows held in float64 (in memory): the product is already exact
        approximate = np.clip(1.0 - _products(vectors, queries.exact[rows]), 0.0, 2.0) + extra
        slack = queries.double_slack + EXTRA_SLACK
    else:
        block = vectors if vectors.dtype == np.float32 else np.asarray(vectors, dtype=np.float32)
        approximate = np.clip(1.0 - _products(block, queries.single[rows]).astype(np.float64), 0.0, 2.0) + extra
        slack = queries.slack + EXTRA_SLACK
    if alive is not None:
        approximate[:, ~alive] = np.inf
    limit = best_keys[:, k - 1] if ceiling is None else np.minimum(best_keys[:, k - 1], ceiling)
    limit = limit + slack
    unfilled = np.flatnonzero(np.isinf(limit))
    if len(unfilled) and vectors.shape[0] > k:  # no k-th best yet: the block's own k-th bounds what can enter
        limit[unfilled] = np.partition(approximate[unfilled], k - 1, axis=1)[:, k - 1] + 2 * slack
    passing = approximate <= limit[:, None]
    if alive is not None:  # an inf key passes an inf limit
        passing[:, ~alive] = False
    counts = np.count_nonzero(passing, axis=1)
    width = int(counts.max()) if len(counts) else 0
    if width == 0:
        return best_keys, best_ids
    pair_rows, pair_columns = np.nonzero(passing)
    exact = _exact_keys(queries.exact[rows], vectors, exact_extra, pair_rows, pair_columns)
    slots = np.arange(len(pair_rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    candidate_keys, candidate_ids = no_candidates(len(rows), width)
    candidate_keys[pair_rows, slots], candidate_ids[pair_rows, slots] = exact, ids[pair_columns]
    return merge_smallest_k(best_keys, best_ids, candidate_keys, candidate_ids, k)


def _products(block: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """queries x block rows inner products, C-ordered. OpenBLAS multiplies a few queries by a tile of rows up to
    2x faster as block @ queries.T than as queries @ block.T (bench: 2,048 x 256 float32 rows, 4 to 35 queries)."""
    return np.ascontiguousarray((block @ queries.T).T)


def _exact_keys(queries: np.ndarray, block: np.ndarray, exact_extra, pair_rows: np.ndarray,
                pair_columns: np.ndarray) -> np.ndarray:
    """Float64 D of the given (query, row) pairs, each computed alone, in one fixed order."""
    out = np.empty(len(pair_rows))
    for first in range(0, len(pair_rows), PAIRS_PER_CHUNK):
        r, c = pair_rows[first : first + PAIRS_PER_CHUNK], pair_columns[first : first + PAIRS_PER_CHUNK]
        # einsum casts the stored rows to float64 in small buffers: the same sums as a float64 copy, without it
        dots = np.einsum("pd,pd->p", queries[r], block[c], dtype=np.float64, casting="safe")
        out[first : first + len(r)] = np.clip(1.0 - dots, 0.0, 2.0) + exact_extra(r, c)
    return out
