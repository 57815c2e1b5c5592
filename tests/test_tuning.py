"""The validation search (#31): alpha searched on past the edge of its grid while the score still rises."""
from __future__ import annotations

import numpy as np

from treeseek.data.datasets import stratified_split
from treeseek.evaluation import evaluate_retrieval
from treeseek.evaluation.refinement import widened
from treeseek.evaluation.tuning import select_parameters
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel


def test_a_best_alpha_beyond_the_grid_is_found():
    data = planted_hierarchy((3, 4), dim=24, samples_per_class=40, scale=3.0, seed=2)
    grid = {"max_components": [None], "covariance": ["tied"], "alpha": [0.01, 0.02]}  # far too small
    chosen = select_parameters(data.features, data.labels, data.class_names, grid, hierarchy="average",
                               method="combined")
    # brute force over a wide grid of alphas, with the same model, split and score
    is_val = stratified_split(data.labels, 0.25, 0)  # select_parameters's split
    model = TreeseekModel(**{k: v for k, v in chosen.params.items() if k != "alpha"}).fit(
        data.features[~is_val], data.labels[~is_val], data.class_names)
    scores = {alpha: evaluate_retrieval(model, FeatureSet(data.features[is_val], data.labels[is_val]),
                                        FeatureSet(data.features[~is_val], data.labels[~is_val]), methods=["combined"],
                                        alpha=alpha, ks=(10,), progress=False,
                                        full_ranking=False).metrics["combined"]["map@10"]
              for alpha in 0.01 * 2.0 ** np.arange(0, 12)}
    best = max(scores.values())
    assert best > max(scores[0.01], scores[0.02])  # the premise: the grid's edge is not the optimum
    assert chosen.params["alpha"] > 0.02 and chosen.score >= 0.9 * best
    assert any("alpha on the grid was its largest value, 0.02" in note for note in chosen.notes)


def test_widening_stops_where_the_score_stops_rising_and_says_nothing_inside_the_grid():
    calls = []

    def score_at(alpha):  # rises up to alpha = 8, falls after
        calls.append(alpha)
        return -abs(np.log2(alpha) - 3)

    alpha, score, note = widened(score_at, 1.0, score_at(1.0), [0.5, 1.0])
    assert (alpha, score) == (8.0, 0.0) and "largest value, 1" in note and "chose 8" in note
    assert calls == [1.0, 2.0, 4.0, 8.0, 16.0]  # tried once past the optimum, then stopped
    assert widened(score_at, 1.0, -2.0, [0.5, 1.0, 2.0])[2] is None  # a best alpha inside the grid
    alpha, _, note = widened(lambda a: -a, 0.5, -0.5, [0.5, 1.0])  # the smallest edge: halving
    assert alpha == 0.5 * 2.0 ** -6 and "smallest value" in note


def test_a_covariance_model_with_far_worse_leaves_is_not_scored():
    from treeseek.statistics import ClassGaussians, VariancePCA

    data = planted_hierarchy((3, 4), dim=64, samples_per_class=8, scale=3.0, seed=2)
    scales = np.where(np.random.default_rng(1).random((12, 64)) < 0.5, 4.0, 1.0)  # classes of unlike spreads
    X = data.features * scales[data.labels]
    covariances = ("tied", "diag", "full")
    grid = {"max_components": [None], "covariance": list(covariances), "alpha": [1.0, 2.0]}
    chosen = select_parameters(X, data.labels, data.class_names, grid, hierarchy="average", method="combined")
    is_val = stratified_split(data.labels, 0.25, 0)  # select_parameters's split
    pca = VariancePCA(0.95).fit(X[~is_val])
    accuracy = {cov: np.mean(ClassGaussians(cov).fit(pca.transform(X[~is_val]), data.labels[~is_val], 12)
                             .assign(pca.transform(X[is_val])) == data.labels[is_val]) for cov in covariances}
    expected = {cov for cov in covariances if accuracy[cov] < max(accuracy.values()) - 0.1}
    pruned = {r["covariance"] for r in chosen.grid if r.get("step") == "pruned"}
    assert pruned == expected and expected  # the premise: some model's leaves are far worse
    scored = {r["covariance"] for r in chosen.grid if r.get("step") is None}
    assert scored == set(covariances) - pruned and chosen.params["covariance"] in scored
    assert any("not scored" in note for note in chosen.notes)


def test_the_cosine_space_and_the_temperature_are_chosen_on_validation():
    data = planted_hierarchy((3, 4), dim=24, samples_per_class=30, scale=3.0, seed=5)
    X = data.features + np.linspace(30.0, 60.0, 24)  # a common offset that raw cosine mostly sees
    grid = {"max_components": [None], "covariance": ["tied"], "alpha": [0.5, 1.0], "temperature": [1.0, 4.0]}
    chosen = select_parameters(X, data.labels, data.class_names, grid, hierarchy="average", method="soft")
    # every (space, alpha) pair and every temperature was scored, and the chosen point is the best of those rows
    rows = [r for r in chosen.grid if r.get("step") != "pruned"]
    spaces = {(r.get("cosine", "raw"), r["alpha"]) for r in rows if r.get("temperature", 4.0) == 4.0}
    assert {(s, a) for s in ("raw", "centred", "whitened") for a in (0.5, 1.0)} <= spaces
    assert {1.0, 4.0} <= {r["temperature"] for r in rows if "temperature" in r}
    assert chosen.score == max(r["map@10"] for r in rows)
    best_row = max(rows, key=lambda r: r["map@10"])
    assert chosen.params["cosine"] == best_row.get("cosine", "raw") and chosen.params["alpha"] == best_row["alpha"]
    # the score recorded is what an independent fit with the chosen parameters scores on the same split
    is_val = stratified_split(data.labels, 0.25, 0)
    model = TreeseekModel(**chosen.params).fit(X[~is_val], data.labels[~is_val], data.class_names)
    again = evaluate_retrieval(model, FeatureSet(X[is_val], data.labels[is_val]),
                               FeatureSet(X[~is_val], data.labels[~is_val]), methods=["soft"], ks=(10,),
                               progress=False, full_ranking=False).metrics["soft"]["map@10"]
    assert again == chosen.score
