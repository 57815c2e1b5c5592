import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from treeseek.data.collections import load_images
from treeseek.data.datasets import image_files, image_folder
from treeseek.embed.backbones import load_backbone
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.index.image_index import ImageIndex
from treeseek.io.features import load_features
from treeseek.training.classifier import train_classifier

from conftest import run_cli

pytestmark = pytest.mark.slow  # whole image jobs: extraction, fitting, indexing, training


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
    # the fixture's tree (average linkage over cosine and name distances) has no t: the quick grid is its two
    # alphas, scored with soft; then --subclasses auto, whose split needs classes of 16 fitting images: with 12 a
    # class, only the model without sub-classes is scored
    grid = [g for g in selection["grid"] if "step" not in g]
    assert len(grid) == 2 and selection["split"]["n_validation"] > 0
    assert [g["subclasses"] for g in selection["grid"] if g.get("step") == "subclasses"] == [1]
    # then the cosine space, the temperature, alpha past its grid and the WordNet prior: the choice is a best row
    chosen, tree = selection["chosen"], "average:8:cosine:names"
    scored = [g for g in selection["grid"] if g.get("step") not in ("pruned", "subclasses")]
    assert selection["score"] == max(g["map@10"] for g in scored)
    assert any(g["map@10"] == selection["score"] and g["alpha"] == chosen["alpha"]
               and g.get("cosine", "raw") == chosen["cosine"] and g.get("temperature", 4.0) == chosen["temperature"]
               and g.get("hierarchy", tree) == chosen["hierarchy"] for g in scored)
    assert chosen["hierarchy"] in (tree, "average:8:cosine:names+wordnet") and chosen["subclasses"] == 1


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


def test_more_like_an_indexed_image_is_its_file_s_ranking_without_it(main_job, tmp_path):
    index = ImageIndex.load(main_job / "index")
    item = 17
    path = index.index.items([item])["sources"][0]
    by_file = run_cli("search", main_job / "index", path, "-k", "6", "--json", tmp_path / "file.json",
                      "--grid", tmp_path / "file.png")
    by_item = run_cli("search", main_job / "index", "--item", item, "-k", "5", "--json", tmp_path / "item.json",
                      "--grid", tmp_path / "item.png")
    assert by_file.returncode == 0 and by_item.returncode == 0, by_file.stderr + by_item.stderr
    from_file = json.loads((tmp_path / "file.json").read_text())["queries"][0]["results"]
    from_item = json.loads((tmp_path / "item.json").read_text())["queries"][0]
    assert from_file[0]["id"] == item and from_item["query"] == f"item {item}"
    assert [hit["id"] for hit in from_item["results"]] == [hit["id"] for hit in from_file[1:]]
    assert np.allclose([hit["distance"] for hit in from_item["results"]], [hit["distance"] for hit in from_file[1:]],
                       atol=1e-5)
    assert (tmp_path / "item.png").stat().st_size > 1000 and f"query item {item} (leaf" in by_item.stdout


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


