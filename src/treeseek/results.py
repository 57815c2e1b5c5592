"""Search results as records a person or a program can read: class, distance parts, shared LCA."""
from __future__ import annotations

import numpy as np

from .search import cosine_distances


def describe_results(model, queries, query_leaves, vectors, leaves, distances, rows, ids, labels=None, paths=None,
                     soft_alpha: float | None = None):
    """Per query, one dict per hit: rank, id, class, leaf, distance = cosine + alpha * hierarchy, and the LCA.

    For the soft method (``soft_alpha`` = its alpha) ``hierarchy`` is the expected normalised LCA height,
    (distance - cosine) / alpha (None at alpha 0), and ``lca`` is that of the two hard leaves."""
    tree, names = model.hierarchy_, model.class_names_
    described = []
    for q in range(len(queries)):
        hits = rows[q][rows[q] >= 0]
        cos = cosine_distances(queries[q : q + 1], np.asarray(vectors[hits]))[0]
        entries = []
        for rank, (row, d_cos) in enumerate(zip(hits, cos), start=1):
            leaf = int(leaves[row])
            entry = {
                "rank": rank,
                "row": int(row),
                "id": plain_value(ids[row]),
                "class": names[int(labels[row])] if labels is not None and labels[row] >= 0 else None,
                "leaf": names[leaf],
                "distance": float(distances[q, rank - 1]),
                "cosine": float(d_cos),
                "hierarchy": float(tree.normalized_lca[query_leaves[q], leaf]) if soft_alpha is None else
                (float((distances[q, rank - 1] - d_cos) / soft_alpha) if soft_alpha > 0 else None),
                "lca": tree.names[tree.lca(int(query_leaves[q]), leaf)],
            }
            if paths is not None:
                entry["path"] = str(paths[row])
            entries.append(entry)
        described.append(entries)
    return described


def format_entry(entry: dict) -> str:
    label = entry["class"] if entry["class"] is not None else f"~{entry['leaf']}"
    return (f"  {entry['rank']:>3}. {label:<20} D={entry['distance']:.4f} (cos {entry['cosine']:.4f} + "
            f"D_H {entry['hierarchy']:.3f})  LCA {entry['lca']}  id {entry['id']}")


def describe_index_results(index, queries, query_leaves, distances, ids, soft_alpha: float | None = None):
    """``describe_results`` for the ids a ``TreeIndex`` returned; each hit's ``path`` is its source."""
    found = np.unique(ids[ids >= 0])
    items = index.items(found)
    rows = np.where(ids >= 0, np.searchsorted(found, np.maximum(ids, 0)), -1)
    return describe_results(index.model, queries, query_leaves, items["vectors"], items["leaves"], distances, rows,
                            found, items["labels"], items["sources"], soft_alpha)


def plain_value(value):
    return value.item() if isinstance(value, np.generic) else value


def soft_alpha_of(method: str, alpha: float | None, model) -> float | None:
    """The alpha ``describe_results`` needs for a soft ranking (None for the other methods)."""
    return (model.alpha if alpha is None else float(alpha)) if method == "soft" else None
