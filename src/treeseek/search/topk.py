"""Stable top-k selection: smallest keys first, exact ties broken by smaller id."""
from __future__ import annotations

import numpy as np

MISSING_ID = np.iinfo(np.int64).max  # pads rows that have fewer than k candidates


def smallest_k(keys: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k smallest ``keys`` in ascending order, with their ``ids``.

    ``ids`` is one id per column (1-D) or per cell (2-D). Rows with fewer than
    k columns are padded with +inf keys and ``MISSING_ID``.
    """
    keys = np.asarray(keys, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    n_rows, n_cols = keys.shape
    rows = np.arange(n_rows)[:, None]
    column_ids = ids.ndim == 1  # one id per column: index it by column, never materialise the full matrix
    if n_cols > k:
        chosen = np.argpartition(keys, k - 1, axis=1)[:, :k]
        kth = keys[rows, chosen].max(axis=1)
        # argpartition picks arbitrarily among keys equal to the k-th: redo those rows by id.
        for row in np.flatnonzero(np.count_nonzero(keys <= kth[:, None], axis=1) > k):
            tied = np.flatnonzero(keys[row] <= kth[row])
            row_ids = ids[tied] if column_ids else ids[row, tied]
            chosen[row] = tied[np.lexsort((row_ids, keys[row, tied]))[:k]]
        keys = keys[rows, chosen]
        ids = ids[chosen] if column_ids else ids[rows, chosen]
    elif column_ids:
        ids = np.broadcast_to(ids, keys.shape)
    order = np.lexsort((ids, keys), axis=1)
    keys, ids = keys[rows, order], ids[rows, order]
    if n_cols < k:
        keys = np.concatenate([keys, np.full((n_rows, k - n_cols), np.inf)], axis=1)
        ids = np.concatenate([ids, np.full((n_rows, k - n_cols), MISSING_ID)], axis=1)
    return keys, ids


def no_candidates(n_rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k of nothing: +inf keys and ``MISSING_ID``, to merge real candidates into."""
    return np.full((n_rows, k), np.inf), np.full((n_rows, k), MISSING_ID, dtype=np.int64)


def merge_smallest_k(best_keys: np.ndarray, best_ids: np.ndarray, keys: np.ndarray, ids: np.ndarray,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest of a running top-k and new candidates (``ids`` one per column or per cell)."""
    ids = np.broadcast_to(np.asarray(ids, dtype=np.int64), keys.shape)
    return smallest_k(np.hstack([best_keys, keys]), np.hstack([best_ids, ids]), k)

