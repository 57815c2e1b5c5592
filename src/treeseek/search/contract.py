"""The one search contract every treeseek index answers, in FAISS's idiom.

``index.search(X, k, *, ranking=Ranking(), exclude_ids=None) -> (D, I)``: raw feature rows in, for each row
the k best items: ``D`` float64 ascending (what it means is named by the ``Ranking``), ``I`` int64 ids; rows
with fewer than k results are padded with ``+inf`` and ``-1``. Each index declares what it supports
(``capabilities``) and refuses the rest with one line, as FiftyOne's similarity backends do.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.search.topk import MISSING_ID

#: what D can mean; the first is treeseek's default ranking
RANKING_METHODS = ("soft", "combined", "flat", "hierarchy", "cosine", "euclidean", "hamming")
HAMMING_INDEXES = ("flat", "hnsw")


@dataclass(frozen=True)
class Ranking:
    """What the distances of a search mean.

    Parameters
    ----------
    method : str
        ``soft`` (cosine + alpha * expected LCA height under the class posteriors, the default),
        ``combined`` (the paper's hard leaves), ``flat``, ``hierarchy``, ``cosine``, ``euclidean`` or
        ``hamming`` (between binary codes).
    alpha : float or None
        Weight of the hierarchy term; None uses the model's.
    rerank : int
        With ``hamming``: re-rank this many nearest codes by ``rerank_method`` (0: no re-ranking).
    rerank_method : str
        The distance the Hamming candidates are re-ranked by.
    hamming_index : str
        With ``hamming``: ``flat`` (exact) or ``hnsw`` (sub-linear).

    Examples
    --------
    >>> Ranking("combined", alpha=0.5).describe()
    'combined'
    >>> Ranking("hamming", rerank=100).describe()
    'hamming (flat), top 100 re-ranked by combined'
    """

    method: str = "soft"
    alpha: float | None = None
    rerank: int = 0
    rerank_method: str = "combined"
    hamming_index: str = "flat"

    def __post_init__(self) -> None:
        if self.method not in RANKING_METHODS:
            raise TreeseekError(f"unknown ranking method {self.method!r}; choose one of {', '.join(RANKING_METHODS)}")
        if self.alpha is not None and not (math.isfinite(float(self.alpha)) and float(self.alpha) >= 0):
            raise TreeseekError(f"alpha must be a finite number >= 0, got {self.alpha}")
        if int(self.rerank) < 0:
            raise TreeseekError(f"rerank must be at least 0, got {self.rerank}")
        if self.rerank and self.method != "hamming":
            raise TreeseekError("rerank re-ranks Hamming candidates: rank by hamming (add --hamming)")
        if self.method == "hamming" and self.rerank_method not in RANKING_METHODS[:5]:
            raise TreeseekError(f"rerank method must be one of {', '.join(RANKING_METHODS[:5])}; "
                                f"got {self.rerank_method!r}")
        if self.hamming_index not in HAMMING_INDEXES:
            raise TreeseekError(f"the Hamming index is flat or hnsw, got {self.hamming_index!r}")

    @property
    def distance_method(self) -> str:
        """The method whose distances come back: a re-ranked Hamming search returns the re-ranking's."""
        return self.rerank_method if self.method == "hamming" and self.rerank else self.method

    def alpha_for(self, model) -> float:
        """The alpha this ranking uses with ``model``: its own, or the model's."""
        return float(model.alpha if self.alpha is None else self.alpha)

    def describe(self) -> str:
        """What the distances are, for reports."""
        if self.method != "hamming":
            return self.method
        rerank = f", top {self.rerank} re-ranked by {self.rerank_method}" if self.rerank else ""
        return f"hamming ({self.hamming_index}){rerank}"


@dataclass(frozen=True)
class Capabilities:
    """What an index can rank by, and the largest k one search may ask for (None: no limit)."""

    methods: tuple[str, ...]
    max_k: int | None = None
    reasons: dict = field(default_factory=dict)  # method -> why it is refused, when that needs saying


@runtime_checkable
class SearchIndex(Protocol):
    """The contract: ``search(X, k, *, ranking, exclude_ids) -> (D, I)`` on whole batches of raw features."""

    capabilities: Capabilities

    def search(self, X: np.ndarray, k: int, *, ranking: Ranking = Ranking(),
               exclude_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items of each query row by ``ranking``.

        Parameters
        ----------
        X : array of shape (nq, d)
            Raw query features, as the items were added (the index derives leaves, posteriors and codes).
        k : int
            Results per query.
        ranking : Ranking
            What the distances mean.
        exclude_ids : array of shape (nq,) or (nq, m), optional
            Ids left out of each query's results (-1: none), e.g. the stored item a query starts from.

        Returns
        -------
        D : float64 array of shape (nq, k)
            Distances, ascending; +inf pads rows with fewer than k items.
        I : int64 array of shape (nq, k)
            Item ids; -1 pads.
        """
        ...


def check_request(index_name: str, capabilities: Capabilities, k: int, ranking: Ranking) -> None:
    """Refuse, in one line, a k or a ranking that the index does not support."""
    if not isinstance(ranking, Ranking):
        raise TreeseekError(f"ranking must be a Ranking, got {type(ranking).__name__}")
    if int(k) < 1:
        raise TreeseekError(f"k must be at least 1, got {k}")
    if ranking.method not in capabilities.methods:
        reason = capabilities.reasons.get(ranking.method)
        raise TreeseekError(reason or f"{index_name} ranks with {', '.join(capabilities.methods)}; "
                            f"not {ranking.method}")
    if capabilities.max_k is not None and k > capabilities.max_k:
        raise TreeseekError(f"{index_name} returns at most {capabilities.max_k} results per query, asked for {k}")


def exclusions(exclude_ids, n_queries: int) -> np.ndarray | None:
    """``exclude_ids`` as an n_queries x m int64 matrix (-1: nothing), or None.

    One id per query (a 1-D array), or several per query (2-D): each query's own ids are left out of its
    results, e.g. the stored item a "more like this" query starts from."""
    if exclude_ids is None:
        return None
    excluded = np.asarray(exclude_ids, dtype=np.int64)
    if excluded.ndim == 1:
        excluded = excluded[:, None]
    if excluded.ndim != 2 or len(excluded) != n_queries:
        raise TreeseekError(f"exclude_ids needs one row per query ({n_queries}), got shape {np.shape(exclude_ids)}")
    return excluded


def search_excluding(search, X: np.ndarray, k: int, exclude_ids) -> tuple[np.ndarray, np.ndarray]:
    """``search(X, k')`` with each query's excluded ids dropped: the top-k of what is left, padded again."""
    excluded = exclusions(exclude_ids, len(X))
    if excluded is None:
        return padded(*search(X, k))
    keys, ids = padded(*search(X, k + excluded.shape[1]))
    kept = ~(ids[:, :, None] == excluded[:, None, :]).any(axis=2)
    out_keys, out_ids = np.full((len(X), k), np.inf), np.full((len(X), k), -1, dtype=np.int64)
    for row in range(len(X)):
        keep = np.flatnonzero(kept[row])[:k]
        out_keys[row, : len(keep)], out_ids[row, : len(keep)] = keys[row, keep], ids[row, keep]
    return out_keys, out_ids


def padded(keys: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D, I) in the contract's types: float64, int64, missing results as +inf and -1."""
    keys = np.asarray(keys, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    missing = (ids < 0) | (ids == MISSING_ID) | ~np.isfinite(keys)
    return np.where(missing, np.inf, keys), np.where(missing, -1, ids)
