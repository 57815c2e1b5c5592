"""Binary codes stored in the persistent index: Hamming search and hierarchy re-ranking vs brute force."""
import numpy as np
import pytest

from treeseek.codes import ITQHasher
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.search import Ranking

from oracles import hamming_ranking, hard_keys, posteriors, queries, soft_keys

HAMMING = Ranking("hamming")
BITS = 16  # short codes: many exact ties, which the id order must break


@pytest.fixture(scope="module")
def hasher(planted):
    return ITQHasher(BITS, seed=0).fit(planted.features)


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
        expected_d, expected_ids = hamming_ranking(hasher, planted.features, live, Q, k)
        distances, ids = index.search(Q, k, ranking=HAMMING)
        n = expected_ids.shape[1]
        assert np.array_equal(ids[:, :n], expected_ids)
        assert np.array_equal(distances[:, :n], expected_d)
        assert (ids[:, n:] == -1).all() and np.isinf(distances[:, n:]).all()


def test_codes_survive_save_open_compact_and_refit(planted, model, hasher, tmp_path):
    index, live = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    before = index.search(Q, 50, ranking=HAMMING)
    index.save(tmp_path / "ix")
    reopened = TreeIndex.open(tmp_path / "ix")
    assert reopened.hasher is not None and isinstance(reopened.segments_[0].codes.base, np.memmap)
    assert all(np.array_equal(a, b) for a, b in zip(reopened.search(Q, 50, ranking=HAMMING), before))
    reopened.compact()
    reopened.refit(threshold=0.2)
    reopened.save(tmp_path / "ix")
    again = TreeIndex.open(tmp_path / "ix")
    assert all(np.array_equal(a, b) for a, b in zip(again.search(Q, 50, ranking=HAMMING), before))
    stored = again.segments_[0]
    order = np.argsort(stored.segment.ids)
    assert np.array_equal(np.asarray(stored.codes)[order], hasher.encode(planted.features[live]))


@pytest.mark.parametrize("method", ["combined", "soft", "flat", "cosine"])
def test_rerank_orders_the_hamming_candidates_by_the_method_distance(planted, model, hasher, tmp_path, method):
    index, live = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    for rerank, k, alpha in ((40, 10, None), (200, 25, 3.0), (len(live) + 10, 5, 1.0)):
        _, candidates = hamming_ranking(hasher, planted.features, live, Q, rerank)
        alpha_used = model.alpha if alpha is None else alpha
        expected_keys, expected_ids = [], []
        for q, row in enumerate(candidates):
            row = row[row >= 0]
            stored, query = index.items(row), Q[q : q + 1]
            if method == "soft":  # posteriors of the features as added, not of the stored copies
                keys = soft_keys(query, stored["vectors"], posteriors(model, query, model.top_m),
                                 posteriors(model, planted.features[row], model.top_m, stored=True),
                                 model.hierarchy_, alpha_used, True)[0]
            else:
                keys = hard_keys(method, query, stored["vectors"], model.assign(query), stored["leaves"],
                                 model.hierarchy_, alpha_used, True)[0]
            order = np.lexsort((row, keys))[:k]
            expected_keys.append(keys[order])
            expected_ids.append(row[order])
        distances, ids = index.search(Q, k, ranking=Ranking("hamming", alpha, rerank, method))
        assert np.array_equal(ids, np.array(expected_ids))
        assert np.allclose(distances, np.array(expected_keys))


def test_rerank_in_blocks_and_chunks_equals_one_pass(planted, model, hasher, tmp_path, monkeypatch):
    index, _ = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    rankings = [Ranking("hamming", rerank=60, rerank_method=method) for method in ("combined", "soft")]
    whole = [index.search(Q, 10, ranking=ranking) for ranking in rankings]
    monkeypatch.setattr("treeseek.index.code_search.RERANK_BLOCK", 1)  # one query per block
    for ranking, (distances, ids) in zip(rankings, whole):
        blocked_d, blocked_ids = index.search(Q, 10, ranking=ranking)
        assert np.array_equal(blocked_ids, ids) and np.allclose(blocked_d, distances)


def test_hnsw_codes_find_most_exact_neighbours(planted, model, hasher, tmp_path):
    index, _ = split_index(planted, model, hasher, tmp_path)
    Q = queries(planted)
    exact_d, _ = index.search(Q, 20, ranking=HAMMING)
    approx_d, approx_ids = index.search(Q, 20, ranking=Ranking("hamming", hamming_index="hnsw"))
    graphs = [stored.hamming_["hnsw"][1] for stored in index.segments_]
    index.search(Q, 20, ranking=HAMMING)  # the exact search in between must not drop the graphs
    assert np.array_equal(index.search(Q, 20, ranking=Ranking("hamming", hamming_index="hnsw"))[1], approx_ids)
    assert all(stored.hamming_["hnsw"][1] is graph for stored, graph in zip(index.segments_, graphs))
    assert (approx_ids >= 0).all()
    # Ties make ids ambiguous; the k-th distance found may only be slightly worse than the exact one.
    assert np.mean(approx_d[:, -1] <= exact_d[:, -1] + 1) >= 0.9


def test_bad_hasher_or_search_is_a_clear_error(planted, model, hasher):
    index = TreeIndex(model)
    index.add(planted.features[:50])
    with pytest.raises(TreeseekError, match="no binary codes"):
        index.search(planted.features[:2], 5, ranking=HAMMING)
    with pytest.raises(TreeseekError, match="24-d"):
        index.set_hasher(ITQHasher(8).fit(planted.features[:, :10]))
    index.set_hasher(hasher)
    with pytest.raises(TreeseekError, match="rerank"):
        index.search(planted.features[:2], 5, ranking=Ranking("hamming", rerank=-1))
    with pytest.raises(TreeseekError, match="alpha must be a finite number"):
        index.search(planted.features[:2], 5, ranking=Ranking("hamming", float("nan"), 10))
    with pytest.raises(TreeseekError, match="rerank method must be one of"):
        index.search(planted.features[:2], 5, ranking=Ranking("hamming", rerank=10, rerank_method="euclidean"))
    with pytest.raises(TreeseekError, match="dimensions"):
        index.search(planted.features[:2, :10], 5, ranking=HAMMING)
    index.remove(np.arange(50))  # nothing left: every method pads with -1
    for method in ("combined", "soft"):
        ranking = Ranking("hamming", rerank=10, rerank_method=method)
        distances, ids = index.search(planted.features[:2], 5, ranking=ranking)
        assert (ids == -1).all() and np.isinf(distances).all()
    index.set_hasher(None)
    with pytest.raises(TreeseekError, match="no binary codes"):
        index.search(planted.features[:2], 5, ranking=HAMMING)
