import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.model import TreeseekModel
from treeseek.search import MemoryIndex, Ranking, full_sort_search, ranking_keys, smallest_k
from treeseek.search.hierarchical_index import HierarchicalIndex

from oracles import hard_keys, top_k


def brute_force(method, Q, X, q_leaves, x_leaves, tree, alpha, k):
    """Direct formula on every pair, then a full stable sort (ties by database order)."""
    return top_k(hard_keys(method, Q, X, q_leaves, x_leaves, tree, alpha), np.arange(len(X)), k)[1]


@pytest.fixture(scope="module")
def data():
    planted = planted_hierarchy(branching=(2, 3, 3), dim=16, samples_per_class=8, seed=3)
    rng = np.random.default_rng(0)
    X = planted.features.astype(np.float64)
    X[5] = X[40]  # an exact tie
    leaves = rng.integers(0, 18, len(X))
    leaves[leaves == 7] = 8  # leaf 7 holds no item
    Q = np.vstack([rng.normal(size=(30, 16)), X[40:41]])
    q_leaves = np.append(rng.integers(0, 18, 30), leaves[40])
    q_leaves[0] = 7
    return planted.hierarchy, X, leaves, Q, q_leaves


@pytest.mark.parametrize("method", ["combined", "flat", "hierarchy", "cosine"])
@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0, 5.0])
def test_fast_search_equals_full_sort_for_every_k(data, method, alpha):
    tree, X, leaves, Q, q_leaves = data
    index = HierarchicalIndex(tree)
    index.add(X[:70], leaves[:70])
    index.add(X[70:], leaves[70:])  # two batches: the index must merge them
    expected_all = brute_force(method, Q, X, q_leaves, leaves, tree, alpha, len(X))
    keys = hard_keys(method, Q, X, q_leaves, leaves, tree, alpha)
    for k in range(1, len(X) + 1):
        D, I = index.search(Q, q_leaves, k, method=method, alpha=alpha)
        assert np.array_equal(I, expected_all[:, :k]), k
        assert np.allclose(D, np.take_along_axis(keys, I, axis=1))


def test_reference_ranking_agrees_with_direct_formula(data):
    tree, X, leaves, Q, q_leaves = data
    for method in ("combined", "flat", "hierarchy", "cosine"):
        keys = ranking_keys(method, Q, X, q_leaves, leaves, tree, 0.7)
        _, I = full_sort_search(keys, len(X))
        assert np.array_equal(I, brute_force(method, Q, X, q_leaves, leaves, tree, 0.7, len(X)))


def test_k_larger_than_database_pads_with_minus_one(data):
    tree, X, leaves, Q, q_leaves = data
    index = HierarchicalIndex(tree)
    index.add(X[:5], leaves[:5])
    D, I = index.search(Q[:2], q_leaves[:2], 8)
    assert np.all(I[:, 5:] == -1) and np.all(np.isinf(D[:, 5:]))
    assert sorted(I[0, :5].tolist()) == [0, 1, 2, 3, 4]


def test_pruning_skips_most_of_the_database():
    planted = planted_hierarchy(scale=4.0, samples_per_class=100, seed=1)
    index = HierarchicalIndex(planted.hierarchy)
    index.add(planted.features, planted.labels)
    index.search(planted.features[::50], planted.labels[::50], 10, alpha=3.0)
    # alpha * h/H = 1 for the sibling ring, more than any top-10 cosine distance
    # inside the query's own class, so only the query's leaf block is scored
    assert index.scored_fraction_ == pytest.approx(1 / 36)


def test_custom_ids_are_returned():
    tree = Hierarchy.flat(2)
    index = HierarchicalIndex(tree)
    index.add(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1]), ids=np.array([70, 30]))
    _, I = index.search(np.array([[0.0, 1.0]]), np.array([1]), 2)
    assert I.tolist() == [[30, 70]]


def test_bad_index_input():
    tree = Hierarchy.flat(3)
    index = HierarchicalIndex(tree)
    with pytest.raises(TreeseekError, match="leaf ids"):
        index.add(np.ones((2, 3)), np.array([0, 3]))
    index.add(np.ones((2, 3)), np.array([0, 1]))
    with pytest.raises(TreeseekError, match="dimensions"):
        index.search(np.ones((1, 4)), np.array([0]), 1)
    with pytest.raises(TreeseekError, match="k must"):
        index.search(np.ones((1, 3)), np.array([0]), 0)
    with pytest.raises(TreeseekError, match="alpha must"):
        index.search(np.ones((1, 3)), np.array([0]), 1, alpha=-1.0)


def test_smallest_k_breaks_ties_by_id():
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 4, size=(50, 30)).astype(float)  # many ties
    ids = rng.permutation(30)
    for k in (1, 3, 10, 30, 35):
        got_keys, got_ids = smallest_k(keys, ids, k)
        for row in range(50):
            order = np.lexsort((ids, keys[row]))[:k]
            assert got_ids[row, : len(order)].tolist() == ids[order].tolist()
            assert got_keys[row, : len(order)].tolist() == keys[row, order].tolist()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_memory_index_without_hierarchy_equals_full_sort(data, metric):
    _, X, _, Q, _ = data
    planted = planted_hierarchy(branching=(2, 3, 3), dim=16, samples_per_class=8, seed=3)
    index = MemoryIndex(TreeseekModel(hierarchy="average").fit(planted.features, planted.labels))
    index.add(X[:50])
    index.add(X[50:])
    keys = hard_keys(metric, Q, X, None, None, None, 0.0)
    for k in (1, 10, len(X), len(X) + 3):
        D, I = index.search(Q, k, ranking=Ranking(metric))
        expected_d, expected_i = top_k(keys, np.arange(len(X)), min(k, len(X)))
        assert np.array_equal(I[:, : len(X)], expected_i)
        assert np.allclose(D[:, : len(X)], expected_d)
        assert (I[:, len(X):] == -1).all() and np.isinf(D[:, len(X):]).all()
