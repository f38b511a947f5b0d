#!/usr/bin/env python3
"""Writes the fuzzer's seed corpus: small valid GGUF files (every metadata value type, one file
per tensor type, custom alignment, v2, metadata-only) made with the PyPI gguf package.

Usage: make_seeds.py OUT_DIR
"""
import pathlib
import sys

import numpy as np
from gguf import GGUFValueType

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "python"))
import gguf_corpus as corpus  # noqa: E402


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    small_meta = {k: v for k, v in corpus.ALL_METADATA.items() if k != "test.arr_long"}
    corpus.write_gguf(out / "metadata_all.gguf", small_meta, {})
    for qtype in corpus.SUPPORTED_TYPES:
        row = corpus.block_size(qtype) * (1 if corpus.block_size(qtype) > 1 else 8)
        tensors = {"w": (qtype, corpus.random_row_bytes(qtype, 2, row, rng), (2, row)),
                   "b": (qtype, corpus.random_row_bytes(qtype, 1, row, rng), (row,))}
        meta = {"general.name": (qtype.name, GGUFValueType.STRING, None)}
        corpus.write_gguf(out / f"tensor_{qtype.name}.gguf", meta, tensors,
                          alignment=64 if qtype == corpus.T.Q8_0 else None)
    data = bytearray((out / "tensor_F32.gguf").read_bytes())
    data[4:8] = (2).to_bytes(4, "little")
    (out / "tensor_F32_v2.gguf").write_bytes(bytes(data))
    corpus.write_gguf(out / "metadata_only.gguf", {"a.b": (1, GGUFValueType.UINT8, None)}, {})
    # Alignment 1: the F32 tensor after a 3-element F16 one starts at an odd offset.
    corpus.write_gguf(out / "alignment_1.gguf", {}, {
        "h": (corpus.T.F16, corpus.random_row_bytes(corpus.T.F16, 1, 3, rng), (3,)),
        "f": (corpus.T.F32, corpus.random_row_bytes(corpus.T.F32, 1, 5, rng), (5,))}, alignment=1)


if __name__ == "__main__":
    main()
