"""The parameter object of the image jobs (``run``, ``experiment``, ``train``, ``hash train --end-to-end``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from treeseek.data.collections import load_images
from treeseek.data.datasets import ImageSet


@dataclass(frozen=True)
class ImageJob:
    """Where a job's pictures come from and how they are embedded.

    Parameters
    ----------
    source : Path
        The image folder (one subfolder per class), or a CIFAR / Fashion-MNIST directory.
    kind : str
        ``folder``, ``cifar`` or ``fashion-mnist``.
    split_files : two paths, optional
        TRAIN and TEST lists of ``<class>/<file>`` lines.
    classes, per_class : int, optional
        Keep the first ``classes`` classes and at most ``per_class`` images of each per split.
    seed : int
        For the subsets and any split the collection does not bring.
    backbone, weights : str
        The network that embeds the pictures (a name or a 'treeseek train' directory) and its weights file.
    batch_size : int
        Images per forward pass.
    device : str
        ``auto`` (a GPU when present), ``cpu`` or ``cuda``: for the jobs that train.
    progress : bool
        Show progress bars.

    Examples
    --------
    >>> ImageJob(Path("photos"), per_class=5).backbone
    'efficientnet_lite0'
    """

    source: Path
    kind: str = "folder"
    split_files: Sequence[str] = ()
    classes: int | None = None
    per_class: int | None = None
    seed: int = 0
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    batch_size: int = 64
    device: str = "auto"
    progress: bool = True

    def images(self) -> ImageSet:
        """The collection, with a train and a test split."""
        return load_images(self.source, self.kind, self.split_files, self.classes, self.per_class, self.seed)

    def load_backbone(self):
        from treeseek.embed.backbones import load_backbone  # torch: only when a network is needed

        return load_backbone(self.backbone, self.weights)
