"""Queries in, described results out: the one search path that the command line and the HTTP server share."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .errors import TreeseekError
from .index import TreeIndex
from .results import describe_index_results, plain_value, soft_alpha_of


class CodeSearch(NamedTuple):
    """How binary codes take part: rank by Hamming distance, and re-rank that many candidates (0: none)."""

    hamming: bool = False
    rerank: int = 0
    hamming_index: str = "flat"


def search_index(index: TreeIndex, queries, query_leaves, k: int, method: str, alpha, hamming: bool = False,
                 rerank: int = 0, hamming_index: str = "flat"):
    """The index's own search, or its Hamming search (re-ranking ``rerank`` candidates with ``method``)."""
    if hamming:
        return index.search_codes(queries, k, rerank, method, alpha, hamming_index)
    if rerank:
        raise TreeseekError("--rerank re-ranks Hamming candidates; add --hamming")
    return index.search(queries, k, method, alpha, query_leaves)


def distance_method(method: str, hamming: bool = False, rerank: int = 0, hamming_index: str = "flat") -> str:
    """The method whose distances ``search_index`` returns: Hamming search without re-ranking has its own."""
    return "hamming" if hamming and not rerank else method


def ranking_name(method: str, hamming: bool = False, rerank: int = 0, hamming_index: str = "flat") -> str:
    """What the distances of ``search_index`` are, for reports."""
    if not hamming:
        return method
    return f"hamming ({hamming_index})" + (f", top {rerank} re-ranked by {method}" if rerank else "")


def search_described(index: TreeIndex, queries: np.ndarray, k: int, method: str = "soft", alpha: float | None = None,
                     codes: CodeSearch = CodeSearch(), source: str = "queries", engine=None):
    """Check the queries, place them at their leaves and search; returns the leaves and, per query, its hits.

    ``engine(model, method)``, e.g. ``MilvusTarget.open``, gives the engine that answers the search instead of the
    index, which then only describes the hits."""
    query_x = index.model.check_dim(queries, source)
    query_leaves = index.model.assign(query_x)
    if engine is not None:
        if codes.hamming or codes.rerank:
            raise TreeseekError("an engine ranks the stored vectors; --hamming and --rerank search the index itself")
        distances, ids = engine(index.model, method).search(query_x, k, alpha)
        returned = np.unique(ids[ids >= 0])
        stale = returned[~index.contains(returned)]
        if len(stale):
            raise TreeseekError(f"Milvus returned item {stale[0]}, which the index no longer holds; push the index "
                                f"again")
    else:
        distances, ids = search_index(index, query_x, query_leaves, k, method, alpha, *codes)
    described = describe_index_results(index, query_x, query_leaves, distances, ids,
                                       soft_alpha_of(distance_method(method, *codes), alpha, index.model))
    return query_leaves, described


def search_report(model, query_names: Sequence, query_leaves, described, method: str, alpha: float | None,
                  codes: CodeSearch = CodeSearch()) -> dict:
    """The JSON form of a search: what ranked, with which alpha, and per query its leaf and hits."""
    names = model.class_names_
    return {
        "method": ranking_name(method, *codes),
        "alpha": model.alpha if alpha is None else float(alpha),
        "queries": [{"query": plain_value(name), "leaf": names[int(leaf)], "results": entries}
                    for name, leaf, entries in zip(query_names, query_leaves, described)],
    }


def search_like_items(index: TreeIndex, item_ids, k: int, method: str = "soft", alpha: float | None = None,
                      codes: CodeSearch = CodeSearch(), engine=None):
    """``search_described`` with stored items as the queries ("more like this"), each item left out of its own
    results."""
    item_ids = [int(i) for i in item_ids]
    items = index.items(item_ids)
    queries = items["vectors"] * items["norms"][:, None]  # the features the items were added with
    leaves, described = search_described(index, queries, k + 1, method, alpha, codes, "items", engine)
    for own, entries in zip(item_ids, described):
        entries[:] = [entry for entry in entries if entry["id"] != own][:k]
        for rank, entry in enumerate(entries, start=1):
            entry["rank"] = rank
    return leaves, described
