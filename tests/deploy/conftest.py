import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import deploylib  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def stubs():
    for b in (deploylib.clusterlib.GPT2D, deploylib.clusterlib.WORKER, deploylib.clusterlib.GPT2CTL):
        if not b.exists():
            pytest.fail(f"{b} is not built: run scripts/test.sh")
    return deploylib.clusterlib.generate_stubs()
