import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis
from sklearn.decomposition import PCA

from treeseek.errors import TreeseekError
from treeseek.statistics import ClassGaussians, VariancePCA, bhattacharyya_coefficient, bhattacharyya_distance


def random_classes(n_classes=5, per_class=30, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3.0, size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), per_class)
    mixing = rng.normal(size=(n_classes, dim, dim)) * 0.5 + np.eye(dim)
    X = means[y] + np.einsum("nd,nde->ne", rng.normal(size=(len(y), dim)), mixing[y])
    return X, y


def test_pca_keeps_the_requested_variance_and_cap():
    X, _ = random_classes(dim=12)
    reference = np.cumsum(PCA().fit(X).explained_variance_ratio_)
    pca = VariancePCA(0.9).fit(X)
    expected = int(np.argmax(reference >= 0.9)) + 1
    assert pca.n_components_ == expected
    assert pca.explained_variance_ratio_.sum() >= 0.9
    assert VariancePCA(0.999, max_components=3).fit(X).n_components_ == 3
    assert VariancePCA(1.0).fit(X).transform(X).shape == (len(X), 12)
    with pytest.raises(TreeseekError):
        VariancePCA(1.5).fit(X)


def reference_covariance(g: ClassGaussians, k: int) -> np.ndarray:
    if g.covariance == "tied":
        return g.covariances_
    if g.covariance == "diag":
        return np.diag(g.covariances_[k])
    return g.covariances_[k]


@pytest.mark.parametrize("model", ["full", "tied", "diag"])
def test_mahalanobis_matches_scipy(model):
    X, y = random_classes()
    g = ClassGaussians(model).fit(X, y)
    D = g.mahalanobis(X[:20])
    for i in range(20):
        for k in range(g.n_classes_):
            inv = np.linalg.inv(reference_covariance(g, k))
            assert D[i, k] == pytest.approx(mahalanobis(X[i], g.means_[k], inv) ** 2, rel=1e-8)
    assert np.array_equal(g.assign(X[:20]), np.argmin(D, axis=1))


@pytest.mark.parametrize("model", ["full", "tied", "diag"])
def test_mahalanobis_through_a_projection_matches_scipy_on_projected_rows(model):
    # raw rows with the PCA given: the distances of the rows that sklearn's PCA projects. The tied covariance
    # folds the projection into its whitening, once per projection: a second PCA must not reuse the first's.
    X, y = random_classes(dim=9)
    first = PCA(5, svd_solver="full").fit(X)
    g = ClassGaussians(model).fit(first.transform(X), y)
    for rows in (slice(None), slice(None, None, 2)):
        pca = VariancePCA(1.0, max_components=5).fit(X[rows])
        Z = PCA(5, svd_solver="full").fit(X[rows]).transform(X[:15])
        D = g.mahalanobis(X[:15], projection=pca)
        for i in range(15):
            for k in range(g.n_classes_):
                inv = np.linalg.inv(reference_covariance(g, k))
                assert D[i, k] == pytest.approx(mahalanobis(Z[i], g.means_[k], inv) ** 2, rel=1e-8, abs=1e-9)
        assert np.array_equal(g.assign(X[:15], projection=pca), np.argmin(D, axis=1))
    with pytest.raises(TreeseekError, match="expect 9"):
        g.mahalanobis(Z[:3], projection=pca)


@pytest.mark.parametrize("model", ["full", "tied", "diag"])
def test_fewer_samples_than_dimensions_stay_well_conditioned(model):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3 * 4 + 1, 40))
    y = np.array([0] * 4 + [1] * 4 + [2] * 4 + [3])  # class 3 has one sample
    g = ClassGaussians(model).fit(X, y)
    covs = g.covariances_
    if model == "diag":
        assert np.all(covs > 0)
    else:
        for cov in covs.reshape(-1, 40, 40):
            eig = np.linalg.eigvalsh(cov)
            assert eig.min() > 0 and eig.max() / eig.min() < 1e6
    assert np.all(np.isfinite(g.mahalanobis(X)))
    assert np.all(np.isfinite(bhattacharyya_distance(g)))


