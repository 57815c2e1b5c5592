"""``treeseek index ...`` and ``treeseek search INDEX --query``, run as a user runs them."""
import json

import numpy as np
import pytest

from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.io.features import save_features
from treeseek.model import TreeseekModel

from conftest import run_cli

cli = run_cli


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("index-cli")
    data = planted_hierarchy((3, 3), dim=16, samples_per_class=30, scale=4.0, seed=8)
    names = np.array(data.class_names)
    save_features(root / "db.npz", data.features[:200], data.labels[:200], data.class_names,
                  np.array([f"db{i}" for i in range(200)]))
    save_features(root / "more.npz", data.features[200:], data.labels[200:], data.class_names,
                  np.array([f"more{i}" for i in range(len(data.features) - 200)]))
    save_features(root / "q.npz", data.features[::50], None, None)
    TreeseekModel(hierarchy="visual", threshold=0.05).fit(data.features, data.labels, names).save(root / "model")
    return root


def test_index_lifecycle_from_the_command_line(workspace):
    ix = workspace / "ix"
    assert cli("index", "create", workspace / "db.npz", "--model", workspace / "model", "--out", ix,
               "--no-progress").returncode == 0
    found = cli("search", ix, "--query", workspace / "q.npz", "-k", "3", "--json", workspace / "r.json")
    assert found.returncode == 0, found.stderr
    first = json.loads((workspace / "r.json").read_text())["queries"][0]["results"][0]
    # soft (the default) ranks the item itself first; its distance is alpha times the expected LCA height
    # of its posterior with itself, not 0
    assert first["path"] == "db0" and first["cosine"] == pytest.approx(0.0, abs=1e-6)
    assert first["distance"] == pytest.approx(first["cosine"] + 1.0 * first["hierarchy"], abs=1e-5)
    exact = cli("search", ix, "--query", workspace / "q.npz", "-k", "3", "--method", "combined",
                "--json", workspace / "r.json")
    assert exact.returncode == 0, exact.stderr
    first = json.loads((workspace / "r.json").read_text())["queries"][0]["results"][0]
    assert first["path"] == "db0" and first["distance"] == pytest.approx(0.0, abs=1e-6)
    assert cli("index", "remove", ix, 0).returncode == 0
    assert cli("index", "add", ix, workspace / "more.npz").returncode == 0
    cli("search", ix, "--query", workspace / "q.npz", "-k", "3", "--json", workspace / "r.json")
    results = json.loads((workspace / "r.json").read_text())["queries"]
    assert results[0]["results"][0]["path"] != "db0"
    assert results[-1]["results"][0]["path"].startswith("more")  # the last query is one of the added items
    info = cli("index", "info", ix).stdout
    assert "269 items in 2 segment(s), 1 removed" in info
    assert cli("index", "backend", ix, "faiss-hnsw", "--param", "m=8").returncode == 0
    assert "269 items in 1 segment(s), 0 removed" in cli("index", "info", ix).stdout
    assert cli("index", "verify", ix).returncode == 0


def test_binary_codes_in_an_index_from_the_command_line(workspace):
    ix, hasher = workspace / "ix-codes", workspace / "hasher"
    cli("index", "create", workspace / "db.npz", "--model", workspace / "model", "--out", ix, "--no-progress")
    assert cli("hash", "train", workspace / "db.npz", "--method", "itq", "--bits", "16", "--out", hasher,
               "--no-progress").returncode == 0
    attached = cli("index", "codes", ix, hasher)
    assert attached.returncode == 0 and "200 codes of 16 bits" in attached.stdout, attached.stderr
    assert "binary codes: 16 bits" in cli("index", "info", ix).stdout
    for extra, method in (((), "hamming (flat)"),
                          (("--rerank", "30", "--method", "combined"), "hamming (flat), top 30 re-ranked by combined"),
                          (("--rerank", "30"), "hamming (flat), top 30 re-ranked by soft")):
        found = cli("search", ix, "--query", workspace / "q.npz", "-k", "3", "--hamming", *extra,
                    "--json", workspace / "h.json")
        assert found.returncode == 0, found.stderr
        report = json.loads((workspace / "h.json").read_text())
        assert report["method"] == method
        first = report["queries"][0]["results"][0]
        assert first["path"] == "db0" and first["cosine"] == pytest.approx(0.0, abs=1e-6)
        # a Hamming distance is reported as it is; a re-ranked one is cosine + alpha (1) * hierarchy term
        hierarchy = 0.0 if method == "hamming (flat)" else first["hierarchy"]
        assert first["distance"] == pytest.approx(hierarchy, abs=1e-5)
        if method.endswith("soft"):
            assert 0 < first["hierarchy"] < 1  # the expected LCA height of an item with itself
    assert cli("index", "add", ix, workspace / "more.npz").returncode == 0  # new items get codes too
    cli("search", ix, "--query", workspace / "q.npz", "-k", "1", "--hamming", "--rerank", "50",
        "--json", workspace / "h.json")
    assert json.loads((workspace / "h.json").read_text())["queries"][-1]["results"][0]["path"].startswith("more")
    assert cli("index", "verify", ix).returncode == 0


@pytest.mark.parametrize("args, message", [
    (("search", "{ix}", "--query", "{tmp}/q.npz", "--hamming"), "stores no binary codes"),
    (("search", "{ix}", "--query", "{tmp}/q.npz", "--rerank", "5"), "add --hamming"),
    (("index", "codes", "{ix}"), "give a hasher directory, or --drop"),
    (("index", "remove", "{ix}", "99999"), "item 99999 is not in the index"),
    (("index", "create", "{db}", "--model", "{model}", "--out", "{tmp}/x", "--backend", "annoy"), "unknown backend"),
    (("index", "create", "{db}", "--model", "{model}", "--out", "{tmp}/x", "--param", "m"), "NAME=INTEGER"),
    (("index", "info", "{tmp}/nowhere"), "index directory not found"),
    (("search", "{ix}", "--query", "{tmp}/q.npz", "--method", "euclidean"), "method must be one of soft, combined"),
])
def test_bad_index_commands_get_one_line(workspace, tmp_path, args, message):
    ix = workspace / "ix2"
    if not ix.exists():
        cli("index", "create", workspace / "db.npz", "--model", workspace / "model", "--out", ix, "--no-progress")
    fields = {"ix": ix, "db": workspace / "db.npz", "model": workspace / "model", "tmp": workspace}
    result = cli(*(arg.format(**fields) for arg in args))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr, result.stderr
