"""Backends answer one question: the k nearest items by cosine distance inside a ring of a segment.

A ring is the block ``[start, end)`` of a subtree minus, for each query, the
block of the child subtree already searched (``exclude``). Removed items never
count. All backends return ``(cosine distances, ids)``, best first, padded with
``inf`` and ``MISSING_ID``.

* ``exact``: numpy in float64 on the stored vectors; equals a full sort.
* ``faiss-flat``: FAISS brute force on slices, float32 arithmetic.
* ``faiss-ivf``, ``faiss-hnsw``: approximate, over the whole segment, restricted
  to the ring by FAISS ID selectors, with nprobe / efSearch widened in
  proportion so the search meets as many ring members as an unrestricted one.
  Rings smaller than ``min_ann_items`` or 5% of the segment are scanned
  exactly: for them a scan is faster than a filtered walk and loses nothing.
"""
from __future__ import annotations

import math

import numpy as np

from treeseek import choices
from treeseek.errors import TreeseekError
from treeseek.search.segment import Segment
from treeseek.search.threads import faiss_threads_for
from treeseek.search.topk import MISSING_ID, merge_smallest_k, no_candidates, smallest_k

BACKENDS = choices.BACKENDS
ITEM_CHUNK = 65536       # rows converted and scanned at once
KEYS_PER_CHUNK = 2 ** 24  # bound on the query x item key matrix held at once
MIN_SELECTIVITY = 0.05    # rings holding a smaller share of a segment are scanned exactly


