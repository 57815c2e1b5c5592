"""``treeseek train --gaussian``: embed a collection with a frozen backbone, learn a Gaussian latent head on the
features (``gaussian_latent``), and save both as one checkpoint that ``--backbone`` takes."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from treeseek.data.datasets import ImageSet
from treeseek.embed.backbones.backbone import Backbone
from treeseek.embed.checkpoint import save_projection
from treeseek.embed.extraction import extract_features
from treeseek.errors import TreeseekError
from treeseek.training.gaussian_latent import GaussianLatentHead, GaussianTraining

logger = logging.getLogger(__name__)


def train_gaussian_head(images: ImageSet, backbone: Backbone, out: str | Path, *, weights: str | None = None,
                        settings: GaussianTraining = GaussianTraining(), batch_size: int = 64,
                        progress: bool = True) -> GaussianLatentHead:
    """Learn the head on the training split's features (cached in ``out/cache``) and write the checkpoint.

    Parameters
    ----------
    images : ImageSet
        The collection; its ``train`` split when it has one.
    backbone : Backbone
        The frozen network whose features are embedded.
    out : str or Path
        The checkpoint directory.
    weights : str, optional
        The backbone's weights file, as given: the checkpoint loads the backbone from it again.
    settings : GaussianTraining
        The head's hyper-parameters.
    batch_size : int
        Images per forward pass of the backbone.
    progress : bool
        Show progress bars.

    Returns
    -------
    GaussianLatentHead
        The fitted head (its ``history_`` per epoch).
    """
    out = Path(out)
    train = images.split("train") if "train" in set(images.splits.tolist()) else images
    if len(np.unique(train.labels)) < 2:
        raise TreeseekError("Gaussian training needs at least two classes: a class alone has nothing to be told "
                            "apart from")
    features, kept, _ = extract_features(backbone, train, batch_size, out / "cache", progress)
    head = GaussianLatentHead(settings).fit(features, train.labels[kept], progress=progress)
    save_projection(out, backbone, weights, {
        "projection.weight": head.weight_, "projection.bias": head.bias_,
        "head.weight": head.head_weight_, "head.bias": head.head_bias_,
    }, {"class_names": list(train.class_names), "epoch": settings.epochs, **head.describe()})
    logger.info("wrote %s: %d-d embedding, %d sub-classes of %d classes", out, head.weight_.shape[0],
                len(head.subclass_class_), head.n_classes_)
    return head
