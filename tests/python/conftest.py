"""Shared pytest fixtures: where the built binaries and the shared test data live."""
import os
import pathlib

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
def shared_dir() -> pathlib.Path:
    """The shared/ data folder beside the checkout (QWEN_SHARED_DIR overrides)."""
    d = pathlib.Path(os.environ.get("QWEN_SHARED_DIR", ROOT.parent / "shared"))
    if not (d / "data" / "qwen2-tokenizer" / "tokenizer.json").is_file():
        pytest.fail(f"shared data not found under {d}: set QWEN_SHARED_DIR")
    return d


@pytest.fixture(scope="session")
def tokenizer_json(shared_dir) -> pathlib.Path:
    return shared_dir / "data" / "qwen2-tokenizer" / "tokenizer.json"
