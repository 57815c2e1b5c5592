"""``treeseek duplicates`` (#30): groups of near-identical pictures, by an exact range search."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from treeseek.index import TreeIndex
from treeseek.index.duplicates import DEFAULT_THRESHOLD, near_duplicates
from treeseek.model import TreeseekModel

from conftest import run_cli


def numpy_groups(vectors: np.ndarray, threshold: float) -> set[frozenset]:
    """Connected components of 'cosine distance <= threshold' by plain numpy and a union-find."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    close = (1.0 - unit @ unit.T) <= threshold
    parent = list(range(len(unit)))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in zip(*np.nonzero(np.triu(close, 1))):
        parent[root(int(a))] = root(int(b))
    groups: dict[int, set] = {}
    for i in range(len(unit)):
        groups.setdefault(root(i), set()).add(i)
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def test_groups_equal_a_numpy_reference_at_several_thresholds(planted):
    model = TreeseekModel(hierarchy="average").fit(planted.features, planted.labels)
    index = TreeIndex(model)
    X = np.vstack([planted.features, planted.features[:5] * 1.5 + 0.01])  # scaled copies: the same direction
    index.add(X)
    for threshold in (0.0005, 0.02, 0.2):
        found = {frozenset(g.ids.tolist()) for g in near_duplicates(index, threshold)}
        assert found == numpy_groups(X.astype(np.float32).astype(np.float64), threshold)
    with pytest.raises(Exception, match="cosine distance in \\[0, 2\\)"):
        near_duplicates(index, 2.5)


@pytest.mark.slow
def test_duplicates_finds_every_planted_copy_and_no_false_pair(caltech_subset, tmp_path):
    from treeseek.data.collections import load_images
    from treeseek.embed.backbones import load_backbone
    from treeseek.embed.extraction import extract_features

    folder = tmp_path / "collection"
    originals = load_images(caltech_subset)
    planted = {}  # copy file -> its original
    for number, i in enumerate(range(0, len(originals), 20)):
        source = originals.items[i]
        picture = Image.open(source).convert("RGB")
        edit = number % 3
        copy = [picture.resize((picture.width * 3 // 4, picture.height * 3 // 4)), ImageOps.mirror(picture),
                picture][edit]
        target = folder / originals.class_names[originals.labels[i]] / f"copy-{number}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        copy.save(target, quality=60 if edit == 2 else 90)
        planted[str(target)] = source
    for i, source in enumerate(originals.items):
        target = folder / originals.class_names[originals.labels[i]] / Path(source).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(source).read_bytes())
    images = load_images(folder)
    backbone = load_backbone("efficientnet_lite0")
    features, kept, _ = extract_features(backbone, images, progress=False)
    assert kept.all()
    model = TreeseekModel(hierarchy="average").fit(features, images.labels, images.class_names)
    index = TreeIndex(model)
    index.add(features, images.labels, sources=images.items)
    index.save(tmp_path / "index")
    result = run_cli("duplicates", tmp_path / "index", "--csv", tmp_path / "groups.csv")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "groups.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    groups: dict[str, set] = {}
    for row in rows:
        groups.setdefault(row["group"], set()).add(row["file"])
    by_name = {str(folder / originals.class_names[originals.labels[i]] / Path(s).name): s
               for i, s in enumerate(originals.items)}
    expected = {frozenset({copy, next(f for f, s in by_name.items() if s == original)})
                for copy, original in planted.items()}
    assert {frozenset(g) for g in groups.values()} == expected  # every copy with its original, nothing else
    assert f"cosine distance <= {DEFAULT_THRESHOLD:g}" in result.stdout
