"""A searchable index built from images: a ``TreeIndex`` that also knows its backbone.

The backbone's name, weights path and weights digest are kept in the index
manifest (``extra``), so queries are embedded by the very network that
embedded the collection. Collections held in memory rather than in files
(CIFAR, Fashion-MNIST) keep their pixels as an attachment, for thumbnails.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from treeseek.errors import TreeseekError
from treeseek.index import DEFAULT_WAIT_SECONDS, TreeIndex, is_index, read_manifest
from treeseek.model import TreeseekModel

FEATURE_CACHE = "feature-cache"  # folder of an index directory: features of images being added, until saved

if TYPE_CHECKING:  # the backbones import torch: loaded only when an image is to be embedded
    from treeseek.embed.backbones import Backbone


class ImageIndex:
    def __init__(self, index: TreeIndex, backbone_spec: dict, backbone: Backbone | None = None):
        """``backbone``: the network the spec describes, when it is already loaded (else loaded on first use)."""
        self.index, self.backbone_spec = index, backbone_spec
        self._backbone = backbone

    @property
    def model(self) -> TreeseekModel:
        return self.index.model

    @classmethod
    def build(cls, model: TreeseekModel, backbone: Backbone, weights: str | None, features: np.ndarray,
              sources: np.ndarray, labels: np.ndarray, pixels: np.ndarray | None = None,
              dtype: str = "float32", backend: str = "exact", **backend_params) -> "ImageIndex":
        """Items get ids 0..N-1 in the given order (so row i of ``pixels`` is item i)."""
        spec = {**backbone.describe(), "weights": str(Path(weights).resolve()) if weights else None}
        index = TreeIndex(model, dtype=dtype, backend=backend, **backend_params)
        index.add(features, labels, [str(s) for s in sources])
        if pixels is not None:
            index.attachments_["pixels"] = np.asarray(pixels)
        return cls(index, spec, backbone)

    def save(self, directory: str | Path, progress: bool = False) -> None:
        self.index.extra_["backbone"] = self.backbone_spec
        self.index.save(directory, progress)

    @classmethod
    def load(cls, directory: str | Path) -> "ImageIndex":
        return cls._of(TreeIndex.open(directory), directory)

    @classmethod
    @contextlib.contextmanager
    def updating(cls, directory: str | Path, *, wait: float = DEFAULT_WAIT_SECONDS) -> Iterator["ImageIndex"]:
        """``TreeIndex.updating`` for an index of images: the writer lock is held from the read to the save."""
        with TreeIndex.updating(directory, wait=wait) as index:
            yield cls._of(index, directory)

    @classmethod
    def _of(cls, index: TreeIndex, directory: str | Path) -> "ImageIndex":
        if "backbone" not in index.extra_:
            raise TreeseekError(f"{directory} is an index of feature vectors, not of images (it has no backbone)")
        return cls(index, index.extra_["backbone"])

    @staticmethod
    def is_index(directory: str | Path) -> bool:
        return is_index(directory)

    @staticmethod
    def holds_images(directory: str | Path) -> bool:
        return "backbone" in (read_manifest(Path(directory)).get("extra") or {})

    def thumbnail(self, item_id: int, source: str):
        """The stored image of an item: its pixels, or its file; None when neither is there."""
        from treeseek.data.decoding import UnreadableImage, array_to_image, load_rgb

        pixels = self.index.attachments_.get("pixels")
        if pixels is not None and 0 <= item_id < len(pixels):
            return array_to_image(np.asarray(pixels[item_id]))
        try:
            return load_rgb(source) if source else None
        except (UnreadableImage, OSError):
            return None

    def add_images(self, files: Sequence[str], labels: Sequence[str] | None = None,
                   progress: bool = False, cache_dir: str | Path | None = None) -> tuple[np.ndarray, list[str]]:
        """Embed image files with the index's own backbone and add them: ``(new ids, unreadable files)``.

        ``labels`` are class names, or None: the images are then unlabelled, and shown as the leaf they are
        placed at. Unreadable files are skipped with a warning, as when the index was built. ``cache_dir``
        keeps the features as they are computed (``extract_features``), so an interrupted call resumes."""
        from treeseek.data.datasets import ImageSet
        from treeseek.embed.extraction import extract_features

        names = self.model.class_names_
        if labels is not None:
            unknown = sorted(set(labels) - set(names))
            if unknown:  # before embedding anything: a typo should not cost the whole extraction
                raise TreeseekError(f"unknown class '{unknown[0]}' (the model knows {len(names)} classes, "
                                    f"e.g. {', '.join(names[:3])})")
        files = [str(Path(file).absolute()) for file in files]
        images = ImageSet(files, np.full(len(files), -1), list(names), np.full(len(files), "all"))
        features, kept, _ = extract_features(self.backbone(), images, cache_dir=cache_dir, progress=progress)
        if not kept.any():
            raise TreeseekError(f"none of the {len(files)} image(s) could be read")
        kept_labels = None if labels is None else np.asarray(labels, dtype=str)[kept]
        ids = self.index.add(features, kept_labels, [file for file, keep in zip(files, kept) if keep])
        return ids, [file for file, keep in zip(files, kept) if not keep]

    def sources(self) -> dict[str, int]:
        """Source (file path, or dataset key) -> id, of every item not removed."""
        return {stored.source(int(row)): int(stored.segment.ids[row])
                for stored in self.index.stored_segments() for row in stored.live_rows_by_id()}

    def prune(self, dry_run: bool = False) -> dict:
        """Remove the items whose image file is gone: ``{"removed": {id: path}, "checked": n, "unchecked": n}``.

        Pictures kept in the index, and relative paths (of indexes built before paths were stored absolute,
        which depend on the working directory), are not checked. When no checked file exists at all, nothing
        is removed: that is an unmounted disk or a moved collection far more often than a deleted one."""
        kept = len(self.index.attachments_.get("pixels", ()))
        candidates = {source: i for source, i in self.sources().items() if i >= kept}
        checked = {source: i for source, i in candidates.items() if Path(source).is_absolute()}
        gone = {i: source for source, i in checked.items() if not Path(source).is_file()}
        if gone and len(gone) == len(checked):
            raise TreeseekError(f"none of the {len(checked)} image files of the index exists (a disk not mounted, or "
                                f"a moved collection?); nothing removed")
        if gone and not dry_run:
            self.index.remove(sorted(gone))
        return {"removed": dict(sorted(gone.items())), "checked": len(checked),
                "unchecked": len(candidates) - len(checked)}

    def embed(self, pictures) -> np.ndarray:
        """Backbone features of PIL images."""
        import torch

        backbone = self.backbone()
        with torch.inference_mode():
            batch = torch.from_numpy(np.stack([backbone.preprocess(picture) for picture in pictures]))
            return backbone.network.features(batch).float().numpy()

    @property
    def loaded_backbone(self) -> Backbone | None:
        """The network if it has been loaded already (None: it loads on first use)."""
        return self._backbone

    def backbone(self) -> Backbone:
        if self._backbone is None:
            from treeseek.embed.backbones import load_backbone

            spec = self.backbone_spec
            backbone = load_backbone(spec["name"], spec.get("weights"))
            if backbone.weights_digest != spec["weights_digest"]:
                raise TreeseekError(f"the weights of {spec['name']} differ from those the index was built with")
            self._backbone = backbone
        return self._backbone
