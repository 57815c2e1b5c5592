"""Open-set queries: a query that no known class is close to is ranked by what it looks like alone.

The hierarchy term places a query in the tree through its nearest class. When the query shows something the
collection has no class for (a new species under the microscope), that placement is a guess, and ranking by it
would push visually close images down for the guess's sake. The rule: a query the model flags
(``TreeseekModel.novelty``: its score lies beyond what ``novelty_quantile`` of held-out known-class images
reach) is ranked by the cosine distance alone: its ranking runs with alpha = 0, which leaves exactly the cosine
distance and which any index or engine that serves the ranking serves; ``hierarchy``, whose tree term alpha
does not weigh, becomes ``cosine``; a Hamming search keeps its candidates and re-ranks them with alpha = 0.
Rankings without a hierarchy term are unchanged.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from treeseek.search.contract import Ranking, SearchIndex, exclusions

#: rankings with a hierarchy term, which a flagged query leaves
TREE_METHODS = ("soft", "combined", "flat", "hierarchy")
VISUAL_ONLY = "no known class is close: results are visual only"


def visual_fallback(ranking: Ranking) -> Ranking | None:
    """The ranking a flagged query gets instead of ``ranking``; None when ``ranking`` has no hierarchy term.

    Examples
    --------
    >>> visual_fallback(Ranking("soft", alpha=2.0)).alpha, visual_fallback(Ranking("cosine"))
    (0.0, None)
    >>> visual_fallback(Ranking("hierarchy")).method
    'cosine'
    """
    if ranking.method == "hierarchy":
        return Ranking("cosine")
    if ranking.method == "hamming" and ranking.rerank and ranking.rerank_method == "hierarchy":
        return replace(ranking, rerank_method="cosine")
    if ranking.method in TREE_METHODS or (ranking.method == "hamming" and ranking.rerank and
                                          ranking.rerank_method in TREE_METHODS):
        return replace(ranking, alpha=0.0)
    return None


def describe_fallback(fallback: Ranking) -> str:
    """What ranked a flagged query, for reports."""
    return fallback.describe() + ("" if fallback.distance_method == "cosine" else " at alpha 0 (cosine alone)")


def open_set_search(index: SearchIndex, flagged: np.ndarray, X: np.ndarray, k: int, *, ranking: Ranking,
                    exclude_ids=None, **options) -> tuple[np.ndarray, np.ndarray, Ranking | None]:
    """``index.search`` with the ``flagged`` queries ranked by ``visual_fallback(ranking)``; ``options`` go to
    every ``index.search`` call (e.g. a ``TreeIndex``'s ``subtree``).

    Returns
    -------
    D, I : arrays of shape (nq, k)
        As the search contract, row by row from the ranking each query got.
    fallback : Ranking or None
        What ranked the flagged queries; None when no query changed ranking.
    """
    flagged = np.asarray(flagged, dtype=bool)
    fallback = visual_fallback(ranking)
    if fallback is None or not flagged.any() or fallback.method not in index.capabilities.methods:
        return (*index.search(X, k, ranking=ranking, exclude_ids=exclude_ids, **options), None)
    excluded = exclusions(exclude_ids, len(X))
    D = np.full((len(X), k), np.inf)
    I = np.full((len(X), k), -1, dtype=np.int64)
    for rows, used in ((~flagged, ranking), (flagged, fallback)):
        if rows.any():
            D[rows], I[rows] = index.search(X[rows], k, ranking=used,
                                            exclude_ids=None if excluded is None else excluded[rows], **options)
    return D, I, fallback
