"""The HTTP API and web page: same answers as the library's references, one-line errors, live updates."""
import concurrent.futures
import io
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from treeseek.apps.server import create_app
from treeseek.codes import ITQHasher
from treeseek.errors import TreeseekError
from treeseek.index import TreeIndex
from treeseek.model import TreeseekModel

from conftest import run_cli, serving
from oracles import hamming_ranking, index_ranking, queries


@pytest.fixture(scope="module")
def model(planted):
    return TreeseekModel(hierarchy="average:4:cosine", temperature=4).fit(planted.features, planted.labels,
                                                                          planted.class_names)


def post_features(client, Q, **options):
    return client.post("/api/search/features", json={"features": np.asarray(Q).tolist(), **options})


def hits(report):
    ids = [[hit["id"] for hit in query["results"]] for query in report["queries"]]
    distances = [[hit["distance"] for hit in query["results"]] for query in report["queries"]]
    return np.array(ids), np.array(distances)


def assert_one_line_error(response, status, words):
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert "\n" not in message and words in message, message


def test_feature_search_equals_the_brute_force_formulas(planted, feature_index):
    client = TestClient(create_app(feature_index))
    index = TreeIndex.open(feature_index)
    Q = queries(planted)
    response = post_features(client, Q, k=10, alpha=2.0, method="combined")
    assert response.status_code == 200, response.text
    ids, distances = hits(response.json())
    expected_D, expected_ids = index_ranking(index, Q, 10, alpha=2.0, served=True)
    assert np.array_equal(ids, expected_ids) and np.allclose(distances, expected_D)
    report = post_features(client, Q, k=10, alpha=2.0).json()  # soft leaves by default
    assert report["method"] == "soft" and report["alpha"] == 2.0
    ids, distances = hits(report)
    expected_D, expected_ids = index_ranking(index, Q, 10, "soft", 2.0, served=True)
    assert np.allclose(distances, expected_D, atol=1e-5)
    assert np.mean(ids == expected_ids) > 0.99  # float32 may swap near-equal neighbours
    first = report["queries"][0]
    assert first["query"] == 0 and first["leaf"] in planted.class_names
    assert first["results"][0]["image_url"] is None  # feature vectors have no pictures


def without_self(ids, distances, own, k):
    keep = ids != own
    return ids[keep][:k], distances[keep][:k]


def test_more_like_an_item_equals_the_brute_force_ranking_without_the_item(planted, feature_index, tmp_path):
    client = TestClient(create_app(feature_index))
    index = TreeIndex.open(feature_index)
    for own in (7, 450):  # one item of each segment
        query = planted.features[own : own + 1]  # what the item was added with
        answer = client.get(f"/api/items/{own}/similar", params={"k": 6, "method": "combined", "alpha": 2.0})
        assert answer.status_code == 200, answer.text
        report = answer.json()
        assert report["queries"][0]["query"] == f"item {own}" and report["method"] == "combined"
        ids, distances = hits(report)
        expected_D, expected_ids = index_ranking(index, query, 7, alpha=2.0, served=True)
        expected_ids, expected_D = without_self(expected_ids[0], expected_D[0], own, 6)
        assert np.array_equal(ids[0], expected_ids) and np.allclose(distances[0], expected_D)
        assert [hit["rank"] for hit in report["queries"][0]["results"]] == list(range(1, 7))
        cli = run_cli("search", feature_index, "--item", own, "-k", 6, "--method", "combined", "--alpha", 2,
                      "--json", tmp_path / "r.json")
        assert cli.returncode == 0, cli.stderr
        assert np.array_equal(hits(json.loads((tmp_path / "r.json").read_text()))[0][0], expected_ids)
        soft = client.get(f"/api/items/{own}/similar", params={"k": 6, "alpha": 2.0}).json()
        expected_D, expected_ids = index_ranking(index, query, 7, "soft", 2.0, served=True)
        expected_ids, expected_D = without_self(expected_ids[0], expected_D[0], own, 6)
        assert np.allclose(hits(soft)[1][0], expected_D, atol=1e-5)
    assert_one_line_error(client.get("/api/items/3/similar"), 404, "not in the index")  # removed
    assert_one_line_error(client.get("/api/items/7/similar", params={"method": "euclidean"}), 400,
                          "method must be one of")
    both = run_cli("search", feature_index, "--item", 7, "--query", tmp_path / "r.json")
    assert both.returncode == 2 and "one of them" in both.stderr


