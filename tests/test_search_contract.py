"""Every index answers one contract: search(X, k, *, ranking, exclude_ids) -> (D float64, I int64), padded alike."""
import numpy as np
import pytest

from treeseek.codes import ITQHasher
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.search import MemoryIndex, Ranking, SearchIndex
from treeseek.search.code_index import CodeIndex

from oracles import hamming_ranking, index_ranking, queries, top_k


@pytest.fixture(scope="module")
def indexes(planted, model):
    """The same 40 items in each in-memory implementation (ids 0..39)."""
    items = planted.features[::18][:40]
    tree_index, memory, codes = TreeIndex(model), MemoryIndex(model), CodeIndex(ITQHasher(16, seed=0).fit(items))
    for index in (tree_index, memory, codes):
        index.add(items)
    return items, {"tree": (tree_index, Ranking("combined")), "memory": (memory, Ranking("combined")),
                   "codes": (codes, Ranking("hamming"))}


@pytest.mark.parametrize("name", ["tree", "memory", "codes"])
def test_types_order_and_padding_are_the_same_everywhere(indexes, planted, name):
    items, implementations = indexes
    index, ranking = implementations[name]
    assert isinstance(index, SearchIndex)
    D, I = index.search(queries(planted, n=5), len(items) + 4, ranking=ranking)
    assert D.dtype == np.float64 and I.dtype == np.int64 and D.shape == I.shape == (5, len(items) + 4)
    assert (np.diff(D[:, : len(items)], axis=1) >= 0).all()
    assert (I[:, len(items):] == -1).all() and np.isinf(D[:, len(items):]).all()
    assert sorted(I[0, : len(items)].tolist()) == list(range(len(items)))


@pytest.mark.parametrize("name", ["tree", "memory", "codes"])
def test_excluded_ids_leave_the_exact_ranking_of_the_rest(indexes, planted, name):
    items, implementations = indexes
    index, ranking = implementations[name]
    Q = queries(planted, n=6, seed=3)
    excluded = np.array([[1, 5], [2, -1], [0, 39], [7, 7], [-1, -1], [3, 4]])
    _, full = index.search(Q, len(items), ranking=ranking)
    D, I = index.search(Q, 10, ranking=ranking, exclude_ids=excluded)
    for row in range(len(Q)):
        expected = [i for i in full[row] if i not in excluded[row]][:10]
        assert I[row].tolist() == expected
    with pytest.raises(TreeseekError, match="one row per query"):
        index.search(Q, 3, ranking=ranking, exclude_ids=[1, 2])


def test_in_memory_and_persistent_indexes_equal_the_brute_force_formulas(indexes, planted):
    items, implementations = indexes
    Q = queries(planted, n=8, seed=4)
    tree_index = implementations["tree"][0]
    for method, alpha in (("combined", 2.0), ("soft", 0.5), ("flat", 1.0), ("hierarchy", 1.0), ("cosine", 0.0)):
        expected_D, expected_ids = index_ranking(tree_index, Q, 12, method, alpha)
        for name in ("tree", "memory"):
            D, I = implementations[name][0].search(Q, 12, ranking=Ranking(method, alpha=alpha))
            assert np.mean(I == expected_ids) > 0.99, (name, method)  # float32 may swap near-equal neighbours
            assert np.allclose(D, expected_D, atol=1e-5), (name, method)
    hasher = implementations["codes"][0].hasher
    expected_D, expected_ids = hamming_ranking(hasher, items, np.arange(len(items)), Q, 12)
    D, I = implementations["codes"][0].search(Q, 12, ranking=Ranking("hamming"))
    assert np.array_equal(I, expected_ids) and np.array_equal(D, expected_D)
    D, I = implementations["memory"][0].search(Q, 12, ranking=Ranking("euclidean"))
    euclidean = np.linalg.norm(Q[:, None, :] - items[None, :, :], axis=2)
    assert np.array_equal(I, top_k(euclidean, np.arange(len(items)), 12)[1])


@pytest.mark.parametrize("name, ranking, message", [
    ("tree", Ranking("euclidean"), "method must be one of soft, combined"),
    ("tree", Ranking("hamming"), "no binary codes"),
    ("memory", Ranking("hamming"), "holds no binary codes"),
    ("codes", Ranking("soft"), "hamming distance only"),
    ("codes", Ranking("hamming", rerank=5), "no vectors to re-rank"),
])
def test_each_index_refuses_what_it_does_not_support_in_one_line(indexes, planted, name, ranking, message):
    index = indexes[1][name][0]
    with pytest.raises(TreeseekError, match=message) as refused:
        index.search(planted.features[:2], 3, ranking=ranking)
    assert "\n" not in str(refused.value)
    with pytest.raises(TreeseekError, match="k must be at least 1"):
        index.search(planted.features[:2], 0, ranking=indexes[1][name][1])


def test_a_ranking_is_checked_when_it_is_made():
    for bad, message in (({"method": "manhattan"}, "unknown ranking method"), ({"alpha": -1.0}, "alpha must"),
                         ({"alpha": float("inf")}, "alpha must"), ({"method": "soft", "rerank": 3}, "add --hamming"),
                         ({"method": "hamming", "rerank_method": "euclidean"}, "rerank method must be one of"),
                         ({"method": "hamming", "hamming_index": "ivf"}, "flat or hnsw")):
        with pytest.raises(TreeseekError, match=message):
            Ranking(**bad)
    assert Ranking().method == "soft" and Ranking("hamming", rerank=9).distance_method == "combined"
