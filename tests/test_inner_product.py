"""Soft hierarchical distance and its inner-product form, against the direct formulas."""
import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hierarchy import Hierarchy, load_taxonomy
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.model import TreeseekModel
from treeseek.search.inner_product import InnerProductIndex, augment, tree_factor

from oracles import cosine, hard_keys, lca_fractions, top_k


def soft_hierarchy_distances(query_posteriors, item_posteriors, tree):
    """The double sum over class pairs, written out."""
    return np.einsum("qa,ib,ab->qi", query_posteriors, item_posteriors, lca_fractions(tree))


def random_tree(seed, n=25):
    rng = np.random.default_rng(seed)
    levels = [rng.integers(0, 8, size=n)]
    levels.append(rng.integers(0, 3, size=8)[levels[0]])
    return Hierarchy.from_groups(levels, [f"c{i}" for i in range(n)])


@pytest.mark.parametrize("seed", range(4))
def test_the_tree_factor_reproduces_the_similarity(seed):
    for tree in (random_tree(seed), Hierarchy.flat(6), Hierarchy.flat(1)):
        G = tree_factor(tree)
        assert np.abs(G @ G.T - (1.0 - lca_fractions(tree))).max() <= 1e-9


def test_the_tree_factor_of_a_real_taxonomy(shared):
    tree = load_taxonomy(shared / "hierarchies" / "cub200.parent-child.txt")
    G = tree_factor(tree)
    assert np.abs(G @ G.T - (1.0 - lca_fractions(tree))).max() <= 1e-9


@pytest.fixture(scope="module")
def fitted():
    data = planted_hierarchy((3, 4), dim=16, samples_per_class=40, scale=3.0, seed=4)
    model = TreeseekModel(hierarchy="visual", threshold=0.05, covariance="tied").fit(data.features, data.labels, data.class_names)
    rng = np.random.default_rng(0)
    queries = data.features[rng.choice(len(data.features), 30, replace=False)] + rng.normal(size=(30, 16))
    return model, data.features, queries


@pytest.mark.parametrize("alpha, temperature, top_m", [(0.5, 1.0, None), (2.0, 0.3, 3), (5.0, 3.0, None)])
def test_inner_product_search_equals_a_full_sort_of_the_soft_formula(fitted, alpha, temperature, top_m):
    model, items, queries = fitted
    tree = model.hierarchy_
    posterior = lambda X: model.gaussians_.posteriors(model.transform(X), temperature, top_m)  # noqa: E731
    direct = cosine(queries, items) + alpha * soft_hierarchy_distances(posterior(queries), posterior(items),
                                                                               tree)
    expected_d, expected_ids = top_k(direct, np.arange(len(items)), 20)
    G = tree_factor(tree)
    index = InnerProductIndex()
    index.add(augment(items, posterior(items), G))
    distances, ids = index.search(augment(queries, posterior(queries), G, alpha), 20, alpha)
    assert np.allclose(distances, expected_d, atol=1e-5)
    assert np.mean(ids == expected_ids) > 0.99  # float32 may swap near-equal neighbours
    if top_m:
        assert (np.count_nonzero(posterior(queries), axis=1) <= top_m).all()


def test_hard_leaves_are_the_zero_temperature_limit(fitted):
    model, items, queries = fitted
    tree, alpha = model.hierarchy_, 2.0
    cold = model.gaussians_.posteriors(model.transform(queries), 1e-6)
    assert np.array_equal(np.argmax(cold, axis=1), model.assign(queries)) and np.allclose(cold.max(axis=1), 1.0)
    hard = hard_keys("combined", queries, items, model.assign(queries), model.assign(items), tree, alpha)
    item_cold = model.gaussians_.posteriors(model.transform(items), 1e-6)
    soft = cosine(queries, items) + alpha * soft_hierarchy_distances(cold, item_cold, tree)
    assert np.allclose(soft, hard, atol=1e-9)


def test_the_soft_method_in_the_harness_tends_to_combined_as_the_temperature_falls(fitted):
    from treeseek.evaluation import evaluate_retrieval
    from treeseek.io.features import FeatureSet

    model, items, _ = fitted
    data = planted_hierarchy((3, 4), dim=16, samples_per_class=40, scale=3.0, seed=4)
    queries = FeatureSet(data.features[::3], data.labels[::3])
    database = FeatureSet(data.features, data.labels)
    model.temperature = 1e-6
    cold = evaluate_retrieval(model, queries, database, methods=["soft", "combined"], progress=False)
    assert cold.metrics["soft"] == pytest.approx(cold.metrics["combined"])
    model.temperature = 1.0
    warm = evaluate_retrieval(model, queries, database, methods=["soft"], progress=False)
    direct = cosine(queries.features, items) + model.alpha * soft_hierarchy_distances(
        model.posteriors(queries.features), model.posteriors(items), model.hierarchy_)
    assert np.isfinite(warm.metrics["soft"]["map@10"]) and direct.shape == (len(queries.features), len(items))
    top1 = np.argmin(direct, axis=1)
    relevant = data.labels[top1] == queries.labels
    assert warm.metrics["soft"]["precision@1"] == pytest.approx(relevant.mean())


def test_an_ivf_index_probing_every_list_finds_the_exact_top_k_and_bad_factories_are_one_line(fitted):
    model, items, queries = fitted
    G, alpha = tree_factor(model.hierarchy_), 1.5
    item_vectors = augment(items, np.eye(model.n_classes_)[model.assign(items)], G)
    query_vectors = augment(queries, np.eye(model.n_classes_)[model.assign(queries)], G, alpha)
    exact, approximate = InnerProductIndex(), InnerProductIndex("IVF8,Flat", nprobe=8)
    exact.add(item_vectors)
    approximate.add(item_vectors)
    (d_exact, _), (d_ivf, _) = exact.search(query_vectors, 10, alpha), approximate.search(query_vectors, 10, alpha)
    assert approximate.index_.ntotal == len(items)
    assert np.allclose(d_ivf, d_exact, atol=1e-5)
    with pytest.raises(TreeseekError, match="FAISS cannot build index 'Nonsense'"):
        InnerProductIndex("Nonsense").add(item_vectors)


def test_one_query_runs_faiss_on_one_thread_and_the_setting_comes_back():
    import faiss

    from treeseek.search.threads import faiss_threads_for

    before = faiss.omp_get_max_threads()
    with faiss_threads_for(1):
        assert faiss.omp_get_max_threads() == 1
    assert faiss.omp_get_max_threads() == before
    with faiss_threads_for(5):  # a batch keeps FAISS's threads: it parallelises over the queries
        assert faiss.omp_get_max_threads() == before
    with pytest.raises(KeyError):
        with faiss_threads_for(1):
            raise KeyError("a failed search")
    assert faiss.omp_get_max_threads() == before
