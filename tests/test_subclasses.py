"""Sub-class Gaussians (X-means), the mixture overlap, and the out-of-distribution score (#29)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from treeseek.apps.cli.main import app
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.io.features import save_features
from treeseek.model import TreeseekModel
from treeseek.search import Ranking
from treeseek.statistics import ClassGaussians
from treeseek.statistics.bhattacharyya import mixture_bhattacharyya_coefficient
from treeseek.statistics.subclasses import split_classes

from oracles import index_ranking, novel

DIM = 8
NAMES = ["bimodal", "middle", "far"]


def planted(n_per_mode: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 is two Gaussians at -10 and +10 on the first axis, class 1 one Gaussian between them (where
    class 0's single Gaussian would sit), class 2 one Gaussian far away on the second axis."""
    rng = np.random.default_rng(seed)
    centres = np.zeros((4, DIM))
    centres[0, 0], centres[1, 0], centres[3, 1] = -10.0, 10.0, 20.0
    modes = np.repeat(np.arange(4), n_per_mode)
    X = centres[modes] + rng.normal(size=(len(modes), DIM))
    return X, np.array([0, 0, 1, 2])[modes]


def test_the_split_finds_both_modes_and_leaf_accuracy_rises():
    X, y = planted(80, seed=0)
    test_x, test_y = planted(80, seed=1)
    whole = TreeseekModel(hierarchy="average").fit(X, y, NAMES)
    split = TreeseekModel(hierarchy="average", subclasses=4).fit(X, y, NAMES)
    assert split.fit_info_["split_classes"] == ["bimodal"]
    assert split.n_leaves_ == 4 and split.n_classes_ == 3
    first_mode = test_x[:, 0] < 0
    leaves = split.assign(test_x[test_y == 0])
    # every test point of a mode lands on one sub-class leaf, a different one for each mode
    assert len(set(leaves[first_mode[test_y == 0]])) == 1 and len(set(leaves[~first_mode[test_y == 0]])) == 1
    assert leaves[first_mode[test_y == 0]][0] != leaves[~first_mode[test_y == 0]][0]
    accuracy_whole = np.mean(whole.predict(test_x) == test_y)
    accuracy_split = np.mean(split.predict(test_x) == test_y)
    assert accuracy_split == 1.0 and accuracy_whole < 0.85


def test_the_tree_joins_the_two_modes_under_their_class():
    X, y = planted(80, seed=0)
    model = TreeseekModel(hierarchy="average", subclasses=4).fit(X, y, NAMES)
    tree = model.hierarchy_
    modes = np.flatnonzero(model.leaf_class_ == 0)
    assert [tree.names[m] for m in modes] == ["bimodal~1", "bimodal~2"]
    join = tree.lca(int(modes[0]), int(modes[1]))
    assert tree.names[join] == "bimodal" and tree.height[join] == 1
    middle = int(np.flatnonzero(model.leaf_class_ == 1)[0])
    assert tree.lca_heights[modes[0], middle] > tree.lca_heights[modes[0], modes[1]] > 0
    # the class tree stays a tree over the three classes
    assert model.class_hierarchy_.n_leaves == 3


def test_one_gaussian_per_class_is_todays_model_exactly():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, DIM)) + np.repeat(np.eye(DIM)[:3] * 6, 100, axis=0)
    y = np.repeat([0, 1, 2], 100)
    allowed = TreeseekModel(hierarchy="visual", subclasses=4).fit(X, y)
    assert allowed.n_leaves_ == 3 and allowed.fit_info_["split_classes"] == []
    Z = allowed.transform(X)
    means = np.stack([Z[y == c].mean(axis=0) for c in range(3)])  # numpy, not the model's code
    np.testing.assert_allclose(allowed.gaussians_.means_, means, atol=1e-12)
    today = TreeseekModel(hierarchy="visual").fit(X, y)
    assert allowed.hierarchy_ == today.hierarchy_
    for mine, theirs in zip(allowed.place(X), today.place(X)):
        np.testing.assert_array_equal(mine, theirs)


def test_a_single_gaussian_class_is_not_split_even_when_elongated():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(2000, 16)) * np.linspace(0.3, 3.0, 16)
    split = split_classes(X, np.zeros(2000, dtype=np.int64), 1, 4)
    assert split.n_components == 1