def test_add_images_embeds_new_pictures_with_the_index_network(main_job, caltech_subset, tmp_path):
    shutil.copytree(main_job / "index", tmp_path / "index")  # the shared index stays as built
    index_dir = tmp_path / "index"
    before = ImageIndex.load(index_dir)
    anchors = image_files([caltech_subset / "anchor"])
    indexed = before.sources()
    new = [file for file in anchors if file not in indexed]  # the anchors of the test split
    assert 0 < len(new) < len(anchors)
    # the reference: the test split's features, computed by the main job in its own batches
    test = load_features(main_job / "features" / "test.npz")
    rows = [test.row_ids().tolist().index(f"anchor/{Path(file).name}") for file in new]

    (tmp_path / "incoming" / "zebra").mkdir(parents=True)
    shutil.copy(new[0], tmp_path / "incoming" / "zebra" / "z.jpg")
    manifest = (index_dir / "manifest.json").read_bytes()
    unknown = run_cli("index", "add-images", index_dir, tmp_path / "incoming", "--class-from-folder")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown class 'zebra'")
    assert len(unknown.stderr.splitlines()) == 1 and (index_dir / "manifest.json").read_bytes() == manifest

    added = run_cli("index", "add-images", index_dir, caltech_subset / "anchor", "--class-from-folder",
                    "--no-progress")
    assert added.returncode == 0, added.stderr
    assert f"added {len(new)} image(s)" in added.stdout
    assert f"{len(anchors) - len(new)} of the {len(anchors)} image(s) were in the index already" in added.stdout
    after = ImageIndex.load(index_dir)
    assert len(after.index) == len(before.index) + len(new)
    new_ids = np.arange(before.index.next_id_, after.index.next_id_)
    items = after.index.items(new_ids)
    assert items["sources"] == new
    expected = test.features[rows] / np.linalg.norm(test.features[rows], axis=1, keepdims=True)
    assert np.allclose(items["vectors"], expected, atol=1e-4)
    assert np.array_equal(items["leaves"], after.model.assign(test.features[rows]))
    assert (items["labels"] == after.model.class_names_.index("anchor")).all()
    again = run_cli("index", "add-images", index_dir, caltech_subset / "anchor", "--class-from-folder")
    assert again.returncode == 0 and "added" not in again.stdout
    assert f"{len(anchors)} of the {len(anchors)} image(s) were in the index already" in again.stdout

    # unlabelled, beside a corrupt file: placed by the model, found by its own picture
    (tmp_path / "loose").mkdir()
    ant = next(file for file in image_files([caltech_subset / "ant"]) if file not in indexed)
    shutil.copy(ant, tmp_path / "loose" / "new_ant.jpg")
    (tmp_path / "loose" / "broken.jpg").write_bytes(Path(ant).read_bytes()[:300])
    loose = run_cli("index", "add-images", index_dir, tmp_path / "loose", "--no-progress")
    assert loose.returncode == 0, loose.stderr
    assert "added 1 image(s)" in loose.stdout and "skipped 1 unreadable" in loose.stdout
    assert "broken.jpg" in loose.stderr
    found = run_cli("search", index_dir, tmp_path / "loose" / "new_ant.jpg", "-k", "1", "--json",
                    tmp_path / "r.json", "--grid", tmp_path / "grid.png")
    assert found.returncode == 0, found.stderr
    hit = json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"][0]
    assert hit["id"] == after.index.next_id_ and hit["class"] is None and hit["cosine"] < 1e-5

    (tmp_path / "loose" / "new_ant.jpg").unlink()
    manifest = (index_dir / "manifest.json").read_bytes()
    listed = run_cli("index", "prune", index_dir, "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert f"{after.index.next_id_}  {tmp_path / 'loose' / 'new_ant.jpg'}" in listed.stdout
    assert "would remove 1 of" in listed.stdout and (index_dir / "manifest.json").read_bytes() == manifest
    pruned = run_cli("index", "prune", index_dir)
    assert pruned.returncode == 0 and "removed 1 of" in pruned.stdout
    assert not ImageIndex.load(index_dir).index.contains([after.index.next_id_])[0]

    features_only = run_cli("index", "create", main_job / "features" / "train.npz", "--model", main_job / "model",
                            "--out", tmp_path / "features-index")
    assert features_only.returncode == 0, features_only.stderr
    refused = run_cli("index", "add-images", tmp_path / "features-index", tmp_path / "loose")
    assert refused.returncode == 2 and "feature vectors, not of images" in refused.stderr


def test_prune_checks_absolute_files_only_and_never_empties_the_index(planted, model, tmp_path):
    files = [tmp_path / f"{i}.jpg" for i in range(4)]
    for file in files[:3]:
        file.write_bytes(b"")  # prune asks only whether the file is there
    index = TreeIndex(model)
    index.add(planted.features[:6], planted.labels[:6], ["cifar key 0", *map(str, files), "relative/a.jpg"])
    index.attachments_["pixels"] = np.zeros((1, 2, 2, 3), np.uint8)  # item 0 keeps its picture in the index
    images = ImageIndex(index, {"name": "efficientnet_lite0"})
    assert images.prune(dry_run=True) == {"removed": {4: str(files[3])}, "checked": 4, "unchecked": 1}
    assert len(index) == 6
    assert images.prune()["removed"] == {4: str(files[3])}
    assert len(index) == 5 and not index.contains([4])[0]
    for file in files[:3]:
        file.unlink()
    with pytest.raises(TreeseekError, match="none of the 3 image files of the index exists"):
        images.prune()
    assert len(index) == 5


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


CIFAR_WNIDS = {"airplane": "n02691156", "automobile": "n02958343", "bird": "n01503061", "cat": "n02121620",
               "deer": "n02430045", "dog": "n02084071", "frog": "n01639765", "horse": "n02374451",
               "ship": "n04194289", "truck": "n04490091"}


def test_a_collection_in_wordnet_id_folders_is_reported_by_word(cifar_test_subset, tmp_path):
    from treeseek.hierarchy.wordnet import noun_graph

    from conftest import SHARED

    weights = SHARED / "models" / "cifar10-resnet20.safetensors"
    if noun_graph() is None or not weights.is_file():
        pytest.skip("needs WordNet (wordnet-base) and ../shared/models")
    source = tmp_path / "wnids"
    for name, wnid in CIFAR_WNIDS.items():
        shutil.copytree(cifar_test_subset / name, source / wnid)
    out = tmp_path / "run"
    result = run_cli("run", source, "--out", out, "--quick", "--no-progress", "--backbone", "resnet20", "--weights",
                     weights, "--hierarchy", "average:8:cosine:names", "--subclasses", "off")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["class_words"]["n02084071"] == "dog" and report["class_words"]["n04490091"] == "truck"
    markdown = (out / "report.md").read_text()
    assert "| n01503061 | bird |" in markdown
    # the name tree tried WordNet: every wnid is its own synset
    assert any("WordNet prior (100% of the names resolved)" in note for note in report["selection"]["notes"])
