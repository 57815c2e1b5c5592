"""Nothing lost under concurrent writers: two writers started at the same moment, checked item by item
(issue 25)."""
import fcntl
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from treeseek.index import TreeIndex
from treeseek.model import TreeseekModel

import reliability_workers as workers
from conftest import SHARED
from reliability_workers import assert_one_error_line, cli, fresh_copy, live_sources

REPEATS = int(os.environ.get("TREESEEK_STRESS_REPEATS", "20"))

# ------------------------------------------------------------------------------------------ concurrent writers
@pytest.fixture(scope="module")
def pool():
    """Two worker processes that already imported treeseek, and a barrier to start them at the same moment."""
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(2) as processes:
        yield processes, manager.Barrier(2)




def run_together(pool, *calls):
    processes, _ = pool
    pending = [processes.apply_async(function, arguments) for function, arguments in calls]
    return [result.get(timeout=120) for result in pending]




@pytest.mark.slow
def test_two_concurrent_adders_keep_every_item(base_index, planted, pool, tmp_path):
    for repeat in range(REPEATS):
        directory = fresh_copy(base_index, tmp_path, repeat)
        run_together(pool, (workers.add_items, (directory, planted.features[200:210], "a", pool[1])),
                     (workers.add_items, (directory, planted.features[210:220], "b", pool[1])))
        sources = live_sources(directory)
        expected = {f"base{i}" for i in range(200)} | {f"a{i}" for i in range(10)} | {f"b{i}" for i in range(10)}
        assert set(sources) == expected, f"repeat {repeat}: lost {sorted(expected - set(sources))[:5]}"
        assert len(set(sources.values())) == 220  # and no id was handed out twice


@pytest.mark.slow
def test_an_adder_beside_a_remover_neither_loses_nor_resurrects(base_index, planted, pool, tmp_path):
    removed = list(range(0, 200, 7))
    for repeat in range(REPEATS):
        directory = fresh_copy(base_index, tmp_path, repeat)
        run_together(pool, (workers.add_items, (directory, planted.features[200:210], "a", pool[1])),
                     (workers.remove_items, (directory, removed, pool[1])))
        sources = live_sources(directory)
        expected = {f"base{i}" for i in range(200) if i not in removed} | {f"a{i}" for i in range(10)}
        assert set(sources) == expected, f"repeat {repeat}: {sorted(set(sources) ^ expected)[:5]}"


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------------------------------------ the same, as users run the commands
CLI_REPEATS = int(os.environ.get("TREESEEK_STRESS_REPEATS_CLI", "2"))


@pytest.fixture(scope="module")
def image_index(tmp_path_factory):
    """An index of images embedded by the CIFAR ResNet-20, holding 30 items that have no files."""
    from treeseek.embed.backbones import load_backbone
    from treeseek.index.image_index import ImageIndex

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
    processes = [subprocess.Popen([sys.executable, "-m", "treeseek", *map(str, command)],
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
