"""Hamming search over the binary codes an index stores, and re-ranking of its candidates with the hierarchy.

Codes are searched per segment through a FAISS binary index over the segment's live rows in id order,
so exact ties come back by smaller id, as in every other treeseek ranking. The binary index is built
in memory on first use (a copy for ``flat``, a graph for ``hnsw``) and rebuilt after removals.
"""
from __future__ import annotations

import numpy as np

from ..hashing import HammingIndex
from ..hierarchy import Hierarchy
from ..search.topk import MISSING_ID, merge_smallest_k, no_candidates, smallest_k
from .stored_segment import StoredSegment


def hamming_topk(segments: list[StoredSegment], query_codes: np.ndarray, k: int, bits: int,
                 kind: str = "flat") -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(hamming distances as float, ids)`` over all segments; padded with inf and ``MISSING_ID``."""
    best_keys, best_ids = no_candidates(len(query_codes), k)
    for stored in segments:
        index, ids = _binary_index(stored, bits, kind)
        if index.ntotal == 0:
            continue
        distances, positions = index.search(query_codes, min(k, index.ntotal))
        found = positions >= 0
        keys = np.where(found, distances, np.inf)
        best_keys, best_ids = merge_smallest_k(best_keys, best_ids, keys,
                                               np.where(found, ids[np.maximum(positions, 0)], MISSING_ID), k)
    return best_keys, best_ids


def _binary_index(stored: StoredSegment, bits: int, kind: str) -> tuple[HammingIndex, np.ndarray]:
    rows = stored.live_rows_by_id()
    key = (kind, bits, len(rows))  # a segment only loses rows, so their count names its state
    if stored.hamming_ is None or stored.hamming_[0] != key:
        index = HammingIndex(bits, kind)
        if len(rows):
            index.add(np.asarray(stored.codes)[rows])
        stored.hamming_ = (key, index, stored.segment.ids[rows])
    return stored.hamming_[1], stored.hamming_[2]


def rerank_candidates(segments: list[StoredSegment], candidate_ids: np.ndarray, unit_queries: np.ndarray,
           query_leaves: np.ndarray, tree: Hierarchy, weight: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k candidates of each query with the smallest D_cos + weight * normalised LCA height."""
    flat = candidate_ids.ravel()
    vectors = np.zeros((len(flat), unit_queries.shape[1]))
    leaves = np.zeros(len(flat), dtype=np.int64)
    found = np.zeros(len(flat), dtype=bool)
    for stored in segments:
        rows = stored.find(flat)
        hit = rows >= 0
        vectors[hit] = stored.segment.vectors[rows[hit]]
        leaves[hit] = stored.segment.leaves[rows[hit]]
        found |= hit
    vectors = vectors.reshape(*candidate_ids.shape, -1)
    cosine = np.clip(1.0 - np.einsum("qd,qcd->qc", unit_queries, vectors), 0.0, 2.0)
    keys = cosine + weight * tree.normalized_lca[query_leaves[:, None], leaves.reshape(candidate_ids.shape)]
    keys = np.where(found.reshape(candidate_ids.shape), keys, np.inf)
    return smallest_k(keys, candidate_ids, k)
