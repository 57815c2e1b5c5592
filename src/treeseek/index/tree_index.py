"""A persistent, updatable hierarchy-aware index: ``add``, ``remove``, ``search``, ``save``, ``open``.

Items live in segments (see ``treeseek.search.segment``): what was saved
stays memory-mapped and read-only, and what is added goes into one new
in-memory segment that the next ``save`` writes beside the others. A removed
id is masked in its segment at once and recorded in the manifest; ``compact``
rewrites all segments as one without the removed items, and ``refit`` fits
the model again on the stored items and rebuilds everything.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from treeseek import choices
from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.index.code_search import hamming_search
from treeseek.index.index_files import read_index, verify_index, write_index
from treeseek.index.placement import (
    encoded_part,
    place_items,
    replace_placement,
    restored_features,
    restored_placement,
    soft_settings,
)
from treeseek.index.soft_search import leaf_topk, soft_topk
from treeseek.index.storage import DEFAULT_WAIT_SECONDS, check_target, writer_lock
from treeseek.index.stored_segment import StoredSegment
from treeseek.index.subtree_search import subtree_node, subtree_topk
from treeseek.model import TreeseekModel
from treeseek.search.backends import make_backend
from treeseek.search.contract import Capabilities, Ranking, check_request, search_excluding
from treeseek.search.distances import hierarchy_weight, method_hierarchy
from treeseek.search.hierarchical_index import SEARCH_METHODS, hierarchical_topk
from treeseek.search.topk import merge_smallest_k, no_candidates

DTYPES = choices.DTYPES
INDEX_METHODS = ("soft", *SEARCH_METHODS)  # soft first: the ranking treeseek's interfaces default to
MAX_SEGMENTS = 8  # a save with more first compacts them into one, to keep searches to a few passes
# rankings that the exact backend answers by the group-by-group search (``soft_search.leaf_topk``): it scans
# tiles of neighbouring leaves in order of their bound, in batches, where the level-by-level search scans rings
GROUP_METHODS = ("combined", "flat")


class TreeIndex:
    """A persistent, updatable index of items placed at the leaves of a fitted model.

    Parameters
    ----------
    model : TreeseekModel
        The fitted model: it places items and queries at leaves and gives their posteriors.
    dtype : str
        How the unit vectors are stored: ``float32`` or ``float16`` (half the disk and memory).
    backend : str
        How the level-by-level rankings scan a subtree: ``exact``, ``faiss-flat``, ``faiss-ivf`` or ``faiss-hnsw``.
    **backend_params
        The backend's parameters (nlist, nprobe; m, ef_construction, ef_search; min_ann_items).

    ``add``, ``remove``, ``compact``, ``refit`` change it; ``save`` commits atomically; ``open`` reads it back
    with the vectors memory-mapped; ``updating`` holds the writer lock from the read to the save. ``search`` is
    the search contract (``treeseek.search.contract``).
    """

    def __init__(self, model: TreeseekModel, *, dtype: str = "float32", backend: str = "exact", **backend_params):
        if not hasattr(model, "hierarchy_"):
            raise TreeseekError("the index needs a fitted model")
        if dtype not in DTYPES:
            raise TreeseekError(f"dtype must be float32 or float16, got {dtype!r}")
        make_backend(backend, **backend_params)
        self.model = model
        self.dtype = dtype
        self.backend = {"name": backend, "params": dict(backend_params)}
        self.segments_: list[StoredSegment] = []
        self.removed_ = np.zeros(0, dtype=np.int64)  # removed ids still physically in a segment
        self.next_id_ = 0
        self.extra_: dict = {}           # JSON metadata that callers keep with the index (e.g. the backbone)
        self.attachments_: dict = {}     # name -> array saved beside the index (e.g. thumbnails' pixels)
        self.hasher = None               # binary hasher whose packed codes are stored per item (set_hasher)
        self._home: Path | None = None   # directory whose files the saved segments are
        self._manifest_digest: str | None = None  # of the manifest this index was read from or last saved as
        self._model_name: str | None = None
        self._hasher_name: str | None = None
        self._written: dict = {}         # stem -> (file, array, manifest entry) of array files already in _home
        self._pending: list[dict] = []   # added since the last flush, not yet sorted into a segment

    # ---------------------------------------------------------------- updates
    def add(self, features: np.ndarray, labels=None, sources: Sequence[str] | None = None,
            progress: bool = False) -> np.ndarray:
        """Place new items at their leaves by Mahalanobis distance; returns their ids.

        Large collections can be added in batches: they are gathered and sorted
        into one segment when the index is next searched or saved.
        """
        features = self.model.check_dim(features, "added features")
        n = len(features)
        labels = self._label_indices(labels, n)
        if sources is not None and len(sources) != n:
            raise TreeseekError(f"got {len(sources)} sources for {n} items")
        part = {"labels": labels, "ids": np.arange(self.next_id_, self.next_id_ + n, dtype=np.int64),
                "sources": [str(s) for s in sources] if sources is not None else [""] * n,
                # ``features`` were checked above, once: each chunk is placed without checking it again
                **place_items(self.model, features.shape, self.dtype, lambda rows: features[rows], checked=True,
                              progress=progress)}
        if self.hasher is not None:
            part["codes"] = encoded_part(self.model, self.hasher, part)
        self._pending.append(part)
        self.next_id_ += n
        return part["ids"]

    def _flush(self, progress: bool = False) -> None:
        """Sort what was added since the last save into the one unsaved segment."""
        if not self._pending:
            return
        parts = self._pending
        if self.segments_ and self.segments_[-1].name is None:
            unsaved = self.segments_.pop()
            if unsaved.segment.alive is not None:  # its removed items are dropped for good, not recorded
                self.removed_ = np.setdiff1d(self.removed_, unsaved.segment.ids[~unsaved.segment.alive])
            parts = [unsaved.live(), *parts]
        self.segments_.append(self._segment_from(parts, self.model, progress))
        self._pending = []

    def _segment_from(self, parts: list[dict], model: TreeseekModel, progress: bool) -> StoredSegment:
        settings = soft_settings(model)
        for part in parts:  # parts from a segment saved without posteriors, or under other settings
            if part.get("soft_state") != settings:
                _, part["soft_classes"], part["soft_weights"] = restored_placement(model, part["unit"], part["norms"])
                part["soft_state"] = settings
        keys = ("unit", "norms", "leaves", "ids", "labels", "soft_classes", "soft_weights") + \
            (("codes",) if self.hasher is not None else ())
        joined = {key: parts[0][key] if len(parts) == 1 else np.concatenate([part[key] for part in parts])
                  for key in keys}  # one part (one add): its arrays as they are, no copy
        sources = parts[0]["sources"] if len(parts) == 1 else [source for part in parts for source in part["sources"]]
        return StoredSegment.create(model.hierarchy_, joined["unit"], joined["norms"], joined["leaves"],
                                    joined["ids"], joined["labels"], sources, self.backend, progress,
                                    joined.get("codes"), (joined["soft_classes"], joined["soft_weights"]), settings)

    def remove(self, ids) -> None:
        """Remove items by id; an id that is not in the index is an error and nothing is removed."""
        self._flush()
        ids = _id_array(ids)
        rows = self._live_rows(ids)
        found = _held(rows, len(ids))
        if not found.all():
            raise TreeseekError(f"item {ids[~found][0]} is not in the index")
        for segment, where in zip(self.segments_, rows):
            where = where[where >= 0]
            if len(where):
                if segment.segment.alive is None:
                    segment.segment.alive = np.ones(len(segment), dtype=bool)
                segment.segment.alive[where] = False
        self.removed_ = np.union1d(self.removed_, ids)

    def contains(self, ids) -> np.ndarray:
        """Whether each id is an item of the index (added and not removed)."""
        self._flush()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        return _held(self._live_rows(ids), len(ids))

    def _live_rows(self, ids: np.ndarray) -> list[np.ndarray]:
        """Per segment, the row of each id, -1 where the segment does not hold it or it was removed."""
        rows = []
        for stored in self.segments_:
            where = stored.find(ids)
            if stored.segment.alive is not None:
                where = np.where((where >= 0) & stored.segment.alive[np.maximum(where, 0)], where, -1)
            rows.append(where)
        return rows

    def compact(self, progress: bool = False) -> None:
        """Rewrite all segments as one, without removed items (and rebuild the backend's structure)."""
        self._rebuild(self.model, progress)

    def refit(self, progress: bool = False, **params) -> None:
        """Fit the model again on the stored items that have labels, then re-place every item with it."""
        self._flush()
        parts = [segment.live() for segment in self.segments_]
        labels = np.concatenate([part["labels"] for part in parts]) if parts else np.zeros(0, np.int32)
        known = labels >= 0
        if not known.any():
            raise TreeseekError("refit needs items with labels; this index has none")
        missing = sorted(set(range(self.model.n_classes_)) - set(np.unique(labels[known]).tolist()))
        if missing:
            raise TreeseekError(f"refit needs items of every class; '{self.model.class_names_[missing[0]]}' has none")
        features = np.concatenate([restored_features(self.model, part["unit"], part["norms"])[part["labels"] >= 0]
                                   for part in parts])
        model = TreeseekModel(**{**self.model.get_params(), **params})
        model.fit(features, labels[known], self.model.class_names_)
        for part in parts:
            replace_placement(self.model, model, part)
        self._replace_all(parts, model, progress)

    def set_backend(self, backend: str, progress: bool = False, **backend_params) -> None:
        make_backend(backend, **backend_params)
        self.backend = {"name": backend, "params": dict(backend_params)}
        self._rebuild(self.model, progress)

    def set_hasher(self, hasher, progress: bool = False) -> None:
        """Store every item's packed binary code from ``hasher`` (None drops them); rewrites the segments."""
        if hasher is not None and getattr(hasher, "mean_", np.zeros(0)).shape != (self.model.input_dim_,):
            raise TreeseekError(f"the hasher must be fitted on {self.model.input_dim_}-d features like the index")
        self._flush()
        parts = [segment.live() for segment in self.segments_]
        for part in parts:
            part.pop("codes", None)
            if hasher is not None:
                part["codes"] = encoded_part(self.model, hasher, part)
        self.hasher, self._hasher_name = hasher, None
        self._replace_all(parts, self.model, progress)

    def _rebuild(self, model: TreeseekModel, progress: bool) -> None:
        self._flush()
        self._replace_all([segment.live() for segment in self.segments_], model, progress)

    def _replace_all(self, parts: list[dict], model: TreeseekModel, progress: bool) -> None:
        segment = self._segment_from(parts, model, progress) if parts else None
        if model is not self.model:
            self.model, self._model_name = model, None
        self.segments_ = [segment] if segment is not None and len(segment) else []
        self.removed_ = np.zeros(0, dtype=np.int64)

    def _label_indices(self, labels, n: int) -> np.ndarray:
        if labels is None:
            return np.full(n, -1, dtype=np.int32)
        labels = np.asarray(labels)
        if labels.shape != (n,):
            raise TreeseekError(f"got {labels.shape[0] if labels.ndim else 1} labels for {n} items")
        names = self.model.class_names_
        if labels.dtype.kind in "US":
            lookup = {name: i for i, name in enumerate(names)}
            unknown = [str(label) for label in labels if str(label) not in lookup]
            if unknown:
                raise TreeseekError(f"unknown class label '{unknown[0]}'")
            return np.array([lookup[str(label)] for label in labels], dtype=np.int32)
        if labels.dtype.kind not in "iu" or (n and (labels.min() < -1 or labels.max() >= len(names))):
            raise TreeseekError(f"labels must be class names or indices in [0, {len(names)}) (-1 for unknown)")
        return labels.astype(np.int32)

    # ----------------------------------------------------------------- search
    def stored_segments(self) -> list[StoredSegment]:
        """The segments, with everything added so far sorted in: for code that reads items segment by segment."""
        self._flush()
        return self.segments_

    def __len__(self) -> int:
        return sum(segment.segment.n_alive for segment in self.segments_) + sum(len(p["ids"]) for p in self._pending)

    @property
    def capabilities(self) -> Capabilities:
        """What this index ranks by: ``hamming`` too once it stores binary codes (``set_hasher``)."""
        refused = {"euclidean": f"method must be one of {', '.join(INDEX_METHODS)} for an index (it stores unit "
                                f"vectors); got euclidean",
                   "hamming": "this index stores no binary codes; attach a hasher first ('treeseek index codes')"}
        if self.hasher is not None:
            return Capabilities((*INDEX_METHODS, "hamming"), reasons=refused)
        return Capabilities(INDEX_METHODS, reasons=refused)

    def search(self, X: np.ndarray, k: int, *, ranking: Ranking = Ranking(), exclude_ids=None,
               subtree: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest items of each query row (the search contract, ``treeseek.search.contract``).

        ``soft`` is one exact inner-product search per segment (``soft_search``); ``combined``, ``flat``,
        ``hierarchy`` and ``cosine`` search level by level through the index's backend; ``hamming`` ranks the
        stored binary codes (``code_search``), and with ``ranking.rerank`` = R re-ranks the R nearest codes by
        ``ranking.rerank_method`` on the stored vectors, returning those distances.

        Parameters
        ----------
        X : array of shape (nq, d)
            Raw query features, as the items were added.
        k : int
            Results per query.
        ranking : Ranking
            What the distances mean (method, alpha, Hamming re-ranking).
        exclude_ids : array of shape (nq,) or (nq, m), optional
            Ids left out of each query's results ("more like this" item).
        subtree : str, optional
            Only the items under this node of the tree (its name), scanned exactly (``subtree_search``).

        Returns
        -------
        D : float64 array of shape (nq, k)
            Distances, ascending; +inf pads rows with fewer than k items.
        I : int64 array of shape (nq, k)
            Item ids; -1 pads.

        Examples
        --------
        >>> import numpy as np
        >>> from treeseek.model import TreeseekModel
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(60, 4)) + np.repeat(np.eye(4)[:3] * 6, 20, axis=0)
        >>> index = TreeIndex(TreeseekModel(hierarchy="average").fit(X, np.repeat([0, 1, 2], 20)))
        >>> ids = index.add(X)
        >>> D, I = index.search(X[:1], 3, ranking=Ranking("combined", alpha=1.0))
        >>> int(I[0, 0]), round(float(D[0, 0]), 6)
        (0, 0.0)
        """
        check_request("this index", self.capabilities, k, ranking)
        self._flush()
        X = self.model.check_dim(X, "queries")
        if subtree is not None:
            node = subtree_node(self.model.hierarchy_, subtree)
            return search_excluding(lambda queries, wanted: subtree_topk(self.segments_, self.model, queries, wanted,
                                                                         ranking, node), X, int(k), exclude_ids)
        return search_excluding(lambda queries, wanted: self._topk(queries, wanted, ranking), X, int(k), exclude_ids)

    def _topk(self, queries: np.ndarray, k: int, ranking: Ranking) -> tuple[np.ndarray, np.ndarray]:
        alpha = ranking.alpha_for(self.model)
        if ranking.method == "hamming":
            return hamming_search(self.segments_, self.model, self.hasher, queries, k, ranking, alpha,
                                  self._method_tree)
        if ranking.method == "soft":
            return soft_topk(self.segments_, self.model, queries, alpha, k)
        tree = self._method_tree(ranking.method)
        weight = hierarchy_weight(ranking.method, alpha, tree)
        leaves = self.model.assign(queries)
        unit = self.model.cosine_units(queries)[0]
        if ranking.method in GROUP_METHODS and self.backend["name"] == "exact":
            return leaf_topk(self.segments_, tree, leaves, unit, alpha, k)
        best_keys, best_ids = no_candidates(len(unit), k)
        for stored in self.segments_:
            keys, ids, _ = hierarchical_topk(stored.segment, stored.ready_backend(), tree, weight, unit, leaves, k)
            best_keys, best_ids = merge_smallest_k(best_keys, best_ids, keys, ids, k)
        return best_keys, best_ids

    def _method_tree(self, method: str) -> Hierarchy:
        cache = self.__dict__.setdefault("_trees", {})
        key = (method, id(self.model))
        if key not in cache:
            cache[key] = method_hierarchy(method, self.model.hierarchy_)
        return cache[key]

    def items(self, ids) -> dict:
        """Unit vector, length, leaf, label and source of each id (all must be in the index)."""
        self._flush()
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = {"vectors": np.zeros((len(ids), self.model.input_dim_)), "norms": np.zeros(len(ids)),
               "leaves": np.zeros(len(ids), np.int64), "labels": np.zeros(len(ids), np.int64),
               "sources": [""] * len(ids)}
        found = np.zeros(len(ids), dtype=bool)
        for stored in self.segments_:
            rows = stored.find(ids)
            for i in np.flatnonzero(rows >= 0):
                row = int(rows[i])
                out["vectors"][i], out["norms"][i] = stored.segment.vectors[row], stored.norms[row]
                out["leaves"][i], out["labels"][i] = stored.segment.leaves[row], stored.labels[row]
                out["sources"][i] = stored.source(row)
            found |= rows >= 0
        if not found.all():
            raise TreeseekError(f"item {ids[~found][0]} is not in the index")
        return out

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | Path, progress: bool = False) -> None:
        """Write new files, then switch the manifest to them in one atomic rename."""
        directory = Path(directory)
        check_target(directory)
        self._flush(progress)
        if len(self.segments_) > MAX_SEGMENTS:
            self.compact(progress)
        write_index(self, directory, progress)

    @classmethod
    def open(cls, directory: str | Path) -> "TreeIndex":
        """Read the manifest, the model and the small per-item arrays; the vectors stay on disk, memory-mapped."""
        return read_index(cls, Path(directory))

    @classmethod
    @contextlib.contextmanager
    def updating(cls, directory: str | Path, *, wait: float = DEFAULT_WAIT_SECONDS) -> Iterator["TreeIndex"]:
        """Open the index for a change: the writer lock is held from the read until the ``save`` inside.

        Parameters
        ----------
        directory : str or Path
            The index directory.
        wait : float
            Seconds to wait for another writer to finish (0: fail at once with one line).

        Yields
        ------
        TreeIndex
            The index as committed when the lock was taken; call ``save(directory)`` before leaving.
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise TreeseekError(f"index directory not found: {directory}")
        with writer_lock(directory, wait):
            yield cls.open(directory)

    def verify(self, progress: bool = False) -> None:
        """Check the checksum of every saved file, the vectors and FAISS structures included."""
        verify_index(self, progress)

def _id_array(ids) -> np.ndarray:
    """Item ids as sorted unique int64; an id no index can hold (beyond int64) is reported as missing."""
    values = [int(i) for i in np.ravel(np.asarray(ids, dtype=object))] if np.ndim(ids) else [int(ids)]
    outside = [i for i in values if not -(2**63) <= i < 2**63]
    if outside:
        raise TreeseekError(f"item {outside[0]} is not in the index")
    return np.unique(np.asarray(values, dtype=np.int64))


def _held(rows: list[np.ndarray], n: int) -> np.ndarray:
    """Whether some segment holds each of n ids alive, from ``_live_rows``."""
    return functools.reduce(np.logical_or, (where >= 0 for where in rows), np.zeros(n, dtype=bool))
