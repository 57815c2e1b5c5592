"""Search results as records a person or a program can read: the one presentation of every interface.

``search_report`` turns ``(D, I)`` into the JSON of ``treeseek search --json`` and of the server's answers;
``report_lines`` prints the same report for the command line.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import numpy as np

from treeseek.model import Novelty
from treeseek.search import Ranking, cosine_distances
from treeseek.search.open_set import VISUAL_ONLY, describe_fallback


def search_report(model, ranking: Ranking, queries: np.ndarray, query_names: Sequence, distances: np.ndarray,
                  ids: np.ndarray, lookup: Callable[[np.ndarray], dict], *,
                  class_names: Sequence[str] | None = None, novelty: Novelty | None = None,
                  fallback: Ranking | None = None) -> dict:
    """What ranked, with which alpha, and per query its leaf and hits.

    Parameters
    ----------
    model : TreeseekModel or None
        The model the index was fitted with: it places queries at leaves and names the LCA. None for an index
        of binary codes alone, whose hits have no leaf or distance parts.
    ranking : Ranking
        The ranking that gave ``distances``.
    queries : array of shape (nq, d)
        The raw query features.
    query_names : sequence of nq names
        How each query is called in the report.
    distances, ids : arrays of shape (nq, k)
        The search's answer, padded with +inf and -1.
    lookup : callable
        ``lookup(ids)`` gives the hits' ``labels`` (-1: unknown) and ``names`` (the ids as reported); with a model
        also ``vectors`` (unit), ``leaves`` and ``sources`` (None: no ``path``); optionally ``rows``.
    class_names : sequence of str, optional
        The classes' names (default: the model's).
    novelty : Novelty, optional
        The queries' out-of-distribution scores (``TreeseekModel.novelty``).
    fallback : Ranking, optional
        What ranked the flagged queries instead of ``ranking`` (``search.open_set``).

    Returns
    -------
    dict
        ``{"method", "alpha", "queries": [{"query", "leaf", "novelty", "results": [hit, ...]}]}`` (a flagged query
        that ``fallback`` ranked also has ``method`` and ``note``); each hit has rank, id,
        class, leaf, distance, its cosine and hierarchy parts, and the LCA it shares with the query (a plain
        Hamming ranking adds ``hamming``, the distance as an integer).
    """
    names = list(class_names) if class_names is not None else model.class_names_
    found = np.unique(ids[ids >= 0])
    items = lookup(found)
    parts = None if model is None else _DistanceParts(model, ranking, queries)
    visual_parts = None if parts is None or fallback is None else parts.ranked_by(fallback)
    report = []
    for q, query_name in enumerate(query_names):
        positions = np.searchsorted(found, ids[q][ids[q] >= 0])
        entries = []
        for rank, position in enumerate(positions, start=1):
            label = int(items["labels"][position])
            entry = {"rank": rank, **({"row": int(items["rows"][position])} if "rows" in items else {}),
                     "id": plain_value(items["names"][position]), "class": names[label] if label >= 0 else None}
            if ranking.method == "hamming" and not ranking.rerank:
                entry["hamming"] = int(distances[q, rank - 1])
            entries.append(entry)
        if parts is None:
            for entry, distance in zip(entries, distances[q]):
                entry["distance"] = float(distance)
            report.append({"query": plain_value(query_name), "results": entries})
        else:
            record = {"query": plain_value(query_name), "leaf": model.leaf_names_[int(parts.query_leaves[q])],
                      "confidence": float(parts.confidence[q])}
            visual = novelty is not None and bool(novelty.flagged[q]) and visual_parts is not None
            if novelty is not None:
                p_value = float(novelty.p_values[q])
                record["novelty"] = {"score": float(novelty.scores[q]),
                                     "p_value": None if np.isnan(p_value) else p_value,
                                     "flagged": bool(novelty.flagged[q])}
            if visual:
                record.update(method=describe_fallback(fallback), note=VISUAL_ONLY)
            record["results"] = (visual_parts if visual else parts).added(q, entries, distances[q], items, positions)
            report.append(record)
    alpha = ranking.alpha_for(model) if model is not None else ranking.alpha
    return {"method": ranking.describe(), "alpha": alpha, "queries": report}


class _DistanceParts:
    """Each hit's leaf, distance in its cosine and hierarchy parts, LCA with the query, and file."""

    def __init__(self, model, ranking: Ranking, queries: np.ndarray):
        self.model, self.queries = model, queries
        # one pass over the class distances places every query and says how sure that is
        self.query_leaves, self.confidence = placements(model, queries)
        self.soft_alpha = ranking.alpha_for(model) if ranking.distance_method == "soft" else None

    def ranked_by(self, ranking: Ranking) -> "_DistanceParts":
        """The same queries and placements, with the distances of another ranking."""
        other = copy.copy(self)
        other.soft_alpha = ranking.alpha_for(self.model) if ranking.distance_method == "soft" else None
        return other

    def added(self, q: int, entries: list[dict], distances: np.ndarray, items: dict, positions) -> list[dict]:
        tree, names, leaf_q = self.model.hierarchy_, self.model.leaf_names_, int(self.query_leaves[q])
        cosine = cosine_distances(self.model.cosine_features(self.queries[q : q + 1]),
                                  np.asarray(items["vectors"][positions]))[0] \
            if len(positions) else []
        for entry, position, distance, d_cos in zip(entries, positions, distances, cosine):
            leaf, distance = int(items["leaves"][position]), float(distance)
            soft = self.soft_alpha
            meet = tree.lca(leaf_q, leaf)
            entry.update({
                "leaf": names[leaf],
                "distance": distance,
                "cosine": float(d_cos),
                # soft: the distance less its cosine, over alpha; float rounding (1e-10) may take it just past 0 or 1
                "hierarchy": float(tree.normalized_lca[leaf_q, leaf]) if soft is None else
                (float(np.clip((distance - d_cos) / soft, 0.0, 1.0)) if soft > 0 else None),
                "lca": tree.names[meet],
                "relation": relation(self.model, leaf_q, leaf, meet),
                "similarity": float(np.clip(1.0 - d_cos, 0.0, 1.0)),
            })
            if items.get("sources") is not None:
                entry["path"] = str(items["sources"][position])
        return entries


