"""Code that the reliability tests run in other processes: index writers, and an extraction to be killed.

Kept apart from the test module so that a spawned worker imports it without pytest's fixtures, and so that
``python tests/reliability_workers.py extract ...`` runs the extraction as a process of its own.
"""
from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from treeseek.embed.backbones.registry import Backbone
from treeseek.index import TreeIndex

HOLD_SECONDS = 0.15  # a writer keeps the index open this long before saving: without the lock both would read first


# ------------------------------------------------------------------------------------------ shared by the tests
def cli(*args, capsys):
    """``treeseek ARGS`` in this process, as its entry point runs it: (exit status, stdout, stderr)."""
    from treeseek.apps.cli.main import main

    old = sys.argv
    sys.argv = ["treeseek", *map(str, args)]
    try:
        main()
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(status, err, words=""):
    """Exit status 2 and one ``error:`` line (after any ``warning:`` lines), never a traceback."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "Traceback" not in err


def live_sources(directory) -> dict[str, int]:
    """Source -> id of every item of the saved index that is not removed."""
    index = TreeIndex.open(directory)
    return {stored.source(int(row)): int(stored.segment.ids[row])
            for stored in index.stored_segments() for row in stored.live_rows_by_id()}


def fresh_copy(index_directory, tmp_path, repeat) -> str:
    target = Path(tmp_path) / f"ix{repeat}"
    shutil.copytree(index_directory, target)
    return str(target)


# ------------------------------------------------------------------------------------------------ index writers
def add_items(directory: str, features: np.ndarray, prefix: str, barrier) -> None:
    barrier.wait()
    with TreeIndex.updating(directory, wait=60) as index:
        time.sleep(HOLD_SECONDS)
        index.add(features, sources=[f"{prefix}{i}" for i in range(len(features))])
        index.save(directory)


def remove_items(directory: str, ids: list[int], barrier) -> None:
    barrier.wait()
    with TreeIndex.updating(directory, wait=60) as index:
        time.sleep(HOLD_SECONDS)
        index.remove(ids)
        index.save(directory)


def compact_index(directory: str, barrier) -> None:
    barrier.wait()
    with TreeIndex.updating(directory, wait=60) as index:
        time.sleep(HOLD_SECONDS)
        index.compact()
        index.save(directory)


def unlocked_add(directory: str, features: np.ndarray, prefix: str, barrier) -> str:
    """The pattern that lost data: open, change, save, with no lock held over the cycle. Returns what happened."""
    barrier.wait()
    index = TreeIndex.open(directory)
    barrier.wait()  # both have read the same state, however busy the machine
    index.add(features, sources=[f"{prefix}{i}" for i in range(len(features))])
    try:
        index.save(directory)
    except ValueError as refused:
        return f"refused: {refused}"
    return "saved"


# ------------------------------------------------------------------------------------------ a tiny real backbone
class TinyNetwork(nn.Module):
    """A fixed random projection of 8 x 8 pooled pixels, computed one image at a time so that a row never
    depends on which other images share its batch; slow enough that an extraction can be killed midway."""

    def __init__(self, dim: int = 8, seconds_per_batch: float = 0.0):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.projection = nn.Parameter(torch.randn(3 * 8 * 8, dim, generator=generator), requires_grad=False)
        self.seconds_per_batch = seconds_per_batch

    def features(self, x):
        time.sleep(self.seconds_per_batch)
        pooled = nn.functional.adaptive_avg_pool2d(x, 8).flatten(1)
        return torch.stack([row @ self.projection for row in pooled])


def tiny_backbone(seconds_per_batch: float = 0.0) -> Backbone:
    return Backbone("tiny", TinyNetwork(seconds_per_batch=seconds_per_batch), input_size=32, resize_size=32,
                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), feature_dim=8, weights_digest="tiny-0")


def tiny_images(folder: Path, count: int) -> list[str]:
    """``count`` distinct small PNG files (made once; the same files on every call)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    paths = []
    for i in range(count):
        path = folder / f"image_{i:03d}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def image_set(paths: list[str]):
    from treeseek.data.datasets import ImageSet

    return ImageSet(paths, np.zeros(len(paths), np.int64), ["all"], np.full(len(paths), "train"))


if __name__ == "__main__" and sys.argv[1] == "extract":  # extract FOLDER COUNT CACHE: the process to be killed
    from treeseek.embed.extraction import extract_features

    files = tiny_images(Path(sys.argv[2]), int(sys.argv[3]))
    # 15 batches of half a second: a busy test process still sees a partial cache long before the end
    extract_features(tiny_backbone(seconds_per_batch=0.5), image_set(files), batch_size=4, cache_dir=sys.argv[4],
                     progress=False, checkpoint_seconds=0)