def test_class_without_samples_is_an_error():
    X, y = random_classes()
    with pytest.raises(TreeseekError, match="no training samples"):
        ClassGaussians().fit(X, y, n_classes=7)


@pytest.mark.parametrize("model", ["full", "tied", "diag"])
def test_bhattacharyya_matches_direct_formula(model):
    X, y = random_classes()
    g = ClassGaussians(model).fit(X, y)
    D = bhattacharyya_distance(g)
    for a in range(g.n_classes_):
        for b in range(g.n_classes_):
            s1, s2 = reference_covariance(g, a), reference_covariance(g, b)
            s = (s1 + s2) / 2
            diff = g.means_[a] - g.means_[b]
            expected = diff @ np.linalg.solve(s, diff) / 8 + 0.5 * (
                np.linalg.slogdet(s)[1] - 0.5 * (np.linalg.slogdet(s1)[1] + np.linalg.slogdet(s2)[1])
            )
            assert D[a, b] == pytest.approx(expected, rel=1e-7, abs=1e-9)
    bc = bhattacharyya_coefficient(g)
    assert np.allclose(np.diag(bc), 1.0) and np.allclose(bc, bc.T)
    assert np.all((bc >= 0) & (bc <= 1))


def test_bhattacharyya_is_stable_where_det_overflows():
    rng = np.random.default_rng(2)
    X = rng.normal(scale=30.0, size=(600, 300))
    y = np.repeat(np.arange(3), 200)
    g = ClassGaussians("full").fit(X, y)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.linalg.det(g.covariances_[0]))  # a det-based formula would fail here
    D = bhattacharyya_distance(g)
    assert np.all(np.isfinite(D)) and np.all(D >= 0)


def _stable_order(values, m):
    """Reference: each row sorted by value, then column (numpy's stable argsort, NaN last), cut at m."""
    columns = np.array([np.lexsort((np.arange(values.shape[1]), row))[:m] for row in values])
    return columns, np.take_along_axis(values, columns, axis=1)


@pytest.mark.parametrize("n_classes, m, ties", [(1000, 8, True), (1000, 8, False), (1003, 1, False),
                                                (1003, 63, True), (40, 8, True), (10, 8, False), (10, 10, True)])
def test_smallest_per_row_orders_as_a_stable_sort(n_classes, m, ties):
    from treeseek.statistics.row_selection import smallest_per_row

    rng = np.random.default_rng(n_classes + m)
    values = rng.integers(0, 12, size=(300, n_classes)).astype(float) if ties else rng.random((300, n_classes))
    values[7] = 5.0  # a row of one value: its first m columns
    columns, kept = smallest_per_row(values, m)
    expected_columns, expected_kept = _stable_order(values, m)
    assert np.array_equal(columns, expected_columns)
    assert np.array_equal(kept, expected_kept)


def test_smallest_per_row_puts_nan_last_as_numpy_sorts():
    from treeseek.statistics.row_selection import smallest_per_row

    values = np.random.default_rng(4).random((50, 500))
    values[3, ::2] = np.nan  # finite entries enough for the bound
    values[9, 5:] = np.nan  # fewer finite entries than m
    values[11, :] = np.nan
    columns, kept = smallest_per_row(values, 8)
    expected_columns, expected_kept = _stable_order(values, 8)
    assert np.array_equal(columns, expected_columns)
    assert np.array_equal(kept, expected_kept, equal_nan=True)


@pytest.mark.parametrize("top_m", [None, 1, 3])
def test_top_posteriors_are_the_renormalised_softmax_of_the_nearest(top_m):
    from scipy.special import softmax

    from treeseek.statistics.gaussians import top_posteriors

    rng = np.random.default_rng(5)
    squared = rng.integers(0, 30, size=(200, 90)).astype(float)  # many exact ties
    classes, weights = top_posteriors(squared, 2.5, top_m)
    expected_classes, nearest = _stable_order(squared, squared.shape[1] if top_m is None else top_m)
    assert np.array_equal(classes, expected_classes)
    assert np.array_equal(classes[:, 0], np.argmin(squared, axis=1))
    assert np.allclose(weights, softmax(-nearest / 5.0, axis=1), rtol=0, atol=1e-15)
