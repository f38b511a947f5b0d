"""The repository stands alone: a clone from its public home has nothing beside it.

Metric: exact. No tracked file names a path or variable that points outside the clone, and the
committed tokenizer data unpacks to the file the tests were written against (sha256).
(.ci/run also runs the whole suite from a fresh clone in an empty folder.)
"""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import tokenizer_data  # noqa: E402

# Spelled in pieces so this file does not match itself.
OUTSIDE = ["../" + "shared", "QWEN_" + "SHARED_DIR", "DESIGN" + " §", "DESIGN" + ".md"]


def tracked_text_files():
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # an exported tree without .git
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and "build" not in p.parts]
    for name in names:
        data = (ROOT / name).read_bytes() if (ROOT / name).is_file() else b""
        if b"\0" not in data[:4096]:
            yield name, data.decode("utf-8", errors="replace")


def test_no_file_reaches_outside_the_clone():
    hits = [f"{name}: {pattern}" for name, text in tracked_text_files() for pattern in OUTSIDE if pattern in text]
    assert not hits, "files that reach outside the repository:\n" + "\n".join(hits)


def test_tokenizer_data_unpacks(tokenizer_dir):
    assert tokenizer_data._sha256(tokenizer_dir / "tokenizer.json") == tokenizer_data.SHA256
    assert (tokenizer_dir / "tokenizer_config.json").read_bytes() == \
        (ROOT / "tests" / "data" / "qwen2-tokenizer" / "tokenizer_config.json").read_bytes()
