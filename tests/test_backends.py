"""Search backends: exact ones equal the brute-force full sort, approximate ones keep high recall."""
import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.search import make_backend
from treeseek.search.hierarchical_index import HierarchicalIndex

from oracles import hard_keys, top_k


@pytest.fixture(scope="module")
def data():
    planted = planted_hierarchy(branching=(2, 3, 3), dim=16, samples_per_class=20, seed=4)
    rng = np.random.default_rng(1)
    X = planted.features.astype(np.float64)
    leaves = rng.integers(0, 18, len(X))
    leaves[leaves == 3] = 4  # an empty leaf
    Q = rng.normal(size=(25, 16))
    q_leaves = rng.integers(0, 18, 25)
    return planted.hierarchy, X, leaves, Q, q_leaves


@pytest.mark.parametrize("backend", ["exact", "faiss-flat"])
@pytest.mark.parametrize("method", ["combined", "flat", "hierarchy", "cosine"])
def test_exact_backends_equal_full_sort(data, backend, method):
    tree, X, leaves, Q, q_leaves = data
    X = X.astype(np.float32).astype(np.float64)  # what faiss-flat computes with
    keys = hard_keys(method, Q, X, q_leaves, leaves, tree, 0.7)
    index = HierarchicalIndex(tree, backend=backend)
    index.add(X, leaves)
    for k in (1, 7, 60, len(X), len(X) + 5):
        expected_keys, expected = top_k(keys, np.arange(len(X)), min(k, len(X)))
        D, I = index.search(Q, q_leaves, k, method=method, alpha=0.7)
        assert np.array_equal(I[:, : len(X)], expected)
        assert np.allclose(D[:, : len(X)], expected_keys, atol=1e-5)
        assert (I[:, len(X):] == -1).all() and np.isinf(D[:, len(X):]).all()


def clustered(n_classes=(4, 5), per_class=1500, dim=32, seed=0):
    """Clusters with a low intrinsic dimension, like CNN features (isotropic noise is ANN's worst case)."""
    planted = planted_hierarchy(branching=n_classes, dim=dim, samples_per_class=per_class, scale=6.0, noise=0.0,
                                seed=seed)
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, 6)))[0].T
    X = planted.features + rng.normal(size=(len(planted.features), 6)) @ basis + 0.05 * rng.normal(size=(len(planted.features), dim))
    return planted.hierarchy, X, planted.labels


@pytest.mark.parametrize("backend", ["faiss-ivf", "faiss-hnsw"])
@pytest.mark.parametrize("method", ["combined", "cosine"])
def test_approximate_backends_keep_recall(backend, method):
    tree, X, labels = clustered()
    Q, q_leaves = X[::97] + 0.01, labels[::97]
    exact = HierarchicalIndex(tree)
    exact.add(X, labels)
    _, expected = exact.search(Q, q_leaves, 50, method=method)
    approximate = HierarchicalIndex(tree, backend=backend, min_ann_items=1000)
    approximate.add(X, labels)
    D, I = approximate.search(Q, q_leaves, 50, method=method)
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(I, expected)])
    assert recall >= 0.9, recall
    assert (np.diff(D, axis=1) >= 0).all()


def test_backend_names_and_parameters_are_checked():
    with pytest.raises(TreeseekError, match="unknown backend"):
        make_backend("annoy")
    with pytest.raises(TreeseekError, match="no parameter 'nprobes'"):
        make_backend("faiss-ivf", nprobes=3)
    with pytest.raises(TreeseekError, match="takes no parameters"):
        make_backend("exact", nprobe=3)
