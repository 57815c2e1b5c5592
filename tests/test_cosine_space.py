"""Where the rankings take their cosine (#31): raw, centred on the training mean, or whitened, the same in every
index, in evaluation and after an index is reopened or refitted. The references are written out in numpy here."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from treeseek.errors import TreeseekError
from treeseek.evaluation import evaluate_retrieval
from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.index import TreeIndex
from treeseek.io.features import FeatureSet
from treeseek.model import TreeseekModel
from treeseek.search import MemoryIndex, Ranking


@pytest.fixture(scope="module")
def data():
    planted = planted_hierarchy((3, 3), dim=16, samples_per_class=30, scale=3.0, seed=4)
    offset = np.linspace(5.0, 9.0, 16)  # a large common offset: raw cosine sees mostly it, centred cosine does not
    return planted.features + offset, planted.labels, planted.class_names


def _by_hand(space: str, X_train: np.ndarray, X: np.ndarray, kept: int) -> np.ndarray:
    """The cosine space of ``X``, from the training set's mean and sklearn's PCA."""
    mean = X_train.mean(axis=0)
    if space == "raw":
        return X
    centred = X - mean
    if space == "centred":
        return centred
    pca = PCA(n_components=kept, svd_solver="full").fit(X_train)
    scale = np.sqrt(pca.explained_variance_.mean() / pca.explained_variance_)
    coordinates = centred @ pca.components_.T
    return centred - coordinates @ pca.components_ + (coordinates * scale) @ pca.components_


def _cosine_by_hand(Q: np.ndarray, X: np.ndarray) -> np.ndarray:
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return np.clip(1.0 - Q @ X.T, 0.0, 2.0)


@pytest.mark.parametrize("space", ["raw", "centred", "whitened"])
def test_the_cosine_ranking_equals_a_hand_computation_in_every_space(data, space, tmp_path):
    X, y, names = data
    model = TreeseekModel(max_components=6, cosine=space).fit(X, y, names)
    reference = _cosine_by_hand(_by_hand(space, X, X[:12], 6), _by_hand(space, X, X, 6))
    expected_ids = np.argsort(reference, axis=1, kind="stable")[:, :10]
    memory = MemoryIndex(model)
    memory.add(X)
    stored = TreeIndex(model)
    stored.add(X)
    stored.save(tmp_path / "ix")
    for index in (memory, stored, TreeIndex.open(tmp_path / "ix")):
        D, ids = index.search(X[:12], 10, ranking=Ranking("cosine"))
        np.testing.assert_allclose(D, np.take_along_axis(reference, expected_ids, axis=1), atol=1e-5)
        assert np.mean(ids == expected_ids) > 0.98  # float32 storage may swap near-ties


@pytest.mark.parametrize("space", ["centred", "whitened"])
def test_soft_and_combined_take_the_same_cosine(data, space):
    X, y, names = data
    model = TreeseekModel(max_components=6, cosine=space, alpha=0.7).fit(X, y, names)
    d_cos = _cosine_by_hand(_by_hand(space, X, X[:12], 6), _by_hand(space, X, X, 6))
    lca = model.hierarchy_.normalized_lca
    soft_reference = d_cos + 0.7 * model.posteriors(X[:12]) @ lca @ model.posteriors(X).T
    combined_reference = d_cos + 0.7 * lca[np.ix_(model.assign(X[:12]), model.assign(X))]
    index = TreeIndex(model)
    index.add(X)
    for method, reference in (("soft", soft_reference), ("combined", combined_reference)):
        D, ids = index.search(X[:12], 20, ranking=Ranking(method))
        np.testing.assert_allclose(D, np.sort(reference, axis=1)[:, :20], atol=1e-5)


def test_centred_cosine_is_what_evaluation_scores(data):
    X, y, names = data
    model = TreeseekModel(max_components=6, cosine="centred").fit(X, y, names)
    result = evaluate_retrieval(model, FeatureSet(X, y), methods=["cosine"], ks=(1,), progress=False)
    distances = _cosine_by_hand(X - X.mean(axis=0), X - X.mean(axis=0))
    np.fill_diagonal(distances, np.inf)  # leave-one-out
    precision_at_1 = np.mean(y[np.argmin(distances, axis=1)] == y)
    assert result.metrics["cosine"]["precision@1"] == pytest.approx(precision_at_1)
    raw = evaluate_retrieval(TreeseekModel(max_components=6).fit(X, y, names), FeatureSet(X, y), methods=["cosine"],
                             ks=(1,), progress=False)
    # the premise: the common offset hid the classes from raw cosine
    assert result.metrics["cosine"]["precision@1"] > raw.metrics["cosine"]["precision@1"]


@pytest.mark.parametrize("space", ["centred", "whitened"])
def test_stored_items_are_placed_again_from_the_cosine_space(data, space, tmp_path):
    X, y, names = data
    model = TreeseekModel(max_components=6, cosine=space).fit(X, y, names)
    np.testing.assert_allclose(model.features_from_cosine(model.cosine_features(X)), X, atol=1e-9)
    index = TreeIndex(model)
    index.add(X, y)
    index.save(tmp_path / "ix")
    # another temperature: the stored posteriors are recomputed from the stored vectors, which must come back raw
    reopened = TreeIndex.open(tmp_path / "ix")
    reopened.model.temperature = 16.0
    fresh = TreeIndex(TreeseekModel(max_components=6, cosine=space, temperature=16.0).fit(X, y, names))
    fresh.add(X, y)
    D, ids = reopened.search(X[:10], 15, ranking=Ranking("soft"))
    D_fresh, ids_fresh = fresh.search(X[:10], 15, ranking=Ranking("soft"))
    np.testing.assert_allclose(D, D_fresh, atol=1e-5)
    # a refit to raw cosine stores the items' raw unit vectors
    reopened.refit(cosine="raw")
    D, ids = reopened.search(X[:10], 15, ranking=Ranking("cosine"))
    np.testing.assert_allclose(D, np.sort(_cosine_by_hand(X[:10], X), axis=1)[:, :15], atol=1e-5)


def test_an_unknown_cosine_space_is_refused(data):
    X, y, names = data
    with pytest.raises(TreeseekError, match="cosine must be one of raw, centred, whitened"):
        TreeseekModel(cosine="spherical").fit(X, y, names)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_float32_features_are_stored_as_their_unit_rows_and_lengths(data, dtype):
    # float32 rows are scaled in float32 when they are stored: within a few roundings of numpy's float64 unit
    # rows; rows too short for float32 squares (and zero rows) take the float64 path and are still exact
    X, y, names = data
    model = TreeseekModel(max_components=6).fit(X, y, names)
    rows = np.asarray(X[:40], dtype=np.float32)
    rows[3] *= 1e-20
    rows[5] = 0.0
    index = TreeIndex(model, dtype=np.dtype(dtype).name)
    index.add(rows)
    stored = index.stored_segments()[0]
    by_id = np.argsort(stored.segment.ids)
    unit, norms = np.asarray(stored.segment.vectors[by_id], np.float64), stored.norms[by_id].astype(np.float64)
    wide = rows.astype(np.float64)
    lengths = np.linalg.norm(wide, axis=1)
    expected = wide / np.where(lengths > 0, lengths, 1.0)[:, None]
    tolerance = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(norms, lengths, rtol=4 * np.finfo(np.float32).eps, atol=0)
    np.testing.assert_allclose(unit, expected, rtol=0, atol=tolerance)
    assert np.all(unit[5] == 0.0) and abs(np.linalg.norm(unit[3]) - 1.0) < tolerance * 4
