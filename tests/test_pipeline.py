import json
import os
import shutil

import numpy as np
from conftest import run_cli

from treeseek.backbones import load_backbone
from treeseek.images.datasets import image_folder
from treeseek.pipeline import load_images
from treeseek.training.classifier import train_classifier


def test_main_job_writes_every_output(main_job):
    for name in ("report.md", "report.json", "selection.json", "map_at_k.png", "hierarchy.png", "hierarchy.nwk",
                 "features/train.npz", "features/test.npz", "model/model.json", "index/manifest.json"):
        assert (main_job / name).is_file(), name
    umask = os.umask(0)
    os.umask(umask)
    assert (main_job / "index").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's private 0700
    report = json.loads((main_job / "report.json").read_text())
    assert report["dataset"]["classes"] == 10
    assert report["dataset"]["train"] + report["dataset"]["test"] == 120
    metrics = report["evaluation"]["metrics"]
    assert set(metrics) == {"euclidean", "cosine", "hierarchy", "flat", "combined", "soft"}
    assert metrics["cosine"]["map@10"] > 0.5  # real ImageNet features separate these classes
    assert "mahp@250" in metrics["combined"]
    selection = json.loads((main_job / "selection.json").read_text())
    # the default tree (average linkage, cosine) has no t: the quick grid is its two alphas, scored with soft
    assert len(selection["grid"]) == 2 and selection["split"]["n_validation"] > 0
    assert selection["chosen"] in [{**{k: g[k] for k in ("max_components", "covariance", "threshold", "alpha")},
                                    "variance": 0.95, "hierarchy": "average:8:cosine"} for g in selection["grid"]]


def test_search_an_image_against_the_index(main_job, caltech_subset, tmp_path):
    query = sorted((caltech_subset / "accordion").iterdir())[0]
    result = run_cli("search", main_job / "index", query, "-k", "5", "--json", tmp_path / "r.json",
                     "--grid", tmp_path / "grid.png")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())["queries"][0]
    assert len(report["results"]) == 5
    # the query is in the index (train split) or one of its class mates is the nearest
    assert report["results"][0]["class"] == "accordion"
    for entry in report["results"]:
        assert {"class", "distance", "cosine", "hierarchy", "lca"} <= set(entry)
    assert (tmp_path / "grid.png").stat().st_size > 1000
    missing = run_cli("search", main_job / "index", tmp_path / "nothing.jpg")
    assert missing.returncode == 2 and missing.stderr.startswith("error:")


def test_search_an_image_by_binary_codes_re_ranked_with_soft_leaves(main_job, caltech_subset, tmp_path):
    shutil.copytree(main_job / "index", tmp_path / "index")  # the shared index stays without codes
    trained = run_cli("hash", "train", main_job / "features" / "train.npz", "--method", "itq", "--bits", "32",
                      "--out", tmp_path / "hasher", "--no-progress")
    assert trained.returncode == 0, trained.stderr
    assert run_cli("index", "codes", tmp_path / "index", tmp_path / "hasher").returncode == 0
    query = sorted((caltech_subset / "accordion").iterdir())[0]
    for extra, method in ((), "hamming (flat)"), (("--rerank", "20"), "hamming (flat), top 20 re-ranked by soft"):
        result = run_cli("search", tmp_path / "index", query, "-k", "3", "--hamming", *extra,
                         "--json", tmp_path / "r.json", "--grid", tmp_path / "grid.png")
        assert result.returncode == 0, result.stderr
        report = json.loads((tmp_path / "r.json").read_text())
        assert report["method"] == method
        results = report["queries"][0]["results"]
        assert results[0]["class"] == "accordion"
        distances = [entry["distance"] for entry in results]
        assert distances == sorted(distances)
        # re-ranked: the expected normalised LCA height; Hamming alone: the hard leaves' normalised LCA height
        assert all(0.0 <= entry["hierarchy"] <= 1.0 for entry in results)
        if not extra:
            assert all(d == int(d) for d in distances)  # Hamming distances are whole numbers of bits


def test_grayscale_and_cmyk_queries(main_job, caltech_subset, tmp_path):
    from PIL import Image

    source = Image.open(sorted((caltech_subset / "airplanes").iterdir())[0])
    source.convert("L").save(tmp_path / "gray.jpg")
    source.convert("CMYK").save(tmp_path / "cmyk.jpg")
    result = run_cli("search", main_job / "index", tmp_path / "gray.jpg", tmp_path / "cmyk.jpg", "-k", "3",
                     "--grid", tmp_path / "g.png")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("query ") == 2


def test_training_resumes_and_becomes_a_backbone(caltech_subset, tmp_path):
    images = load_images(caltech_subset, classes=3, per_class=5)
    first = train_classifier(images, tmp_path / "ckpt", epochs=1, batch_size=8, freeze_backbone=True,
                             progress=False)
    assert len(first) == 1 and 0.0 <= first[0]["val_accuracy"] <= 1.0
    resumed = train_classifier(images, tmp_path / "ckpt", epochs=2, batch_size=8, freeze_backbone=True,
                               progress=False)
    assert len(resumed) == 2 and resumed[0] == first[0]
    backbone = load_backbone(str(tmp_path / "ckpt"))
    assert backbone.feature_dim == 1280
    head = backbone.network._fc
    assert head.out_features == 3
    data = image_folder(caltech_subset, classes=["accordion"])
    assert backbone.preprocess(data.image(0)).shape == (3, 224, 224)
    assert np.isfinite(head.weight.detach().numpy()).all()
