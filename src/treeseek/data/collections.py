"""An image collection as the jobs read it: a folder or a dataset file, always with a train and a test split."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from treeseek.data.datasets import ImageSet, cifar, fashion_mnist, image_folder, split_folders, stratified_split
from treeseek.errors import TreeseekError

READERS: dict[str, Callable[[str | Path, Sequence[str]], ImageSet]] = {}


def register_reader(kind: str):
    """Register a function ``(source, split_files) -> ImageSet`` as the reader of a dataset kind."""
    def register(reader):
        READERS[kind] = reader
        return reader
    return register


@register_reader("folder")
def _folder(source: str | Path, split_files: Sequence[str]) -> ImageSet:
    """One subfolder per class; splits from two list files, train.txt/test.txt beside it, or train/ and test/."""
    splits = {}
    if split_files:
        if len(split_files) != 2:
            raise TreeseekError("--split-files takes two files: TRAIN,TEST")
        splits = {"train": split_files[0], "test": split_files[1]}
    else:
        root = Path(source)
        for candidate in (root, root.parent):
            if (candidate / "train.txt").is_file() and (candidate / "test.txt").is_file():
                splits = {"train": candidate / "train.txt", "test": candidate / "test.txt"}
                break
    root = Path(source)
    if not splits and (root / "train").is_dir() and (root / "test").is_dir():
        return split_folders(root)  # root/train/<class>/..., root/test/<class>/... (CIFAR-10 as files)
    return image_folder(source, splits or None)


@register_reader("cifar")
def _cifar(source: str | Path, split_files: Sequence[str]) -> ImageSet:
    return cifar(source)


@register_reader("fashion-mnist")
def _fashion_mnist(source: str | Path, split_files: Sequence[str]) -> ImageSet:
    return fashion_mnist(source)


def load_images(source: str | Path, kind: str = "folder", split_files: Sequence[str] = (),
                classes: int | None = None, per_class: int | None = None, seed: int = 0) -> ImageSet:
    """Read a collection and make sure it has a ``train`` and a ``test`` split (a stratified 80/20 one when it
    brings none).

    Parameters
    ----------
    source : str or Path
        The folder (one subfolder per class) or the dataset's directory.
    kind : str
        ``folder``, ``cifar`` or ``fashion-mnist`` (``READERS``).
    split_files : two paths, optional
        TRAIN and TEST lists of ``<class>/<file>`` lines.
    classes, per_class : int, optional
        Keep the first ``classes`` classes, and at most ``per_class`` images of each per split (drawn with
        ``seed``).

    Returns
    -------
    ImageSet
    """
    if kind not in READERS:
        raise TreeseekError(f"unknown dataset kind {kind!r}: {', '.join(READERS)}")
    images = _subset(READERS[kind](source, split_files), classes, per_class, seed)
    if not {"train", "test"} <= set(images.splits.tolist()):
        is_test = stratified_split(images.labels, 0.2, seed)
        images.splits = np.where(is_test, "test", "train")
    return images


def _subset(images: ImageSet, classes: int | None, per_class: int | None, seed: int) -> ImageSet:
    """The first ``classes`` classes and at most ``per_class`` images of each per split, drawn at random.

    Each class's draw has its own generator, seeded by ``seed``, the class's name and the split's, so that it does
    not depend on the other classes: adding, removing or renaming another folder leaves it as it was."""
    keep = np.ones(len(images), dtype=bool)
    if classes is not None:
        keep &= images.labels < classes
    if per_class is not None:
        chosen = np.zeros(len(images), dtype=bool)
        for split in np.unique(images.splits):
            for label in np.unique(images.labels[keep]):
                members = np.flatnonzero(keep & (images.labels == label) & (images.splits == split))
                rng = np.random.default_rng([seed, _stable_number(images.class_names[label]), _stable_number(split)])
                chosen[rng.permutation(members)[:per_class]] = True
        keep &= chosen
    result = images.subset(keep)
    if classes is not None:
        result.class_names = images.class_names[:classes]
    return result


def _stable_number(text: str) -> int:
    """A number that depends on ``text`` alone, the same in every process (unlike ``hash``)."""
    return zlib.crc32(str(text).encode("utf-8"))
