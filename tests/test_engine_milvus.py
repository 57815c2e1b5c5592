"""Milvus serves treeseek's rankings: same results as the brute-force formulas, in sync with the index."""
import json

import numpy as np
import pytest

from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.index.engine_vectors import model_fingerprint
from treeseek.index.milvus import MilvusIndex, MilvusTarget, default_collection
from treeseek.io.features import save_features
from treeseek.model import TreeseekModel
from treeseek.search import Ranking

from conftest import run_cli
from oracles import index_ranking, queries

pytestmark = pytest.mark.slow  # Milvus Lite, a database engine started per test

pytest.importorskip("milvus_lite")  # Milvus Lite: the local engine behind a "FILE.db" URI


def two_segment_index(planted, model, tmp_path):
    index = TreeIndex(model)
    index.add(planted.features[:300], planted.labels[:300], [f"item-{i}" for i in range(300)])
    index.save(tmp_path / "ix")
    index.add(planted.features[300:])
    index.remove([3, 7, 301, 500])
    return index

COMBINED = Ranking("combined")


@pytest.mark.parametrize("method", ["soft", "combined"])
def test_milvus_ranks_like_the_brute_force_formula(planted, model, method, tmp_path):
    index = two_segment_index(planted, model, tmp_path)
    engine = MilvusIndex(model, str(tmp_path / "m.db"), "items", method)
    assert engine.sync(index) == {"added": len(index), "deleted": 0, "total": len(index)}
    Q = queries(planted)
    for k, alpha in ((1, 1.0), (10, 3.0), (len(index) + 3, 0.5)):
        expected_D, expected_ids = index_ranking(index, Q, k, method, alpha)
        D, ids = engine.search(Q, k, ranking=Ranking(method, alpha=alpha))
        width = expected_ids.shape[1]
        assert np.allclose(D[:, :width], expected_D, atol=1e-5)
        assert np.mean(ids[:, :width] == expected_ids) > 0.99  # float32 may swap near-equal neighbours
        assert (ids[:, width:] == -1).all() and np.isinf(D[:, width:]).all()


def test_sync_follows_additions_removals_and_compaction(planted, model, tmp_path):
    index = two_segment_index(planted, model, tmp_path)
    engine = MilvusIndex(model, str(tmp_path / "m.db"), "items")
    engine.sync(index)
    assert engine.sync(index) == {"added": 0, "deleted": 0, "total": len(index)}
    new_ids = index.add(planted.features[:5] + 0.01)
    index.remove([10, 11, 12])
    index.compact()  # the removed ids leave the index's records too: sync must still delete them
    assert engine.sync(index) == {"added": 5, "deleted": 3, "total": len(index)}
    Q = planted.features[:40]
    D, ids = engine.search(Q, len(index) + 5)
    assert sorted(ids[0][ids[0] >= 0].tolist()) == sorted(np.concatenate(
        [s.segment.ids for s in index.stored_segments()]).tolist())
    assert not np.isin([10, 11, 12], ids).any() and np.isin(new_ids, ids[0]).all()
    expected_D, expected_ids = index_ranking(index, Q, 10, "soft", model.alpha)
    assert np.allclose(engine.search(Q, 10)[0], expected_D, atol=1e-5)
    # a second client on the same collection finds it as the first left it
    fresh = MilvusIndex(model, str(tmp_path / "m.db"), "items")
    assert np.array_equal(fresh.search(Q, 10)[1], engine.search(Q, 10)[1])


def test_a_collection_of_another_model_method_or_index_is_refused(planted, model, tmp_path):
    index = two_segment_index(planted, model, tmp_path)
    uri = str(tmp_path / "m.db")
    MilvusIndex(model, uri, "items", "soft").sync(index)
    with pytest.raises(TreeseekError, match="another model or method than this combined ranking"):
        MilvusIndex(model, uri, "items", "combined").search(planted.features[:2], 3, ranking=COMBINED)
    other = TreeseekModel(hierarchy="visual", threshold=0.05).fit(planted.features[::2], planted.labels[::2],
                                                                  planted.class_names)
    assert model_fingerprint(other, "soft") != model_fingerprint(model, "soft")
    with pytest.raises(TreeseekError, match="another model"):
        MilvusIndex(other, uri, "items").search(planted.features[:2], 3)
    with pytest.raises(TreeseekError, match="fitted with another model"):
        MilvusIndex(other, uri, "items").sync(index)
    with pytest.raises(TreeseekError, match="has a FLAT index, not HNSW"):
        MilvusIndex(model, uri, "items", index_type="HNSW").sync(index)
    replaced = MilvusIndex(model, uri, "items", "combined", index_type="HNSW", search_params={"ef": 64})
    assert replaced.sync(index, replace=True)["added"] == len(index)
    assert replaced.search(planted.features[:2], 3, ranking=COMBINED)[1].shape == (2, 3)
    with pytest.raises(TreeseekError, match="holds vectors for the combined ranking; push it again with --method soft"):
        replaced.search(planted.features[:2], 3)
    # the fingerprint survives saving and loading the model, so a reopened index can search its collection
    index.save(tmp_path / "ix")
    reopened = TreeIndex.open(tmp_path / "ix")
    assert model_fingerprint(reopened.model, "combined") == model_fingerprint(model, "combined")


