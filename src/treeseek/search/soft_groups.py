"""The soft ranking, searched exactly group by group over sparse posteriors, without widening any vector.

Every item keeps its posterior over its m most probable classes (``SoftPosteriors``). For a query with
posterior p_q, v = L p_q is the expected normalised LCA height between the query and each class, and an
item's hierarchy term is the m-term sum D_H = Σ_b p_i[b] v[b].

Items sit in a ``Segment`` grouped by leaf (their most probable class). In the group of leaf l every item
gives l a weight of at least ``floor_l`` and the rest of its mass to classes in ``U_l``, so, D_H being linear
in that weight,

    D_H >= B_l = min(v[l], floor_l * v[l] + (1 - floor_l) * min over U_l of v),

and since D_cos >= 0 no item of the group has D = D_cos + alpha D_H below alpha B_l. Each query scans its
groups in increasing order of that bound, in rounds that grow geometrically, and stops once the next bound
exceeds its k-th best D. What it skips cannot enter the top-k, nor tie with it, so the result equals a full
float64 sort of D with ties broken by id. Small groups are scanned in tiles of neighbouring groups (siblings, in
depth-first order), bounded by their smallest bound, so that a scan is one matrix product of useful size.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import sparse
from threadpoolctl import threadpool_limits

from treeseek.search.segment import Segment
from treeseek.search.tile_scan import Candidates, QueryBatch, approximate_keys, exact_top_k
from treeseek.search.topk import no_candidates

# the stored float32 weights of an item sum to 1 only to within m roundings: the bounds give that much away
BOUND_MARGIN = 1e-5
FIRST_MARGIN = 8            # candidates kept beyond k (plus k / 8): room for the items within rounding of the k-th
MARGIN_GROWTH = 8           # a query whose margin was too narrow is searched again with this many times more
DENSE_UNION_CLASSES = 4096  # up to this many classes, the groups' class sets are marked in a K x K table
QUERY_CHUNK = 64            # queries whose group bounds are computed at once (bounds the gathered matrix)
TILE_ROWS = 2048            # neighbouring groups are scanned together up to this many rows: one product, one merge
KEYS_PER_BLOCK = 2 ** 22    # bound on the query x item key matrix of one scanned block
FIRST_ROUND_FACTOR = 2      # the first round scans groups holding about this many times k items
MIN_QUERIES_PER_WORKER = 32  # fewer queries than this per core are searched on one thread
MIN_QUERIES_PER_TILE = 8     # and so are batches that would visit each tile with fewer queries than this
# Python threads pay only over segments larger than the cache: below, their small numpy calls contend for the
# GIL and one thread (its products on BLAS's threads) is faster (a probe on 2 cores, bench_scale's data: 1.12x
# at 100k items); above, the threads overlap their waits on memory (1.15x at 1M).
MIN_ROWS_PER_WORKER = 150_000
ROUND_GROWTH = 4            # each later round may scan this many times more items than the one before


@dataclass
class SoftPosteriors:
    """The sparse posteriors of a segment's rows and, per leaf group, what bounds their hierarchy term.

    ``classes`` and ``weights`` are n x m, row-aligned with the segment; ``floors`` (K, by leaf rank) is the
    smallest weight an item of the group gives the group's own leaf; ``union[union_start[r]:union_start[r+1]]``
    are the other classes that the items of the group of rank r give weight to.
    """

    classes: np.ndarray
    weights: np.ndarray
    floors: np.ndarray
    union_start: np.ndarray
    union: np.ndarray

    ARRAYS = ("classes", "weights", "floors", "union_start", "union")
    tiling_: tuple | None = field(default=None, repr=False)  # (leaf_start it was made for, ``Tiling``)
    unit_weights: bool = False  # every item's one weight is 1 (``one_hot``): the hierarchy term needs no product

    @staticmethod
    def classes_dtype(n_classes: int) -> type:
        """How the items' classes are stored: two bytes each up to 32,767 classes."""
        return np.int16 if n_classes <= np.iinfo(np.int16).max else np.int32

    @classmethod
    def build(cls, segment: Segment, classes: np.ndarray, weights: np.ndarray) -> "SoftPosteriors":
        """From the posteriors of the segment's rows, in row order."""
        return cls.of_rows(segment.leaves, segment.leaf_start, classes, weights)

    @classmethod
    def of_rows(cls, leaves: np.ndarray, leaf_start: np.ndarray, classes: np.ndarray,
                weights: np.ndarray) -> "SoftPosteriors":
        """From the posteriors of rows sorted by leaf rank: ``leaves`` per row, ``leaf_start`` per rank (K + 1)."""
        n_classes = len(leaf_start) - 1
        classes = np.asarray(classes).astype(cls.classes_dtype(n_classes), copy=False)
        weights = np.asarray(weights, dtype=np.float32)
        leaves = leaves[:, None]
        # a row's classes are distinct: its own class's weight is the only term of the product, exact in float32
        own = np.where(classes == leaves, weights, np.float32(0)) @ np.ones(classes.shape[1], np.float32)
        sizes = np.diff(leaf_start)
        filled = np.flatnonzero(sizes)
        floors = np.ones(n_classes)
        if len(filled):  # rows are sorted by group: one reduction per group
            floors[filled] = np.minimum.reduceat(own, leaf_start[filled])
        ranks = np.repeat(np.arange(n_classes), sizes)
        others = (weights > 0) & (classes != leaves)
        pairs = ((ranks * n_classes)[:, None] + classes)[others]  # group * K + class of every other class held
        if n_classes <= DENSE_UNION_CLASSES:  # mark a K x K table: no sort of the n x m pairs
            marked = np.zeros(n_classes * n_classes, dtype=bool)
            marked[pairs] = True
            pairs = np.flatnonzero(marked)
        else:
            pairs = np.unique(pairs)
        group_of, class_of = pairs // n_classes, pairs % n_classes
        union_start = np.searchsorted(group_of, np.arange(n_classes + 1)).astype(np.int64)
        return cls(classes, weights, floors, union_start, class_of.astype(classes.dtype))

    @classmethod
    def one_hot(cls, segment: Segment) -> "SoftPosteriors":
        """Every item's posterior all on its stored leaf: ``combined`` and ``flat`` through the same search."""
        one_hot = cls.build(segment, segment.leaves[:, None], np.ones((len(segment), 1)))
        one_hot.unit_weights = True
        return one_hot

    def dense(self, rows, n_classes: int) -> np.ndarray:
        """The posteriors of the given rows as a len(rows) x K matrix."""
        classes = np.asarray(self.classes[rows], np.intp)
        out = np.zeros((len(classes), n_classes))
        np.put_along_axis(out, classes, np.asarray(self.weights[rows], np.float64), axis=1)
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.ARRAYS}

    @property
    def nbytes(self) -> int:
        return sum(array.nbytes for array in self.to_arrays().values())


