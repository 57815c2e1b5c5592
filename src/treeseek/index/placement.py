"""Placing items in an index: from raw features to what a segment stores of them, and back.

Each item gets its leaf and the sparse posteriors that the soft ranking stores (``TreeseekModel.place``), and
its unit vector in the model's cosine space (in the index's storage dtype) with its length, which restores the
raw features when the model is refitted or the posteriors must be computed again.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from treeseek.model import TreeseekModel
from treeseek.search.soft_groups import SoftPosteriors

ADD_CHUNK = 1024  # rows placed at once by one thread: their float64 temporaries (2 MB at 256-d) stay in its cache
RESTORE_CHUNK = 1 << 14  # stored rows restored to raw features at once


def soft_settings(model: TreeseekModel) -> dict:
    """The model settings that the stored posteriors depend on."""
    return {"temperature": float(model.temperature), "top_m": None if model.top_m is None else int(model.top_m)}


def row_chunks(n: int, size: int | None = None) -> list[slice]:
    size = ADD_CHUNK if size is None else size
    return [slice(first, first + size) for first in range(0, n, size)]


def place_items(model: TreeseekModel, shape: tuple, dtype, raw_rows, checked: bool = False,
                progress: bool = False) -> dict:
    """The placement arrays of n items whose raw features ``raw_rows(rows)`` gives, ``ADD_CHUNK`` rows at a time:
    one pass over the class distances gives each item's leaf and the posteriors that the soft ranking stores,
    and its unit vector in the model's cosine space (stored in ``dtype``) with its length, which restores it
    (the stored copy is rounded). ``checked``: the features were checked already."""
    n, width = shape[0], model.posterior_width_
    placed = {"unit": np.empty(shape, dtype=dtype), "norms": np.empty(n, dtype=np.float32),
              "leaves": np.empty(n, dtype=np.int64),
              # in the dtype a segment stores them in: sorting them into one moves half the bytes of int32
              "soft_classes": np.empty((n, width), dtype=SoftPosteriors.classes_dtype(model.n_leaves_)),
              "soft_weights": np.empty((n, width), dtype=np.float32), "soft_state": soft_settings(model)}
    chunks = row_chunks(n)

    def place_chunk(rows: slice) -> None:  # chunks are disjoint rows of the arrays: threads may write them at once
        raw = raw_rows(rows)  # as given: placing and the unit rows each widen it to float64 their own way
        placed["leaves"][rows], placed["soft_classes"][rows], placed["soft_weights"][rows] = \
            model.place(raw, check_input=not checked)
        placed["norms"][rows] = model.cosine_units(raw, out=placed["unit"][rows])[1]

    # Each thread places and normalises whole chunks on one BLAS thread, as ``place`` does with its blocks: the
    # normalisation then runs beside the placing of other chunks, not after it on one core.
    workers = min(os.cpu_count() or 1, len(chunks) // 2)
    with threadpool_limits(1 if workers > 1 else None, user_api="blas"), \
            ThreadPoolExecutor(max(workers, 1), "placing") as pool:
        for _ in tqdm(pool.map(place_chunk, chunks), total=len(chunks), desc="placing items", disable=not progress):
            pass
    return placed


def replace_placement(old: TreeseekModel, new: TreeseekModel, part: dict) -> None:
    """The part's leaves, posteriors and stored vectors under ``new``, from its raw features under ``old``: the
    unit vectors move to the new model's cosine space."""
    part.update(place_items(new, np.shape(part["unit"]), part["unit"].dtype,
                            lambda rows: restored_features(old, part["unit"][rows], part["norms"][rows])))


def restored_features(model: TreeseekModel, unit: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """The original feature vectors of stored rows: unit rows times their lengths, back from the model's cosine
    space."""
    return model.features_from_cosine(np.asarray(unit, dtype=np.float64) * np.asarray(norms, np.float64)[:, None])


def restored_placement(model: TreeseekModel, unit: np.ndarray,
                       norms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``model.place`` of stored rows, from their unit vectors times their lengths (in the model's cosine space),
    ``RESTORE_CHUNK`` rows at a time: ``(leaves, classes, weights)``."""
    parts = [model.place(restored_features(model, unit[rows], norms[rows]))
             for rows in row_chunks(len(unit), RESTORE_CHUNK)]
    if not parts:
        width = model.posterior_width_
        return np.zeros(0, np.int64), np.zeros((0, width), np.int64), np.zeros((0, width))
    return tuple(np.concatenate(column) for column in zip(*parts))


def encoded_part(model: TreeseekModel, hasher, part: dict) -> np.ndarray:
    """The binary codes of a part's items, from their restored features, ``RESTORE_CHUNK`` rows at a time."""
    return np.concatenate([hasher.encode(restored_features(model, part["unit"][rows], part["norms"][rows]))
                           for rows in row_chunks(len(part["ids"]), RESTORE_CHUNK)]
                          or [np.zeros((0, hasher.bits // 8), np.uint8)])