def test_bad_requests_get_one_line_errors(planted, feature_index):
    client = TestClient(create_app(feature_index))
    Q = queries(planted, n=2)
    assert_one_line_error(post_features(client, Q[:, :10]), 400, "dimensions")
    nan = Q.copy()
    nan[1, 3] = np.nan
    assert_one_line_error(client.post("/api/search/features", content=json.dumps({"features": nan.tolist()}),
                                      headers={"content-type": "application/json"}), 400, "NaN")
    assert_one_line_error(client.post("/api/search/features", json={"features": [[1.0, 2.0], [1.0]]}), 400,
                          "equal length")
    assert_one_line_error(post_features(client, Q, method="euclidean"), 400, "method must be one of")
    assert_one_line_error(post_features(client, Q, k=0), 422, "k")
    assert_one_line_error(post_features(client, Q, hamming=True), 400, "no binary codes")
    assert_one_line_error(post_features(client, Q, names=["only one"]), 400, "1 names for 2")
    assert_one_line_error(client.post("/api/search", files={"images": ("a.png", b"x", "image/png")}), 400,
                          "feature vectors, not images")
    assert_one_line_error(client.post("/api/search"), 422, "images")
    assert_one_line_error(client.get("/api/items/3"), 404, "not in the index")  # removed
    assert_one_line_error(client.get("/api/items/99999"), 404, "not in the index")
    assert_one_line_error(client.get(f"/api/items/{10**30}"), 422, "item_id")
    assert_one_line_error(client.get("/api/items/5/image"), 404, "feature vectors")


def test_hamming_search_equals_a_popcount_full_sort(planted, feature_index):
    index = TreeIndex.open(feature_index)
    hasher = ITQHasher(16, seed=0).fit(planted.features)
    index.set_hasher(hasher)
    index.save(feature_index)
    client = TestClient(create_app(feature_index))
    assert client.get("/api/info").json()["code_bits"] == 16
    Q = queries(planted, n=12)
    live = np.setdiff1d(np.arange(600), [3, 401])
    report = post_features(client, Q, k=20, hamming=True).json()
    assert report["method"] == "hamming (flat)"
    ids, distances = hits(report)
    expected_d, expected_ids = hamming_ranking(hasher, planted.features, live, Q, 20)
    assert np.array_equal(ids, expected_ids) and np.array_equal(distances, expected_d)
    reranked = post_features(client, Q, k=5, hamming=True, rerank=len(live), method="combined").json()
    assert np.array_equal(hits(reranked)[0], index_ranking(index, Q, 5, served=True)[1])  # every item re-ranked: the exact top 5


def test_a_bad_index_directory_fails_at_start(tmp_path):
    with pytest.raises(TreeseekError, match="not a treeseek index"):
        create_app(tmp_path)
    result = run_cli("serve", tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error:") and len(result.stderr.splitlines()) == 1


def test_the_server_follows_what_a_writer_commits(planted, feature_index):
    client = TestClient(create_app(feature_index))
    assert client.get("/api/info").json()["items"] == 598
    assert client.get("/api/items/5").json()["class"] == planted.class_names[planted.labels[5]]
    writer = TreeIndex.open(feature_index)
    new_ids = writer.add(planted.features[600:610] + 0.01, planted.labels[600:610])
    writer.remove([5])
    writer.save(feature_index)
    assert client.get("/api/info").json()["items"] == 598 + 10 - 1
    assert client.get("/api/items/5").status_code == 404
    ids, _ = hits(post_features(client, planted.features[600:610] + 0.01, k=1, method="cosine").json())
    assert ids[:, 0].tolist() == list(new_ids)


def test_info_tree_picture_and_page(planted, model, feature_index):
    client = TestClient(create_app(feature_index))
    info = client.get("/api/info").json()
    assert info["classes"] == list(planted.class_names) and info["dimensions"] == 24
    assert info["tree"]["shape"] == model.hierarchy_.shape() and info["backbone"] is None
    assert info["methods"][0] == "soft" and info["code_bits"] is None
    picture = client.get("/api/hierarchy.png")
    assert picture.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(picture.content)).size[0] > 100
    page = client.get("/")
    assert page.status_code == 200 and '<form id="search">' in page.text and "/api/search" in page.text
    other_site = {"origin": "https://museum.example", "access-control-request-method": "POST"}
    assert "access-control-allow-origin" not in client.options("/api/search/features", headers=other_site).headers
    allowed = TestClient(create_app(feature_index, cors_origins=["https://museum.example"]))
    preflight = allowed.options("/api/search/features", headers=other_site)
    assert preflight.headers["access-control-allow-origin"] == "https://museum.example"