def expected_heights(lca: np.ndarray, classes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """v = L p for sparse posteriors (rows of ``classes``/``weights``): nq x K."""
    n, m = classes.shape
    posteriors = sparse.csr_matrix((np.asarray(weights, np.float64).ravel(), np.asarray(classes).ravel(),
                                    np.arange(0, n * m + 1, m)), shape=(n, lca.shape[0]))
    return np.asarray(posteriors @ lca)


@dataclass
class Tiling:
    """Neighbouring groups joined into tiles of about ``TILE_ROWS`` rows: ``first_group`` (T + 1 group indices),
    ``rows`` (T + 1 row offsets), and per tile the union of its groups' ``union`` (CSR ``union_start``/``union``)."""

    first_group: np.ndarray
    rows: np.ndarray
    union_start: np.ndarray
    union: np.ndarray

    @classmethod
    def of(cls, segment: Segment, soft: SoftPosteriors) -> "Tiling":
        first_group = _tiles(segment.leaf_start)
        tile_of_group = np.repeat(np.arange(len(first_group) - 1), np.diff(first_group))
        n_classes = segment.tree.n_leaves
        owner = np.repeat(tile_of_group, np.diff(soft.union_start)).astype(np.int64)
        pairs = np.unique(owner * n_classes + soft.union)
        union_start = np.searchsorted(pairs // n_classes, np.arange(len(first_group))).astype(np.int64)
        return cls(first_group, segment.leaf_start[first_group], union_start, pairs % n_classes)


def group_bounds(segment: Segment, soft: SoftPosteriors, tiling: Tiling, heights: np.ndarray) -> np.ndarray:
    """B (nq x K, groups in leaf-rank order): no item of a group has a hierarchy term below its bound (inf for
    empty groups); a tile's bound is the smallest of its groups'.

    Per group l, min(v[l], floor_l v[l] + (1 - floor_l) mu), with mu the smallest v over the classes other than
    their own leaf that the items of the group's tile give weight to.
    """
    own = heights[:, segment.tree.leaf_order]
    if soft.unit_weights:  # one-hot (combined, flat): every item's term is its own leaf's
        own -= BOUND_MARGIN
        own[:, np.diff(segment.leaf_start) == 0] = np.inf
        return own
    counts = np.diff(tiling.union_start)
    filled = np.flatnonzero(counts > 0)
    nearest_other = np.full((len(heights), len(counts)), np.inf)
    for first in range(0, len(heights), QUERY_CHUNK):
        rows = slice(first, first + QUERY_CHUNK)
        nearest_other[rows, filled] = np.minimum.reduceat(heights[rows][:, tiling.union],
                                                          tiling.union_start[filled], axis=1)
    per_group = np.repeat(nearest_other, np.diff(tiling.first_group), axis=1)
    per_group = np.where(np.isinf(per_group), own, per_group)  # no other class: every item is one-hot
    bounds = np.minimum(own, soft.floors * own + (1.0 - soft.floors) * per_group) - BOUND_MARGIN
    bounds[:, np.diff(segment.leaf_start) == 0] = np.inf
    return bounds


def soft_group_topk(segment: Segment, soft: SoftPosteriors, lca: np.ndarray, unit_queries: np.ndarray,
                    query_classes: np.ndarray, query_weights: np.ndarray, alpha: float,
                    k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(D, ids, pairs scored) of the k best items by D = D_cos + alpha D_H; padded with inf and ``MISSING_ID``.

    ``lca`` is the K x K matrix of normalised LCA heights; the queries are unit rows with sparse posteriors.
    """
    n_queries = len(unit_queries)
    if len(segment) == 0 or n_queries == 0:
        return (*no_candidates(n_queries, k), 0)
    if soft.tiling_ is None or soft.tiling_[0] is not segment.leaf_start:
        soft.tiling_ = (segment.leaf_start, Tiling.of(segment, soft))
    heights = expected_heights(lca, query_classes, query_weights)
    keys, ids = no_candidates(n_queries, k)
    pending, margin, scored = np.arange(n_queries), FIRST_MARGIN + k // 8, 0
    while len(pending):  # a query with many items within rounding of its k-th is searched again, wider
        part_keys, part_ids, resolved, part_scored = _search(segment, soft, heights[pending], unit_queries[pending],
                                                             alpha, k, k + margin)
        keys[pending[resolved]], ids[pending[resolved]] = part_keys[resolved], part_ids[resolved]
        pending, margin, scored = pending[~resolved], margin * MARGIN_GROWTH, scored + part_scored
    return keys, ids, scored


def _search(segment: Segment, soft: SoftPosteriors, heights: np.ndarray, unit_queries: np.ndarray, alpha: float,
            k: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``_GroupScan.run`` of the queries, on the threads that pay."""
    n_queries, tiling = len(unit_queries), soft.tiling_[1]
    workers = min(os.cpu_count() or 1, n_queries // MIN_QUERIES_PER_WORKER, len(segment) // MIN_ROWS_PER_WORKER)
    if workers <= 1:
        return _GroupScan(segment, soft, tiling, heights, unit_queries, alpha, k, width).run()
    # Each thread's products run on one BLAS thread (numpy releases the GIL in them): BLAS's own threads gain
    # little on the small products a tile makes. When each tile is visited by a few queries only, a share of
    # queries per thread would read most tiles once per thread, and a tile's product is bound by memory: the
    # tiles of each round are shared among the threads instead (bench_scale.py, 1M items: about 1.1x).
    if n_queries < MIN_QUERIES_PER_TILE * (len(tiling.rows) - 1):
        with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
            return _GroupScan(segment, soft, tiling, heights, unit_queries, alpha, k, width, pool, workers).run()
    # Otherwise queries are independent: a share of them per thread.
    shares = np.array_split(np.arange(n_queries), workers)
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        parts = list(pool.map(lambda rows: _GroupScan(segment, soft, tiling, heights[rows], unit_queries[rows],
                                                      alpha, k, width).run(), shares))
    return (*(np.concatenate([part[field] for part in parts]) for field in range(3)), sum(p[3] for p in parts))


def leaf_group_topk(segment: Segment, one_hot: SoftPosteriors, lca: np.ndarray, unit_queries: np.ndarray,
                    query_leaves: np.ndarray, alpha: float, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``soft_group_topk`` with one-hot posteriors on both sides (``one_hot`` from ``SoftPosteriors.one_hot``):
    D_cos + alpha * L[leaf(q), leaf(i)], the ranking of ``combined`` (or ``flat``, with the flat tree's L)."""
    leaves = np.asarray(query_leaves, np.int64)[:, None]
    return soft_group_topk(segment, one_hot, lca, unit_queries, leaves, np.ones(leaves.shape), alpha, k)


def _tiles(leaf_start: np.ndarray) -> np.ndarray:
    """Group indices where tiles start, and the number of groups at the end: consecutive groups are joined until
    a tile holds ``TILE_ROWS`` rows (a group larger than that is a tile of its own)."""
    starts, rows = [0], 0
    for group, size in enumerate(np.diff(leaf_start)[:-1]):
        rows += int(size)
        if rows >= TILE_ROWS:
            starts.append(group + 1)
            rows = 0
    return np.array(starts + [len(leaf_start) - 1], dtype=np.int64)


@dataclass
class _GroupScan:
    """One search of a batch of queries over a segment's tiles (see ``soft_group_topk``): each query keeps its
    ``width`` best approximate keys (``tile_scan.Candidates``), recomputed exactly at the end."""

    segment: Segment
    soft: SoftPosteriors
    tiling: Tiling
    heights: np.ndarray
    unit_queries: np.ndarray
    alpha: float
    k: int
    width: int
    pool: ThreadPoolExecutor | None = None
    workers: int = 1

    def run(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """(D, ids, resolved, pairs scored); the rows of unresolved queries are to be searched wider."""
        n_queries, k = len(self.unit_queries), self.k
        row_norm = 1.0 if self.segment.vectors.dtype != np.float16 else 1.0 + 2.0**-10
        self.queries = QueryBatch(self.unit_queries, row_norm=row_norm, alpha=self.alpha,
                                  width=self.soft.classes.shape[1])
        self.scaled_heights = (self.alpha * self.heights).astype(np.float32)
        self.candidates = Candidates(n_queries, k, self.width)
        bounds = group_bounds(self.segment, self.soft, self.tiling, self.heights)
        # an empty group's bound is inf at any alpha (alpha = 0, the visual-only ranking, would make it NaN)
        self.bounds = np.multiply(self.alpha, bounds, out=np.full(bounds.shape, np.inf), where=np.isfinite(bounds))
        bounds = np.minimum.reduceat(self.bounds, self.tiling.first_group[:-1], axis=1)
        order = np.argsort(bounds, axis=1, kind="stable")
        sorted_bounds = np.take_along_axis(bounds, order, axis=1)
        covered = np.cumsum(np.diff(self.tiling.rows)[order], axis=1)  # items in a query's first j+1 tiles
        done = np.zeros(n_queries, dtype=np.int64)  # tiles of each query scanned so far
        budget = FIRST_ROUND_FACTOR * k
        scored = 0
        while True:
            kth = self.candidates.kth.astype(np.float64) + self.queries.slack  # no item beyond it is in the top-k
            reachable = np.sum(~(kth[:, None] < sorted_bounds), axis=1)  # tiles whose bound does not exceed kth
            already = np.where(done > 0, covered[np.arange(n_queries), np.maximum(done - 1, 0)], 0)
            within_budget = np.sum(covered < (already + budget)[:, None], axis=1) + 1
            until = np.minimum(reachable, np.maximum(within_budget, done + 1))
            query_rows, positions = np.nonzero(np.arange(order.shape[1]) < until[:, None])
            fresh = positions >= done[query_rows]
            query_rows, tiles = query_rows[fresh], order[query_rows[fresh], positions[fresh]]
            if len(tiles) == 0:
                break
            scored += self.scan(query_rows, tiles)
            done = np.maximum(done, until)
            budget *= ROUND_GROWTH
        return (*exact_top_k(self.candidates, self.queries, self.segment.vectors, self.segment.ids,
                             self.exact_extra), scored)

    def scan(self, query_rows, tiles) -> int:
        """Score every (query, tile) pair into the candidates; returns pairs scored.

        With a pool, the tiles are shared among its threads: each tile is read once per round whoever needs it
        (a tile product is bound by memory, not arithmetic), each thread keeps its own candidates, bounded by the
        ones at the start of the round, and they are merged at its end. Their items are disjoint: a query scans
        a tile once."""
        by_tile = np.argsort(tiles, kind="stable")
        query_rows, tiles = query_rows[by_tile], tiles[by_tile]
        cuts = np.flatnonzero(np.diff(tiles)) + 1
        visits = list(zip(np.split(query_rows, cuts), tiles[np.concatenate([[0], cuts])].tolist()))
        if self.pool is None or len(visits) < 2 * self.workers:
            return sum(self.scan_tile(rows, tile, self.candidates) for rows, tile in visits)
        ceiling = (self.candidates.kth.copy(), self.candidates.last.copy())

        def share(part):
            own = Candidates(len(self.unit_queries), self.k, self.width)
            return own, sum(self.scan_tile(rows, tile, own, ceiling) for rows, tile in part)

        touched = np.unique(query_rows)
        scored = 0
        for own, part_scored in self.pool.map(share, [visits[w :: self.workers] for w in range(self.workers)]):
            self.candidates.absorb(own, touched)
            scored += part_scored
        return scored

    def scan_tile(self, rows, tile, candidates: Candidates, ceiling=None) -> int:
        """Score a tile for the queries ``rows``, from its first to its last group that any of them can still
        use (a group's own bound is often far above its tile's); returns pairs scored."""
        segment = self.segment
        first, last = int(self.tiling.first_group[tile]), int(self.tiling.first_group[tile + 1])
        kth = candidates.kth[rows] if ceiling is None else np.minimum(candidates.kth[rows], ceiling[0][rows])
        reach = kth.astype(np.float64) + self.queries.slack
        useful = np.flatnonzero(np.any(self.bounds[rows, first:last] <= reach[:, None], axis=0))
        if len(useful) == 0:
            return 0
        start, end = int(segment.leaf_start[first + useful[0]]), int(segment.leaf_start[first + useful[-1] + 1])
        step = max(1, KEYS_PER_BLOCK // len(rows))
        for lo in range(start, end, step):
            hi = min(end, lo + step)
            extra = _hierarchy_terms(self.scaled_heights[rows], self.soft.classes[lo:hi], self.soft.weights[lo:hi],
                                     self.soft.unit_weights)
            alive = None if segment.alive is None else segment.alive[lo:hi]
            approximate = approximate_keys(self.queries, rows, segment.vectors[lo:hi], extra, alive)
            candidates.add_block(rows, approximate, lo, None if ceiling is None else ceiling[1][rows])
        return len(rows) * (end - start)

    def exact_extra(self, query_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """alpha Σ_j w_j v[c_j] in float64, in each item's own order: duplicates of an item get the same value."""
        classes, weights = np.asarray(self.soft.classes[rows], np.intp), np.asarray(self.soft.weights[rows], np.float64)
        return self.alpha * np.sum(self.heights[query_rows[..., None], classes] * weights, axis=-1)


def _hierarchy_terms(heights: np.ndarray, classes: np.ndarray, weights: np.ndarray, unit_weights: bool) -> np.ndarray:
    """D_H = Σ_b p_i[b] v[b] of every (query, row) pair in float32 (``heights``: float32 v, nq x K), as one product
    over the few classes the rows use: a block's items are neighbours, so they share most of their classes."""
    n, width = classes.shape
    if width == 1:  # one class per item (combined, flat, or top_m = 1): the term of that class
        terms = heights[:, np.asarray(classes[:, 0], np.intp)]
        return terms if unit_weights else np.multiply(terms, weights[:, 0], out=terms)
    flat = np.asarray(classes, dtype=np.intp).ravel()
    used = np.flatnonzero(np.bincount(flat, minlength=heights.shape[1]))
    local = np.zeros(heights.shape[1], dtype=np.intp)
    local[used] = np.arange(len(used))
    slots = np.arange(n).repeat(width) * len(used) + local[flat]
    dense = np.bincount(slots, weights=np.asarray(weights, np.float64).ravel(), minlength=n * len(used))
    return heights[:, used] @ dense.reshape(n, len(used)).T.astype(np.float32)
