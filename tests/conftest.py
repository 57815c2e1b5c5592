import contextlib
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from treeseek.hierarchy.synthetic import planted_hierarchy
from treeseek.index import TreeIndex
from treeseek.model import TreeseekModel

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CALTECH_CLASSES = ["accordion", "airplanes", "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai", "brain"]


@pytest.fixture(scope="module")
def planted():
    """A small planted hierarchy (3 x 4 classes, 24 dims) for the index, code, engine and server tests."""
    return planted_hierarchy((3, 4), dim=24, samples_per_class=60, scale=4.0, seed=5)


@pytest.fixture(scope="module")
def model(planted):
    """The paper's threshold tree fitted on ``planted`` (modules may override it with another model)."""
    return TreeseekModel(hierarchy="visual", threshold=0.05).fit(planted.features, planted.labels, planted.class_names)


@pytest.fixture(scope="module")
def base_index(planted, model, tmp_path_factory):
    """A saved index of 200 planted items whose sources are base0 .. base199."""
    directory = tmp_path_factory.mktemp("writers") / "base"
    index = TreeIndex(model)
    index.add(planted.features[:200], planted.labels[:200], [f"base{i}" for i in range(200)])
    index.save(directory)
    return directory


@pytest.fixture
def feature_index(planted, model, tmp_path):
    """Two segments on disk and two removed items."""
    index = TreeIndex(model)
    index.add(planted.features[:400], planted.labels[:400])
    index.save(tmp_path / "ix")
    index.add(planted.features[400:600], planted.labels[400:600])
    index.remove([3, 401])
    index.save(tmp_path / "ix")
    return tmp_path / "ix"


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


def unpack_subset(archive_name: str, target: Path, class_part: int, accept, per_class: int) -> None:
    """Unpack at most ``per_class`` files of each class (path part ``class_part``) that ``accept`` admits."""
    archive = SHARED / "data" / archive_name
    if not archive.is_file():
        pytest.skip(f"../shared/data/{archive_name} is not present")
    counts: dict[str, int] = {}
    members = []
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if len(parts) == 4 and member.isfile() and accept(parts) and counts.get(parts[class_part], 0) < per_class:
                counts[parts[class_part]] = counts.get(parts[class_part], 0) + 1
                members.append(member)
        tar.extractall(target, members=members, filter="data")


@pytest.fixture(scope="session")
def caltech_subset(tmp_path_factory) -> Path:
    """10 Caltech-101 classes x 12 images, unpacked from ../shared."""
    root = tmp_path_factory.mktemp("caltech")
    unpack_subset("caltech101.tar", root, 2, lambda parts: parts[2] in CALTECH_CLASSES, 12)
    return root / "caltech101" / "101_ObjectCategories"


@pytest.fixture(scope="session")
def cifar_test_subset(tmp_path_factory) -> Path:
    """20 CIFAR-10 test JPEGs per class, unpacked from ../shared."""
    root = tmp_path_factory.mktemp("cifar")
    unpack_subset("cifar10.tar.gz", root, 2, lambda parts: parts[1] == "test", 20)
    return root / "cifar10" / "test"


def run_cli(*args) -> subprocess.CompletedProcess:
    """``treeseek ARGS`` in this process through typer's CliRunner: its exit status, stdout and stderr, as a
    process would give them. A traceback would escape the command's one-line errors, so it fails the test here."""
    from typer.testing import CliRunner

    from treeseek.apps.cli.main import app, configure_logging

    configure_logging()
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def run_process(*args) -> subprocess.CompletedProcess:
    """``treeseek ARGS`` as a process of its own: for exit statuses, signals and what a fresh interpreter does."""
    return subprocess.run([sys.executable, "-m", "treeseek", *map(str, args)], capture_output=True, text=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(*args, timeout: float = 60, env: dict | None = None, stderr=subprocess.PIPE):
    """A real 'treeseek serve ARGS' process on a free port: yields its base URL, its /api/info answer (None
    when the server wants a token: ``env`` may give it one) and the process."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "treeseek", "serve", *map(str, args), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/info", timeout=2) as answer:
                    info = json.load(answer)
                break
            except urllib.error.HTTPError as refused:
                assert refused.code == 401, refused
                info = None
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode() if server.stderr else "the server stopped"
                assert time.monotonic() < deadline, f"the server did not answer within {timeout} s"
                time.sleep(0.3)
        yield base, info, server
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def main_job(caltech_subset, tmp_path_factory):
    """'treeseek run --quick' on the Caltech subset: features, model, image index and report; its tree also
    weighs what the folder names mean."""
    out = tmp_path_factory.mktemp("run")
    taxonomy = SHARED / "hierarchies" / "caltech101.paths.tsv"
    args = ["run", caltech_subset, "--out", out, "--quick", "--no-progress", "--hierarchy", "average:8:cosine:names"]
    if taxonomy.is_file():
        args += ["--taxonomy", taxonomy]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    return out