def test_the_api_description_names_every_answer(planted, feature_index):
    client = TestClient(create_app(feature_index))
    spec = client.get("/openapi.json").json()
    for path, method, model in (("/api/search/features", "post", "SearchReport"), ("/api/search", "post", "SearchReport"),
                                ("/api/items/{item_id}/similar", "get", "SearchReport"), ("/api/info", "get", "Info"),
                                ("/api/items/{item_id}", "get", "Item")):
        answers = spec["paths"][path][method]["responses"]
        assert answers["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/" + model), path
        assert answers["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error"), path
    hit = spec["components"]["schemas"]["Hit"]["properties"]
    assert {"rank", "id", "class", "leaf", "distance", "cosine", "hierarchy", "lca", "path", "image_url"} <= set(hit)
    answer = post_features(client, queries(planted, n=2)).json()
    assert set(answer) == {"method", "alpha", "queries", "within"} and answer["within"] is None
    assert answer["queries"][0]["leaf"] in planted.class_names
    assert {"class", "distance", "lca", "path"} <= set(answer["queries"][0]["results"][0])


def test_the_page_script_parses(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    page = (Path(__file__).resolve().parents[1] / "src" / "treeseek" / "apps" / "server" / "page.html").read_text()
    (tmp_path / "page.js").write_text(re.search(r"<script>(.*)</script>", page, re.S).group(1))
    checked = subprocess.run([node, "--check", str(tmp_path / "page.js")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.slow
def test_image_search_gives_the_command_lines_results(main_job, caltech_subset, tmp_path):
    query = sorted((caltech_subset / "anchor").iterdir())[1]
    cli = run_cli("search", main_job / "index", query, "-k", "6", "--json", tmp_path / "r.json", "--grid",
                  tmp_path / "g.png")
    assert cli.returncode == 0, cli.stderr
    expected = json.loads((tmp_path / "r.json").read_text())["queries"][0]["results"]
    client = TestClient(create_app(main_job / "index"))
    response = client.post("/api/search", params={"k": 6},
                           files=[("images", (query.name, query.read_bytes(), "image/jpeg"))])
    assert response.status_code == 200, response.text
    results = response.json()["queries"][0]["results"]
    assert [hit["id"] for hit in results] == [hit["id"] for hit in expected]
    assert np.allclose([hit["distance"] for hit in results], [hit["distance"] for hit in expected])
    thumbnail = client.get(results[0]["image_url"])
    assert thumbnail.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(thumbnail.content))
    assert max(picture.size) <= 256 and picture.getextrema() != ((0, 0), (0, 0), (0, 0))
    assert client.get("/api/info").json()["backbone"] == "efficientnet_lite0"
    corrupt = client.post("/api/search", files={"images": ("broken.jpg", query.read_bytes()[:300], "image/jpeg")})
    assert_one_line_error(corrupt, 400, "cannot read query image broken.jpg")
    small = TestClient(create_app(main_job / "index", max_upload_mb=0.001))
    assert_one_line_error(small.post("/api/search", files={"images": (query.name, query.read_bytes())}), 413,
                          "larger than")


def test_an_access_token_guards_every_api_request(planted, feature_index):
    client = TestClient(create_app(feature_index, access_token="s3cret", cors_origins=["https://museum.example"]))
    Q = queries(planted, n=2)
    for response in (client.get("/api/info"), post_features(client, Q), client.get("/api/items/5"),
                     client.get("/api/hierarchy.png"), client.get("/api/items/5/similar"),
                     client.get("/api/info", headers={"authorization": "Bearer wrong"})):
        assert_one_line_error(response, 401, "needs its access token")
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/").status_code == 200 and client.get("/docs").status_code == 200  # no data in either
    bearer = {"authorization": "Bearer s3cret"}
    assert client.get("/api/info", headers=bearer).json()["items"] == 598
    assert post_features(client, Q, k=3).status_code == 401
    assert client.post("/api/search/features", json={"features": Q.tolist()}, headers=bearer).status_code == 200
    preflight = client.options("/api/search/features", headers={"origin": "https://museum.example",
                                                                 "access-control-request-method": "POST",
                                                                 "access-control-request-headers": "authorization"})
    assert preflight.status_code == 200 and "authorization" in preflight.headers["access-control-allow-headers"]
    assert_one_line_error(client.post("/api/session", json={"token": "wrong"}), 401, "wrong access token")
    assert client.get("/api/info").status_code == 401
    signed_in = client.post("/api/session", json={"token": "s3cret"})
    assert signed_in.status_code == 204 and "httponly" in signed_in.headers["set-cookie"].lower()
    assert client.get("/api/info").status_code == 200  # the cookie now goes with every request
    assert_one_line_error(client.get("/api/items/5/image"), 404, "feature vectors")  # past the guard
    assert TestClient(create_app(feature_index)).post("/api/session", json={"token": "x"}).status_code == 404


@pytest.mark.slow
def test_serving_beyond_this_machine_without_a_token_warns(feature_index, tmp_path):
    with open(tmp_path / "stderr", "wb") as log:
        with serving(feature_index, "--host", "0.0.0.0", stderr=log) as (_, info, _):
            assert info["items"] == 598
        with serving(feature_index, "--host", "0.0.0.0", env={"TREESEEK_SERVER_TOKEN": "s3cret"}, stderr=log) as (
                _, info, _):
            assert info is None  # 401 without the token
    warnings = [line for line in (tmp_path / "stderr").read_text().splitlines()
                if " GET /api/" not in line]  # the access log's line for the refused request
    assert warnings == ["warning: serving on 0.0.0.0 without an access token: whoever reaches this port can search "
                        "the index and see its pictures (set TREESEEK_SERVER_TOKEN)"]


def gone(pid: int) -> bool:
    """The process has exited (a zombie has exited too: only its exit status is left to collect)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.slow
def test_several_workers_answer_in_parallel_and_stop_with_the_server(planted, feature_index):
    if not Path("/proc/self/task").is_dir():
        pytest.skip("finding a server's worker processes needs Linux's /proc")
    Q = queries(planted, n=16)
    expected = index_ranking(TreeIndex.open(feature_index), Q, 5, alpha=2.0, served=True)[1]
    # a loaded machine: two processes keep both cores busy while the workers start and answer (uvicorn's own
    # 5 s start-up health check killed workers still importing, and the server never came up)
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        with serving(feature_index, "--workers", "2", timeout=300) as (base, info, server):
            answers, workers = _parallel_answers(base, info, server, Q)
    finally:
        for busy in load:
            busy.kill()
            busy.wait()
    assert np.array_equal(np.array(answers), expected)
    # no worker outlives the server: the supervisor can exit while a worker is still finishing its own
    # shutdown (CI saw one alive at the first look), so a worker gets a few seconds to go
    deadline = time.monotonic() + 10
    while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(pid) for pid in workers)
    assert run_cli("serve", feature_index, "--workers", "0").stderr.startswith("error: --workers must be at least 1")


def _parallel_answers(base, info, server, Q):
    """The top 5 of each query, asked from 8 threads at once, and the server's worker processes."""
    assert info["items"] == 598
    workers = children(server.pid)
    assert len(workers) >= 2  # uvicorn's supervisor holds the port and starts the workers

    def ask(q):
        body = json.dumps({"features": Q[q : q + 1].tolist(), "k": 5, "method": "combined", "alpha": 2.0})
        request = urllib.request.Request(f"{base}/api/search/features", body.encode(),
                                         {"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return [hit["id"] for hit in json.load(answer)["queries"][0]["results"]]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, range(len(Q)))), workers


@pytest.mark.slow
def test_the_access_log_reports_refused_requests_by_default_and_every_request_when_asked(feature_index):
    # with 'all', every /api/info that the test and the command's own start-up watcher sent is logged too, in
    # whatever order their threads were answered
    for mode, logged in (("errors", {"GET /api/items/99999 404"}),
                         ("all", {"GET /api/info 200", "GET /api/items/99999 404"})):
        with serving(feature_index, "--access-log", mode) as (base, _, server):
            with pytest.raises(urllib.error.HTTPError):
                urllib.request.urlopen(f"{base}/api/items/99999", timeout=30)
            server.terminate()
            log = server.stderr.read().decode()
        lines = [line.split(" ", 2)[2].rsplit(" ", 2)[0] for line in log.splitlines() if " GET /api/" in line]
        assert set(lines) == logged and lines.count("GET /api/items/99999 404") == 1, log
    assert run_cli("serve", feature_index, "--access-log", "some").stderr.startswith("error: --access-log must be")


@pytest.mark.slow
def test_serve_answers_over_http(feature_index):
    with serving(feature_index) as (base, info, _):
        assert info["items"] == 598
        port = base.rsplit(":", 1)[1]
        taken = run_cli("serve", feature_index, "--port", port)  # the first server holds the port
        assert taken.returncode == 2 and taken.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}")
