"""Shared pytest fixtures: where the built binaries and the test data (tests/data) live."""
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bin_dir() -> pathlib.Path:
    """Directory holding qwen-* binaries (QWEN_BIN_DIR, default build/bin)."""
    d = pathlib.Path(os.environ.get("QWEN_BIN_DIR", ROOT / "build" / "bin"))
    if not d.is_dir():
        pytest.fail(f"binary directory {d} does not exist: build first or set QWEN_BIN_DIR")
    return d


@pytest.fixture(scope="session")
def tokenizer_dir() -> pathlib.Path:
    """The repository's Qwen tokenizer (tests/data/qwen2-tokenizer), unpacked: tokenizer.json and
    tokenizer_config.json."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from tokenizer_data import tokenizer_dir as unpack
    return unpack()


@pytest.fixture(scope="session")
def tokenizer_json(tokenizer_dir) -> pathlib.Path:
    return tokenizer_dir / "tokenizer.json"
