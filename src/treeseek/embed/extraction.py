"""Penultimate-layer features for an image set, in batches, cached on disk.

The cache is one file per backbone + preprocessing (``Backbone.cache_key``),
holding a fingerprint per image (path, size and modification time, or a hash
of the pixels for in-memory images) and its feature row. A rerun reuses every
row whose fingerprint still matches and computes only new or changed images.
What has been computed is committed to the cache as extraction goes (every
``checkpoint_seconds``, atomically), so an extraction killed near its end
resumes where it stopped instead of starting again.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from treeseek.data.datasets import ImageSet
from treeseek.data.decoding import UnreadableImage
from treeseek.embed.backbones import Backbone
from treeseek.errors import TreeseekError
from treeseek.io.files import atomic_save_npz, load_npz

logger = logging.getLogger(__name__)

CHECKPOINT_SECONDS = 30.0  # rewriting the cache costs a fraction of a second per 10,000 rows


def fingerprint(item) -> str:
    if isinstance(item, str):
        stat = os.stat(item)
        return f"{os.path.abspath(item)}|{stat.st_size}|{stat.st_mtime_ns}"
    return "pixels:" + hashlib.sha1(np.ascontiguousarray(item).tobytes()).hexdigest()


def extract_features(
    backbone: Backbone,
    images: ImageSet,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(features N' x D float32, mask of the N items kept, stats); unreadable images are dropped with a warning.

    With ``cache_dir``, the rows computed so far are committed to the cache at least every
    ``checkpoint_seconds`` (0: after every batch) and at the end."""
    prints = [fingerprint(item) for item in images.items]
    cached: dict[str, np.ndarray] = {}
    cache_path = Path(cache_dir) / f"{backbone.cache_key()}.npz" if cache_dir else None
    if cache_path is not None and cache_path.is_file():
        try:
            stored = load_npz(cache_path, "feature cache")
            cached = dict(zip(stored["fingerprints"].tolist(), stored["features"]))
        except (TreeseekError, KeyError):
            logger.warning("ignoring unreadable feature cache %s", cache_path)
    todo = [i for i, p in enumerate(prints) if p not in cached]
    computed, bad = {}, []
    started = last_commit = time.perf_counter()
    network = backbone.network.eval().to(device)
    with tqdm(total=len(todo), desc=f"features ({backbone.name})", unit="img", disable=not progress or not todo,
              leave=False) as bar:
        for start in range(0, len(todo), batch_size):
            batch, rows = [], []
            for i in todo[start : start + batch_size]:
                try:
                    batch.append(backbone.preprocess(images.image(i)))
                    rows.append(i)
                except UnreadableImage:
                    bad.append(i)
            if batch:
                with torch.inference_mode():
                    output = network.features(torch.from_numpy(np.stack(batch)).to(device)).float().cpu().numpy()
                for i, row in zip(rows, output):
                    computed[prints[i]] = row
            bar.update(len(todo[start : start + batch_size]))
            if cache_path is not None and computed and time.perf_counter() - last_commit >= checkpoint_seconds:
                _commit(cache_path, cached, computed)
                last_commit = time.perf_counter()
    seconds = time.perf_counter() - started
    if bad:
        names = [str(images.items[i]) if isinstance(images.items[i], str) else f"item {i}" for i in bad]
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        logger.warning("skipped %d unreadable image(s): %s", len(bad), shown)
    if cache_path is not None and computed:
        _commit(cache_path, cached, computed)
    keep = np.ones(len(prints), dtype=bool)
    keep[bad] = False
    lookup = {**cached, **computed}
    rows = [lookup[prints[i]] for i in np.flatnonzero(keep)]
    features = np.stack(rows).astype(np.float32) if rows else np.zeros((0, backbone.feature_dim), np.float32)
    stats = {"computed": len(computed), "from_cache": int(keep.sum()) - len(computed), "skipped": len(bad),
             "seconds": seconds, "images_per_second": len(computed) / seconds if computed and seconds else None}
    return features, keep, stats


def _commit(cache_path: Path, cached: dict, computed: dict) -> None:
    """Replace the cache file with every row known so far (atomically: a kill leaves the old or the new one)."""
    merged = {**cached, **computed}
    atomic_save_npz(cache_path, {"fingerprints": np.array(list(merged)),
                                 "features": np.stack(list(merged.values())).astype(np.float32)})
