"""The soft ranking's exact group-by-group search: equal to a full sort of its formula, persisted, and bounded."""
import json

import numpy as np
import pytest

from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.index import TreeIndex
from treeseek.model import TreeseekModel
from treeseek.search import Ranking

from oracles import index_ranking, posteriors, queries


@pytest.fixture(scope="module")
def overlapping():
    """Classes that overlap (noise as large as the offsets), so posteriors spread over several classes."""
    return planted_hierarchy((3, 4, 3), dim=20, samples_per_class=12, scale=2.0, noise=1.0, seed=3)


def _index_with_ties(overlapping, top_m, dtype):
    """Two segments, three removals and five exact duplicates (ties between them broken by id)."""
    model = TreeseekModel(hierarchy="average", top_m=top_m).fit(overlapping.features, overlapping.labels)
    index = TreeIndex(model, dtype=dtype)
    features = np.vstack([overlapping.features, overlapping.features[:5]])
    index.add(features[:200])
    index.add(features[200:])
    index.remove([0, 17, 250])
    return index, features, np.vstack([queries(overlapping, n=6, seed=1), overlapping.features[1:2]])


def _check_every_k(index, features, Q, ks, alpha):
    expected_D, expected_ids = index_ranking(index, Q, len(index) + 3, "soft", alpha, added=features)
    for k in ks:
        D, ids = index.search(Q, k, ranking=Ranking("soft", alpha=alpha))
        assert np.array_equal(ids, expected_ids[:, :k]), (alpha, k)
        assert np.allclose(D, expected_D[:, :k], rtol=0, atol=1e-9)


@pytest.mark.parametrize("top_m, dtype, tile_rows, alpha", [(None, "float32", 1, 1.0), (1, "float16", 50, 4.0),
                                                            (3, "float32", 2048, 1.0), (3, "float16", 1, 4.0)])
def test_many_k_up_to_all_items_equal_a_full_sort(overlapping, top_m, dtype, tile_rows, alpha, monkeypatch):
    from treeseek.search import soft_groups

    monkeypatch.setattr(soft_groups, "TILE_ROWS", tile_rows)  # one tile per group, a few, or all in one
    index, features, Q = _index_with_ties(overlapping, top_m, dtype)
    ks = sorted({1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, len(index) - 1, len(index), len(index) + 3})
    _check_every_k(index, features, Q, ks, alpha)


