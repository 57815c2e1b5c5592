"""Nothing lost under concurrent writers, nothing silently wrong on real-world files, nothing a stranger can
exhaust: the cases that once failed, kept as tests (issue 25)."""
import asyncio
import fcntl
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import reliability_workers as workers
from conftest import SHARED
from fastapi.testclient import TestClient
from PIL import Image

from treeseek.cli import main as cli_main
from treeseek.extraction import extract_features
from treeseek.images.decoding import UnreadableImage, load_rgb
from treeseek.index import TreeIndex
from treeseek.model import TreeseekModel
from treeseek.server import create_app
from treeseek.server.limits import BodyLimit, SignInThrottle, shown_source

REPEATS = int(os.environ.get("TREESEEK_STRESS_REPEATS", "20"))


def cli(*args, capsys):
    """``treeseek ARGS`` in this process, as its entry point runs it: (exit status, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["treeseek", *map(str, args)]
    try:
        cli_main()
        status = 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_error_line(status, err, words=""):
    """Exit status 2 and one ``error:`` line (after any ``warning:`` lines), never a traceback."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning: ")]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------ concurrent writers
@pytest.fixture(scope="module")
def base_index(planted, model, tmp_path_factory):
    directory = tmp_path_factory.mktemp("writers") / "base"
    index = TreeIndex(model)
    index.add(planted.features[:200], planted.labels[:200], [f"base{i}" for i in range(200)])
    index.save(directory)
    return directory


