"""An in-memory index over a fitted model: every ranking but Hamming, through the search contract.

Items are placed at their leaves by the model (or at known leaves), and each ranking is answered by the
structure made for it: the level-by-level hierarchical search (``combined``, ``flat``, ``hierarchy``,
``cosine``), the exact group-by-group search over the items' sparse posteriors (``soft``, ``soft_groups``), or an
exact float64 scan (``euclidean``). The posteriors are computed on the first soft search after an ``add``.
"""
from __future__ import annotations

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.search.contract import Capabilities, Ranking, check_request, search_excluding
from treeseek.search.distances import euclidean_distances, method_hierarchy
from treeseek.search.hierarchical_index import HierarchicalIndex
from treeseek.search.soft_groups import SoftPosteriors, leaf_group_topk, soft_group_topk
from treeseek.search.topk import MISSING_ID, no_candidates, smallest_k

KEYS_PER_CHUNK = 2 * 10**7  # float64 keys of the euclidean scan held at once


class MemoryIndex:
    """Top-k of a fitted ``TreeseekModel``'s rankings over items held in memory.

    Parameters
    ----------
    model : TreeseekModel
        A fitted model: it places items and queries at leaves and gives their posteriors.
    backend : str
        How the hierarchical rankings scan a subtree: ``exact`` (float64, equal to a full sort),
        ``faiss-flat``, ``faiss-ivf`` or ``faiss-hnsw`` (see ``treeseek.search.backends``).
    **backend_params
        The backend's parameters (nlist, nprobe; m, ef_construction, ef_search).

    After a level-by-level search, ``scored_fraction_`` is the share of (query, item) pairs it scored.

    Examples
    --------
    >>> import numpy as np
    >>> from treeseek.model import TreeseekModel
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(60, 4)) + np.repeat(np.eye(4)[:3] * 6, 20, axis=0), np.repeat([0, 1, 2], 20)
    >>> index = MemoryIndex(TreeseekModel(hierarchy="average").fit(X, y))
    >>> index.add(X)[:3]
    array([0, 1, 2])
    >>> D, I = index.search(X[:2], 3, ranking=Ranking("combined"), exclude_ids=[0, 1])
    >>> D.dtype, I.dtype, I.shape, bool((I != np.array([[0], [1]])).all())  # each query's own row left out
    (dtype('float64'), dtype('int64'), (2, 3), True)
    """

    def __init__(self, model, *, backend: str = "exact", **backend_params):
        if not hasattr(model, "hierarchy_"):
            raise TreeseekError("the index needs a fitted model")
        self.model = model
        self.backend = backend
        self.backend_params = dict(backend_params)
        self.capabilities = Capabilities(("soft", "combined", "flat", "hierarchy", "cosine", "euclidean"), reasons={
            "hamming": "an in-memory index holds no binary codes; search an index with codes "
                       "('treeseek index codes')"})
        self.features_ = np.zeros((0, model.input_dim_))
        self.ids_ = np.zeros(0, dtype=np.int64)
        self.leaves_ = np.zeros(0, dtype=np.int64)
        self.known_ = np.zeros(0, dtype=bool)  # items placed at a known leaf (one-hot posterior)
        self.labels_ = np.zeros(0, dtype=np.int64)  # their classes (-1: unknown)
        # the level-by-level rankings' structure takes items as they come; the soft one is built on its first search
        self._tree_index = HierarchicalIndex(model.hierarchy_, backend=backend, **backend_params)
        self._soft: SoftPosteriors | None = None
        self._one_hot: tuple | None = None  # (segment, its leaves as one-hot posteriors)

    @property
    def ntotal(self) -> int:
        return len(self.ids_)

    def __len__(self) -> int:
        return len(self.ids_)

    def add(self, X: np.ndarray, ids=None, *, known_labels=None) -> np.ndarray:
        """Add raw feature rows; returns their ids.

        Parameters
        ----------
        X : array of shape (n, d)
            Raw features, as the model was fitted on.
        ids : array of n int, optional
            Their ids (default: the next n integers).
        known_labels : array of n int, optional
            The items' known classes: each is placed at its class's leaf (the nearest of its sub-classes) instead
            of the model's assignment.
        """
        X = self.model.check_dim(X, "added features")
        n = len(X)
        if ids is None:  # the next n integers: unique by construction
            ids = np.arange(self.ntotal, self.ntotal + n)
        else:
            ids = np.asarray(ids, dtype=np.int64)
            if ids.shape != (n,):
                raise TreeseekError(f"got {ids.size} ids for {n} items")
            if len(np.unique(np.concatenate([self.ids_, ids]))) != self.ntotal + n:
                raise TreeseekError("item ids must be unique")
        if known_labels is None:
            leaves, known, labels = self.model.assign(X), np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64)
        else:
            labels, known = np.asarray(known_labels, dtype=np.int64), np.ones(n, dtype=bool)
            if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= self.model.n_classes_)):
                raise TreeseekError(f"known labels must be n class indices in [0, {self.model.n_classes_})")
            leaves = self.model.known_leaves(X, labels)
        self.features_ = X if self.ntotal == 0 else np.vstack([self.features_, X])  # no copy of a first batch
        self.ids_ = np.concatenate([self.ids_, ids])
        self.leaves_ = np.concatenate([self.leaves_, leaves])
        self.known_ = np.concatenate([self.known_, known])
        self.labels_ = np.concatenate([self.labels_, labels])
        self._tree_index.add(self.model.cosine_features(X), leaves, ids)  # where the rankings take their cosine
        self._soft = None
        return ids

    def items(self, ids) -> dict:
        """Unit vector and length (in the model's cosine space), leaf, label (-1: unknown) and source ("") of each
        id."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        order = np.argsort(self.ids_)
        where = np.searchsorted(self.ids_[order], ids)
        found = (where < len(order)) & (self.ids_[order][np.minimum(where, max(len(order) - 1, 0))] == ids)
        if not found.all():
            raise TreeseekError(f"item {ids[~found][0]} is not in the index")
        rows = order[where]
        unit, norms = self.model.cosine_units(self.features_[rows])
        return {"vectors": unit, "norms": norms,
                "leaves": self.leaves_[rows], "labels": self.labels_[rows],
                "sources": [""] * len(ids)}

    def search(self, X: np.ndarray, k: int, *, ranking: Ranking = Ranking(),
               exclude_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """The search contract (``SearchIndex.search``) over every ranking but ``hamming``."""
        check_request("an in-memory index", self.capabilities, k, ranking)
        X = self.model.check_dim(X, "queries")
        alpha = ranking.alpha_for(self.model)
        return search_excluding(lambda queries, wanted: self._topk(queries, wanted, ranking.method, alpha),
                                X, int(k), exclude_ids)

    def _topk(self, X: np.ndarray, k: int, method: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        if self.ntotal == 0:
            return no_candidates(len(X), k)
        if method == "euclidean":
            return self._euclidean(X, k)
        if method == "soft":
            _, classes, weights = self.model.place(X)
            segment = self._tree_index.segment()
            lca = self.model.hierarchy_.normalized_lca
            keys, ids, _ = soft_group_topk(segment, self._soft_posteriors(segment), lca, self.model.cosine_units(X)[0],
                                           classes, weights, alpha, k)
            return keys, np.where(ids == MISSING_ID, -1, ids)
        if method in ("combined", "flat") and self.backend == "exact":
            return self._leaf_groups(X, k, method, alpha)
        found = self._tree_index.search(self.model.cosine_features(X), self.model.assign(X), k, method=method,
                                        alpha=alpha)
        self.scored_fraction_ = self._tree_index.scored_fraction_
        return found

    def _leaf_groups(self, X: np.ndarray, k: int, method: str, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        """``combined`` or ``flat`` by the group-by-group search, each item one-hot at its leaf."""
        segment = self._tree_index.segment()
        if self._one_hot is None or self._one_hot[0] is not segment:
            self._one_hot = (segment, SoftPosteriors.one_hot(segment))
        tree = method_hierarchy(method, self.model.hierarchy_)
        unit = self.model.cosine_units(X)[0]
        keys, ids, scored = leaf_group_topk(segment, self._one_hot[1], tree.normalized_lca, unit, self.model.assign(X),
                                            alpha, k)
        self.scored_fraction_ = scored / max(1, len(X) * len(segment))
        return keys, np.where(ids == MISSING_ID, -1, ids)

    def _euclidean(self, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        step = max(1, KEYS_PER_CHUNK // max(1, self.ntotal))
        parts = [smallest_k(euclidean_distances(X[start : start + step], self.features_), self.ids_, k)
                 for start in range(0, len(X), step)]
        if not parts:
            return no_candidates(0, k)
        return np.concatenate([keys for keys, _ in parts]), np.concatenate([ids for _, ids in parts])

    def _soft_posteriors(self, segment) -> SoftPosteriors:
        """The items' sparse posteriors in the segment's row order, computed on the first soft search."""
        if self._soft is None:
            order = np.argsort(self.ids_, kind="stable")
            rows = order[np.searchsorted(self.ids_[order], segment.ids)]
            _, classes, weights = self.model.place(self.features_[rows])
            known = self.known_[rows]
            if known.any():  # items at known leaves: their one-hot posterior, the paper's hard distance
                classes[known], weights[known] = self.leaves_[rows][known, None], 0.0
                weights[known, 0] = 1.0
            self._soft = SoftPosteriors.build(segment, classes, weights)
        return self._soft
