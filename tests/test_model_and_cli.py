import json
import re

import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.evaluation import evaluate_retrieval
from treeseek.hierarchy import save_hierarchy
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.io.features import FeatureSet, save_features
from treeseek.model import TreeseekModel
from treeseek.search import MemoryIndex, Ranking

from conftest import run_cli, run_process
from oracles import cosine, lca_fractions, novel, soft_keys, top_k


@pytest.fixture(scope="module")
def planted():
    return planted_hierarchy(scale=4.0, samples_per_class=50, seed=4)


def split(planted):
    test = np.arange(len(planted.labels)) % 5 == 0
    return test


def test_combined_beats_cosine_on_planted_hierarchy(planted):
    test = split(planted)
    model = TreeseekModel(hierarchy="visual", threshold=0.05).fit(planted.features[~test], planted.labels[~test], planted.class_names)
    assert np.array_equal(model.hierarchy_.lca_heights, planted.hierarchy.lca_heights)
    result = evaluate_retrieval(
        model,
        FeatureSet(planted.features[test], planted.labels[test], planted.class_names),
        FeatureSet(planted.features[~test], planted.labels[~test], planted.class_names),
        taxonomy=planted.hierarchy,
        progress=False,
    )
    combined, cosine = result.metrics["combined"], result.metrics["cosine"]
    assert combined["map@10"] > cosine["map@10"] + 0.2
    assert combined["mahp@250"] > cosine["mahp@250"] + 0.1
    # the hierarchy adds to what the predicted class alone gives (flat)
    assert combined["mahp@250"] > result.metrics["flat"]["mahp@250"]


def naive_metrics(D, db_y, q_y, similarity, exclude_self):
    """Per-query loops over the definitions, independent of the vectorised code."""
    aps, ahps = [], []
    for q in range(len(D)):
        order = [i for i in np.argsort(D[q], kind="stable") if not (exclude_self and i == q)]
        rel = [db_y[i] == q_y[q] for i in order]
        R = sum(rel)
        if R:
            hits, total = 0, 0.0
            for rank, r in enumerate(rel, start=1):
                if r:
                    hits += 1
                    total += hits / rank
            aps.append(total / R)
        s = [similarity[q_y[q], db_y[i]] for i in order]
        ideal = sorted(s, reverse=True)
        m = min(250, len(s))
        hp = [sum(s[:j]) / sum(ideal[:j]) if sum(ideal[:j]) > 0 else 1.0 for j in range(1, m + 1)]
        ahps.append(np.trapezoid(hp) / (m - 1))
    return np.mean(aps), np.mean(ahps)


def test_harness_matches_naive_loops_in_both_protocols(planted):
    test = split(planted)
    model = TreeseekModel(hierarchy="visual", threshold=0.05).fit(planted.features[~test], planted.labels[~test], planted.class_names)
    similarity = 1 - lca_fractions(planted.hierarchy)
    queries = FeatureSet(planted.features[test][:60], planted.labels[test][:60])
    database = FeatureSet(planted.features[~test], planted.labels[~test])
    for db in (database, None):
        result = evaluate_retrieval(model, queries, db, methods=["cosine"], taxonomy=planted.hierarchy, progress=False)
        db_x = (db or queries).features
        db_y = (db or queries).labels
        q64, d64 = queries.features.astype(np.float64), db_x.astype(np.float64)
        qn = q64 / np.linalg.norm(q64, axis=1, keepdims=True)
        dn = d64 / np.linalg.norm(d64, axis=1, keepdims=True)
        mean_ap, mean_ahp = naive_metrics(1 - qn @ dn.T, db_y, queries.labels, similarity, db is None)
        assert result.metrics["cosine"]["map"] == pytest.approx(mean_ap, rel=1e-9)
        partial = evaluate_retrieval(model, queries, db, methods=["cosine"], progress=False, full_ranking=False)
        assert "map" not in partial.metrics["cosine"]
        assert partial.metrics["cosine"]["map@10"] == result.metrics["cosine"]["map@10"]
        assert result.metrics["cosine"]["mahp@250"] == pytest.approx(mean_ahp, rel=1e-9)


