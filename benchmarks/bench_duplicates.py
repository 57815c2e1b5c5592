"""How far a copy moves from its original, against how close distinct pictures come: the duplicate threshold.

Run:  .venv/bin/python benchmarks/bench_duplicates.py --json bench-output/duplicates.json

The first picture of each of 60 Caltech-101 classes (in name order) is edited four ways: re-encoded as JPEG at
quality 40, mirrored, scaled to 75% and to 50%. For each edit: the largest and the median cosine distance between
the EfficientNet-Lite0 features of a copy and of its original. Then the smallest distance between two of the 60
originals (distinct scenes), and, over the whole collection (FAISS flat, exact), the pairs of distinct files
closer than 0.1 (Caltech-101's own near-duplicates) with the range of their distances.
"""
from __future__ import annotations

import argparse
import io

import faiss
import numpy as np
import torch
from PIL import Image, ImageOps

from treeseek.choices import DUPLICATE_THRESHOLD

from common import OUTPUT, dataset_features, markdown_table, write_json


def unit_features(backbone, pictures) -> np.ndarray:
    batch = torch.from_numpy(np.stack([backbone.preprocess(picture) for picture in pictures]))
    with torch.inference_mode():
        features = backbone.network.features(batch).numpy().astype(np.float64)
    return features / np.linalg.norm(features, axis=1, keepdims=True)


def reencoded(picture: Image.Image, quality: int = 40) -> Image.Image:
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def scaled(picture: Image.Image, share: float) -> Image.Image:
    return picture.resize((int(picture.width * share), int(picture.height * share)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    images, features, _, _, backbone = dataset_features("caltech101")
    folder = OUTPUT / "caltech101" / "caltech101" / "101_ObjectCategories"
    files = sorted(folder.glob("*/image_0001.jpg"))[:60]
    originals = [Image.open(path).convert("RGB") for path in files]
    reference = unit_features(backbone, originals)
    edits = {"JPEG quality 40": reencoded, "mirrored": ImageOps.mirror, "scaled to 75%": lambda p: scaled(p, 0.75),
             "scaled to 50%": lambda p: scaled(p, 0.5)}
    rows = []
    for name, edit in edits.items():
        distances = 1.0 - np.sum(reference * unit_features(backbone, [edit(p) for p in originals]), axis=1)
        rows.append({"edit": name, "max": float(distances.max()), "median": float(np.median(distances)),
                     "within_threshold": float(np.mean(distances <= DUPLICATE_THRESHOLD))})
    between = 1.0 - reference @ reference.T
    np.fill_diagonal(between, np.inf)
    unit = (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)
    search = faiss.IndexFlatIP(unit.shape[1])
    search.add(unit)
    similarities, neighbours = search.search(unit, 2)
    nearest = 1.0 - similarities[:, 1]
    close = np.flatnonzero(nearest < 0.1)
    folders = sorted({images.items[i].split("/")[-2] for i in close})
    result = {"edits": rows, "closest_distinct_originals": float(between.min()),
              "collection_pairs_under_0.1": int(len(close)), "their_folders": folders,
              "their_range": [float(nearest[close].min()), float(nearest[close].max())] if len(close) else None}
    print(markdown_table(["edit of 60 pictures", "largest distance", "median", f"within {DUPLICATE_THRESHOLD}"],
                         [[r["edit"], f"{r['max']:.3f}", f"{r['median']:.3f}", f"{r['within_threshold']:.0%}"]
                          for r in rows]))
    print(f"\nclosest two of the 60 originals: {result['closest_distinct_originals']:.3f}")
    print(f"pictures of the collection with another within 0.1: {len(close)}, in {len(folders)} folders "
          f"({', '.join(folders[:8])}{' ...' if len(folders) > 8 else ''}), "
          f"{result['their_range'][0]:.3f}–{result['their_range'][1]:.3f}" if len(close) else "none")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
