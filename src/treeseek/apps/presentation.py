"""Search results as records a person or a program can read: the one presentation of every interface.

``search_report`` turns ``(D, I)`` into the JSON of ``treeseek search --json`` and of the server's answers;
``report_lines`` prints the same report for the command line.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from treeseek.search import Ranking, cosine_distances


def search_report(model, ranking: Ranking, queries: np.ndarray, query_names: Sequence, distances: np.ndarray,
                  ids: np.ndarray, lookup: Callable[[np.ndarray], dict]) -> dict:
    """What ranked, with which alpha, and per query its leaf and hits.

    Parameters
    ----------
    model : TreeseekModel
        The model the index was fitted with: it names leaves and classes.
    ranking : Ranking
        The ranking that gave ``distances``.
    queries : array of shape (nq, d)
        The raw query features.
    query_names : sequence of nq names
        How each query is called in the report.
    distances, ids : arrays of shape (nq, k)
        The search's answer, padded with +inf and -1.
    lookup : callable
        ``lookup(ids)`` gives the hits' ``vectors`` (unit), ``leaves``, ``labels`` (-1: unknown), ``names``
        (the ids as reported) and ``sources`` (None: no ``path`` in the report) and optionally ``rows``.

    Returns
    -------
    dict
        ``{"method", "alpha", "queries": [{"query", "leaf", "results": [hit, ...]}]}``; each hit has rank, id,
        class, leaf, distance, its cosine and hierarchy parts, and the LCA it shares with the query.
    """
    query_leaves = model.assign(queries) if len(queries) else np.zeros(0, dtype=np.int64)
    found = np.unique(ids[ids >= 0])
    items = lookup(found)
    soft_alpha = ranking.alpha_for(model) if ranking.distance_method == "soft" else None
    tree, names = model.hierarchy_, model.class_names_
    report = []
    for q, query_name in enumerate(query_names):
        positions = np.searchsorted(found, ids[q][ids[q] >= 0])
        cosine = cosine_distances(queries[q : q + 1], np.asarray(items["vectors"][positions]))[0] \
            if len(positions) else []
        entries = []
        for rank, (position, d_cos) in enumerate(zip(positions, cosine), start=1):
            leaf, label, distance = int(items["leaves"][position]), int(items["labels"][position]), \
                float(distances[q, rank - 1])
            entry = {"rank": rank}
            if "rows" in items:
                entry["row"] = int(items["rows"][position])
            entry.update({
                "id": plain_value(items["names"][position]),
                "class": names[label] if label >= 0 else None,
                "leaf": names[leaf],
                "distance": distance,
                "cosine": float(d_cos),
                "hierarchy": float(tree.normalized_lca[query_leaves[q], leaf]) if soft_alpha is None else
                (float((distance - d_cos) / soft_alpha) if soft_alpha > 0 else None),
                "lca": tree.names[tree.lca(int(query_leaves[q]), leaf)],
            })
            if items.get("sources") is not None:
                entry["path"] = str(items["sources"][position])
            entries.append(entry)
        report.append({"query": plain_value(query_name), "leaf": names[int(query_leaves[q])], "results": entries})
    return {"method": ranking.describe(), "alpha": ranking.alpha_for(model), "queries": report}


def report_lines(query: dict) -> list[str]:
    """The command line's lines for one query of a report: its leaf, then one line per hit."""
    return [f"query {query['query']} (leaf {query['leaf']})", *(format_entry(entry) for entry in query["results"])]


def format_entry(entry: dict) -> str:
    label = entry["class"] if entry["class"] is not None else f"~{entry['leaf']}"
    hierarchy = "n/a" if entry["hierarchy"] is None else f"{entry['hierarchy']:.3f}"
    return (f"  {entry['rank']:>3}. {label:<20} D={entry['distance']:.4f} (cos {entry['cosine']:.4f} + "
            f"D_H {hierarchy})  LCA {entry['lca']}  id {entry['id']}")


def plain_value(value):
    return value.item() if isinstance(value, np.generic) else value
