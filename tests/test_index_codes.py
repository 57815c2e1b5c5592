"""Binary codes stored in the persistent index: Hamming search and hierarchy re-ranking vs brute force."""
import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.hashing import ITQHasher, hamming_distances
from treeseek.index import TreeIndex
from treeseek.search.distances import ranking_keys

BITS = 16  # short codes: many exact ties, which the id order must break


@pytest.fixture(scope="module")
def hasher(planted):
    return ITQHasher(BITS, seed=0).fit(planted.features)


def queries(planted, n=30, seed=1):
    rng = np.random.default_rng(seed)
    return planted.features[rng.choice(len(planted.features), n, replace=False)] + rng.normal(size=(n, 24))


def brute_hamming(hasher, features, live_ids, Q, k):
    """Popcount distance to every live item's code, computed from the original features; stable sort by id."""
    live_ids = np.sort(live_ids)
    distances = hamming_distances(hasher.encode(Q), hasher.encode(features[live_ids]))
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distances, order, 1), live_ids[order]


def split_index(planted, model, hasher, tmp_path):
    """An index with codes in two segments (one saved, one in memory) and removals in both."""
    index = TreeIndex(model)
    index.add(planted.features[:400], planted.labels[:400])
    index.set_hasher(hasher)
    index.save(tmp_path / "ix")
    index.add(planted.features[400:], planted.labels[400:])
    removed = np.array([0, 3, 17, 402, 650])
    index.remove(removed)
    return index, np.setdiff1d(np.arange(len(planted.features)), removed)


def test_hamming_search_equals_a_popcount_full_sort(planted, model, hasher, tmp_path):
    index, live = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    for k in (1, 7, 100, len(live), len(live) + 4):
        expected_d, expected_ids = brute_hamming(hasher, planted.features, live, Q, k)
        distances, ids = index.search_codes(Q, k)
        n = expected_ids.shape[1]
        assert np.array_equal(ids[:, :n], expected_ids)
        assert np.array_equal(distances[:, :n], expected_d)
        assert (ids[:, n:] == -1).all() and np.isinf(distances[:, n:]).all()


def test_codes_survive_save_open_compact_and_refit(planted, model, hasher, tmp_path):
    index, live = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    before = index.search_codes(Q, 50)
    index.save(tmp_path / "ix")
    reopened = TreeIndex.open(tmp_path / "ix")
    assert reopened.hasher is not None and isinstance(reopened.segments_[0].codes, np.memmap)
    assert all(np.array_equal(a, b) for a, b in zip(reopened.search_codes(Q, 50), before))
    reopened.compact()
    reopened.refit(threshold=0.2)
    reopened.save(tmp_path / "ix")
    again = TreeIndex.open(tmp_path / "ix")
    assert all(np.array_equal(a, b) for a, b in zip(again.search_codes(Q, 50), before))
    stored = again.segments_[0]
    order = np.argsort(stored.segment.ids)
    assert np.array_equal(np.asarray(stored.codes)[order], hasher.encode(planted.features[live]))


@pytest.mark.parametrize("method", ["combined", "soft", "flat", "cosine"])
def test_rerank_orders_the_hamming_candidates_by_the_method_distance(planted, model, hasher, tmp_path, method):
    index, live = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    for rerank, k, alpha in ((40, 10, None), (200, 25, 3.0), (len(live) + 10, 5, 1.0)):
        _, candidates = brute_hamming(hasher, planted.features, live, Q, rerank)
        alpha_used = model.alpha if alpha is None else alpha
        expected_keys, expected_ids = [], []
        for q, row in enumerate(candidates):
            stored = index.items(row)
            # the soft reference takes posteriors of the features as added, not of the stored copies
            keys = ranking_keys(method, Q[q : q + 1], stored["vectors"], model.assign(Q[q : q + 1]),
                                stored["leaves"], model.hierarchy_, alpha_used,
                                model.posteriors(Q[q : q + 1]), model.posteriors(planted.features[row]))[0]
            order = np.lexsort((row, keys))[:k]
            expected_keys.append(keys[order])
            expected_ids.append(row[order])
        distances, ids = index.search_codes(Q, k, rerank=rerank, method=method, alpha=alpha)
        assert np.array_equal(ids, np.array(expected_ids))
        assert np.allclose(distances, np.array(expected_keys))


def test_rerank_in_blocks_and_chunks_equals_one_pass(planted, model, hasher, tmp_path, monkeypatch):
    index, _ = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    whole = [index.search_codes(Q, 10, rerank=60, method=method) for method in ("combined", "soft")]
    monkeypatch.setattr("treeseek.index.code_search.RERANK_BLOCK", 1)  # one query per block
    monkeypatch.setattr("treeseek.index.code_search.POSTERIOR_CHUNK", 7)  # and posteriors 7 items at a time
    for method, (distances, ids) in zip(("combined", "soft"), whole):
        blocked_d, blocked_ids = index.search_codes(Q, 10, rerank=60, method=method)
        assert np.array_equal(blocked_ids, ids) and np.allclose(blocked_d, distances)


def test_hnsw_codes_find_most_exact_neighbours(planted, model, hasher, tmp_path):
    index, _ = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    exact_d, _ = index.search_codes(Q, 20)
    approx_d, approx_ids = index.search_codes(Q, 20, kind="hnsw")
    graphs = [stored.hamming_["hnsw"][1] for stored in index.segments_]
    index.search_codes(Q, 20)  # the exact search in between must not drop the graphs
    assert np.array_equal(index.search_codes(Q, 20, kind="hnsw")[1], approx_ids)
    assert all(stored.hamming_["hnsw"][1] is graph for stored, graph in zip(index.segments_, graphs))
    assert (approx_ids >= 0).all()
    # Ties make ids ambiguous; the k-th distance found may only be slightly worse than the exact one.
    assert np.mean(approx_d[:, -1] <= exact_d[:, -1] + 1) >= 0.9


def test_bad_hasher_or_search_is_a_clear_error(planted, model, hasher):
    index = TreeIndex(model)
    index.add(planted.features[:50])
    with pytest.raises(TreeseekError, match="no binary codes"):
        index.search_codes(planted.features[:2], 5)
    with pytest.raises(TreeseekError, match="24-d"):
        index.set_hasher(ITQHasher(8).fit(planted.features[:, :10]))
    index.set_hasher(hasher)
    with pytest.raises(TreeseekError, match="rerank"):
        index.search_codes(planted.features[:2], 5, rerank=-1)
    with pytest.raises(TreeseekError, match="alpha must be a finite number"):
        index.search_codes(planted.features[:2], 5, rerank=10, alpha=float("nan"))
    with pytest.raises(TreeseekError, match="rerank method must be one of"):
        index.search_codes(planted.features[:2], 5, rerank=10, method="euclidean")
    with pytest.raises(TreeseekError, match="dimensions"):
        index.search_codes(planted.features[:2, :10], 5)
    index.remove(np.arange(50))  # nothing left: every method pads with -1
    for method in ("combined", "soft"):
        distances, ids = index.search_codes(planted.features[:2], 5, rerank=10, method=method)
        assert (ids == -1).all() and np.isinf(distances).all()
    index.set_hasher(None)
    with pytest.raises(TreeseekError, match="no binary codes"):
        index.search_codes(planted.features[:2], 5)
