"""Near-duplicates: groups of stored items whose pictures are near-identical (copies, re-encodings, crops).

Two items are near-identical when the cosine distance between their stored vectors is at most ``threshold``;
a group is a connected component of that relation (a chain of copies is one group). The pairs come from an
exact FAISS range search (``IndexFlatIP.range_search``) over the live unit vectors, in chunks of queries, so
memory stays bounded by the pairs found.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from treeseek import choices
from treeseek.errors import TreeseekError

DEFAULT_THRESHOLD = choices.DUPLICATE_THRESHOLD
QUERY_CHUNK = 4096


@dataclass(frozen=True)
class DuplicateGroup:
    """Ids of near-identical items (the smallest first) and each one's cosine distance to the first."""

    ids: np.ndarray
    distances: np.ndarray


def live_unit_vectors(index) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, unit vectors as float32)`` of every live item of a ``TreeIndex``, in id order."""
    ids, vectors = [], []
    for stored in index.stored_segments():
        alive = np.ones(len(stored), bool) if stored.segment.alive is None else stored.segment.alive
        ids.append(stored.segment.ids[alive])
        vectors.append(np.asarray(stored.segment.vectors[alive], dtype=np.float32))
    if not ids:
        return np.zeros(0, np.int64), np.zeros((0, index.model.input_dim_), np.float32)
    ids, vectors = np.concatenate(ids), np.concatenate(vectors)
    order = np.argsort(ids)
    return ids[order], vectors[order]


def near_duplicates(index, threshold: float = DEFAULT_THRESHOLD) -> list[DuplicateGroup]:
    """Groups of two or more live items within ``threshold`` cosine distance, largest group first.

    Parameters
    ----------
    index : TreeIndex
        The collection.
    threshold : float
        The largest cosine distance (1 - cosine similarity) between two near-identical items, in [0, 2).

    Returns
    -------
    list of DuplicateGroup
    """
    import faiss

    if not 0.0 <= threshold < 2.0:
        raise TreeseekError(f"the duplicate threshold is a cosine distance in [0, 2), got {threshold}")
    ids, vectors = live_unit_vectors(index)
    n = len(ids)
    if n < 2:
        return []
    search = faiss.IndexFlatIP(vectors.shape[1])
    search.add(vectors)
    rows, cols = [], []
    for first in range(0, n, QUERY_CHUNK):
        limits, _, found = search.range_search(vectors[first : first + QUERY_CHUNK], 1.0 - threshold)
        counts = np.diff(limits.astype(np.int64))
        rows.append(np.repeat(np.arange(first, first + len(counts)), counts))
        cols.append(found)
    rows, cols = np.concatenate(rows), np.concatenate(cols).astype(np.int64)
    pairs = rows < cols
    graph = coo_matrix((np.ones(int(pairs.sum())), (rows[pairs], cols[pairs])), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    groups = []
    for label in np.flatnonzero(sizes > 1):
        members = np.flatnonzero(component == label)
        distances = np.clip(1.0 - vectors[members] @ vectors[members[0]], 0.0, 2.0).astype(np.float64)
        groups.append(DuplicateGroup(ids[members], distances))
    return sorted(groups, key=lambda g: (-len(g.ids), int(g.ids[0])))


def group_members(index, groups: list[DuplicateGroup]) -> list[list[dict]]:
    """Each group's items as ``{"id", "class" (its name, or None), "source", "distance"}``: what the command line
    and the server show of them."""
    names = index.model.class_names_
    described = []
    for group in groups:
        items = index.items(group.ids)
        described.append([{"id": int(i), "class": names[int(label)] if label >= 0 else None, "source": source,
                           "distance": float(distance)}
                          for i, label, source, distance in zip(group.ids, items["labels"], items["sources"],
                                                                group.distances)])
    return described