def _tied(means: np.ndarray, counts: np.ndarray, variance: float) -> ClassGaussians:
    return ClassGaussians.from_arrays({"gauss_means": means, "gauss_counts": counts,
                                       "gauss_covariances": np.array([[variance]])}, "tied")


def test_mixture_overlap_is_the_bound_and_bounds_the_true_coefficient():
    """Class 0 = 0.25 N(-2, 1) + 0.75 N(1, 1), class 1 = N(3, 1): the bound by hand, and the true coefficient
    (the integral of sqrt(p q), by quadrature) below it."""
    gaussians = _tied(np.array([[-2.0], [1.0], [3.0]]), np.array([10, 30, 20]), 1.0)
    overlap = mixture_bhattacharyya_coefficient(gaussians, np.array([0, 0, 1]), 2)
    pair = lambda a, b: np.exp(-((a - b) ** 2) / 8.0)  # BC of two unit-variance Gaussians
    bound = np.sqrt(0.25) * pair(-2, 3) + np.sqrt(0.75) * pair(1, 3)
    assert overlap[0, 1] == pytest.approx(bound, abs=1e-12) and overlap[1, 0] == pytest.approx(bound, abs=1e-12)
    true, _ = quad(lambda x: np.sqrt((0.25 * norm.pdf(x, -2) + 0.75 * norm.pdf(x, 1)) * norm.pdf(x, 3)), -20, 20)
    assert true <= overlap[0, 1] + 1e-9
    # one Gaussian per class: the plain coefficient
    single = mixture_bhattacharyya_coefficient(gaussians, np.array([0, 1, 2]), 3)
    assert single[0, 2] == pytest.approx(pair(-2, 3), abs=1e-12)


def test_soft_search_over_sub_class_leaves_is_exact():
    X, y = planted(40, seed=0)
    model = TreeseekModel(hierarchy="average", subclasses=4).fit(X, y, NAMES)
    index = TreeIndex(model)
    index.add(X, y)
    Q = planted(5, seed=2)[0]
    for method in ("soft", "combined"):
        D, I = index.search(Q, 30, ranking=Ranking(method))
        _, expected = index_ranking(index, Q, 30, method, added=X)
        np.testing.assert_array_equal(I, expected)


def test_saving_and_loading_keeps_the_sub_classes(tmp_path):
    X, y = planted(40, seed=0)
    model = TreeseekModel(hierarchy="average", subclasses=4).fit(X, y, NAMES)
    model.save(tmp_path / "model")
    loaded = TreeseekModel.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.leaf_class_, model.leaf_class_)
    assert loaded.hierarchy_ == model.hierarchy_ and loaded.class_hierarchy_ == model.class_hierarchy_
    for mine, theirs in zip(loaded.place(X), model.place(X)):
        np.testing.assert_array_equal(mine, theirs)
    np.testing.assert_array_equal(loaded.novelty(X).p_values, model.novelty(X).p_values)
    arrays = next((tmp_path / "model").glob("arrays-*.npz"))
    with np.load(arrays, allow_pickle=False) as stored:  # nothing in it needs unpickling
        assert {"leaf_class", "novelty_reference", "novelty_threshold"} <= set(stored.files)


def test_the_novelty_score_ranks_planted_outliers_above_inliers():
    rng = np.random.default_rng(5)
    X, y = planted(200, seed=0)
    model = TreeseekModel(hierarchy="average", subclasses=4).fit(X, y, NAMES)
    inliers = planted(200, seed=6)[0]
    outliers = rng.normal(size=(300, DIM)) + np.r_[0.0, -12.0, np.zeros(DIM - 2)]  # a class nobody saw
    novelty = model.novelty(np.vstack([inliers, outliers]))
    truth = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]
    assert roc_auc_score(truth, novelty.scores) >= 0.95
    # the flag passes about novelty_quantile of new known-class images, and stops the outliers
    assert 0.95 <= 1.0 - novelty.flagged[: len(inliers)].mean() <= 1.0
    assert novelty.flagged[len(inliers):].mean() > 0.95
    # the p-value: the share of held-out known-class scores at or above the query's
    assert np.all((novelty.p_values >= 0) & (novelty.p_values <= 1))
    assert np.corrcoef(novelty.scores, -novelty.p_values)[0, 1] > 0


