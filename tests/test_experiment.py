"""``treeseek experiment`` on 10 real Caltech-101 classes: every row, robustness, and the HTML report."""
import json
import re

import numpy as np
import pytest

from treeseek.apps.jobs.config import ImageJob
from treeseek.apps.jobs.experiment import STUDY_ROWS, run_experiment
from treeseek.data.collections import load_images
from treeseek.embed.backbones import load_backbone
from treeseek.embed.extraction import extract_features
from treeseek.evaluation import evaluate_retrieval
from treeseek.hierarchy import load_taxonomy
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel

from conftest import SHARED, run_cli

pytestmark = pytest.mark.slow  # the paper's whole study on real images

GRID = {"max_components": [32], "covariance": ["tied"], "edges_per_class": [0.5, 1.0], "alpha": [1.0, 3.0]}
TAXONOMY = SHARED / "hierarchies" / "caltech101.paths.tsv"


@pytest.fixture(scope="module")
def study(caltech_subset, tmp_path_factory):
    if not TAXONOMY.is_file():
        pytest.skip("../shared is not present")
    out = tmp_path_factory.mktemp("experiment")
    report = run_experiment(ImageJob(caltech_subset, progress=False), out, taxonomy=TAXONOMY, grid=GRID, examples=2,
                            convention="barz")
    return out, report


def test_every_row_and_condition_is_scored(study):
    out, report = study
    rows = [row for row, *_ in STUDY_ROWS]
    assert list(report["metrics"]) == rows
    assert set(report["robustness"]) == {"clean", "blur", "saturation", "occlusion"}
    for table in report["robustness"].values():
        assert list(table) == rows and all(0 <= v["map@10"] <= 1 and 0 <= v["mahp@250"] <= 1 for v in table.values())
    assert report["robustness"]["blur"]["cosine"]["map@10"] != report["metrics"]["cosine"]["map@10"]
    grid = json.loads((out / "selection.json").read_text())
    widened = [g["alpha"] for g in grid["grid"] if g.get("step") == "alpha beyond the grid"]
    assert len([g for g in grid["grid"] if "step" not in g]) == 4 and grid["chosen"]["alpha"] in (1.0, 3.0, *widened)
    assert all(alpha > 3.0 or alpha < 1.0 for alpha in widened)  # only past an edge of the grid (1, 3)


def test_rows_match_the_harness_run_directly(study, caltech_subset):
    out, report = study
    images = load_images(caltech_subset)
    features, kept, _ = extract_features(load_backbone(), images, cache_dir=out / "cache", progress=False)
    images = images.subset(kept)
    train, test = images.splits == "train", images.splits == "test"
    names = images.class_names
    chosen = json.loads((out / "selection.json").read_text())["chosen"]
    tree = load_taxonomy(TAXONOMY, names)
    model = TreeseekModel(**{**chosen, "hierarchy": str(TAXONOMY)}).fit(features[train], images.labels[train], names)
    direct = evaluate_retrieval(model, FeatureSet(features[test], images.labels[test], names),
                                FeatureSet(features[train], images.labels[train], names),
                                methods=["cosine", "combined"], ks=(10,), taxonomy=tree, progress=False)
    assert report["metrics"]["cosine"]["map@10"] == pytest.approx(direct.metrics["cosine"]["map@10"])
    assert report["metrics"]["ours, taxonomy hierarchy"]["mahp@250"] == \
        pytest.approx(direct.metrics["combined"]["mahp@250"])
    as_barz = evaluate_retrieval(model, FeatureSet(features[test], images.labels[test], names),
                                 FeatureSet(features[train], images.labels[train], names), methods=["combined"],
                                 ks=(10,), taxonomy=tree, progress=False, convention="barz")
    assert report["metrics_by_convention"]["barz"]["ours, taxonomy hierarchy"]["ahp@250"] == \
        pytest.approx(as_barz.metrics["combined"]["ahp@250"])


def test_the_html_report_is_self_contained(study):
    out, _ = study
    page = (out / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 4 + 2 * 2 and all(s.startswith("data:image/png;base64,") for s in sources)
    for row, *_ in STUDY_ROWS:
        assert row.replace("&", "&amp;") in page
    assert "The whole validation grid" in page
    assert "metrics as barz defines them" in page
    for name in ("map_at_k.png", "robustness.png", "hierarchy.png", "taxonomy.png", "example-0-cosine.png"):
        assert (out / name).is_file()


def test_bad_experiment_input_gets_one_line(caltech_subset, tmp_path):
    result = run_cli("experiment", caltech_subset, "--out", tmp_path, "--taxonomy", TAXONOMY, "--perturbations", "rain")
    assert result.returncode == 2 and "unknown perturbation 'rain'" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    np.testing.assert_equal((tmp_path / "report.html").exists(), False)
