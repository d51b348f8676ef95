import pathlib

import pytest

import clusterlib


@pytest.fixture(scope="session", autouse=True)
def stubs():
    for b in (clusterlib.GPT2D, clusterlib.WORKER, clusterlib.GPT2CTL):
        if not b.exists():
            pytest.fail(f"{b} is not built: run scripts/test.sh")
    return clusterlib.generate_stubs()


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    return clusterlib.random_shards(tmp_path_factory.mktemp("shards"))


@pytest.fixture
def cluster(tmp_path):
    c = clusterlib.Cluster(tmp_path / "cluster")
    yield c
    c.stop()
    # On failure, the daemons' logs are the story: pytest shows captured output.
    for log in sorted((tmp_path / "cluster").glob("*.log")):
        print(f"==== {log.name}\n{log.read_text(errors='replace')[-6000:]}")