class ExactBackend:
    """Full scan of a ring in float64; ties broken by id, so results equal a stable full sort."""

    name = "exact"

    def __init__(self):
        self.params = {}

    def build(self, segment: Segment, progress: bool = False) -> "ExactBackend":
        self.segment_ = segment
        return self

    def ring_topk(self, queries, start, end, exclude, k):
        segment = self.segment_
        best = None
        step = max(1, min(ITEM_CHUNK, KEYS_PER_CHUNK // max(1, len(queries))))
        for lo in range(start, end, step):
            hi = min(end, lo + step)
            block = np.asarray(segment.vectors[lo:hi], dtype=np.float64)
            keys = np.clip(1.0 - queries @ block.T, 0.0, 2.0)
            if exclude is not None:
                columns = np.arange(lo, hi)
                keys[(columns >= exclude[:, :1]) & (columns < exclude[:, 1:])] = np.inf
            if segment.alive is not None:
                keys[:, ~segment.alive[lo:hi]] = np.inf
            best = smallest_k(keys, segment.ids[lo:hi], k) if best is None else \
                merge_smallest_k(*best, keys, segment.ids[lo:hi], k)
        best_keys, best_ids = best
        best_ids[np.isinf(best_keys)] = MISSING_ID
        return best_keys, best_ids


class FaissFlatBackend:
    """FAISS brute force (``faiss.knn``) on the slices of a ring: exact up to float32 rounding."""

    name = "faiss-flat"

    def __init__(self):
        self.params = {}
        _import_faiss()

    def build(self, segment: Segment, progress: bool = False) -> "FaissFlatBackend":
        self.segment_ = segment
        return self

    def ring_topk(self, queries, start, end, exclude, k):
        queries32 = np.ascontiguousarray(queries, dtype=np.float32)
        best_keys, best_ids = no_candidates(len(queries), k)
        for rows, pieces in _ring_groups(start, end, exclude, len(queries)):
            for lo, hi in pieces:
                keys, ids = _flat_knn(self.segment_, queries32[rows], lo, hi, k)
                best_keys[rows], best_ids[rows] = merge_smallest_k(best_keys[rows], best_ids[rows], keys, ids, k)
        return best_keys, best_ids


class FaissANNBackend:
    """IVF or HNSW over the whole segment; a ring is searched through an ID selector."""

    def __init__(self, kind: str, min_ann_items: int = 20000, **params):
        self.faiss = _import_faiss()
        if kind not in ("ivf", "hnsw"):
            raise TreeseekError(f"unknown FAISS index kind {kind!r}")
        defaults = {"ivf": {"nlist": None, "nprobe": 32}, "hnsw": {"m": 32, "ef_construction": 100, "ef_search": 128}}
        unknown = set(params) - set(defaults[kind])
        if unknown:
            raise TreeseekError(f"faiss-{kind} has no parameter {sorted(unknown)[0]!r} "
                                f"(it takes {', '.join(defaults[kind])})")
        self.kind, self.name = kind, f"faiss-{kind}"
        self.params = {**defaults[kind], **{key: value for key, value in params.items() if value is not None}}
        self.params["min_ann_items"] = int(min_ann_items)
        self.index_ = None

    def build(self, segment: Segment, progress: bool = False) -> "FaissANNBackend":
        self.segment_ = segment
        self._exact = ExactBackend().build(segment)  # for rings too small to be worth a filtered walk
        n, dim = segment.vectors.shape
        if n < self.params["min_ann_items"]:
            return self  # every ring of this segment is small enough to scan exactly
        faiss = self.faiss
        fp16 = segment.vectors.dtype == np.float16  # keep FAISS's copy as small as the stored vectors
        metric = faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw":
            m = int(self.params["m"])
            index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_fp16, m, metric) if fp16 \
                else faiss.IndexHNSWFlat(dim, m, metric)
            index.hnsw.efConstruction = int(self.params["ef_construction"])
        else:
            # 4 sqrt(n) lists, with the 39 training points per list that k-means wants; beyond 4096 lists
            # training and assignment cost more than the shorter lists save
            nlist = int(self.params["nlist"] or max(1, min(4 * int(math.sqrt(n)), n // 39, 4096)))
            self.params["nlist"] = nlist
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16, metric) \
                if fp16 else faiss.IndexIVFFlat(quantizer, dim, nlist, metric)
            sample = np.random.default_rng(0).choice(n, size=min(n, 64 * nlist), replace=False)
            index.train(np.ascontiguousarray(segment.vectors[np.sort(sample)], dtype=np.float32))
        _add_in_chunks(index, segment.vectors, progress, f"building {self.name}")
        self.index_ = index
        return self

    def ring_topk(self, queries, start, end, exclude, k):
        m = len(queries)
        ring = np.full(m, end - start) if exclude is None else (end - start) - (exclude[:, 1] - exclude[:, 0])
        large = (ring >= self.params["min_ann_items"]) & (ring >= MIN_SELECTIVITY * len(self.segment_))
        if self.index_ is None or not large.any():
            return self._exact.ring_topk(queries, start, end, exclude, k)
        best_keys, best_ids = no_candidates(m, k)
        small = np.flatnonzero(~large)
        if len(small):
            best_keys[small], best_ids[small] = self._exact.ring_topk(
                queries[small], start, end, None if exclude is None else exclude[small], k)
        large = np.flatnonzero(large)
        queries32 = np.ascontiguousarray(queries[large], dtype=np.float32)
        for rows, pieces in _ring_groups(start, end, None if exclude is None else exclude[large], len(large)):
            size = sum(hi - lo for lo, hi in pieces)
            best_keys[large[rows]], best_ids[large[rows]] = self._ann_search(queries32[rows], pieces, size, k)
        return best_keys, best_ids

    def _ann_search(self, queries32, pieces, ring, k):
        faiss, segment = self.faiss, self.segment_
        keep = []  # selectors hold raw pointers: their Python objects must live through the search
        selector = None
        if pieces != [(0, len(segment))]:
            ranges = [faiss.IDSelectorRange(lo, hi) for lo, hi in pieces]
            selector = ranges[0] if len(ranges) == 1 else faiss.IDSelectorOr(ranges[0], ranges[1])
            keep += ranges
        if segment.alive is not None:
            bitmap = np.packbits(segment.alive, bitorder="little")
            alive = faiss.IDSelectorBitmap(len(segment), faiss.swig_ptr(bitmap))
            keep += [bitmap, alive]
            selector = alive if selector is None else faiss.IDSelectorAnd(selector, alive)
        keep.append(selector)
        # Widen the search by 1 / (share of items in the ring), so it meets as many ring members as a full search.
        widen = len(segment) / max(1, ring)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=int(max(self.params["ef_search"], k) * widen))
        else:
            params = faiss.SearchParametersIVF(nprobe=min(self.index_.nlist, math.ceil(self.params["nprobe"] * widen)))
        if selector is not None:
            params.sel = selector
        with faiss_threads_for(len(queries32)):
            similarities, positions = self.index_.search(queries32, k, params=params)
        found = positions >= 0
        keys = np.where(found, np.clip(1.0 - similarities.astype(np.float64), 0.0, 2.0), np.inf)
        ids = np.where(found, segment.ids[np.where(found, positions, 0)], MISSING_ID)
        return smallest_k(keys, ids, k)

    # persistence: FAISS's own binary format, which holds no code
    def to_bytes(self) -> bytes | None:
        return None if self.index_ is None else self.faiss.serialize_index(self.index_).tobytes()

    def load_bytes(self, segment: Segment, payload: bytes) -> "FaissANNBackend":
        self.segment_ = segment
        self._exact = ExactBackend().build(segment)
        try:
            self.index_ = self.faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        except RuntimeError as exc:
            raise TreeseekError(f"the {self.name} index file is corrupt: {str(exc).splitlines()[0]}") from None
        if self.index_.ntotal != len(segment):
            raise TreeseekError(f"the {self.name} index holds {self.index_.ntotal} vectors, its segment {len(segment)}")
        return self


def make_backend(name: str = "exact", **params):
    """A backend by name; FAISS parameters: nlist, nprobe (ivf), m, ef_construction, ef_search (hnsw)."""
    if name == "exact" or name == "faiss-flat":
        if params:
            raise TreeseekError(f"backend {name} takes no parameters, got {', '.join(sorted(params))}")
        return ExactBackend() if name == "exact" else FaissFlatBackend()
    if name in ("faiss-ivf", "faiss-hnsw"):
        return FaissANNBackend(name.split("-")[1], **params)
    raise TreeseekError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def _import_faiss():
    try:
        import faiss
    except ImportError:
        raise TreeseekError("the FAISS backends need the faiss-cpu package (pip install faiss-cpu)") from None
    return faiss


def _ring_groups(start, end, exclude, m):
    """Rows that share an excluded child block, with the one or two slices left of the ring."""
    if exclude is None:
        yield np.arange(m), [(start, end)]
        return
    pairs, inverse = np.unique(exclude, axis=0, return_inverse=True)
    for group, (lo, hi) in enumerate(pairs):
        pieces = [(a, b) for a, b in ((start, int(lo)), (int(hi), end)) if b > a]
        yield np.flatnonzero(inverse.ravel() == group), pieces


def _flat_knn(segment: Segment, queries32, lo, hi, k):
    """Exact top-k of one slice with FAISS, asking for extra neighbours to cover removed items."""
    import faiss

    best_keys, best_ids = no_candidates(len(queries32), k)
    for first in range(lo, hi, ITEM_CHUNK):
        last = min(hi, first + ITEM_CHUNK)
        wanted = min(last - first, k + segment.dead_between(first, last))
        block = np.ascontiguousarray(segment.vectors[first:last], dtype=np.float32)
        with faiss_threads_for(len(queries32)):
            similarities, positions = faiss.knn(queries32, block, wanted, metric=faiss.METRIC_INNER_PRODUCT)
        positions = positions + first
        keys = np.clip(1.0 - similarities.astype(np.float64), 0.0, 2.0)
        if segment.alive is not None:
            keys[~segment.alive[positions]] = np.inf
        best_keys, best_ids = merge_smallest_k(best_keys, best_ids, keys, segment.ids[positions], k)
    best_ids[np.isinf(best_keys)] = MISSING_ID
    return best_keys, best_ids


def _add_in_chunks(index, vectors, progress, label):
    from tqdm.auto import tqdm

    with tqdm(total=len(vectors), desc=label, unit="vec", disable=not progress) as bar:
        for first in range(0, len(vectors), ITEM_CHUNK * 4):
            chunk = np.ascontiguousarray(vectors[first : first + ITEM_CHUNK * 4], dtype=np.float32)
            index.add(chunk)
            bar.update(len(chunk))
