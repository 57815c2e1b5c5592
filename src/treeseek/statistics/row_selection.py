"""Each row's m smallest entries, in order: the nearest classes of every item, from its n x K distances.

``np.argpartition`` walks every entry of every row with a selection per row; with K = 1,000 classes and m = 8
that, plus the negated copy it needs, was most of placing an item. Here a row's m-th smallest is bounded first:
the entries are split into strided groups (columns g, g + G, g + 2G, ...) whose minima come from a few
whole-block ``np.minimum`` passes, and the m-th smallest of those G minima is at least the row's m-th smallest
(m distinct groups each hold an entry no larger). Only the entries at or below that bound are then sorted, by
value and then column: about m per row on class distances. The order is the one a stable sort of the row
gives, so ties come out smaller column first, whatever the bound.
"""
from __future__ import annotations

import numpy as np

GROUP_SIZE = 16  # entries per strided group: a tighter bound with fewer, a cheaper bound with more


def smallest_per_row(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The columns and values of each row's ``m`` smallest entries, by increasing value, then column.

    Parameters
    ----------
    values : ndarray of shape (n, K)
        Real numbers; a row holding NaN sorts it last, as ``np.sort`` does.
    m : int
        How many to keep per row, 1 <= m; at most K are kept.

    Returns
    -------
    columns : ndarray of int64, shape (n, min(m, K))
    kept : ndarray of shape (n, min(m, K)), the entries at those columns.

    Examples
    --------
    >>> columns, kept = smallest_per_row(np.array([[3.0, 1.0, 2.0, 1.0]]), 3)
    >>> columns.tolist(), kept.tolist()
    ([[1, 3, 2]], [[1.0, 1.0, 2.0]])
    """
    values = np.asarray(values)
    n, K = values.shape
    m = min(int(m), K)
    group_size = min(GROUP_SIZE, K // (2 * m))
    if group_size < 2 or n == 0:  # too few entries per row for a bound to spare anything
        return _sorted_rows(values, m)
    groups = K // group_size
    head = values[:, : groups * group_size].reshape(n, group_size, groups).min(axis=1)
    minima = np.concatenate([head, values[:, groups * group_size :]], axis=1)
    bound = np.partition(minima, m - 1, axis=1)[:, m - 1]
    flat = np.flatnonzero(values <= bound[:, None])  # row-major: by row, then column
    rows, columns = np.divmod(flat, K)
    counts = np.bincount(rows, minlength=n)
    if np.any(counts < m):  # a NaN bound compares false: sort such blocks whole, as np.sort would place them
        return _sorted_rows(values, m)
    candidates = values.ravel()[flat]
    first = np.concatenate([[0], np.cumsum(counts[:-1])])
    # each row's candidates, in column order, sorted within the row by a stable sort: equal values stay by
    # column. Rows are padded to the longest with +inf after their own, which a stable sort keeps last.
    width = int(counts.max())
    if width == counts.min():  # as many in every row: no padding
        padded = candidates.reshape(n, width)
    else:
        padded = np.full((n, width), np.inf, dtype=candidates.dtype)
        padded[rows, np.arange(len(flat)) - first[rows]] = candidates
    keep = first[:, None] + np.argsort(padded, axis=1, kind="stable")[:, :m]
    return columns[keep], candidates[keep]


def _sorted_rows(values: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    columns = np.argsort(values, axis=1, kind="stable")[:, :m]
    return columns.astype(np.int64), np.take_along_axis(values, columns, axis=1)