def test_approximate_milvus_indexes_find_the_exact_neighbours(planted, model, tmp_path):
    index = two_segment_index(planted, model, tmp_path)
    Q = queries(planted)
    _, exact = index_ranking(index, Q, 10, "soft", model.alpha)
    uri = str(tmp_path / "m.db")

    def recall(index_type, search):
        _, ids = MilvusIndex(model, uri, index_type.lower(), search_params=search).search(Q, 10)
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])

    for index_type, build, narrow, wide in (("HNSW", {"M": 16}, {"ef": 10}, {"ef": 400}),
                                            ("IVF_FLAT", {"nlist": 8}, {"nprobe": 1}, {"nprobe": 1024})):
        engine = MilvusIndex(model, uri, index_type.lower(), index_type=index_type, index_params=build)
        engine.sync(index)
        # opened anew, the engine searches its index structure (right after inserting, Milvus Lite scans);
        # closing the client lets Milvus Lite finish writing it
        engine.client_.close()
        assert recall(index_type, wide) > 0.95, index_type
        if index_type == "IVF_FLAT":  # one probed list misses neighbours: the search parameter reaches Milvus
            assert recall(index_type, narrow) < 0.9


def test_bad_requests_are_one_line_errors(planted, model, tmp_path):
    uri = str(tmp_path / "m.db")
    with pytest.raises(TreeseekError, match="collection name"):
        MilvusIndex(model, uri, "9 lives")
    with pytest.raises(TreeseekError, match="index type must be one of"):
        MilvusIndex(model, uri, "items", index_type="DISKANN")
    with pytest.raises(TreeseekError, match="has no build parameter 'ef'"):
        MilvusIndex(model, uri, "items", index_type="HNSW", index_params={"ef": 3})
    with pytest.raises(TreeseekError, match="ranks with soft or combined"):
        MilvusIndex(model, uri, "items", "cosine")
    with pytest.raises(TreeseekError, match="no collection 'items'; push the index first"):
        MilvusIndex(model, uri, "items").search(planted.features[:2], 3)
    with pytest.raises(TreeseekError, match="^Milvus at http://127.0.0.1:9: "):
        MilvusIndex(model, "http://127.0.0.1:9", "items", timeout=2).search(planted.features[:2], 3)
    index = two_segment_index(planted, model, tmp_path)
    engine = MilvusIndex(model, uri, "items")
    engine.sync(index)
    with pytest.raises(TreeseekError, match="features have 5 dimensions, the model expects 24"):
        engine.search(np.ones((2, 5)), 3)
    with pytest.raises(TreeseekError, match="NaN"):
        engine.search(np.full((2, 24), np.nan), 3)
    with pytest.raises(TreeseekError, match="k must be at least 1"):
        engine.search(planted.features[:2], 0)
    with pytest.raises(TreeseekError, match="returns at most 16384 results per query"):
        engine.search(planted.features[:2], 16385)
    with pytest.raises(TreeseekError, match="has no search parameter 'nprobe'"):
        MilvusTarget(uri, "items", {"nprobe": 4}).open(model).search(planted.features[:2], 3)
    assert default_collection(tmp_path / "my photos-2026") == "treeseek_my_photos_2026"