@pytest.mark.parametrize("queries_per_tile", [0, 10**9])  # a share of the queries per thread, or of the tiles
@pytest.mark.parametrize("method", ["soft", "combined"])
def test_searched_on_threads_equal_a_full_sort(overlapping, queries_per_tile, method, monkeypatch):
    import os

    from treeseek.search import soft_groups

    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    monkeypatch.setattr(soft_groups, "MIN_QUERIES_PER_WORKER", 1)
    monkeypatch.setattr(soft_groups, "MIN_ROWS_PER_WORKER", 1)
    monkeypatch.setattr(soft_groups, "MIN_QUERIES_PER_TILE", queries_per_tile)
    monkeypatch.setattr(soft_groups, "TILE_ROWS", 20)
    index, features, Q = _index_with_ties(overlapping, 3, "float32")
    Q = np.vstack([Q, queries(overlapping, n=30, seed=7)])
    for k in (1, 9, 40, len(index) + 3):
        expected_D, expected_ids = index_ranking(index, Q, k, method, 2.0, added=features)
        D, ids = index.search(Q, k, ranking=Ranking(method, alpha=2.0))
        assert np.array_equal(ids, expected_ids), k
        assert np.allclose(D, expected_D, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", ["soft", "combined"])
def test_many_duplicates_at_the_cut_are_searched_again_wider(overlapping, method, monkeypatch):
    """Thirty copies of one item straddle the k-th: more than the first margin can hold, so the queries are
    searched again with a wider one, and the copies still come in id order."""
    from treeseek.search import soft_groups

    monkeypatch.setattr(soft_groups, "FIRST_MARGIN", 1)
    monkeypatch.setattr(soft_groups, "MARGIN_GROWTH", 2)  # several widenings before the margin holds them all
    monkeypatch.setattr(soft_groups, "TILE_ROWS", 7)
    model = TreeseekModel(hierarchy="average", top_m=3).fit(overlapping.features, overlapping.labels)
    index = TreeIndex(model, dtype="float32")
    features = np.vstack([overlapping.features, np.repeat(overlapping.features[3:4], 30, axis=0)])
    index.add(features)
    Q = np.vstack([overlapping.features[3:4] + 0.01, queries(overlapping, n=4, seed=5)])
    widened = []
    original = soft_groups._search
    monkeypatch.setattr(soft_groups, "_search", lambda *args: widened.append(args[-1]) or original(*args))
    for k in (5, 17, 31):
        widened.clear()
        expected_D, expected_ids = index_ranking(index, Q, k, method, 2.0, added=features)
        D, ids = index.search(Q, k, ranking=Ranking(method, alpha=2.0))
        assert np.array_equal(ids, expected_ids), k
        assert np.allclose(D, expected_D, rtol=0, atol=1e-9)
        assert len(widened) > 1, k  # the first query's copies overflowed the first margin


@pytest.mark.slow
@pytest.mark.parametrize("top_m, tile_rows", [(None, 1), (3, 40)])
def test_every_k_from_one_to_all_items_equals_a_full_sort(overlapping, top_m, tile_rows, monkeypatch):
    from treeseek.search import soft_groups

    monkeypatch.setattr(soft_groups, "TILE_ROWS", tile_rows)
    index, features, Q = _index_with_ties(overlapping, top_m, "float32")
    for alpha in (1.0, 4.0):
        _check_every_k(index, features, Q, range(1, len(index) + 1), alpha)


@pytest.mark.parametrize("block_rows", [1024, 8])  # 8: the 50 rows are placed in blocks, on several threads
def test_posteriors_keep_the_top_m_classes_renormalised(overlapping, block_rows, monkeypatch):
    from treeseek import model as model_module

    monkeypatch.setattr(model_module, "PLACE_ROWS", block_rows)
    model = TreeseekModel(hierarchy="average", top_m=3).fit(overlapping.features, overlapping.labels)
    expected = posteriors(model, overlapping.features[:50], 3)
    assert np.allclose(model.posteriors(overlapping.features[:50]), expected, rtol=0, atol=1e-12)
    leaves, classes, weights = model.place(overlapping.features[:50])
    assert np.array_equal(leaves, expected.argmax(axis=1))
    assert np.allclose(weights, np.take_along_axis(expected, classes, axis=1), rtol=0, atol=1e-12)
    assert (np.diff(weights, axis=1) <= 0).all()


def test_an_opened_index_reads_the_posteriors_and_computes_none(planted, model, tmp_path, monkeypatch):
    index = TreeIndex(model)
    index.add(planted.features)
    index.save(tmp_path / "ix")
    placed = []
    original = TreeseekModel.place
    monkeypatch.setattr(TreeseekModel, "place", lambda self, X: placed.append(len(X)) or original(self, X))
    reopened = TreeIndex.open(tmp_path / "ix")
    Q = queries(planted, n=5)
    D, ids = reopened.search(Q, 10)
    assert placed == [5]  # the queries only: the items' posteriors come from the files
    stored = reopened.stored_segments()[0].soft
    assert isinstance(stored.classes.base, np.memmap) and isinstance(stored.weights.base, np.memmap)  # mapped
    assert np.array_equal(ids, index_ranking(reopened, Q, 10, "soft", added=planted.features)[1])


def test_an_index_saved_without_posteriors_computes_them_and_a_compaction_stores_them(planted, model, tmp_path):
    index = TreeIndex(model)
    index.add(planted.features)
    index.save(tmp_path / "ix")
    manifest_path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["segments"]:  # as an index written before the posteriors were stored
        entry.pop("soft")
        for name in [name for name in entry["files"] if name.startswith("soft_")]:
            entry["files"].pop(name)
            (tmp_path / "ix" / "segments" / entry["name"] / name).unlink()
    manifest_path.write_text(json.dumps(manifest))
    old = TreeIndex.open(tmp_path / "ix")
    Q = queries(planted, n=8)
    assert np.array_equal(old.search(Q, 12)[1], index_ranking(old, Q, 12, "soft")[1])  # from the restored vectors
    old.compact()
    old.save(tmp_path / "ix")
    entry = json.loads(manifest_path.read_text())["segments"][0]
    assert "soft_classes.npy" in entry["files"] and entry["soft"]["top_m"] == model.top_m


def test_a_changed_temperature_is_followed(planted, tmp_path):
    model = TreeseekModel(hierarchy="average").fit(planted.features, planted.labels)
    index = TreeIndex(model)
    index.add(planted.features)
    index.save(tmp_path / "ix")
    reopened = TreeIndex.open(tmp_path / "ix")
    reopened.model.temperature = 40.0
    Q = queries(planted, n=8)
    assert np.array_equal(reopened.search(Q, 15)[1], index_ranking(reopened, Q, 15, "soft")[1])


def test_the_search_skips_groups_and_the_structure_is_small(monkeypatch):
    from treeseek.search import soft_groups

    monkeypatch.setattr(soft_groups, "TILE_ROWS", 1)  # every group its own tile: the bound alone decides
    data = planted_hierarchy((4, 5, 5), dim=64, samples_per_class=40, scale=4.0, noise=0.3, seed=2)
    model = TreeseekModel(hierarchy="average").fit(data.features, data.labels)
    index = TreeIndex(model)
    index.add(data.features)
    stored = index.stored_segments()[0]
    rng = np.random.default_rng(0)
    Q = data.features[rng.choice(len(data.features), 20)] + 0.3 * rng.normal(size=(20, 64))
    _, classes, weights = model.place(Q)
    unit = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    _, ids, scored = soft_groups.soft_group_topk(stored.segment, stored.soft, model.hierarchy_.normalized_lca,
                                                 unit, classes, weights, 1.0, 10)
    assert scored < 0.2 * len(Q) * len(index)  # well-separated classes: most groups are never scanned
    assert np.array_equal(np.where(ids == np.iinfo(np.int64).max, -1, ids),
                          index_ranking(index, Q, 10, "soft", added=data.features)[1])
    assert stored.soft.nbytes <= 0.5 * data.features.shape[1] * 4 * len(index)


@pytest.mark.parametrize("method", ["combined", "flat"])
def test_combined_and_flat_searched_by_groups_equal_a_full_sort(overlapping, method, monkeypatch):
    from treeseek.search import soft_groups

    monkeypatch.setattr(soft_groups, "TILE_ROWS", 1)
    index, _, Q = _index_with_ties(overlapping, None, "float16")
    for k in (1, 7, 60, len(index), len(index) + 3):
        expected_D, expected_ids = index_ranking(index, Q, k, method, 2.0)
        D, ids = index.search(Q, k, ranking=Ranking(method, alpha=2.0))
        assert np.array_equal(ids, expected_ids), k
        assert np.allclose(D, expected_D, rtol=0, atol=1e-9)


def test_an_in_memory_index_returns_float64_exact_distances(overlapping, monkeypatch):
    from treeseek.search import MemoryIndex, soft_groups

    from oracles import hard_keys, soft_keys, top_k

    monkeypatch.setattr(soft_groups, "TILE_ROWS", 30)
    model = TreeseekModel(hierarchy="average").fit(overlapping.features, overlapping.labels)
    index = MemoryIndex(model)
    index.add(overlapping.features)
    Q = queries(overlapping, n=6, seed=4)
    ids = np.arange(len(overlapping.features))
    expected = {"soft": soft_keys(Q, overlapping.features, posteriors(model, Q, model.top_m),
                                  posteriors(model, overlapping.features, model.top_m, stored=True),
                                  model.hierarchy_, 2.0),
                "combined": hard_keys("combined", Q, overlapping.features, model.assign(Q),
                                      model.assign(overlapping.features), model.hierarchy_, 2.0)}
    for method, keys in expected.items():
        expected_D, expected_ids = top_k(keys, ids, 25)
        D, found = index.search(Q, 25, ranking=Ranking(method, alpha=2.0))
        assert np.array_equal(found, expected_ids)
        assert np.allclose(D, expected_D, rtol=0, atol=1e-12)  # the rows as stored (float64), not their float32 copy