def relation(model, query_leaf: int, item_leaf: int, meet: int) -> str:
    """In words, how an item relates to the query's place in the tree: ``same class``, ``related: both are
    <node>`` (their lowest common ancestor) or ``unrelated`` (they meet only at the root)."""
    if model.leaf_class_[query_leaf] == model.leaf_class_[item_leaf]:
        return "same class"
    tree = model.hierarchy_
    return "unrelated" if meet == tree.root else f"related: both are {tree.names[meet]}"


def placements(model, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query, its leaf (``model.assign``) and the posterior probability of the class it is placed in (its
    sub-classes' together), at the model's temperature: how sure the placement is."""
    if not len(queries):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    leaves, classes, weights = model.place(queries)
    same_class = model.leaf_class_[classes] == model.leaf_class_[leaves][:, None]
    return leaves, np.sum(weights * same_class, axis=1)


def report_lines(query: dict) -> list[str]:
    """The command line's lines for one query of a report: its leaf (and, when no known class is close, that
    its results are visual only), then one line per hit."""
    header = f"query {query['query']}" + (f" (leaf {query['leaf']}, {query['confidence']:.0%} sure)"
                                          if "leaf" in query else "")
    novelty = query.get("novelty")
    if novelty is not None and novelty["flagged"]:
        p_value = "" if novelty["p_value"] is None else f", novelty p = {novelty['p_value']:.3g}"
        header += f"  [{query.get('note', 'no known class is close')}{p_value}]"
    return [header, *(format_entry(entry) for entry in query["results"])]


def format_entry(entry: dict) -> str:
    if "lca" not in entry:  # a hit of an index of codes alone: its class and Hamming distance
        return f"  {entry['rank']:>3}. {entry['class'] or '?':<20} hamming {entry['hamming']:>3}  id {entry['id']}"
    label = entry["class"] if entry["class"] is not None else f"~{entry['leaf']}"
    hierarchy = "n/a" if entry["hierarchy"] is None else f"{entry['hierarchy']:.3f}"
    return (f"  {entry['rank']:>3}. {label:<20} D={entry['distance']:.4f} (cos {entry['cosine']:.4f} + "
            f"D_H {hierarchy})  LCA {entry['lca']}  id {entry['id']}")


def plain_value(value):
    return value.item() if isinstance(value, np.generic) else value
