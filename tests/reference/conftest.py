"""Shared fixtures: where the built binaries are, and helpers to run them."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("GPT2_BUILD_DIR", ROOT / "build"))
VOCAB = ROOT / "assets" / "gpt2.tiktoken"


def binary(relpath: str) -> pathlib.Path:
    path = BUILD / relpath
    if not path.exists():
        pytest.fail(f"{path} is not built: run scripts/test.sh (or cmake --build {BUILD})")
    return path


@pytest.fixture(scope="session")
def worker():
    return binary("worker/gpt2-worker")


@pytest.fixture(scope="session")
def logits_tool():
    return binary("tests/tools/gpt2_logits")


def run(cmd, *, input=None, check=True, timeout=600):
    """Runs a command; returns CompletedProcess with text stdout/stderr (bytes if input is bytes)."""
    text = not isinstance(input, bytes)
    proc = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=text, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr}")
    return proc
