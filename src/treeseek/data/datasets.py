"""Image collections: folders of class subfolders, CIFAR pickles, Fashion-MNIST idx files.

Every dataset is an ``ImageSet``: a list of items (a file path or an in-memory
array), integer labels, class names, and the name of the split each item
belongs to. Files that cannot be decoded are dropped with one warning that
lists them, so a long run never stops in the middle.
"""
from __future__ import annotations

import dataclasses
import gzip
import logging
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from treeseek.data.decoding import IMAGE_SUFFIXES, array_to_image, load_rgb
from treeseek.errors import TreeseekError

logger = logging.getLogger(__name__)

DEFAULT_EXCLUDE = ("BACKGROUND_Google",)  # Caltech-101's clutter folder is not a class


@dataclass
class ImageSet:
    items: list                      # paths (str) or uint8 arrays
    labels: np.ndarray
    class_names: list[str]
    splits: np.ndarray               # split name of every item ("train", "test", "val", ...)
    root: str = ""
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def image(self, i: int):
        item = self.items[i]
        return load_rgb(item) if isinstance(item, str) else array_to_image(item)

    def ids(self) -> np.ndarray:
        if self.items and isinstance(self.items[0], str):
            root = Path(self.root)
            return np.array([str(Path(p).relative_to(root)) if root and Path(p).is_relative_to(root) else p
                             for p in self.items])
        return np.arange(len(self.items))

    def subset(self, mask: np.ndarray) -> "ImageSet":
        index = np.flatnonzero(mask)
        return ImageSet([self.items[i] for i in index], self.labels[index], self.class_names, self.splits[index],
                        self.root, self.skipped)

    def split(self, name: str) -> "ImageSet":
        return self.subset(self.splits == name)

    def relabelled(self, labels: np.ndarray) -> "ImageSet":
        """The same images with other labels (e.g. sub-classes, or each image's own row number)."""
        return dataclasses.replace(self, labels=np.asarray(labels))