@pytest.fixture(scope="module")
def pool():
    """Two worker processes that already imported treeseek, and a barrier to start them at the same moment."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as processes:
        yield processes, manager.Barrier(2)


def live_sources(directory) -> dict[str, int]:
    index = TreeIndex.open(directory)
    return {stored.source(int(row)): int(stored.segment.ids[row])
            for stored in index.stored_segments() for row in stored.live_rows_by_id()}


def run_together(pool, *calls):
    processes, _ = pool
    pending = [processes.apply_async(function, arguments) for function, arguments in calls]
    return [result.get(timeout=120) for result in pending]


def fresh_copy(base_index, tmp_path, repeat) -> str:
    target = tmp_path / f"ix{repeat}"
    shutil.copytree(base_index, target)
    return str(target)


def test_two_concurrent_adders_keep_every_item(base_index, planted, pool, tmp_path):
    for repeat in range(REPEATS):
        directory = fresh_copy(base_index, tmp_path, repeat)
        run_together(pool, (workers.add_items, (directory, planted.features[200:210], "a", pool[1])),
                     (workers.add_items, (directory, planted.features[210:220], "b", pool[1])))
        sources = live_sources(directory)
        expected = {f"base{i}" for i in range(200)} | {f"a{i}" for i in range(10)} | {f"b{i}" for i in range(10)}
        assert set(sources) == expected, f"repeat {repeat}: lost {sorted(expected - set(sources))[:5]}"
        assert len(set(sources.values())) == 220  # and no id was handed out twice


def test_an_adder_beside_a_remover_neither_loses_nor_resurrects(base_index, planted, pool, tmp_path):
    removed = list(range(0, 200, 7))
    for repeat in range(REPEATS):
        directory = fresh_copy(base_index, tmp_path, repeat)
        run_together(pool, (workers.add_items, (directory, planted.features[200:210], "a", pool[1])),
                     (workers.remove_items, (directory, removed, pool[1])))
        sources = live_sources(directory)
        expected = {f"base{i}" for i in range(200) if i not in removed} | {f"a{i}" for i in range(10)}
        assert set(sources) == expected, f"repeat {repeat}: {sorted(set(sources) ^ expected)[:5]}"


def test_compaction_beside_an_adder_keeps_every_item(base_index, planted, pool, tmp_path):
    for repeat in range(REPEATS):
        directory = fresh_copy(base_index, tmp_path, repeat)
        with TreeIndex.updating(directory) as index:
            index.remove([5])
            index.save(directory)
        run_together(pool, (workers.compact_index, (directory, pool[1])),
                     (workers.add_items, (directory, planted.features[200:210], "a", pool[1])))
        sources = live_sources(directory)
        expected = {f"base{i}" for i in range(200) if i != 5} | {f"a{i}" for i in range(10)}
        assert set(sources) == expected, f"repeat {repeat}: {sorted(set(sources) ^ expected)[:5]}"


def test_a_writer_that_did_not_hold_the_lock_is_refused_instead_of_overwriting(base_index, planted, pool, tmp_path):
    """Library code that opens, changes and saves without ``updating``: the later save must fail, not undo."""
    directory = fresh_copy(base_index, tmp_path, 0)
    outcomes = run_together(pool, (workers.unlocked_add, (directory, planted.features[200:210], "a", pool[1])),
                            (workers.unlocked_add, (directory, planted.features[210:220], "b", pool[1])))
    assert sorted(outcome.split(":")[0] for outcome in outcomes) == ["refused", "saved"], outcomes
    assert "changed by another writer" in [o for o in outcomes if o.startswith("refused")][0]
    added = {source[0] for source in live_sources(directory) if not source.startswith("base")}
    assert len(added) == 1 and len(live_sources(directory)) == 210  # the base and one writer's items, whole


def test_a_second_writer_that_will_not_wait_fails_in_one_line(base_index, tmp_path, capsys):
    directory = fresh_copy(base_index, tmp_path, 0)
    with open(Path(directory) / ".lock", "a") as held:  # as another writer holds it
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        status, _, err = cli("index", "remove", directory, 3, "--wait", "0", capsys=capsys)
        assert_one_error_line(status, err, "another process is writing")
        started = time.monotonic()
        status, _, err = cli("index", "remove", directory, 3, "--wait", "0.5", capsys=capsys)
        assert_one_error_line(status, err, "after waiting 0.5 s")
        assert err.startswith("warning: waiting for another process that is writing")
        assert time.monotonic() - started >= 0.5
    assert live_sources(directory)["base3"] == 3  # nothing was removed


# ------------------------------------------------------------------------------------------------ image files
@pytest.fixture(scope="module")
def photo(caltech_subset) -> Image.Image:
    """A real photo, wider than it is tall."""
    return Image.open(sorted((caltech_subset / "airplanes").iterdir())[0]).convert("RGB")


def test_exif_orientation_is_applied_when_decoding(photo, tmp_path):
    upright = tmp_path / "upright.png"
    photo.save(upright)
    stored_sideways = photo.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways stores
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    sideways = tmp_path / "sideways.png"
    stored_sideways.save(sideways, exif=exif)
    assert Image.open(sideways).size == (photo.height, photo.width)
    np.testing.assert_array_equal(np.asarray(load_rgb(sideways)), np.asarray(photo))


def test_an_exif_rotated_photo_embeds_like_the_upright_one(photo, tmp_path):
    from treeseek.backbones import load_backbone

    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 270 degrees clockwise to display"
    sideways = tmp_path / "sideways.jpg"
    photo.transpose(Image.Transpose.ROTATE_270).save(sideways, quality=95, exif=exif)
    upright = tmp_path / "upright.jpg"
    photo.save(upright, quality=95)
    backbone = load_backbone("efficientnet_lite0")

    def embed(picture):
        import torch

        with torch.inference_mode():
            return backbone.network.features(torch.from_numpy(backbone.preprocess(picture))[None]).numpy()[0]

    def cosine(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    reference = embed(load_rgb(upright))
    assert cosine(embed(load_rgb(sideways)), reference) >= 0.99
    # the pixels as stored, not turned: what decoding gave before, and far from the upright photo
    assert cosine(embed(Image.open(sideways).convert("RGB")), reference) < 0.95


def test_16_bit_grey_levels_are_scaled_by_their_range(tmp_path):
    levels = np.array([[0, 1000, 2000], [3000, 4000, 4095]], dtype=np.uint16)  # a 12-bit camera in 16 bits
    path = tmp_path / "microscope.png"
    Image.fromarray(levels).save(path)
    assert Image.open(path).mode.startswith("I")
    expected = np.rint(levels / 4095 * 255).astype(np.uint8)  # by hand: lowest level black, highest white
    decoded = np.asarray(load_rgb(path))
    np.testing.assert_array_equal(decoded, np.repeat(expected[:, :, None], 3, axis=2))


def test_a_16_bit_png_decodes_like_its_8_bit_copy(photo, tmp_path):
    grey = np.asarray(photo.convert("L"), dtype=np.float64)
    eight = np.rint((grey - grey.min()) / np.ptp(grey) * 255).astype(np.uint8)  # spans 0..255
    Image.fromarray(eight).save(tmp_path / "eight.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # the same levels in 16 bits
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I;16")
    np.testing.assert_array_equal(np.asarray(load_rgb(tmp_path / "sixteen.png")),
                                  np.asarray(load_rgb(tmp_path / "eight.png")))


def test_float_tiff_named_jpg_decodes(tmp_path):
    levels = np.linspace(-1.0, 3.0, 12, dtype=np.float32).reshape(3, 4)
    path = tmp_path / "looks_like.jpg"
    Image.fromarray(levels, mode="F").save(path, format="TIFF")
    decoded = np.asarray(load_rgb(path))[:, :, 0]
    np.testing.assert_array_equal(decoded, np.rint((levels - -1.0) / 4.0 * 255).astype(np.uint8))


def test_a_pixel_bomb_is_refused_from_its_header_in_one_line(tmp_path):
    bomb = tmp_path / "bomb.png"
    Image.new("1", (12_000, 10_000)).save(bomb)  # 120 megapixels in a few kilobytes
    assert bomb.stat().st_size < 100_000
    with pytest.raises(UnreadableImage, match=r"bomb.png: 12000 x 10000 pixels is more than the limit"):
        load_rgb(bomb)
    with pytest.raises(UnreadableImage, match="more than the limit of 1,000,000"):
        load_rgb(tmp_path / "bomb.png", max_pixels=1_000_000)


MEMORY_PROBE = """
import resource, sys
from PIL import Image
from treeseek.backbones.registry import Backbone
from treeseek.images.decoding import load_rgb
backbone = Backbone("probe", None, 224, 256, (0.5,) * 3, (0.25,) * 3, 1, "")
backbone.preprocess(Image.new("RGB", (300, 200)))  # warm up: Pillow's and numpy's own allocations
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
array = backbone.preprocess(load_rgb(sys.argv[1]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert array.shape == (3, 224, 224), array.shape
print((after - before) / 1024)
"""


@pytest.mark.parametrize("size", [(20_000, 1), (1, 80_000)])
def test_a_long_strip_is_processed_in_little_memory(size, tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 30, 30)).save(strip)
    probe = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(strip)], capture_output=True, text=True,
                           timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert float(probe.stdout) < 200, f"{probe.stdout.strip()} MB more at peak"


def test_crop_before_resize_gives_the_pixels_of_resize_then_crop(photo):
    from treeseek.backbones.registry import Backbone

    backbone = Backbone("probe", None, 224, 256, (0.0,) * 3, (1.0,) * 3, 1, "")
    width, height = photo.size  # the reference: resize the whole image, then crop its centre
    scale = 256 / min(width, height)
    size = (max(224, round(width * scale)), max(224, round(height * scale)))
    left, top = (size[0] - 224) // 2, (size[1] - 224) // 2
    whole = photo.resize(size, Image.BILINEAR).crop((left, top, left + 224, top + 224))
    reference = np.asarray(whole, dtype=np.float32).transpose(2, 0, 1) / 255
    assert np.abs(backbone.preprocess(photo) - reference).max() <= 1.01 / 255  # rounding of one level at most


# ------------------------------------------------------------------------------------------- numeric extremes
@pytest.fixture(scope="module")
def feature_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("extremes")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 12)
    good = rng.normal(size=(48, 16)) + labels[:, None]
    np.savez(root / "good.npz", features=good, labels=labels)
    np.savez(root / "constant.npz", features=np.full((48, 16), 3.0), labels=labels)
    huge = good.copy()
    huge[7, 2] = 1e200
    np.savez(root / "huge.npz", features=huge, labels=labels)
    constant_column = good.copy()
    constant_column[:, 4] = 2.5
    np.savez(root / "constant_column.npz", features=constant_column, labels=labels)
    (root / "text.npz").write_text("features,labels\n1,2\n")
    np.savez(root / "few.npz", features=rng.normal(size=(12, 64)), labels=np.repeat(np.arange(4), 3))
    return root


def test_constant_features_are_one_error_line(feature_files, tmp_path, capsys):
    status, _, err = cli("fit", feature_files / "constant.npz", "--out", tmp_path / "m", capsys=capsys)
    assert_one_error_line(status, err, "all 48 vectors are the same")


def test_features_whose_squares_overflow_are_one_error_line(feature_files, tmp_path, capsys):
    status, _, err = cli("fit", feature_files / "huge.npz", "--out", tmp_path / "m", capsys=capsys)
    assert_one_error_line(status, err, "first in row 7")
    status, _, err = cli("index", "create", feature_files / "huge.npz", "--model", tmp_path / "none", "--out",
                         tmp_path / "ix", capsys=capsys)
    assert status == 2 and "Traceback" not in err


def test_a_constant_dimension_is_harmless(feature_files, tmp_path, capsys):
    status, out, err = cli("fit", feature_files / "constant_column.npz", "--out", tmp_path / "m", "--no-plot",
                           capsys=capsys)
    assert status == 0, err
    assert "warning: 1 of the 16 feature dimensions are the same in every training vector" in err
    model = TreeseekModel.load(tmp_path / "m")
    data = np.load(feature_files / "constant_column.npz")
    assert np.isfinite(model.posteriors(data["features"])).all()
    assert model.fit_info_["pca_dim"] <= 15  # the constant dimension carries no variance and is dropped


def test_more_bits_than_samples_is_one_error_line(feature_files, tmp_path, capsys):
    for method in ("itq", "pca"):
        status, _, err = cli("hash", "train", feature_files / "few.npz", "--out", tmp_path / method, "--method",
                             method, "--bits", "64", capsys=capsys)
        assert_one_error_line(status, err, "64 bits need at least 64 training samples")


def test_an_id_beyond_64_bits_is_not_in_the_index(base_index, tmp_path, capsys):
    directory = fresh_copy(base_index, tmp_path, 0)
    status, _, err = cli("index", "remove", directory, "123456789012345678901", capsys=capsys)
    assert_one_error_line(status, err, "item 123456789012345678901 is not in the index")


def test_a_text_file_named_npz_is_called_what_it_is(feature_files, tmp_path, capsys):
    status, _, err = cli("fit", feature_files / "text.npz", "--out", tmp_path / "m", capsys=capsys)
    assert_one_error_line(status, err, "is not a .npz file")
    assert "pickle" not in err


def test_a_manifest_cannot_point_outside_its_index(base_index, tmp_path, capsys):
    directory = Path(fresh_copy(base_index, tmp_path, 0))
    manifest = json.loads((directory / "manifest.json").read_text())
    for field, value in (("model", "../../.."), ("model", "/etc"), ("segments", "..")):
        edited = dict(manifest)
        if field == "segments":
            edited["segments"] = [{**manifest["segments"][0], "name": value}]
        else:
            edited[field] = value
        (directory / "manifest.json").write_text(json.dumps(edited))
        status, _, err = cli("index", "info", directory, capsys=capsys)
        assert_one_error_line(status, err, "which is not a file of the index")


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


def test_the_server_throttles_wrong_tokens(served_index):
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


# -------------------------------------------------------------------------------------- work that survives
def test_a_killed_extraction_resumes_where_it_stopped(tmp_path):
    folder, cache, count = tmp_path / "images", tmp_path / "cache", 60
    files = workers.tiny_images(folder, count)
    child = subprocess.Popen([sys.executable, workers.__file__, "extract", str(folder), str(count), str(cache)],
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    cache_file = None
    while time.monotonic() < deadline and cache_file is None:  # wait for a few committed batches
        found = list(cache.glob("*.npz")) if cache.is_dir() else []
        if found and len(np.load(found[0])["fingerprints"]) >= 12:
            cache_file = found[0]
        time.sleep(0.05)
    assert cache_file is not None, "the extraction committed nothing"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    committed = len(np.load(cache_file)["fingerprints"])
    assert 12 <= committed < count  # killed midway, with part of the work on disk

    images = workers.image_set(files)
    resumed, kept, stats = extract_features(workers.tiny_backbone(), images, batch_size=4, cache_dir=cache,
                                            progress=False)
    assert stats["from_cache"] == committed and stats["computed"] == count - committed
    uninterrupted, _, _ = extract_features(workers.tiny_backbone(), images, batch_size=7, progress=False)
    np.testing.assert_array_equal(resumed, uninterrupted)
    assert kept.all()


# ------------------------------------------------------------------------------------------ fuzzed CLI input
def corrupted_feature_files(root: Path, seed: int = 7):
    """A fixed corpus of broken feature files, each a mutation of a valid one."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 8)
    good = rng.normal(size=(24, 6)) + labels[:, None]
    names = np.array(["ant", "bee", "cat"])
    mutations = {
        "ints": dict(features=np.rint(good * 10).astype(np.int64), labels=labels),
        "bools": dict(features=good > 0, labels=labels),
        "strings": dict(features=good.astype(str), labels=labels),
        "complex": dict(features=good.astype(complex), labels=labels),
        "float16": dict(features=good.astype(np.float16), labels=labels),
        "vector": dict(features=good[:, 0], labels=labels),
        "cube": dict(features=good[:, :, None], labels=labels),
        "no_rows": dict(features=good[:0], labels=labels[:0]),
        "no_columns": dict(features=good[:, :0], labels=labels),
        "one_row": dict(features=good[:1], labels=labels[:1]),
        "nan": dict(features=np.where(rng.random(good.shape) < 0.05, np.nan, good), labels=labels),
        "inf": dict(features=np.where(rng.random(good.shape) < 0.05, -np.inf, good), labels=labels),
        "huge": dict(features=good * 1e180, labels=labels),
        "tiny": dict(features=good * 1e-300, labels=labels),
        "constant": dict(features=np.ones_like(good), labels=labels),
        "duplicate_rows": dict(features=np.repeat(good[:3], 8, axis=0), labels=labels),
        "point_classes": dict(features=np.repeat(good[[0, 8, 16]], 8, axis=0), labels=labels),
        "no_labels": dict(features=good),
        "negative_label": dict(features=good, labels=labels - 1),
        "fractional_labels": dict(features=good, labels=labels + 0.5),
        "string_labels": dict(features=good, labels=names[labels]),
        "short_labels": dict(features=good, labels=labels[:-3]),
        "one_class": dict(features=good, labels=np.zeros(24, np.int64)),
        "one_per_class": dict(features=good[:3], labels=np.arange(3)),
        "names_too_few": dict(features=good, labels=labels, class_names=names[:2]),
        "names_duplicated": dict(features=good, labels=labels, class_names=np.array(["ant", "ant", "cat"])),
        "ids_short": dict(features=good, labels=labels, ids=np.arange(5)),
        "objects": dict(features=np.array([None] * 24, dtype=object), labels=labels),
    }
    for name, arrays in mutations.items():
        np.savez(root / f"{name}.npz", **arrays)
    (root / "empty.npz").write_bytes(b"")
    (root / "garbage.npz").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "truncated.npz").write_bytes((root / "ints.npz").read_bytes()[:150])
    return sorted(root.glob("*.npz")), good, labels, names


def corrupted_taxonomies(root: Path, seed: int = 11) -> dict[Path, bool]:
    """Broken taxonomy files for the classes ant, bee, cat: path -> whether it must be refused."""
    rng = np.random.default_rng(seed)
    texts = {
        "empty.json": "",
        "garbage.json": "{{{ not json",
        "list.json": "[1, 2, 3]",
        "cycle.parent-child.txt": "3 4\n4 3\n3 0\n4 1\n4 2\n",
        "self_parent.parent-child.txt": "3 3\n3 0\n3 1\n3 2\n",
        "missing_class.paths.tsv": "class\tpath\nant\tanimal > insect\nbee\tanimal > insect\n",
        "extra_class.paths.tsv": "class\tpath\nant\tr > a\nbee\tr > a\ncat\tr > b\ndog\tr > b\n",
        "bad_columns.paths.tsv": "class\tpath\nant\nbee\tx\tq\ncat\ty\n",
        "binary.paths.tsv": rng.integers(0, 256, 300, dtype=np.uint8).tobytes().decode("latin-1"),
        "two_parents.parent-child.txt": "3 0\n4 0\n3 1\n4 2\n5 3\n5 4\n",
    }
    for name, text in texts.items():
        (root / name).write_text(text, encoding="latin-1")
        if name.endswith(".parent-child.txt"):
            (root / name.replace(".parent-child.txt", ".class_names.txt")).write_text("0 ant\n1 bee\n2 cat\n")
    return {root / name: not name.startswith("extra_class") for name in texts}  # extra classes are ignored


def test_fuzzed_feature_and_taxonomy_files_give_an_answer_or_one_error_line(tmp_path, capsys):
    paths, good, labels, names = corrupted_feature_files(tmp_path)
    np.savez(tmp_path / "valid.npz", features=good, labels=labels, class_names=names)
    assert cli("fit", tmp_path / "valid.npz", "--out", tmp_path / "model", "--no-plot", capsys=capsys)[0] == 0
    for path in paths:
        for args in (("fit", path, "--out", tmp_path / f"m-{path.stem}", "--no-plot"),
                     ("evaluate", tmp_path / "model", path, "--no-progress"),
                     ("index", "create", path, "--model", tmp_path / "model", "--out", tmp_path / f"ix-{path.stem}",
                      "--no-progress")):
            status, _, err = cli(*args, capsys=capsys)
            if status != 0:
                assert_one_error_line(status, err)
            elif args[0] == "fit":  # an answer must be a usable model
                model = TreeseekModel.load(tmp_path / f"m-{path.stem}")
                assert np.isfinite(model.posteriors(good[:, : model.input_dim_])).all(), path.name
    for taxonomy, broken in corrupted_taxonomies(tmp_path).items():
        for args in (("fit", tmp_path / "valid.npz", "--out", tmp_path / "mt", "--hierarchy", taxonomy, "--no-plot"),
                     ("evaluate", tmp_path / "model", tmp_path / "valid.npz", "--taxonomy", taxonomy,
                      "--no-progress")):
            status, _, err = cli(*args, capsys=capsys)
            assert status == (2 if broken else 0), f"{taxonomy.name}: {err}"
            if broken:
                assert_one_error_line(status, err)


# ------------------------------------------------------------------------ the same, as users run the commands
CLI_REPEATS = int(os.environ.get("TREESEEK_STRESS_REPEATS_CLI", "2"))


@pytest.fixture(scope="module")
def image_index(tmp_path_factory):
    """An index of images embedded by the CIFAR ResNet-20, holding 30 items that have no files."""
    from treeseek.backbones import load_backbone
    from treeseek.image_index import ImageIndex

    weights = SHARED / "models" / "cifar10-resnet20.safetensors"
    if not weights.is_file():
        pytest.skip("../shared/models/cifar10-resnet20.safetensors is not present")
    root = tmp_path_factory.mktemp("image-writers")
    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(3), 10)
    features = rng.normal(size=(30, 64)) + 3 * np.eye(64)[labels]
    model = TreeseekModel(hierarchy="average:4:cosine").fit(features, labels, ["ant", "bee", "cat"])
    for batch in "ab":
        folder = root / batch
        folder.mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{batch}{i}.png")
    np.savez(root / "more.npz", features=features[:5] + 0.1, labels=labels[:5], class_names=["ant", "bee", "cat"],
             ids=np.array([f"more{i}" for i in range(5)]))
    ImageIndex.build(model, load_backbone("resnet20", weights), str(weights), features,
                     np.array([f"base{i}" for i in range(30)]), labels).save(root / "base")
    return root


