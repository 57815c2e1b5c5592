"""A searchable directory built from images: backbone, fitted model, database vectors, items.

Layout: ``manifest.json`` (format, version, backbone, items count), ``model/``
(a ``TreeseekModel``), ``vectors.npy`` (float32 database features),
``items.npz`` (ids, source paths, labels, leaves), and ``pixels.npy`` for
collections held in memory rather than in files. The directory is written
beside the target and renamed into place, so a crash never leaves a half index.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .backbones import Backbone, load_backbone
from .errors import TreeseekError
from .model import TreeseekModel
from .persistence import atomic_save_npz, atomic_write_json, current_umask, load_npz, read_json

INDEX_FORMAT = "treeseek-image-index"
INDEX_VERSION = 1


class ImageIndex:
    def __init__(self, model: TreeseekModel, backbone_spec: dict, vectors: np.ndarray, ids: np.ndarray,
                 paths: np.ndarray, labels: np.ndarray, leaves: np.ndarray, pixels: np.ndarray | None = None):
        self.model, self.backbone_spec = model, backbone_spec
        self.vectors, self.ids, self.paths, self.labels, self.leaves = vectors, ids, paths, labels, leaves
        self.pixels = pixels  # the images themselves, for collections that have no files (CIFAR, Fashion-MNIST)
        self._backbone: Backbone | None = None

    @classmethod
    def build(cls, model: TreeseekModel, backbone: Backbone, weights: str | None, vectors: np.ndarray,
              ids: np.ndarray, paths: np.ndarray, labels: np.ndarray, pixels: np.ndarray | None = None) -> "ImageIndex":
        spec = {**backbone.describe(), "weights": str(Path(weights).resolve()) if weights else None}
        index = cls(model, spec, vectors.astype(np.float32), ids, paths, labels, model.assign(vectors), pixels)
        index._backbone = backbone
        return index

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp makes it private; the index is not
        try:
            self.model.save(staging / "model")
            with open(staging / "vectors.npy", "wb") as handle:
                np.save(handle, self.vectors, allow_pickle=False)
            if self.pixels is not None:
                with open(staging / "pixels.npy", "wb") as handle:
                    np.save(handle, self.pixels, allow_pickle=False)
            atomic_save_npz(staging / "items.npz", {"ids": self.ids.astype(str), "paths": self.paths.astype(str),
                                                    "labels": self.labels, "leaves": self.leaves})
            atomic_write_json(staging / "manifest.json", {
                "format": INDEX_FORMAT, "version": INDEX_VERSION, "backbone": self.backbone_spec,
                "n_items": int(len(self.vectors)), "dim": int(self.vectors.shape[1]),
            })
            old = None
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old")
                shutil.rmtree(old, ignore_errors=True)
                directory.rename(old)
            staging.rename(directory)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    def load(cls, directory: str | Path) -> "ImageIndex":
        directory = Path(directory)
        meta = read_json(directory / "manifest.json", "index manifest")
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise TreeseekError(f"{directory} is not a treeseek image index")
        if meta.get("version") != INDEX_VERSION:
            raise TreeseekError(f"{directory} has index format {meta.get('version')}; this treeseek reads {INDEX_VERSION}")
        model = TreeseekModel.load(directory / "model")
        try:
            vectors = np.load(directory / "vectors.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise TreeseekError(f"{directory}/vectors.npy is corrupt: {exc}") from None
        items = load_npz(directory / "items.npz", "index items")
        if vectors.shape != (meta["n_items"], meta["dim"]) or len(items["ids"]) != meta["n_items"]:
            raise TreeseekError(f"{directory}: vectors and items disagree with the manifest")
        pixels_path = directory / "pixels.npy"
        pixels = np.load(pixels_path, mmap_mode="r", allow_pickle=False) if pixels_path.is_file() else None
        return cls(model, meta["backbone"], vectors, items["ids"], items["paths"], items["labels"], items["leaves"],
                   pixels)

    @staticmethod
    def is_index(directory: str | Path) -> bool:
        path = Path(directory) / "manifest.json"
        if not path.is_file():
            return False
        try:
            return json.loads(path.read_text()).get("format") == INDEX_FORMAT
        except (ValueError, OSError):
            return False

    def thumbnail(self, row: int):
        """The stored image of an item: its file, or its pixels; None when neither is there."""
        from .images.decoding import UnreadableImage, array_to_image, load_rgb

        if self.pixels is not None:
            return array_to_image(np.asarray(self.pixels[row]))
        try:
            return load_rgb(str(self.paths[row])) if str(self.paths[row]) else None
        except (UnreadableImage, OSError):
            return None

    def backbone(self) -> Backbone:
        if self._backbone is None:
            spec = self.backbone_spec
            backbone = load_backbone(spec["name"], spec.get("weights"))
            if backbone.weights_digest != spec["weights_digest"]:
                raise TreeseekError(f"the weights of {spec['name']} differ from those the index was built with")
            self._backbone = backbone
        return self._backbone
