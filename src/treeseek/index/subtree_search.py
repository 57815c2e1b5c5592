"""Searches within a branch of the tree ("only among the Lepidoptera").

Every segment sorts its rows by the depth-first rank of their leaf, so the items of a subtree are one
contiguous block of rows (``Segment.block``). A search within a branch scans exactly that block of every
segment, with the same distance as the whole-index search, and never looks at another row.
"""
from __future__ import annotations

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.index.soft_search import ready_soft
from treeseek.index.stored_segment import StoredSegment
from treeseek.model import TreeseekModel
from treeseek.search.contract import Ranking
from treeseek.search.distances import hierarchy_weight, method_hierarchy
from treeseek.search.topk import merge_smallest_k, no_candidates, smallest_k

ROWS_AT_ONCE = 1 << 15  # rows scored per step: bounds the query x rows matrices


def subtree_node(tree: Hierarchy, name: str) -> int:
    """The node of ``tree`` called ``name`` (a class, a sub-class or an inner node), or one line naming a few."""
    for node, node_name in enumerate(tree.names):
        if node_name == name:
            return node
    shown = ", ".join(tree.names[tree.n_leaves :][:5])
    raise TreeseekError(f"the tree has no node named {name!r} (inner nodes include {shown}; 'treeseek hierarchy' "
                        f"and GET /api/tree list them all)")


def subtree_topk(segments: list[StoredSegment], model: TreeseekModel, queries: np.ndarray, k: int,
                 ranking: Ranking, node: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ``(D, ids)`` of ``ranking`` among the items under ``node``; padded with inf and ``MISSING_ID``."""
    if ranking.method in ("hamming", "euclidean"):
        raise TreeseekError(f"a search within a branch ranks by soft, combined, flat, hierarchy or cosine, not "
                            f"{ranking.method}")
    tree = model.hierarchy_
    alpha = ranking.alpha_for(model)
    unit = model.cosine_units(queries)[0]
    if ranking.method == "soft":
        _, classes, weights = model.place(queries)
        query_terms = np.zeros((len(queries), model.n_leaves_))
        np.put_along_axis(query_terms, classes, weights, axis=1)
        query_terms = alpha * query_terms @ tree.normalized_lca  # row q: alpha * E[D_H(q, leaf)] for every leaf
    elif ranking.method != "cosine":
        method_tree = method_hierarchy(ranking.method, tree)
        query_terms = hierarchy_weight(ranking.method, alpha, method_tree) * \
            method_tree.normalized_lca[model.assign(queries)]
    best_keys, best_ids = no_candidates(len(queries), k)
    for stored in segments:
        start, end = stored.segment.block(tree, node)
        for first in range(start, end, ROWS_AT_ONCE):
            rows = np.arange(first, min(first + ROWS_AT_ONCE, end))
            keys = 1.0 - unit @ np.asarray(stored.segment.vectors[rows], np.float64).T
            if ranking.method == "soft":
                keys += query_terms @ ready_soft(stored, model).dense(rows, model.n_leaves_).T
            elif ranking.method != "cosine":
                keys += query_terms[:, stored.segment.leaves[rows]]
            if stored.segment.alive is not None:
                keys[:, ~stored.segment.alive[rows]] = np.inf
            found = smallest_k(keys, stored.segment.ids[rows], k)
            best_keys, best_ids = merge_smallest_k(best_keys, best_ids, *found, k)
    return best_keys, best_ids


def ids_under(segments: list[StoredSegment], tree: Hierarchy, node: int) -> np.ndarray:
    """The ids of the live items under ``node``, ascending: its block of every segment."""
    parts = []
    for stored in segments:
        start, end = stored.segment.block(tree, node)
        alive = slice(None) if stored.segment.alive is None else stored.segment.alive[start:end]
        parts.append(stored.segment.ids[start:end][alive])
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def node_counts(segments: list[StoredSegment], tree: Hierarchy) -> np.ndarray:
    """Live items under every node of ``tree`` (leaves first, as the tree numbers its nodes)."""
    per_leaf = np.zeros(tree.n_leaves, dtype=np.int64)
    for stored in segments:
        leaves = stored.segment.leaves if stored.segment.alive is None else \
            stored.segment.leaves[stored.segment.alive]
        per_leaf += np.bincount(leaves, minlength=tree.n_leaves)
    in_leaf_order = np.concatenate([[0], np.cumsum(per_leaf[tree.leaf_order])])
    return in_leaf_order[tree.block[:, 1]] - in_leaf_order[tree.block[:, 0]]