def test_bad_sub_class_settings_are_refused():
    X, y = planted(40, seed=0)
    with pytest.raises(TreeseekError, match="sub-classes per class must be an integer >= 1"):
        TreeseekModel(subclasses=0).fit(X, y)
    small = np.repeat([0, 1, 2], 5)
    with pytest.raises(TreeseekError, match="no class is large enough to split"):
        TreeseekModel(subclasses=3).fit(X[:15], small)


@pytest.mark.parametrize("value, message", [("0", "must be off, auto or an integer >= 1"),
                                            ("two", "must be off, auto or an integer >= 1"),
                                            ("3", "no class is large enough to split")])
def test_fit_refuses_bad_subclasses_in_one_line(tmp_path, value, message):
    X, y = planted(5, seed=0)
    save_features(tmp_path / "train.npz", X, y, NAMES)
    result = CliRunner().invoke(app, ["fit", str(tmp_path / "train.npz"), "--out", str(tmp_path / "model"),
                                      "--subclasses", value, "--no-plot"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


# ------------------------------------------------------------------ open-set queries in every interface
def open_set_case(tmp_path):
    """An index of the planted classes, and queries: 6 known-class images, then 6 of a class nobody saw."""
    X, y = planted(40, seed=0)
    model = TreeseekModel(hierarchy="average", subclasses=4).fit(X, y, NAMES)
    index = TreeIndex(model)
    index.add(X, y)
    index.save(tmp_path / "index")
    rng = np.random.default_rng(8)
    outliers = rng.normal(size=(6, DIM)) + np.r_[-5.0, 10.0, np.zeros(DIM - 2)]  # between two classes, far from both
    Q = np.vstack([planted(2, seed=9)[0][[0, 2, 3, 4, 6, 7]], outliers])
    return index, Q


def test_flagged_queries_are_ranked_by_the_visual_distance_alone(tmp_path):
    from treeseek.apps.querying import Queries, index_target, run_search

    index, Q = open_set_case(tmp_path)
    flagged = novel(index.model, Q)
    assert not flagged[:6].any() and flagged[6:].all()
    report = run_search(index_target(index), Queries(Q, list(range(len(Q)))), 30, Ranking("combined"))
    ids = np.array([[hit["id"] for hit in query["results"]] for query in report["queries"]])
    expected = index_ranking(index, Q, 30, "combined")[1]
    visual = index_ranking(index, Q, 30, "cosine")[1]
    np.testing.assert_array_equal(ids[:6], expected[:6])
    np.testing.assert_array_equal(ids[6:], visual[6:])
    assert not np.array_equal(expected[6:], visual[6:])  # the rule changed something
    for query, is_flagged in zip(report["queries"], flagged):
        assert query["novelty"]["flagged"] == is_flagged and 0.0 <= query["novelty"]["p_value"] <= 1.0
        assert query.get("note") == ("no known class is close: results are visual only" if is_flagged else None)
        assert query.get("method") == ("combined at alpha 0 (cosine alone)" if is_flagged else None)


def test_the_command_line_and_the_api_say_when_no_known_class_is_close(tmp_path):
    from fastapi.testclient import TestClient

    from treeseek.apps.server import create_app

    index, Q = open_set_case(tmp_path)
    save_features(tmp_path / "q.npz", Q, np.zeros(len(Q), dtype=np.int64), NAMES)
    result = CliRunner().invoke(app, ["search", str(tmp_path / "index"), "--query", str(tmp_path / "q.npz"),
                                      "-k", "3", "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    headers = [line for line in result.output.splitlines() if line.startswith("query ")]
    assert ["results are visual only" in line for line in headers] == [False] * 6 + [True] * 6
    answer = TestClient(create_app(tmp_path / "index")).post("/api/search/features",
                                                             json={"features": Q.tolist(), "k": 3})
    assert answer.status_code == 200, answer.text
    queries = answer.json()["queries"]
    assert [q["novelty"]["flagged"] for q in queries] == [False] * 6 + [True] * 6
    assert queries[-1]["note"] == "no known class is close: results are visual only"