def run_commands_together(*commands):
    processes = [subprocess.Popen([sys.executable, "-m", "treeseek.cli", *map(str, command)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for command in commands]
    results = [(process.wait(timeout=300), process.stderr.read()) for process in processes]
    for status, err in results:
        assert status == 0, err


@pytest.mark.slow
def test_concurrent_commands_lose_nothing(image_index, tmp_path):
    base = {f"base{i}" for i in range(30)}
    files = {batch: {str(image_index / batch / f"{batch}{i}.png") for i in range(8)} for batch in "ab"}
    for repeat in range(CLI_REPEATS):
        directory = tmp_path / f"adders{repeat}"
        shutil.copytree(image_index / "base", directory)
        run_commands_together(("index", "add-images", directory, image_index / "a", "--no-progress"),
                              ("index", "add-images", directory, image_index / "b", "--no-progress"))
        assert set(live_sources(directory)) == base | files["a"] | files["b"], f"repeat {repeat}"
        assert not (directory / "feature-cache").exists()

        directory = tmp_path / f"remover{repeat}"
        shutil.copytree(image_index / "base", directory)
        run_commands_together(("index", "add-images", directory, image_index / "a", "--no-progress"),
                              ("index", "remove", directory, 0, 1, 2))
        assert set(live_sources(directory)) == base - {"base0", "base1", "base2"} | files["a"], f"repeat {repeat}"

        directory = tmp_path / f"compact{repeat}"
        shutil.copytree(image_index / "base", directory)
        run_commands_together(("index", "remove", directory, 7), ("index", "compact", directory))
        run_commands_together(("index", "compact", directory),
                              ("index", "add", directory, image_index / "more.npz"))
        expected = base - {"base7"} | {f"more{i}" for i in range(5)}
        assert set(live_sources(directory)) == expected, f"repeat {repeat}"
