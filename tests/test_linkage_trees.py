"""Full visual trees: linkage over Bhattacharyya (or mean-to-mean) distances, cut by merge-height quantiles or
kept binary."""
import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.builders import LinkageHierarchyBuilder, lca_agreement, make_builder
from treeseek.model import TreeseekModel


@pytest.fixture(scope="module")
def pairs():
    """Four classes in two well-separated pairs: {0, 1} near 0 and {2, 3} near 10."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.6, 0.0], [10.0, 0.0], [10.0, 1.2]])
    y = np.repeat(np.arange(4), 60)
    return centres[y] + 0.3 * rng.normal(size=(240, 2)), y


def test_average_linkage_joins_the_close_pairs_first(pairs):
    X, y = pairs
    tree = LinkageHierarchyBuilder().fit(X, y, list("abcd")).hierarchy_
    lca = tree.lca_heights
    assert lca[0, 1] < lca[0, 2] and lca[2, 3] < lca[1, 3] and lca[0, 2] == tree.max_height
    assert tree.n_nodes == 7  # binary: 3 inner nodes


def test_a_cut_tree_has_one_level_per_quantile_and_agrees_with_the_truth(pairs):
    X, y = pairs
    cut = LinkageHierarchyBuilder("average", levels=1).fit(X, y, list("abcd"))
    assert cut.shape_ == [4, 2, 1]
    truth = Hierarchy.from_groups([np.array([0, 0, 1, 1])], list("abcd"))
    assert lca_agreement(cut.hierarchy_, truth) == pytest.approx(1.0)
    swapped = Hierarchy.from_groups([np.array([0, 1, 0, 1])], list("abcd"))
    assert lca_agreement(cut.hierarchy_, swapped) < 0


def test_linkage_trees_through_the_model_and_bad_specs(pairs):
    X, y = pairs
    model = TreeseekModel(hierarchy="complete:2").fit(X, y, list("abcd"))
    assert model.hierarchy_.n_leaves == 4
    with pytest.raises(TreeseekError, match=r"LINKAGE\[:LEVELS\]\[:DISTANCE\]"):
        make_builder("average:x")
    with pytest.raises(TreeseekError, match="Ward linkage needs Euclidean"):
        make_builder("ward:cosine").fit(X, y)
    with pytest.raises(TreeseekError, match="levels must be"):
        LinkageHierarchyBuilder(levels=0).fit(X, y)


def test_the_class_distance_decides_which_classes_merge_first():
    """Means a = (1, 0), b = (10, 0), c = (0, 1), d = (0, 10): by Euclidean distance a and c are the closest
    pair; by cosine distance a-b and c-d are identical directions."""
    rng = np.random.default_rng(1)
    centres = np.array([[1.0, 0.0], [10.0, 0.0], [0.0, 1.0], [0.0, 10.0]])
    y = np.repeat(np.arange(4), 50)
    X = centres[y] + 0.05 * rng.normal(size=(200, 2))
    by_direction = make_builder("average:cosine").fit(X, y, list("abcd")).hierarchy_
    by_position = make_builder("average:euclidean").fit(X, y, list("abcd")).hierarchy_
    assert by_direction.lca_heights[0, 1] == by_direction.lca_heights[2, 3] == 1
    assert by_position.lca_heights[0, 2] == 1 and by_position.lca_heights[0, 1] > 1
    ward = make_builder("ward:1").fit(X, y, list("abcd"))
    assert ward.distance == "euclidean" and ward.levels == 1 and ward.shape_[-1] == 1


def test_select_ranking_scores_every_point_on_validation_and_picks_the_best():
    from treeseek.data.datasets import stratified_split
    from treeseek.evaluation import evaluate_retrieval
    from treeseek.evaluation.tuning import select_ranking
    from treeseek.hierarchy.synthetic import planted_hierarchy
    from treeseek.io.features import FeatureSet

    data = planted_hierarchy((3, 4), dim=16, samples_per_class=40, scale=3.0, noise=1.5, seed=2)
    grid = {"hierarchy": ["visual", "average:2:euclidean"], "temperature": [0.0, 4.0], "alpha": [1.0, 4.0]}
    selection = select_ranking(data.features, data.labels, data.class_names, {"max_components": 8},
                               data.hierarchy, grid, max_queries=10_000)
    assert len(selection.grid) == 8 and selection.split["metric"] == "mahp@250"
    best = max(selection.grid, key=lambda p: (p["mahp@250"], p["map@10"], -p["alpha"]))
    assert selection.method == best["method"] and selection.params["hierarchy"] == best["hierarchy"]
    assert selection.params["alpha"] == best["alpha"] and selection.score == best["mahp@250"]
    # one point again, by hand: the model fitted on the fitting part, validation images as queries
    is_val = stratified_split(data.labels, 0.25, 0)
    model = TreeseekModel(max_components=8, hierarchy="average:2:euclidean", temperature=4.0)
    model.fit(data.features[~is_val], data.labels[~is_val], data.class_names)
    result = evaluate_retrieval(model, FeatureSet(data.features[is_val], data.labels[is_val]),
                                FeatureSet(data.features[~is_val], data.labels[~is_val]), methods=["soft"],
                                alpha=4.0, ks=(10,), taxonomy=data.hierarchy, progress=False, full_ranking=False)
    point = next(p for p in selection.grid if p["hierarchy"] == "average:2:euclidean" and p["temperature"] == 4.0
                 and p["alpha"] == 4.0)
    assert point["mahp@250"] == pytest.approx(result.metrics["soft"]["mahp@250"])
    assert point["taxonomy_agreement"] == pytest.approx(lca_agreement(model.hierarchy_, data.hierarchy))
