"""Helpers that write GGUF test files with the PyPI `gguf` package (GGUFWriter).

Used by tests/python/test_gguf_*.py and tests/fuzz/make_seeds.py.
"""
from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
from gguf import GGUFValueType, GGUFWriter, GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf import quants

# Every type qwen.cu computes with on the CPU.
SUPPORTED_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
                   T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]
# Types gguf.quants can quantize from floats (it only dequantizes the K types).
QUANTIZABLE_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]

# Byte offsets of the fp16 scale fields inside one block (ggml's block structs).
FP16_SCALE_OFFSETS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def block_size(qtype: T) -> int:
    return GGML_QUANT_SIZES[qtype][0]


def random_row_bytes(qtype: T, n_rows: int, row_len: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n_rows][row bytes] of random data whose float fields are finite.

    Quantized types: uniformly random bytes (every bit pattern of the quants) with fp16 scales
    drawn uniformly from [-2, 2]. F16/BF16: random bit patterns with inf/NaN excluded. F32: normal.
    """
    bs, bb = GGML_QUANT_SIZES[qtype]
    assert row_len % bs == 0, (qtype.name, row_len)
    if qtype == T.F32:
        return rng.standard_normal((n_rows, row_len)).astype(np.float32).view(np.uint8)
    if qtype in (T.F16, T.BF16):
        bits = rng.integers(0, 1 << 16, (n_rows, row_len), dtype=np.uint32).astype(np.uint16)
        exp_mask = 0x7c00 if qtype == T.F16 else 0x7f80
        bits[(bits & exp_mask) == exp_mask] &= np.uint16(~exp_mask & 0xffff)  # finite only
        return bits.view(np.uint8)
    n_blocks = n_rows * row_len // bs
    raw = rng.integers(0, 256, (n_blocks, bb), dtype=np.uint8)
    for off in FP16_SCALE_OFFSETS[qtype]:
        scales = rng.uniform(-2, 2, n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(n_rows, -1)


def quantized_row_bytes(qtype: T, n_rows: int, row_len: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n_rows][row bytes]: normal floats quantized by gguf.quants.quantize."""
    x = rng.standard_normal((n_rows, row_len)).astype(np.float32)
    return np.ascontiguousarray(quants.quantize(x, qtype)).view(np.uint8).reshape(n_rows, -1)


def reference_dequant(raw: np.ndarray, qtype: T) -> np.ndarray:
    """float32 values of row bytes [n_rows][row bytes] per gguf.quants.dequantize."""
    if qtype == T.F32:
        return raw.view(np.float32)
    return np.asarray(quants.dequantize(raw, qtype), dtype=np.float32)


# Metadata with every value type: key -> (value, type, array element type or None).
# Nested arrays: GGUFWriter infers inner element types (Python int -> INT32, float -> FLOAT32).
ALL_METADATA: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]] = {
    "test.u8": (255, GGUFValueType.UINT8, None),
    "test.i8": (-128, GGUFValueType.INT8, None),
    "test.u16": (65535, GGUFValueType.UINT16, None),
    "test.i16": (-32768, GGUFValueType.INT16, None),
    "test.u32": (4294967295, GGUFValueType.UINT32, None),
    "test.i32": (-2147483648, GGUFValueType.INT32, None),
    "test.f32": (3.14159274, GGUFValueType.FLOAT32, None),
    "test.bool_true": (True, GGUFValueType.BOOL, None),
    "test.bool_false": (False, GGUFValueType.BOOL, None),
    "test.string": ("Grüße, 世界 \"quoted\" \\ tab\t", GGUFValueType.STRING, None),
    "test.u64": (18446744073709551615, GGUFValueType.UINT64, None),
    "test.i64": (-9223372036854775808, GGUFValueType.INT64, None),
    "test.f64": (-1.2345678901234567e-300, GGUFValueType.FLOAT64, None),
    "test.arr_string": (["a", "", "ĠHello", "<|im_start|>"], GGUFValueType.ARRAY, GGUFValueType.STRING),
    "test.arr_u8": ([0, 1, 255], GGUFValueType.ARRAY, GGUFValueType.UINT8),
    "test.arr_i16": ([-32768, 0, 32767], GGUFValueType.ARRAY, GGUFValueType.INT16),
    "test.arr_i32": ([-1, 2, 3], GGUFValueType.ARRAY, GGUFValueType.INT32),
    "test.arr_u64": ([0, 18446744073709551615], GGUFValueType.ARRAY, GGUFValueType.UINT64),
    "test.arr_i64": ([-9223372036854775808, 9223372036854775807], GGUFValueType.ARRAY, GGUFValueType.INT64),
    "test.arr_f32": ([0.5, -1.25, 1e-30], GGUFValueType.ARRAY, GGUFValueType.FLOAT32),
    "test.arr_f64": ([1e300, -0.1], GGUFValueType.ARRAY, GGUFValueType.FLOAT64),
    "test.arr_bool": ([True, False, True], GGUFValueType.ARRAY, GGUFValueType.BOOL),
    "test.arr_nested_int": ([[1, 2], [3], [4, 5, 6]], GGUFValueType.ARRAY, GGUFValueType.ARRAY),
    "test.arr_nested_str": ([["x", "y"], ["z"]], GGUFValueType.ARRAY, GGUFValueType.ARRAY),
    "test.arr_long": (list(range(1000)), GGUFValueType.ARRAY, GGUFValueType.UINT32),
}


def write_gguf(path: pathlib.Path, metadata: dict[str, tuple[Any, GGUFValueType, GGUFValueType | None]],
               tensors: dict[str, tuple[T, np.ndarray, tuple[int, ...]]], alignment: int | None = None,
               arch: str = "test") -> None:
    """Writes `metadata` and `tensors` (name -> (type, raw bytes, numpy-order shape)) with GGUFWriter."""
    w = GGUFWriter(str(path), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, (value, vtype, sub) in metadata.items():
        w.add_key_value(key, value, vtype, sub_type=sub)
    for name, (qtype, raw, shape) in tensors.items():
        if qtype == T.F32:
            w.add_tensor(name, raw.view(np.float32).reshape(shape))
        elif qtype == T.F16:
            w.add_tensor(name, raw.view(np.float16).reshape(shape))
        else:  # raw bytes: the writer derives the element shape from the byte shape
            byte_shape = tuple(shape[:-1]) + (raw.size // int(np.prod(shape[:-1], dtype=np.int64)),)
            w.add_tensor(name, np.ascontiguousarray(raw).reshape(byte_shape), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def all_types_tensors(rng: np.random.Generator) -> dict[str, tuple[T, np.ndarray, tuple[int, ...]]]:
    """Tensors of every supported type: random-byte and (where possible) quantized-float variants,
    in 1-D to 4-D shapes. Shapes are numpy order (last dim = ne0 = row length)."""
    out: dict[str, tuple[T, np.ndarray, tuple[int, ...]]] = {}
    for qtype in SUPPORTED_TYPES:
        bs = block_size(qtype)
        row = {1: 37, 32: 160, 256: 768}[bs]  # 37: not a multiple of the 16 vec_dot lanes
        shapes = [(row,), (4, row), (2, 3, row), (2, 1, 2, row)]
        for i, shape in enumerate(shapes):
            n_rows = int(np.prod(shape[:-1], dtype=np.int64))
            out[f"{qtype.name}.random.{i}"] = (qtype, random_row_bytes(qtype, n_rows, row, rng), shape)
        if qtype in QUANTIZABLE_TYPES:
            out[f"{qtype.name}.quantized"] = (qtype, quantized_row_bytes(qtype, 3, row, rng), (3, row))
    return out
