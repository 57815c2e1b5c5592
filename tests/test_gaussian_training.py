"""``treeseek train --gaussian`` (#29): MAPLE's cross-entropy + triplet + X-means sub-classes on frozen features."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from treeseek.training.gaussian_latent import GaussianLatentHead, GaussianTraining

from conftest import run_cli
from test_images import write_images


def straddled(n_per_mode: int, seed: int):
    """Class 0 lies on both sides of class 1 on the first axis (no linear map separates them), class 2 apart."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((4, 16))
    centres[0, 0], centres[1, 0], centres[3, 1] = -8.0, 8.0, 8.0
    modes = np.repeat(np.arange(4), n_per_mode)
    return centres[modes] + rng.normal(size=(len(modes), 16)), np.array([0, 0, 1, 2])[modes]


def predicted_classes(head: GaussianLatentHead, X: np.ndarray) -> np.ndarray:
    """The head's class for each row: numpy over its saved weights, through the sub-class -> class map."""
    logits = head.transform(X) @ head.head_weight_.T + head.head_bias_
    return head.subclass_class_[np.argmax(logits, axis=1)]


@pytest.mark.slow
def test_the_split_separates_a_class_a_linear_head_cannot():
    X, y = straddled(200, seed=0)
    test_x, test_y = straddled(200, seed=1)
    settings = dict(embed_dim=8, epochs=20, batch_size=64, lr=1e-2)
    split = GaussianLatentHead(GaussianTraining(**settings)).fit(X, y)
    whole = GaussianLatentHead(GaussianTraining(**settings, max_subclasses=1)).fit(X, y)
    assert split.subclass_class_.tolist() == [0, 0, 1, 2]  # the straddling class, in two
    assert whole.subclass_class_.tolist() == [0, 1, 2]
    assert np.mean(predicted_classes(split, test_x) == test_y) > 0.95
    assert np.mean(predicted_classes(whole, test_x) == test_y) < 0.85
    assert [entry["subclasses"] for entry in split.history_][-1] == 4


@pytest.mark.slow
def test_train_gaussian_writes_a_checkpoint_usable_as_a_backbone(caltech_subset, tmp_path):
    from treeseek.data.collections import load_images
    from treeseek.embed.backbones import load_backbone
    from treeseek.embed.extraction import extract_features

    result = run_cli("train", caltech_subset, "--classes", "3", "--out", tmp_path / "head", "--gaussian",
                     "--embed-dim", "16", "--epochs", "3", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "sub-classes" in result.stdout and "use it as --backbone" in result.stdout
    trained = load_backbone(str(tmp_path / "head"))
    base = load_backbone("efficientnet_lite0")
    assert trained.feature_dim == 16
    images = load_images(caltech_subset, classes=3)
    images = images.subset(np.arange(len(images)) < 4)
    embedded, _, _ = extract_features(trained, images, progress=False)
    raw, _, _ = extract_features(base, images, progress=False)
    weights = load_file(str(tmp_path / "head" / "weights.safetensors"))  # independent of the loading code
    expected = raw.astype(np.float64) @ weights["projection.weight"].T.astype(np.float64) + weights["projection.bias"]
    np.testing.assert_allclose(embedded, expected, rtol=1e-4, atol=1e-4)


def test_bad_gaussian_training_is_one_line(tmp_path):
    write_images(tmp_path / "one" / "cat", 4)
    for args, message in ((("--subclasses", "0"), "sub-classes per class must be an integer >= 1"),
                          ((), "needs at least two classes")):
        result = run_cli("train", tmp_path / "one", "--out", tmp_path / "head", "--gaussian", "--no-progress", *args)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


@pytest.mark.slow
def test_end_to_end_gaussian_training_resumes_and_becomes_a_backbone(caltech_subset, tmp_path):
    from treeseek.data.collections import load_images
    from treeseek.embed.backbones import load_backbone
    from treeseek.io.files import read_json
    from treeseek.training.classifier import train_classifier

    images = load_images(caltech_subset, classes=3, per_class=8)
    settings = GaussianTraining(split_every=1, fnr_threshold=-1.0)  # a split round after every epoch, all offered
    first = train_classifier(images, tmp_path / "ckpt", epochs=1, batch_size=8, freeze_backbone=True,
                             progress=False, gaussian=settings)
    resumed = train_classifier(images, tmp_path / "ckpt", epochs=2, batch_size=8, freeze_backbone=True,
                               progress=False, gaussian=settings)
    assert len(resumed) == 2 and resumed[0] == first[0]
    record = read_json(tmp_path / "ckpt" / "checkpoint.json", "checkpoint")
    assert record["subclass_class"] == [0, 1, 2]  # 8 images a class: too few to split
    assert len(record["subclass_of_row"]) == len(images.split("train") if "train" in images.splits else images)
    backbone = load_backbone(str(tmp_path / "ckpt"))
    assert backbone.network._fc.out_features == len(record["subclass_class"])
