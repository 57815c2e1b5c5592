"""What a stranger can make the server do: bounded bodies, bounded guessing, no server paths (issue 25)."""
import asyncio
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from treeseek.apps.server import create_app
from treeseek.apps.server.limits import BodyLimit, SignInThrottle, shown_source
from treeseek.index import TreeIndex


# --------------------------------------------------------------------------------------------- server limits
def body_reader(chunks: int, chunk_bytes: int, declared: int | None = None):
    """An ASGI request whose body arrives in ``chunks`` pieces; counts how many pieces were read."""
    state = {"read": 0}
    headers = [(b"content-length", str(declared).encode())] if declared is not None else []
    scope = {"type": "http", "method": "POST", "path": "/api/search", "headers": headers}

    async def receive():
        state["read"] += 1
        return {"type": "http.request", "body": b"x" * chunk_bytes, "more_body": state["read"] < chunks}

    return scope, receive, state


def drive(middleware, scope, receive):
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    return sent


def test_an_oversized_body_is_refused_while_it_is_read():
    reached = []

    async def app(scope, receive, send):
        reached.append(await receive())

    limit = BodyLimit(app, limit_for=lambda path: 1_000_000)
    scope, receive, state = body_reader(chunks=300, chunk_bytes=1 << 20)  # 300 MB, no Content-Length
    sent = drive(limit, scope, receive)
    assert sent[0]["status"] == 413 and not reached
    assert state["read"] == 1  # the first MB already passed the limit: nothing more was read
    scope, receive, state = body_reader(chunks=300, chunk_bytes=1 << 20, declared=300 << 20)
    assert drive(limit, scope, receive)[0]["status"] == 413 and state["read"] == 0  # refused from its header
    scope, receive, state = body_reader(chunks=3, chunk_bytes=1000)
    assert drive(limit, scope, receive) == [] and reached[0]["body"] == b"x" * 3000  # a small body passes whole


def test_sign_in_guesses_are_throttled_with_a_doubling_wait():
    now = [0.0]
    throttle = SignInThrottle(free_failures=5, max_block=300, clock=lambda: now[0])
    for _ in range(5):
        throttle.failed("10.0.0.9")
    assert throttle.retry_after("10.0.0.9") == 0
    waits = []
    for _ in range(4):
        throttle.failed("10.0.0.9")
        waits.append(throttle.retry_after("10.0.0.9"))
    assert waits == [1, 2, 4, 8]
    assert throttle.retry_after("10.0.0.10") == 0  # another client is not affected
    now[0] += 8
    assert throttle.retry_after("10.0.0.9") == 0
    throttle.succeeded("10.0.0.9")
    throttle.failed("10.0.0.9")
    assert throttle.retry_after("10.0.0.9") == 0  # a right token starts the count again


@pytest.fixture
def served_index(planted, model, tmp_path):
    index = TreeIndex(model)
    index.add(planted.features[:50], planted.labels[:50],
              [f"/srv/photos/{planted.class_names[label]}/{i}.jpg" for i, label in enumerate(planted.labels[:50])])
    index.extra_["image_root"] = "/srv/photos"
    index.save(tmp_path / "ix")
    return tmp_path / "ix"


def test_the_server_throttles_wrong_tokens(served_index, monkeypatch):
    # a stopped clock: on a busy machine the 1-second wait must not run out between two requests
    monkeypatch.setattr("treeseek.apps.server.app.SignInThrottle", lambda: SignInThrottle(clock=lambda: 100.0))
    client = TestClient(create_app(served_index, access_token="right-token"))
    wrong = {"Authorization": "Bearer wrong"}
    statuses = [client.get("/api/info", headers=wrong).status_code for _ in range(6)]
    assert statuses == [401] * 6
    refused = client.get("/api/info", headers={"Authorization": "Bearer right-token"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "\n" not in refused.json()["error"]


def test_the_server_caps_feature_rows_and_pixels(served_index, tmp_path):
    client = TestClient(create_app(served_index))
    rows = client.post("/api/search/features", json={"features": [[0.0] * 24] * 1001})
    assert rows.status_code == 422 and "1000" in rows.json()["error"]
    bomb = io.BytesIO()
    Image.new("1", (12_000, 10_000)).save(bomb, format="PNG")
    answer = client.post("/api/search", files={"images": ("bomb.png", bomb.getvalue(), "image/png")})
    assert answer.status_code == 400  # a feature index takes no images; its refusal comes first
    client = TestClient(create_app(served_index, max_upload_mb=0.001))
    big = client.post("/api/search/features", json={"features": [[0.5] * 24] * 900})
    assert big.status_code == 200  # JSON bodies have their own, larger limit
    upload = client.post("/api/search", files={"images": ("a.png", b"\0" * 5000, "image/png")})
    assert upload.status_code == 413 and "limit of 0.001 MB" in upload.json()["error"]


def test_item_sources_are_shown_relative_to_the_collection(served_index, planted):
    client = TestClient(create_app(served_index))
    item = client.get("/api/items/3").json()
    assert item["source"] == f"{planted.class_names[planted.labels[3]]}/3.jpg"
    hits = client.post("/api/search/features", json={"features": [planted.features[3].tolist()], "k": 5}).json()
    assert all(not hit["path"].startswith("/") for hit in hits["queries"][0]["results"])
    shown = TestClient(create_app(served_index, show_paths=True)).get("/api/items/3").json()
    assert shown["source"].startswith("/srv/photos/")
    assert shown_source("/mnt/other/disk/ant/1.jpg", "/srv/photos") == "ant/1.jpg"
    assert shown_source("cifar:17", None) == "cifar:17"