def test_save_load_round_trip_gives_identical_results(planted, tmp_path):
    model = TreeseekModel(hierarchy="visual", threshold=0.05, covariance="full").fit(planted.features, planted.labels, planted.class_names)
    model.save(tmp_path / "m")
    loaded = TreeseekModel.load(tmp_path / "m")
    assert loaded.hierarchy_ == model.hierarchy_ and loaded.class_names_ == model.class_names_
    assert np.array_equal(loaded.assign(planted.features), model.assign(planted.features))
    a, b = MemoryIndex(model), MemoryIndex(loaded)
    for index in (a, b):
        index.add(planted.features)
    for method in ("soft", "combined"):
        assert np.array_equal(a.search(planted.features[:20], 7, ranking=Ranking(method))[1],
                              b.search(planted.features[:20], 7, ranking=Ranking(method))[1])
    # the directory holds JSON and plain arrays only
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files[0].startswith("arrays-") and files[1] == "model.json"
    with np.load(tmp_path / "m" / files[0], allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)
    # saving again replaces the array file instead of piling them up
    model.save(tmp_path / "m")
    assert len(list((tmp_path / "m").glob("arrays-*.npz"))) == 1


def test_corrupt_or_foreign_model_is_a_clear_error(planted, tmp_path):
    model = TreeseekModel(hierarchy="visual", threshold=0.05).fit(planted.features, planted.labels)
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    arrays = tmp_path / "m" / meta["arrays"]
    arrays.write_bytes(arrays.read_bytes()[:100])
    with pytest.raises(TreeseekError, match="corrupt"):
        TreeseekModel.load(tmp_path / "m")
    meta["version"] = 99
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(TreeseekError, match="format 99"):
        TreeseekModel.load(tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text("{not json")
    with pytest.raises(TreeseekError, match="corrupt"):
        TreeseekModel.load(tmp_path / "m")


# ----------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, planted):
    root = tmp_path_factory.mktemp("cli")
    test = split(planted)
    save_features(root / "train.npz", planted.features[~test], planted.labels[~test], planted.class_names)
    save_features(root / "test.npz", planted.features[test], planted.labels[test], planted.class_names,
                  ids=np.array([f"img{i}" for i in np.flatnonzero(test)]))
    save_hierarchy(planted.hierarchy, root / "taxonomy.json")
    result = run_cli("fit", root / "train.npz", "--out", root / "model", "--hierarchy", "visual", "--threshold", "0.05")
    assert result.returncode == 0, result.stderr
    assert "[36, 9, 3, 1]" in result.stdout
    assert (root / "model" / "hierarchy.png").stat().st_size > 0
    return root


def test_cli_evaluate_writes_every_metric(workspace):
    out = workspace / "eval.json"
    result = run_cli("evaluate", workspace / "model", workspace / "test.npz", "--database", workspace / "train.npz",
                     "--taxonomy", workspace / "taxonomy.json", "--k", "1,10", "--json", out,
                     "--plot", workspace / "map.png", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert set(report) == {"euclidean", "cosine", "hierarchy", "flat", "combined", "soft", "crm", "_info"}
    keys = {"map", "map@1", "map@10", "map_paper@10", "precision@10", "mahp@250", "ndcg@10", "severity@10"}
    assert keys <= set(report["combined"])
    assert report["combined"]["map@10"] > report["cosine"]["map@10"]
    assert report["_info"]["taxonomy_agreement"] == pytest.approx(1.0)  # the model recovered the planted tree
    assert "agreement with the taxonomy (LCA-height correlation) 1.000" in result.stdout
    assert (workspace / "map.png").stat().st_size > 0
    loo = run_cli("evaluate", workspace / "model", workspace / "test.npz", "--no-progress")
    assert loo.returncode == 0 and "leave-one-out" in loo.stdout


def test_cli_search_reports_parts_and_lca(workspace):
    out = workspace / "search.json"
    result = run_cli("search", workspace / "model", workspace / "train.npz", "--query", workspace / "test.npz",
                     "-k", "5", "--method", "combined", "--json", out)  # hard leaves: the parts are exact
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    first = report["queries"][0]
    assert first["query"] == "img0" and len(first["results"]) == 5
    for entry in first["results"]:
        assert entry["distance"] == pytest.approx(entry["cosine"] + 1.0 * entry["hierarchy"])
    distances = [e["distance"] for e in first["results"]]
    assert distances == sorted(distances)


def test_cli_soft_search_ranks_by_the_expected_lca_height(workspace):
    from treeseek.io.features import load_features
    from treeseek.model import TreeseekModel

    out = workspace / "soft.json"
    result = run_cli("search", workspace / "model", workspace / "train.npz", "--query", workspace / "test.npz",
                     "-k", "5", "--method", "soft", "--json", out)
    assert result.returncode == 0, result.stderr
    model = TreeseekModel.load(workspace / "model")
    db, queries = load_features(workspace / "train.npz"), load_features(workspace / "test.npz")
    keys = soft_keys(queries.features, db.features, model.posteriors(queries.features), model.posteriors(db.features),
                     model.hierarchy_, model.alpha)
    flagged = novel(model, queries.features)  # served: a query far from every class is ranked by cosine alone
    keys[flagged] = cosine(queries.features[flagged], db.features)
    expected, _ = top_k(keys, np.arange(len(db.features)), 5)
    found = json.loads(out.read_text())["queries"]
    assert np.allclose([[e["distance"] for e in q["results"]] for q in found], expected, atol=1e-5)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "case",
    ["nan", "inf", "dims", "label_range", "empty", "not_npz", "missing_model", "unknown_class", "pickled"],
)
def test_bad_input_gets_one_line_and_nonzero_exit(workspace, tmp_path, case):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(20, 64))
    labels = np.arange(20) % 4
    if case in ("nan", "inf"):
        good[3, 5] = np.nan if case == "nan" else np.inf
        args = ["fit", write_npz(tmp_path / "x.npz", features=good, labels=labels), "--out", tmp_path / "m"]
    elif case == "dims":
        args = ["evaluate", workspace / "model", write_npz(tmp_path / "x.npz", features=good[:, :10], labels=labels)]
    elif case == "label_range":
        args = ["fit", write_npz(tmp_path / "x.npz", features=good, labels=labels, class_names=np.array(["a", "b"])),
                "--out", tmp_path / "m"]
    elif case == "empty":
        (tmp_path / "x.npz").write_bytes(b"")
        args = ["fit", tmp_path / "x.npz", "--out", tmp_path / "m"]
    elif case == "not_npz":
        (tmp_path / "x.npz").write_text("hello")
        args = ["fit", tmp_path / "x.npz", "--out", tmp_path / "m"]
    elif case == "missing_model":
        args = ["evaluate", tmp_path / "nothing", workspace / "test.npz"]
    elif case == "unknown_class":
        path = write_npz(tmp_path / "x.npz", features=good, labels=labels, class_names=np.array(["a", "b", "c", "zebra"]))
        args = ["evaluate", workspace / "model", path]
    else:
        np.savez(tmp_path / "x.npz", features=np.array([{"evil": 1}] * 3, dtype=object), labels=np.arange(3))
        args = ["fit", tmp_path / "x.npz", "--out", tmp_path / "m"]
    result = run_cli(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_process_of_its_own_exits_2_with_one_error_line_or_0(tmp_path):
    """The entry point as a shell runs it: the in-process runs above share its handling, this checks the exit."""
    (tmp_path / "x.npz").write_text("hello")
    refused = run_process("fit", tmp_path / "x.npz", "--out", tmp_path / "m")
    assert refused.returncode == 2 and refused.stderr.startswith("error: ")
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    helped = run_process("--help")
    assert helped.returncode == 0 and "search" in helped.stdout and not helped.stderr


def test_bad_taxonomies_are_one_line_errors(workspace, tmp_path):
    missing = tmp_path / "missing.paths.tsv"
    missing.write_text("class\tpath\nc0.0.0\troot > a\n")
    cyclic_names = tmp_path / "cyc.class_names.txt"
    cyclic_names.write_text("\n".join(f"{i} c{i}" for i in range(3)))
    cyclic = tmp_path / "cyc.parent-child.txt"
    cyclic.write_text("3 0\n3 1\n3 2\n4 3\n3 4\n")
    for taxonomy, message in ((missing, "lacks"), (cyclic, "two parents|cycle")):
        result = run_cli("evaluate", workspace / "model", workspace / "test.npz", "--taxonomy", taxonomy,
                         "--no-progress")
        assert result.returncode == 2
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
        assert re.search(message, result.stderr), result.stderr
    result = run_cli("fit", workspace / "train.npz", "--out", tmp_path / "m", "--hierarchy", cyclic)
    assert result.returncode == 2 and "error:" in result.stderr


def test_cli_hierarchy_compares_a_learned_tree_with_a_taxonomy(workspace, planted, tmp_path):
    result = run_cli("hierarchy", workspace / "model", "--compare", workspace / "taxonomy.json")
    assert result.returncode == 0, result.stderr
    assert "agreement with taxonomy.json (LCA-height correlation): 1.000" in result.stdout  # the planted tree
    half = planted.hierarchy.restrict(planted.class_names[:10])
    save_hierarchy(half, tmp_path / "half.json")
    result = run_cli("hierarchy", workspace / "model", "--compare", tmp_path / "half.json")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
