"""Batches of preprocessed images from worker processes, with augmentation that does not depend on them.

Each image's flip and rotation come from a generator seeded by (seed, epoch, image), so a run gives
the same batches whether it decodes in 0 or 16 workers. Unreadable images are dropped from their batch.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from treeseek.data.datasets import ImageSet
from treeseek.data.decoding import UnreadableImage
from treeseek.embed.backbones.backbone import Backbone


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The paper's training augmentation: a random horizontal flip and a rotation within +-30 degrees."""
    if rng.random() < 0.5:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image.rotate(float(rng.uniform(-30, 30)), resample=Image.BILINEAR)


class _Images(torch.utils.data.Dataset):
    def __init__(self, images: ImageSet, backbone: Backbone, seed: int | None, epoch: int):
        self.images, self.backbone, self.seed, self.epoch = images, backbone, seed, epoch

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        try:
            picture = self.images.image(int(i))
        except UnreadableImage:
            return None
        if self.seed is not None:
            picture = augment(picture, np.random.default_rng((self.seed, self.epoch, int(i))))
        return torch.from_numpy(self.backbone.preprocess(picture)), int(self.images.labels[i])


def _collate(batch):
    batch = [item for item in batch if item is not None]
    if not batch:
        return None, None
    return torch.stack([x for x, _ in batch]), torch.as_tensor([y for _, y in batch], dtype=torch.long)


def default_workers(device: str) -> int:
    """Decoding workers: none on the CPU, where they would take cores from the network; several for a GPU."""
    return 0 if device == "cpu" else min(8, max(1, (os.cpu_count() or 2) - 1))


def image_batches(images: ImageSet, backbone: Backbone, order, batch_size: int, workers: int = 0,
                  augment_seed: int | None = None, epoch: int = 0, pin_memory: bool = False):
    """(inputs, labels) batches over ``order``; augmented when ``augment_seed`` is given."""
    return torch.utils.data.DataLoader(_Images(images, backbone, augment_seed, epoch), batch_size=batch_size,
                                       sampler=list(map(int, order)), num_workers=workers, collate_fn=_collate,
                                       pin_memory=pin_memory)