def image_folder(
    root: str | Path,
    split_files: dict[str, str | Path] | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    classes: Sequence[str] | None = None,
    max_per_class: int | None = None,
) -> ImageSet:
    """``root/<class>/<image>``; ``split_files`` maps a split name to a file of ``<class>/<image>`` lines.

    Without split files every item is in split ``"all"``. Non-image files are
    ignored; empty class folders are left out with a warning. Items are absolute
    paths, so that an index built from them finds its pictures from any directory.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise TreeseekError(f"image folder not found: {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in exclude and not p.name.startswith("."))
    if classes is not None:
        missing = sorted(set(classes) - {p.name for p in folders})
        if missing:
            raise TreeseekError(f"{root}: no folder for class(es) {', '.join(missing[:5])}")
        folders = [p for p in folders if p.name in set(classes)]
    files_by_class = {}
    empty = []
    for folder in folders:
        files = sorted(str(p) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if max_per_class is not None:
            files = files[:max_per_class]
        if files:
            files_by_class[folder.name] = files
        else:
            empty.append(folder.name)
    if empty:
        logger.warning("left out %d class folder(s) without images: %s", len(empty), ", ".join(empty[:10]))
    if not files_by_class:
        raise TreeseekError(f"{root}: no class folder with images in it")
    names = sorted(files_by_class)
    items = [f for name in names for f in files_by_class[name]]
    labels = np.array([i for i, name in enumerate(names) for _ in files_by_class[name]], dtype=np.int64)
    splits = np.full(len(items), "all", dtype=object)
    if split_files:
        where = {str(Path(p).relative_to(root)): i for i, p in enumerate(items)}
        splits[:] = ""
        for split_name, split_path in split_files.items():
            try:
                lines = Path(split_path).read_text().split()
            except OSError as exc:
                raise TreeseekError(f"split file {split_path}: {exc}") from None
            for line in lines:
                if line in where:
                    splits[where[line]] = split_name
        keep = splits != ""
        items = [item for item, k in zip(items, keep) if k]
        labels, splits = labels[keep], splits[keep]
    return ImageSet(items, labels, names, splits.astype(str), str(root))


def image_files(paths: Sequence[str | Path]) -> list[str]:
    """The absolute paths of the given image files and of every image file below the given folders, sorted
    per folder (files given one by one are taken whatever their suffix: decoding decides)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(str(p.absolute()) for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found.append(str(path.absolute()))
        else:
            raise TreeseekError(f"no such image file or folder: {path}")
    return list(dict.fromkeys(found))  # a file named twice, or inside two of the folders, counts once


def split_folders(root: str | Path, names: Sequence[str] = ("train", "test")) -> ImageSet:
    """``root/<split>/<class>/<image>``: one image folder per split, with the same classes."""
    parts = [image_folder(Path(root) / name) for name in names]
    classes = parts[0].class_names
    for name, part in zip(names, parts):
        if part.class_names != classes:
            raise TreeseekError(f"{root}/{name} has other classes than {root}/{names[0]}")
    return ImageSet([item for part in parts for item in part.items], np.concatenate([p.labels for p in parts]),
                    classes, np.concatenate([np.full(len(p), n) for n, p in zip(names, parts)]),
                    str(Path(root).absolute()))


def stratified_split(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A mask choosing about ``fraction`` of each class (at least one item, never all of a class of 2+)."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(fraction * len(members)))
        count = min(max(count, 1), len(members) - 1) if len(members) > 1 else 0
        chosen[members[:count]] = True
    return chosen


class _SafeUnpickler(pickle.Unpickler):
    """Only the types a CIFAR batch holds: builtins and numpy arrays; anything else is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            return _SafeUnpickler(handle, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise TreeseekError(f"{path} is not a CIFAR python batch: {exc}") from None


def cifar(root: str | Path) -> ImageSet:
    """CIFAR-10 (``data_batch_*``, ``test_batch``) or CIFAR-100 (``train``, ``test``) python pickles."""
    root = Path(root)
    if (root / "data_batch_1").is_file():
        parts = {"train": sorted(root.glob("data_batch_*")), "test": [root / "test_batch"]}
        meta, label_key, names_key = root / "batches.meta", "labels", "label_names"
    elif (root / "train").is_file():
        parts = {"train": [root / "train"], "test": [root / "test"]}
        meta, label_key, names_key = root / "meta", "fine_labels", "fine_label_names"
    else:
        raise TreeseekError(f"{root}: no CIFAR python batches (data_batch_1 or train) found")
    names = [str(n) for n in _load_cifar_batch(meta)[names_key]]
    items, labels, splits = [], [], []
    for split, files in parts.items():
        for path in files:
            batch = _load_cifar_batch(path)
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            items.extend(list(data))
            labels.extend(batch[label_key])
            splits.extend([split] * len(data))
    return ImageSet(items, np.asarray(labels, dtype=np.int64), names, np.asarray(splits), str(root))


FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot"]
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise TreeseekError(f"{path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise TreeseekError(f"{path} is not an unsigned-byte idx file")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise TreeseekError(f"{path} is truncated")
    return body.reshape(shape)


def fashion_mnist(root: str | Path = FASHION_MNIST_DIR) -> ImageSet:
    """The original idx files (``train-images-idx3-ubyte[.gz]`` and friends)."""
    root = Path(root)

    def find(stem: str) -> Path:
        for candidate in (root / stem, root / f"{stem}.gz"):
            if candidate.is_file():
                return candidate
        raise TreeseekError(f"{root}: {stem}[.gz] not found (apt-get install dataset-fashion-mnist provides it)")

    items, labels, splits = [], [], []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(find(f"{prefix}-images-idx3-ubyte"))
        targets = _read_idx(find(f"{prefix}-labels-idx1-ubyte"))
        items.extend(list(images))
        labels.extend(targets.tolist())
        splits.extend([split] * len(images))
    return ImageSet(items, np.asarray(labels, dtype=np.int64), list(FASHION_MNIST_CLASSES), np.asarray(splits),
                    str(root))
