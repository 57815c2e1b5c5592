"""Hamming search over the binary codes an index stores, and re-ranking of its candidates with the hierarchy.

Codes are searched per segment through a FAISS binary index over the segment's live rows in id order,
so exact ties come back by smaller id, as in every other treeseek ranking. The binary index is built
in memory on first use (a copy for ``flat``, a graph for ``hnsw``) and rebuilt after removals.
Re-ranking scores queries in blocks, each block's distinct candidates read once, so memory stays
bounded when R and the number of queries are large.
"""
from __future__ import annotations

import numpy as np

from treeseek.index.soft_search import ready_soft
from treeseek.index.stored_segment import StoredSegment
from treeseek.search.distances import hierarchy_weight
from treeseek.search.hamming import HammingIndex
from treeseek.search.topk import MISSING_ID, merge_smallest_k, no_candidates, smallest_k

RERANK_BLOCK = 1 << 24  # float64 values per block of queries: bounds the gathered copies


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


def hamming_search(segments: list[StoredSegment], model, hasher, queries: np.ndarray, k: int, ranking, alpha: float,
                   method_tree) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by Hamming distance between the hasher's codes or, with ``ranking.rerank`` = R, the R nearest codes
    re-ranked by ``ranking.rerank_method`` (whose tree ``method_tree(method)`` gives) on the stored vectors, with
    those distances. Padded with inf and ``MISSING_ID``."""
    rerank = ranking.rerank
    keys, ids = hamming_topk(segments, hasher.encode(queries), max(k, rerank), hasher.bits, ranking.hamming_index)
    if rerank:
        method = ranking.rerank_method
        tree = method_tree(method)
        weight = hierarchy_weight(method, alpha, tree)
        if method == "soft":  # expected LCA height: p_q L against each candidate's posterior
            costs = weight * (model.posteriors(queries) @ tree.normalized_lca)

            def posteriors(stored):  # the items' stored sparse posteriors, those the soft ranking uses
                return ready_soft(stored, model)
        else:
            costs, posteriors = weight * tree.normalized_lca[model.assign(queries)], None
        keys, ids = rerank_candidates(segments, ids, model.cosine_units(queries)[0], costs, k, posteriors)
    return keys[:, :k], ids[:, :k]


def _binary_index(stored: StoredSegment, bits: int, kind: str) -> tuple[HammingIndex, np.ndarray]:
    rows = stored.live_rows_by_id()
    key = (bits, len(rows))  # a segment only loses rows, so their count names its state
    cached = stored.hamming_.get(kind)  # one per kind, so that switching kinds does not rebuild a graph
    if cached is None or cached[0] != key:
        index = HammingIndex(bits, kind)
        if len(rows):
            index.add(np.asarray(stored.codes)[rows])
        cached = stored.hamming_[kind] = (key, index, stored.segment.ids[rows])
    return cached[1], cached[2]


def rerank_candidates(segments: list[StoredSegment], candidate_ids: np.ndarray, unit_queries: np.ndarray,
                      leaf_costs: np.ndarray, k: int, posteriors=None) -> tuple[np.ndarray, np.ndarray]:
    """The k candidates of each query with the smallest D_cos + hierarchy term.

    ``leaf_costs[q, b]`` is query q's hierarchy term against an item at leaf b. An item's term is the
    cost at its stored leaf or, given ``posteriors`` (segment -> its ``SoftPosteriors``), the expected cost.
    """
    unique, inverse = np.unique(candidate_ids, return_inverse=True)
    inverse = inverse.reshape(candidate_ids.shape)
    # A posterior costs far more than a cosine, so each distinct candidate gets its own once.
    weights = None if posteriors is None else _posteriors(segments, unique, posteriors, leaf_costs.shape[1])
    keys = np.empty(candidate_ids.shape)
    block = max(1, RERANK_BLOCK // (candidate_ids.shape[1] * unit_queries.shape[1]))
    for first in range(0, len(unit_queries), block):
        rows = slice(first, first + block)
        # the block's distinct candidates are read once and scored against its queries in one product
        needed, local = np.unique(inverse[rows], return_inverse=True)
        local = local.reshape(inverse[rows].shape)
        unit, _, leaves, found = _gather(segments, unique[needed], unit_queries.shape[1])
        cosine = np.clip(1.0 - np.take_along_axis(unit_queries[rows] @ unit.T, local, axis=1), 0.0, 2.0)
        if weights is None:
            term = np.take_along_axis(leaf_costs[rows], leaves[local], axis=1)
        else:
            term = np.take_along_axis(leaf_costs[rows] @ weights[needed].T, local, axis=1)
        keys[rows] = np.where(found[local], cosine + term, np.inf)
    return smallest_k(keys, candidate_ids, k)


def _posteriors(segments: list[StoredSegment], ids: np.ndarray, stored_posteriors, n_leaves: int) -> np.ndarray:
    """p(leaf | x) of each id as its segment stores it (``stored_posteriors(segment)``); zeros for ids not found."""
    out = np.zeros((len(ids), n_leaves))
    for stored in segments:
        rows = stored.find(ids)
        hit = np.flatnonzero(rows >= 0)
        if len(hit):
            out[hit] = stored_posteriors(stored).dense(rows[hit], n_leaves)
    return out


def _gather(segments: list[StoredSegment], ids: np.ndarray, dim: int):
    """Unit vectors, lengths, leaves and a found mask of the given ids across segments (zeros where missing)."""
    unit, norms = np.zeros((len(ids), dim)), np.zeros(len(ids))
    leaves, found = np.zeros(len(ids), dtype=np.int64), np.zeros(len(ids), dtype=bool)
    for stored in segments:
        rows = stored.find(ids)
        hit = rows >= 0
        unit[hit] = stored.segment.vectors[rows[hit]]
        norms[hit] = stored.norms[rows[hit]]
        leaves[hit] = stored.segment.leaves[rows[hit]]
        found |= hit
    return unit, norms, leaves, found
