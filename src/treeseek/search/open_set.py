"""Open-set queries: a query that no known class is close to is ranked by what it looks like alone.

The hierarchy term places a query in the tree through its nearest class. When the query shows something the
collection has no class for (a new species under the microscope), that placement is a guess, and ranking by it
would push visually close images down for the guess's sake. The rule: a query the model flags
(``TreeseekModel.novelty``: its smallest Mahalanobis distance to a known leaf lies beyond what
``novelty_quantile`` of held-out known-class images reach) is ranked by the cosine distance alone, alpha = 0;
a Hamming search keeps its candidates and re-ranks them by cosine. Rankings without a hierarchy term are
unchanged.
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
    >>> visual_fallback(Ranking("soft")).describe(), visual_fallback(Ranking("cosine"))
    ('cosine', None)
    >>> visual_fallback(Ranking("hamming", rerank=100)).describe()
    'hamming (flat), top 100 re-ranked by cosine'
    """
    if ranking.method == "hamming":
        return replace(ranking, rerank_method="cosine") if ranking.rerank and \
            ranking.rerank_method in TREE_METHODS else None
    return Ranking("cosine") if ranking.method in TREE_METHODS else None


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
