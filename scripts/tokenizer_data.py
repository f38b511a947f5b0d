#!/usr/bin/env python3
"""The repository's copy of the Qwen tokenizer (tests/data/qwen2-tokenizer), unpacked for use.

tokenizer.json is committed xz-compressed; this unpacks it once into
${QWEN_CACHE:-~/.cache/qwen.cu}/qwen2-tokenizer/ (checked by sha256, rewritten when stale) beside
tokenizer_config.json, and prints that folder. Library use: tokenizer_dir() -> pathlib.Path.
"""
import hashlib
import lzma
import os
import pathlib
import shutil
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCE = ROOT / "tests" / "data" / "qwen2-tokenizer"
SHA256 = "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tokenizer_dir() -> pathlib.Path:
    """A folder holding tokenizer.json and tokenizer_config.json (unpacked on first use)."""
    cache = pathlib.Path(os.environ.get("QWEN_CACHE", pathlib.Path.home() / ".cache" / "qwen.cu"))
    out = cache / "qwen2-tokenizer"
    target = out / "tokenizer.json"
    if not target.is_file() or _sha256(target) != SHA256:
        out.mkdir(parents=True, exist_ok=True)
        # Unpack under a private name and rename, so parallel test processes never read half a file.
        with tempfile.NamedTemporaryFile(dir=out, delete=False) as tmp:
            with lzma.open(SOURCE / "tokenizer.json.xz") as src:
                shutil.copyfileobj(src, tmp)
        if _sha256(tmp.name) != SHA256:
            os.unlink(tmp.name)
            raise RuntimeError(f"{SOURCE / 'tokenizer.json.xz'} does not unpack to the expected tokenizer.json")
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, target)
    config = out / "tokenizer_config.json"
    if not config.is_file() or config.read_bytes() != (SOURCE / "tokenizer_config.json").read_bytes():
        shutil.copyfile(SOURCE / "tokenizer_config.json", config)
    return out


if __name__ == "__main__":
    print(tokenizer_dir())
