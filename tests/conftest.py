import tarfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CALTECH_CLASSES = ["accordion", "airplanes", "anchor", "ant", "barrel", "bass", "beaver", "binocular", "bonsai", "brain"]


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def caltech_subset(tmp_path_factory) -> Path:
    """10 Caltech-101 classes x 12 images (plus the split files), unpacked from ../shared."""
    archive = SHARED / "data" / "caltech101.tar"
    if not archive.is_file():
        pytest.skip("../shared/data/caltech101.tar is not present")
    root = tmp_path_factory.mktemp("caltech")
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        members = []
        for member in tar:
            parts = Path(member.name).parts
            if len(parts) == 4 and parts[2] in CALTECH_CLASSES and member.isfile():
                if counts.get(parts[2], 0) < 12:
                    counts[parts[2]] = counts.get(parts[2], 0) + 1
                    members.append(member)
        tar.extractall(root, members=members, filter="data")
    return root / "caltech101" / "101_ObjectCategories"


@pytest.fixture(scope="session")
def cifar_test_subset(tmp_path_factory) -> Path:
    """20 CIFAR-10 test JPEGs per class, unpacked from ../shared."""
    archive = SHARED / "data" / "cifar10.tar.gz"
    if not archive.is_file():
        pytest.skip("../shared/data/cifar10.tar.gz is not present")
    root = tmp_path_factory.mktemp("cifar")
    counts: dict[str, int] = {}
    with tarfile.open(archive) as tar:
        members = []
        for member in tar:
            parts = Path(member.name).parts
            if len(parts) == 4 and parts[1] == "test" and member.isfile() and counts.get(parts[2], 0) < 20:
                counts[parts[2]] = counts.get(parts[2], 0) + 1
                members.append(member)
        tar.extractall(root, members=members, filter="data")
    return root / "cifar10" / "test"
