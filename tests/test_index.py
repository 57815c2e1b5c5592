"""The persistent index: round trips, crash safety, updates, corruption, and exactness."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.search import Ranking

from oracles import index_ranking, queries, stored_items


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_exact_backend_equals_full_sort_across_segments_and_removals(planted, model, dtype, tmp_path):
    index = TreeIndex(model, dtype=dtype)
    index.add(planted.features[:300], planted.labels[:300])
    index.save(tmp_path / "ix")
    index.add(planted.features[300:])  # a second segment, in memory
    index.remove([3, 7, 301, 500])
    Q = queries(planted)
    for k in (1, 10, 100, len(index) + 3):
        expected_D, expected_ids = index_ranking(index, Q, k)
        D, ids = index.search(Q, k, ranking=Ranking("combined"))
        assert np.array_equal(ids[:, : expected_ids.shape[1]], expected_ids)
        assert np.allclose(D[:, : expected_ids.shape[1]], expected_D)
        assert (ids[:, expected_ids.shape[1]:] == -1).all()


def test_soft_search_equals_the_soft_formula_across_segments_removals_and_reopening(planted, model, tmp_path):
    index = TreeIndex(model, dtype="float32")
    index.add(planted.features[:300], planted.labels[:300])
    index.save(tmp_path / "ix")
    index.add(planted.features[300:])
    index.remove([3, 7, 301, 500])
    Q = queries(planted)
    for k, alpha in ((1, 1.0), (10, 3.0), (len(index) + 3, 0.5)):
        expected_D, expected_ids = index_ranking(index, Q, k, "soft", alpha, added=planted.features)
        D, ids = index.search(Q, k, ranking=Ranking("soft", alpha=alpha))
        width = expected_ids.shape[1]
        assert np.array_equal(ids[:, :width], expected_ids)
        assert np.allclose(D[:, :width], expected_D, rtol=0, atol=1e-9)
        assert (ids[:, width:] == -1).all()
    nearest = int(index.search(Q[:1], 1, ranking=Ranking("soft"))[1][0, 0])
    index.remove([nearest])
    assert nearest not in index.search(Q[:1], 5, ranking=Ranking("soft"))[1][0]
    index.save(tmp_path / "ix")
    reopened = TreeIndex.open(tmp_path / "ix")
    assert np.array_equal(reopened.search(Q, 10, ranking=Ranking("soft"))[1],
                          index_ranking(index, Q, 10, "soft", added=planted.features)[1])


@pytest.mark.parametrize("backend", ["exact", "faiss-flat", "faiss-hnsw", "faiss-ivf"])
def test_save_open_round_trip_gives_identical_results(planted, model, backend, tmp_path):
    params = {"min_ann_items": 100} if backend in ("faiss-hnsw", "faiss-ivf") else {}
    index = TreeIndex(model, dtype="float32", backend=backend, **params)
    index.add(planted.features, planted.labels, [f"img/{i}.jpg" for i in range(len(planted.features))])
    Q = queries(planted)
    before = index.search(Q, 25)
    index.save(tmp_path / "ix")
    loaded = TreeIndex.open(tmp_path / "ix")
    assert isinstance(loaded.segments_[0].segment.vectors.base, np.memmap)  # opened, not read
    after = loaded.search(Q, 25)
    assert np.array_equal(before[1], after[1]) and np.array_equal(before[0], after[0])
    assert loaded.items([5])["sources"] == ["img/5.jpg"]
    assert len(loaded) == len(planted.features) and loaded.backend == index.backend


def test_items_added_in_many_chunks_store_their_unit_rows_lengths_and_leaves(planted, model, monkeypatch):
    from scipy.spatial.distance import cdist

    from treeseek.index import placement

    monkeypatch.setattr(placement, "ADD_CHUNK", 37)  # many chunks, and a last one shorter
    index = TreeIndex(model, dtype="float32")
    index.add(planted.features)
    items = stored_items(index)
    features = np.asarray(planted.features, dtype=np.float64)
    lengths = np.linalg.norm(features, axis=1)
    assert np.allclose(items["vectors"], features / lengths[:, None], rtol=0, atol=1e-7)
    assert np.allclose(items["features"], features, rtol=1e-6, atol=0)
    Z = model.pca_.transform(features)
    inverse = np.linalg.inv(model.gaussians_.covariances_)
    assert np.array_equal(items["leaves"], cdist(Z, model.gaussians_.means_, "mahalanobis", VI=inverse).argmin(axis=1))
    Q = queries(planted)
    expected_D, expected_ids = index_ranking(index, Q, 10, "soft", added=planted.features)
    D, ids = index.search(Q, 10, ranking=Ranking("soft"))
    assert np.array_equal(ids, expected_ids) and np.allclose(D, expected_D, rtol=0, atol=1e-9)


def test_items_added_without_sources_have_empty_ones_beside_items_with_sources(planted, model, tmp_path):
    index = TreeIndex(model)
    first = index.add(planted.features[:60])
    assert index.items(first[[0, 59]])["sources"] == ["", ""]  # one sorted part without sources
    second = index.add(planted.features[60:90], sources=[f"s{i}" for i in range(30)])
    ids = np.concatenate([first[[3, 40]], second[[0, 29]]])
    expected = ["", "", "s0", "s29"]
    assert index.items(ids)["sources"] == expected  # both parts joined in memory
    index.save(tmp_path / "ix")
    reopened = TreeIndex.open(tmp_path / "ix")
    assert reopened.items(ids)["sources"] == expected
    reopened.remove(second[:1])
    reopened.add(planted.features[90:95])
    assert reopened.items(ids[:2])["sources"] == ["", ""]


def test_removed_items_never_come_back(planted, model, tmp_path):
    index = TreeIndex(model)
    index.add(planted.features)
    Q = queries(planted)
    _, top = index.search(Q, 5)
    removed = np.unique(top[:, :2])
    index.remove(removed)
    everything = len(planted.features)
    assert not np.isin(index.search(Q, everything)[1], removed).any()
    probe = np.arange(-2, everything + 3)
    live = (probe >= 0) & (probe < everything) & ~np.isin(probe, removed)
    assert np.array_equal(index.contains(probe), live)
    index.save(tmp_path / "ix")
    index = TreeIndex.open(tmp_path / "ix")
    assert not np.isin(index.search(Q, everything)[1], removed).any()
    assert np.array_equal(index.contains(probe), live)
    index.add(planted.features[:10])
    index.compact()
    index.save(tmp_path / "ix")
    index = TreeIndex.open(tmp_path / "ix")
    assert len(index) == everything - len(removed) + 10
    assert not np.isin(index.search(Q, everything)[1], removed).any()
    with pytest.raises(TreeseekError, match="not in the index"):
        index.remove([removed[0]])


def test_items_removed_before_their_first_save_stay_removed(planted, model, tmp_path):
    index = TreeIndex(model)
    index.add(planted.features[:100])
    index.remove([5])  # from the unsaved segment
    index.add(planted.features[100:200])  # merged with it, without item 5
    index.remove([150])
    index.save(tmp_path / "ix")
    reopened = TreeIndex.open(tmp_path / "ix")
    assert len(reopened) == 198
    assert not np.isin([5, 150], reopened.search(planted.features[:5], 200)[1]).any()


def test_added_items_are_found(planted, model, tmp_path):
    index = TreeIndex(model)
    index.add(planted.features[:500])
    index.save(tmp_path / "ix")
    index = TreeIndex.open(tmp_path / "ix")
    new = planted.features[600:605] * 1.0
    new_ids = index.add(new, np.array(planted.class_names)[planted.labels[600:605]], [f"n{i}" for i in range(5)])
    for check in (index, None):
        if check is None:
            index.save(tmp_path / "ix")
            check = TreeIndex.open(tmp_path / "ix")
        D, ids = check.search(new, 1, ranking=Ranking("combined"))
        assert np.array_equal(ids[:, 0], new_ids) and np.allclose(D[:, 0], 0.0, atol=1e-6)
        assert check.items(new_ids)["sources"] == [f"n{i}" for i in range(5)]
        assert np.array_equal(check.items(new_ids)["labels"], planted.labels[600:605])


def test_refit_rebuilds_the_model_and_keeps_the_items(planted, model, tmp_path):
    index = TreeIndex(model)
    ids = index.add(planted.features, planted.labels)
    index.remove(ids[:5])
    index.refit(threshold=0.01)
    assert index.model is not model and index.model.threshold == 0.01
    assert len(index) == len(ids) - 5 and len(index.segments_) == 1
    stored = index.segments_[0]
    restored = np.asarray(stored.segment.vectors, dtype=np.float64) * stored.norms[:, None]
    assert np.array_equal(stored.segment.leaves, index.model.assign(restored))
    index.save(tmp_path / "ix")
    assert TreeIndex.open(tmp_path / "ix").model.threshold == 0.01
    unlabeled = TreeIndex(model)
    unlabeled.add(planted.features)
    with pytest.raises(TreeseekError, match="labels"):
        unlabeled.refit()


KILLED_SAVE = """
import sys
import numpy as np
from treeseek.index import TreeIndex
index = TreeIndex.open(sys.argv[1])
index.add(np.random.default_rng(1).normal(size=(int(sys.argv[2]), 24)))
index.remove([0, 1])
print("saving", flush=True)
index.save(sys.argv[1])
print("saved", flush=True)
"""


def start_save(directory, n):
    process = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(directory), str(n)], stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "saving"
    return process


@pytest.mark.slow
def test_a_save_killed_mid_write_leaves_the_previous_index(planted, model, tmp_path):
    directory = tmp_path / "ix"
    index = TreeIndex(model)
    index.add(planted.features)
    index.save(directory)
    Q = queries(planted)
    expected = index.search(Q, 20)
    process = start_save(directory, 400_000)
    deadline = time.time() + 60
    while not list((directory / "segments").glob(".tmp-*")) and time.time() < deadline:
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert list((directory / "segments").glob(".tmp-*")), "the kill came after the write"
    survivor = TreeIndex.open(directory)
    assert len(survivor) == len(planted.features)
    assert all(np.array_equal(a, b) for a, b in zip(survivor.search(Q, 20), expected))
    survivor.remove([10])
    survivor.save(directory)  # a later save works and sweeps the torn files
    assert not list((directory / "segments").glob(".tmp-*"))
    assert len(TreeIndex.open(directory)) == len(planted.features) - 1


@pytest.mark.slow
def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_index(planted, model, tmp_path):
    directory = tmp_path / "ix"
    index = TreeIndex(model)
    index.add(planted.features)
    index.save(directory)
    old, new = len(planted.features), len(planted.features) + 20_000 - 2
    seen = set()
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4, 3.0):
        process = start_save(directory, 20_000)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        reopened = TreeIndex.open(directory)
        assert len(reopened) in (old, new)
        assert len(reopened.search(queries(planted), 3)[1]) == len(queries(planted))
        reopened.verify()
        seen.add(len(reopened))
        if len(reopened) == new:  # the save finished: start the next kill from the old index again
            directory = tmp_path / f"ix{delay}"
            index.save(directory)
    assert seen == {old, new}  # the first kill came before the commit, the last after it


def test_corrupt_truncated_or_foreign_files_are_clear_errors(planted, model, tmp_path):
    index = TreeIndex(model, dtype="float32", backend="faiss-hnsw", min_ann_items=100)
    index.add(planted.features)
    index.save(tmp_path / "ix")
    segment = next((tmp_path / "ix" / "segments").iterdir())

    def reopen_fails(match, search=False):
        with pytest.raises(TreeseekError, match=match):
            opened = TreeIndex.open(tmp_path / "ix")
            if search:
                opened.search(planted.features[:2], 3, ranking=Ranking("combined"))  # reads the FAISS file

    vectors = (segment / "vectors.npy").read_bytes()
    (segment / "vectors.npy").write_bytes(vectors[:-100])
    reopen_fails("truncated or corrupt")
    (segment / "vectors.npy").write_bytes(vectors)

    ids = bytearray((segment / "ids.npy").read_bytes())
    ids[-3] ^= 0xFF
    (segment / "ids.npy").write_bytes(bytes(ids))
    reopen_fails("checksum mismatch")
    ids[-3] ^= 0xFF
    (segment / "ids.npy").write_bytes(bytes(ids))

    ann = bytearray((segment / "ann.faiss").read_bytes())
    ann[len(ann) // 2] ^= 0xFF
    (segment / "ann.faiss").write_bytes(bytes(ann))
    reopen_fails("checksum mismatch", search=True)

    manifest = tmp_path / "ix" / "manifest.json"
    text = manifest.read_text()
    meta = json.loads(text)
    manifest.write_text(json.dumps({**meta, "version": 99}))
    reopen_fails("index format 99")
    manifest.write_text(text[: len(text) // 2])
    reopen_fails("corrupt")
    manifest.write_text(json.dumps({"format": "treeseek-image-index", "version": 1}))
    reopen_fails("index format 1")
    with pytest.raises(TreeseekError, match="not a treeseek index"):
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("keep me")
        index.save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_bad_items_are_refused_before_anything_changes(planted, model):
    index = TreeIndex(model)
    index.add(planted.features[:50])
    bad = planted.features[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(TreeseekError, match="NaN"):
        index.add(bad)
    with pytest.raises(TreeseekError, match="dimensions"):
        index.add(planted.features[:3, :10])
    with pytest.raises(TreeseekError, match="unknown class label 'zebra'"):
        index.add(planted.features[:2], np.array(["zebra", planted.class_names[0]]))
    with pytest.raises(TreeseekError, match="labels must be"):
        index.add(planted.features[:2], np.array([0, 99]))
    with pytest.raises(TreeseekError, match="not in the index"):
        index.remove([1, 12345])
    assert len(index) == 50 and index.next_id_ == 50
    with pytest.raises(TreeseekError, match="dtype"):
        TreeIndex(model, dtype="float64")


def test_a_reader_outlived_by_a_compaction_gets_a_clear_error(planted, model, tmp_path):
    writer = TreeIndex(model, dtype="float32", backend="faiss-hnsw", min_ann_items=100)
    writer.add(planted.features)
    writer.save(tmp_path / "ix")
    reader = TreeIndex.open(tmp_path / "ix")  # its FAISS structure is read on the first search
    writer.remove([0])
    writer.compact()
    writer.save(tmp_path / "ix")
    with pytest.raises(TreeseekError, match="open the index again"):
        reader.search(planted.features[:2], 3, ranking=Ranking("combined"))
    assert len(TreeIndex.open(tmp_path / "ix").search(planted.features[:2], 3, ranking=Ranking("combined"))[1]) == 2
