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


GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@pytest.fixture(scope="session")
def enc():
    """tiktoken's "gpt2" encoding (r50k_base), built offline from the vocabulary setup.sh fetched."""
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PATTERN, mergeable_ranks=load_tiktoken_bpe(str(VOCAB)),
                             special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)


def run(cmd, *, input=None, check=True, timeout=600):
    """Runs a command; returns CompletedProcess with text stdout/stderr (bytes if input is bytes)."""
    text = not isinstance(input, bytes)
    proc = subprocess.run([str(c) for c in cmd], input=input, capture_output=True, text=text, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} exited {proc.returncode}: {proc.stderr}")
    return proc
