"""Feature files: ``.npz`` with ``features`` (N x d), ``labels`` (N ints), and
optional ``class_names`` (K strings) and ``ids`` (N strings or ints).

Everything read here is validated, so the rest of treeseek can trust it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.io.files import atomic_save_npz, load_npz


@dataclass
class FeatureSet:
    features: np.ndarray                 # N x d, finite
    labels: np.ndarray | None = None     # N ints in [0, K) or None when unknown
    class_names: list[str] | None = None
    ids: np.ndarray | None = None        # N ids (strings or ints); row numbers when absent
    source: str = "features"

    def __post_init__(self) -> None:
        self.features = check_features(self.features, self.source)
        n = len(self.features)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,):
                raise TreeseekError(f"{self.source}: labels have shape {labels.shape}, expected ({n},)")
            if labels.dtype.kind not in "iu":
                if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
                    labels = labels.astype(np.int64)
                else:
                    raise TreeseekError(f"{self.source}: labels must be integers, got {labels.dtype}")
            labels = labels.astype(np.int64)
            if n and labels.min() < 0:
                raise TreeseekError(f"{self.source}: label {int(labels.min())} is negative")
            if self.class_names is not None and n and labels.max() >= len(self.class_names):
                raise TreeseekError(
                    f"{self.source}: label {int(labels.max())} is out of range for {len(self.class_names)} class names"
                )
            self.labels = labels
        if self.class_names is not None:
            self.class_names = [str(name) for name in self.class_names]
            if len(set(self.class_names)) != len(self.class_names):
                raise TreeseekError(f"{self.source}: class_names has duplicates")
        if self.ids is not None:
            self.ids = np.asarray(self.ids)
            if self.ids.shape != (n,):
                raise TreeseekError(f"{self.source}: ids have shape {self.ids.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def row_ids(self) -> np.ndarray:
        return self.ids if self.ids is not None else np.arange(len(self))

    def require_labels(self) -> np.ndarray:
        if self.labels is None:
            raise TreeseekError(f"{self.source}: this command needs labels, and the file has none")
        return self.labels


# Larger values make squared lengths, variances and covariances overflow float64 over big collections
# (and lengths overflow the float32 the index stores); no network's features come near it.
MAX_FEATURE_MAGNITUDE = 1e15


def check_features(features, source: str = "features") -> np.ndarray:
    """An N x d float array with N, d >= 1, no NaN or infinity, and no value beyond ``MAX_FEATURE_MAGNITUDE``."""
    array = np.asarray(features)
    if array.dtype.kind not in "fiu":
        raise TreeseekError(f"{source}: features must be numbers, got {array.dtype}")
    if array.ndim != 2:
        raise TreeseekError(f"{source}: features must be a 2-D matrix, got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise TreeseekError(f"{source}: features are empty (shape {array.shape})")
    if array.dtype.kind != "f":
        array = array.astype(np.float32)
    # Two passes without a temporary: NaN and infinity propagate to the smallest or largest value; only when
    # one of them is bad is every value looked at, to name the first bad row.
    smallest, largest = float(array.min()), float(array.max())
    if not (np.isfinite(smallest) and np.isfinite(largest)):
        row = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise TreeseekError(f"{source}: features contain NaN or infinite values (first in row {row})")
    if max(-smallest, largest) > MAX_FEATURE_MAGNITUDE:
        row = int(np.flatnonzero((np.abs(array) > MAX_FEATURE_MAGNITUDE).any(axis=1))[0])
        raise TreeseekError(f"{source}: features hold values beyond ±{MAX_FEATURE_MAGNITUDE:g} (first in row {row}, "
                            f"{np.abs(array[row]).max():.3g}); rescale them")
    return array


def load_features(path: str | Path, require_labels: bool = True) -> FeatureSet:
    arrays = load_npz(path, "feature file")
    if "features" not in arrays:
        raise TreeseekError(f"{path}: no 'features' array (found: {', '.join(sorted(arrays)) or 'nothing'})")
    labels = arrays.get("labels")
    if labels is None and require_labels:
        raise TreeseekError(f"{path}: no 'labels' array")
    names = arrays.get("class_names")
    return FeatureSet(
        features=arrays["features"],
        labels=labels,
        class_names=None if names is None else [str(n) for n in names.tolist()],
        ids=arrays.get("ids"),
        source=str(path),
    )


def save_features(
    path: str | Path,
    features: np.ndarray,
    labels: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    ids: np.ndarray | None = None,
) -> None:
    arrays: dict[str, np.ndarray] = {"features": np.asarray(features)}
    if labels is not None:
        arrays["labels"] = np.asarray(labels, dtype=np.int64)
    if class_names is not None:
        arrays["class_names"] = np.asarray([str(n) for n in class_names])
    if ids is not None:
        arrays["ids"] = np.asarray(ids)
    atomic_save_npz(path, arrays)


def align_labels(data: FeatureSet, model_class_names: Sequence[str]) -> np.ndarray | None:
    """The labels of ``data`` expressed in the model's class order."""
    if data.labels is None:
        return None
    if data.class_names is None:
        if len(data) and data.labels.max() >= len(model_class_names):
            raise TreeseekError(
                f"{data.source}: label {int(data.labels.max())} is unknown to the model ({len(model_class_names)} classes)"
            )
        return data.labels
    position = {name: i for i, name in enumerate(model_class_names)}
    unknown = sorted({data.class_names[label] for label in np.unique(data.labels)} - set(position))
    if unknown:
        raise TreeseekError(f"{data.source}: class(es) unknown to the model: {', '.join(unknown[:5])}")
    mapping = np.array([position.get(name, -1) for name in data.class_names])
    return mapping[data.labels]