def test_cli_push_then_search_gives_the_index_s_own_results(planted, model, tmp_path):
    index = TreeIndex(model)
    index.add(planted.features, planted.labels)
    index.save(tmp_path / "ix")
    save_features(tmp_path / "q.npz", queries(planted, 6))
    uri = str(tmp_path / "m.db")
    pushed = run_cli("engine", "push", str(tmp_path / "ix"), "--uri", uri, "--no-progress")
    assert pushed.returncode == 0 and f"{len(index)} items ({len(index)} added, 0 deleted)" in pushed.stdout
    status = run_cli("engine", "status", str(tmp_path / "ix"), "--uri", uri)  # another process, same collection
    assert status.returncode == 0 and "a push would add 0 and delete 0" in status.stdout and not status.stderr
    base = ["search", str(tmp_path / "ix"), "--query", str(tmp_path / "q.npz"), "-k", "5"]
    assert run_cli(*base, "--json", str(tmp_path / "local.json")).returncode == 0
    assert run_cli(*base, "--milvus", uri, "--json", str(tmp_path / "remote.json")).returncode == 0
    local, remote = (json.loads((tmp_path / f"{n}.json").read_text())["queries"] for n in ("local", "remote"))
    for a, b in zip(local, remote):
        assert [e["id"] for e in a["results"]] == [e["id"] for e in b["results"]]
        assert np.allclose([e["distance"] for e in a["results"]], [e["distance"] for e in b["results"]], atol=1e-5)
    # the index lost items that Milvus still holds: a clear error, not a wrong description
    index.remove(np.arange(len(index)))
    index.save(tmp_path / "ix")
    stale = run_cli(*base, "--milvus", uri)
    assert stale.returncode == 2 and "which the index no longer holds; push the index again" in stale.stderr
    wrong = run_cli(*base, "--milvus", uri, "--hamming")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1
    unreachable = run_cli("engine", "status", str(tmp_path / "ix"), "--uri", "http://127.0.0.1:9")
    assert unreachable.returncode == 2 and unreachable.stderr.startswith("error: Milvus at http://127.0.0.1:9: ")
    assert unreachable.stderr.count("\n") == 1


def test_the_server_ranks_in_milvus_and_answers_like_its_own_index(planted, model, tmp_path):
    from fastapi.testclient import TestClient

    from treeseek.apps.server import create_app

    index = two_segment_index(planted, model, tmp_path)
    index.save(tmp_path / "ix")
    uri = str(tmp_path / "m.db")
    with pytest.raises(TreeseekError, match="no collection 'pushed'; push the index first"):
        create_app(tmp_path / "ix", milvus=MilvusTarget(uri, "pushed"))
    MilvusIndex(model, uri, "pushed").sync(index)
    body = {"features": queries(planted, 5).tolist(), "k": 7, "alpha": 2.0}
    own = TestClient(create_app(tmp_path / "ix")).post("/api/search/features", json=body).json()
    served = TestClient(create_app(tmp_path / "ix", milvus=MilvusTarget(uri, "pushed")))
    remote = served.post("/api/search/features", json=body).json()
    for a, b in zip(own["queries"], remote["queries"]):
        assert [e["id"] for e in a["results"]] == [e["id"] for e in b["results"]]
        assert np.allclose([e["distance"] for e in a["results"]], [e["distance"] for e in b["results"]], atol=1e-5)
    for item in (5, 250):  # "more like this" ranks in Milvus too
        like = {"k": 7, "alpha": 2.0}
        a = TestClient(create_app(tmp_path / "ix")).get(f"/api/items/{item}/similar", params=like).json()
        b = served.get(f"/api/items/{item}/similar", params=like).json()
        assert [e["id"] for e in a["queries"][0]["results"]] == [e["id"] for e in b["queries"][0]["results"]]
    refused_like = served.get("/api/items/5/similar", params={"method": "combined"})  # Milvus holds soft vectors
    assert refused_like.status_code == 400 and "another model or method" in refused_like.json()["error"]
    info = served.get("/api/info").json()
    assert info["methods"] == ["soft", "combined"] and info["backend"] == "milvus pushed"
    refused = served.post("/api/search/features", json={**body, "method": "combined"})
    assert refused.status_code == 400 and "another model or method" in refused.json()["error"]
    cosine = served.post("/api/search/features", json={**body, "method": "cosine"})
    assert cosine.status_code == 400 and "soft or combined" in cosine.json()["error"]


def test_status_tells_what_a_push_would_change_without_changing_it(planted, model, tmp_path):
    index = two_segment_index(planted, model, tmp_path)
    engine = MilvusIndex(model, str(tmp_path / "m.db"), "items")
    engine.sync(index)
    index.add(planted.features[:4])
    index.remove([20, 21])
    expected = {"index_type": "FLAT", "stored": len(index) - 4 + 2, "to_add": 4, "to_delete": 2, "total": len(index)}
    assert engine.status(index) == expected
    assert engine.status(index) == expected  # nothing was changed
    assert engine.sync(index) == {"added": 4, "deleted": 2, "total": len(index)}
    assert engine.status(index) == {**expected, "stored": len(index), "to_add": 0, "to_delete": 0}
