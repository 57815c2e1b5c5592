"""What an external inner-product engine stores and is asked, for treeseek's two combined rankings.

Both ``soft`` and ``combined`` rank by D = D_cos + alpha * D_H = (1 + alpha) - <query vector, item vector>
(``treeseek.search.inner_product``, whose ``distances_from_similarities`` recovers D): an item is [x̂, Gᵀp], a query [x̂, alpha Gᵀp], where p is the class
posterior (``soft``) or the one-hot leaf (``combined``, the paper's). Item vectors do not depend on alpha, so
one collection serves every alpha; they do depend on the fitted model, which ``model_fingerprint`` names.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterator, NamedTuple

import numpy as np

from treeseek import choices
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.index.soft_search import segment_vectors
from treeseek.model import TreeseekModel
from treeseek.search.inner_product import augment, augment_leaves, tree_factor

ENGINE_METHODS = choices.ENGINE_METHODS


class ItemBatch(NamedTuple):
    ids: np.ndarray        # int64
    vectors: np.ndarray    # float32, one augmented vector per item
    labels: np.ndarray     # class index, -1 when unknown
    sources: list[str]


def check_method(method: str) -> str:
    if method not in ENGINE_METHODS:
        raise TreeseekError(f"an inner-product engine ranks with {' or '.join(ENGINE_METHODS)}; got {method!r}")
    return method


def vector_dim(model: TreeseekModel) -> int:
    """Length of the augmented vectors: the features plus one entry per tree node."""
    return model.input_dim_ + tree_factor(model.hierarchy_).shape[1]


def model_fingerprint(model: TreeseekModel, method: str) -> str:
    """A digest of everything the item vectors of ``method`` depend on: what was pushed under another
    fingerprint must not be searched with this model."""
    digest = hashlib.sha256()
    described = {"method": check_method(method), "classes": model.class_names_, "tree": model.hierarchy_.to_dict(),
                 "cosine": model.cosine}
    if method == "soft":
        described.update(temperature=model.temperature, top_m=model.top_m)
    digest.update(json.dumps(described, sort_keys=True).encode())
    arrays = {**model.pca_.to_arrays(), **model.gaussians_.to_arrays()}
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:32]


def item_batches(index: TreeIndex, method: str, rows_per_batch: int,
                 only: np.ndarray | None = None) -> Iterator[ItemBatch]:
    """Every live item of the index (or those whose ids are in ``only``), in batches of augmented vectors."""
    hard = check_method(method) == "combined"
    factor = tree_factor(index.model.hierarchy_)
    for stored in index.stored_segments():
        rows = stored.live_rows_by_id()
        if only is not None:
            rows = rows[np.isin(stored.segment.ids[rows], only)]
        for start in range(0, len(rows), rows_per_batch):
            part = rows[start : start + rows_per_batch]
            yield ItemBatch(stored.segment.ids[part], segment_vectors(stored, index.model, factor, part, hard),
                            stored.labels[part].astype(np.int64), [stored.source(int(row)) for row in part])


def live_ids(index: TreeIndex) -> np.ndarray:
    """The ids of every item not removed, sorted."""
    segments = index.stored_segments()
    return np.sort(np.concatenate([s.segment.ids[s.live_rows_by_id()] for s in segments] or [np.zeros(0, np.int64)]))


def query_vectors(model: TreeseekModel, queries: np.ndarray, method: str, alpha: float) -> np.ndarray:
    """The augmented query vectors of raw query features."""
    queries = model.check_dim(queries, "queries")
    factor = tree_factor(model.hierarchy_)
    unit = model.cosine_units(queries)[0]  # as the index stores its items
    if check_method(method) == "combined":
        return augment_leaves(unit, model.assign(queries), factor, alpha)
    return augment(unit, model.posteriors(queries), factor, alpha)
