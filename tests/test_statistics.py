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
