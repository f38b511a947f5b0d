#!/usr/bin/env python3
"""qwen.cu vs HF transformers in fp32 on a random Qwen-family model.

Steps (on the GPU machine, which has torch and transformers; the PyPI `gguf` package travels
with the working tree as a wheel; --device cpu runs the same on a CPU machine, exact modes only):
  1. transformers builds a model of --shape from a seed: qwen2.5-0.5b, the benchmark shape of
     docs/ARCHITECTURE.md (Benchmark models: hidden 896, 24 layers, 14/2 heads, FFN 4864, vocab
     151936), or small (hidden 256, 4 layers, 4/2 heads of 64, FFN 1024, vocab 32768: cheap at
     40,000 positions); rope_theta 1e6, eps 1e-6, tied embeddings; --arch qwen2 (random q/k/v
     biases) or llama; random norm weights so every parameter matters; --rope-scaling as
     transformers' rope_scaling (scripts/hf_compare_model.py: parse_rope). It is saved
     (save_pretrained, safetensors).
  2. The saved tensors are written to GGUF, one file per type (F16, BF16, Q8_0, Q4_0 for the
     matrices; norms and biases F32) with gguf.GGUFWriter / gguf.quants.quantize, the scaling as
     llama.cpp writes it (<arch>.rope.scaling.* keys; llama3: a rope_freqs.weight tensor);
     Q4_K_M is the F16 file through qwen-quantize (the gguf package has no k-quant quantizer).
  3. For each file, the transformers model is loaded back with exactly the weights the file holds
     (gguf.quants.dequantize of every tensor), run in fp32 (no TF32; eager attention, --hf-chunk
     positions per forward through its KV cache, so memory stays bounded at 40,000 positions) on
     the teacher-forced tokens, and compared with `qwen-logits --device D` in four modes: one
     prefill and --step (one token per forward through the KV cache: the decode path) in the
     exact arithmetic (CUDA: activations as two fp16 halves in the GEMMs, fp32 attention), and
     both again with --fast (the apps' default: one fp16 pass, attention on tensor cores).

Metrics per (type, mode), over all positions, accumulated over chunks of --compare-chunk positions
(one [n][vocab] float64 array is 10 GB at 8,192 x 151,936):
  - mean KL(p_hf || p_qwen) per position, computed in float64;
  - top-1 agreement;
  - per-vocabulary-row error: for each vocabulary row v, max over positions of |dlogit[:, v]|;
    the largest row error must stay within 3x the median row's (the scattered-garbage check).
Bars (mean KL; issue 12, set at 1,024 positions): exact step F16/BF16 <= 1e-7, quantized <= 1e-6;
prefill and fast step F16/BF16 <= 1e-6, quantized <= 2e-6. Past 1,024 positions the exact step
F16/BF16 bar is issue 13's 1e-6 (8,192 positions; YaRN at 40,000). F16/BF16 top-1 >= 99.5% in the
exact modes (issue 5; the fast modes report it); the row check on the benchmark shape (bars()
says why not on the small one). Writes hf_compare.json and hf_compare.md into --out; exits 1 if a
bar fails.

  python3 scripts/hf_compare.py --bin build/bin --out /tmp/hf [--types F16,BF16,Q8_0,Q4_0] [--n 1024]
  python3 scripts/hf_compare.py --bin build/bin --out /tmp/hf --types F16 --modes prefill,step --n 8192
  python3 scripts/hf_compare.py --bin build/bin --out /tmp/hf --shape small --types F16 \\
      --modes prefill,step --rope-scaling yarn:4:32768 --n 40000
"""
import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import hf_compare_model as hm  # noqa: E402

FLOAT_TYPES = ("F16", "BF16")
MODES = {"prefill": [], "prefill-fast": ["--fast"], "step": ["--step"], "step-fast": ["--step", "--fast"]}
ROW_RATIO = 3.0
SHORT = 1024  # positions up to which issue 12's exact step bar holds


def bars(type_name, mode, n, shape):
    """(mean KL bar, top-1 bar or None, worst/median row bar or None) of a type in a mode over n
    positions. The row check holds on the benchmark shape only: on the small one (hidden 256) the
    worst of 32,768 rows sits 2.7-3.7x the median with an F16 cache and 1.9x with an F32 one, so
    there it measures the cache's rounding, not a wrong row (issue 13 bars its YaRN run by mean KL
    alone)."""
    floating = type_name in FLOAT_TYPES
    top1 = 0.995 if floating and not mode.endswith("-fast") else None
    rows = ROW_RATIO if shape == "qwen2.5-0.5b" else None
    if mode == "step" and (n <= SHORT or not floating):
        return (1e-7 if floating else 1e-6), top1, rows
    return (1e-6 if floating else 2e-6), top1, rows


def log(*a):
    print(f"[hf_compare {time.strftime('%H:%M:%S')}]", *a, flush=True)


def qwen_logits(args, gguf_path, tokens_file, mode, out_npy):
    """qwen-logits' [n][V] float32 logits, memory-mapped (5 GB at 8,192 x 151,936), and seconds."""
    cmd = [str(args.bin / "qwen-logits"), "-m", str(gguf_path), "--device", args.device, "-o", str(out_npy),
           "--tokens-file", str(tokens_file), "--kv-type", args.kv_type] + MODES[mode]
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return np.load(out_npy, mmap_mode="r"), time.time() - t0


def compare(ref, got, device, chunk):
    """ref, got: [n][V] float32 (host). Metrics accumulated over chunks of positions on `device`."""
    import torch
    assert got.shape == ref.shape, f"shape {got.shape} vs {ref.shape}"
    n, vocab = ref.shape
    kl_sum, kl_max, agree, max_abs, finite = 0.0, 0.0, 0, 0.0, True
    row_err = torch.zeros(vocab, dtype=torch.float32, device=device)
    for b in range(0, n, chunk):
        p = torch.from_numpy(np.ascontiguousarray(ref[b:b + chunk])).to(device)
        q = torch.from_numpy(np.array(got[b:b + chunk])).to(device)  # a copy: `got` is a read-only map
        finite &= bool(torch.isfinite(q).all())
        lp = torch.log_softmax(p.double(), -1)
        lq = torch.log_softmax(q.double(), -1)
        kl = (lp.exp() * (lp - lq)).sum(-1)
        del lp, lq
        kl_sum += kl.sum().item()
        kl_max = max(kl_max, kl.max().item())
        agree += int((p.argmax(-1) == q.argmax(-1)).sum().item())
        err = (q - p).abs()
        max_abs = max(max_abs, err.max().item())
        row_err = torch.maximum(row_err, err.max(0).values)  # per vocabulary row: worst position
        del p, q, err
    med = row_err.median().item()
    worst = row_err.max().item()
    return dict(mean_kl=kl_sum / n, max_kl=kl_max, top1=agree / n, max_abs=max_abs, row_err_median=med,
                row_err_max=worst, worst_row=int(row_err.argmax().item()),
                row_ratio=worst / med if med > 0 else float("inf"), finite=finite)


def verdict(type_name, mode, n, shape, m):
    kl_bar, top1_bar, row_bar = bars(type_name, mode, n, shape)
    fails = []
    if not m["finite"]:
        fails.append("non-finite logits")
    if not m["mean_kl"] <= kl_bar:
        fails.append(f"mean KL {m['mean_kl']:.2e} > {kl_bar:.0e}")
    if top1_bar is not None and not m["top1"] >= top1_bar:
        fails.append(f"top-1 {m['top1']:.4f} < {top1_bar}")
    if row_bar is not None and not m["row_ratio"] <= row_bar:
        fails.append(f"vocab row {m['worst_row']} error {m['row_ratio']:.2f}x the median row's > {row_bar}x")
    return fails


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True, type=pathlib.Path, help="directory holding qwen-logits")
    ap.add_argument("--out", required=True, type=pathlib.Path, help="folder for hf_compare.json / hf_compare.md")
    ap.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/qwen-hf-compare"),
                    help="scratch folder for the HF model, GGUF files and logits (n x vocab x 4 bytes each)")
    ap.add_argument("--types", default="F16,BF16,Q8_0,Q4_0,Q4_K_M")
    ap.add_argument("--n", type=int, default=1024, help="teacher-forced positions (the bars were set on >= 1,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", help=f"of {', '.join(MODES)} (default: all on cuda, prefill,step on cpu)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="where transformers and qwen-logits run (qwen-logits --device)")
    ap.add_argument("--kv-type", default="f16", help="qwen-logits --kv-type (f32, f16, bf16, q8_0)")
    ap.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(hm.SHAPES))
    ap.add_argument("--arch", default="qwen2", choices=["qwen2", "llama"])
    ap.add_argument("--rope-scaling", default="none",
                    help="none, linear:FACTOR, yarn:FACTOR[:ORIG_CTX] (ORIG_CTX default 32768) or "
                         "llama3[:FACTOR:LOW:HIGH:ORIG_CTX] (default 8:1:4:8192)")
    ap.add_argument("--hf-chunk", type=int, default=2048, help="positions per transformers forward")
    ap.add_argument("--compare-chunk", type=int, default=256, help="positions per metric step (float64)")
    args = ap.parse_args()
    try:
        args.rope = hm.parse_rope(args.rope_scaling)
    except ValueError as e:
        ap.error(str(e))
    args.modes = args.modes or (",".join(MODES) if args.device == "cuda" else "prefill,step")
    for mode in args.modes.split(","):
        if mode not in MODES:
            ap.error(f"--modes: unknown mode {mode!r} (of {', '.join(MODES)})")
        # The fast bars are the CUDA fast path's; the CPU's (8-bit activations) are looser and
        # tests/python/test_cpu_fast.py holds them.
        if mode.endswith("-fast") and args.device == "cpu":
            ap.error(f"--modes {mode} with --device cpu: the fast bars here are CUDA's; the CPU's fast "
                     "mode (8-bit activations) is bounded by tests/python/test_cpu_fast.py")
    if args.n < 1:
        ap.error("--n must be positive")
    # qwen-logits sizes its context to the input and refuses one past the model's trained positions.
    if args.n > args.rope.ctx_max:
        ap.error(f"--n {args.n} exceeds the {args.rope.ctx_max} positions the GGUF of --rope-scaling "
                 f"{args.rope_scaling} is trained for (qwen-logits would refuse it)")
    return args


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    spec = hm.Spec(args.arch, args.shape, args.rope)
    rows, device_est = hm.memory_plan(args.n, spec, args.hf_chunk)
    log(f"{args.arch} {args.shape}, rope {args.rope_scaling}, {args.n} positions on {args.device}: reference "
        f"logits {rows / 2**30:.1f} GiB on the host (and each qwen-logits .npy on disk), transformers "
        f"~{device_est / 2**30:.1f} GiB at its largest chunk")

    rng = np.random.default_rng(args.seed)
    tokens = rng.integers(0, hm.TOKEN_LIMIT[args.shape], size=args.n).tolist()
    tokens_file = args.work / "tokens.txt"
    tokens_file.write_text(",".join(map(str, tokens)) + "\n")
    hf_dir = args.work / "hf-model"
    log("building the HF model")
    hm.build_hf_model(hf_dir, args.seed, spec)
    from safetensors.numpy import load_file
    saved = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        saved.update({k: v.astype(np.float32) for k, v in load_file(str(f)).items()})
    log(f"saved {len(saved)} tensors")

    results, failed = [], False
    for type_name in args.types.split(","):
        path = args.work / f"hf-{args.arch}-{args.shape}-{type_name}.gguf"
        log(f"writing {path.name}")
        hm.write_gguf(saved, path, type_name, args.bin, spec)
        weights = hm.read_gguf_weights(path, spec)
        t0 = time.time()
        ref, peak = hm.hf_logits(hf_dir, weights, tokens, spec, args.device, args.hf_chunk)
        hf_s = time.time() - t0
        log(f"transformers took {hf_s:.1f} s" + (f", peak {peak / 2**30:.2f} GiB on the GPU" if peak else ""))
        del weights
        for mode in args.modes.split(","):
            got, qwen_s = qwen_logits(args, path, tokens_file, mode, args.work / "logits.npy")
            log(f"qwen-logits ({mode}) took {qwen_s:.1f} s")
            m = compare(ref, got, args.device, args.compare_chunk)
            del got
            fails = verdict(type_name, mode, args.n, args.shape, m)
            failed |= bool(fails)
            kl_bar, top1_bar, row_bar = bars(type_name, mode, args.n, args.shape)
            m.update(type=type_name, mode=mode, n_positions=args.n, kv=args.kv_type, shape=args.shape,
                     arch=args.arch, rope_scaling=args.rope_scaling, device=args.device, kl_bar=kl_bar,
                     top1_bar=top1_bar, row_bar=row_bar, hf_seconds=round(hf_s, 1), qwen_seconds=round(qwen_s, 1), hf_peak_gib=round(peak / 2**30, 2) if peak else None,
                     passed=not fails, failures=fails)
            results.append(m)
            log(json.dumps(m))
        del ref
        path.unlink()
        (args.work / "logits.npy").unlink(missing_ok=True)

    (args.out / "hf_compare.json").write_text(json.dumps(results, indent=2))
    import torch
    import transformers
    # How transformers reads YaRN's original context has changed between releases (parse_rope
    # sets max_position_embeddings = factor x original, so the two readings of recent releases
    # agree), so the report names the versions.
    lines = [f"qwen.cu ({args.device}) vs transformers {transformers.__version__} fp32 (torch {torch.__version__}), "
             f"{args.arch} {args.shape} shape, random weights, "
             f"rope scaling {args.rope_scaling}, {args.n} teacher-forced positions, KV cache {args.kv_type}", "",
             "| type | mode | mean KL (bar) | max KL | top-1 | max abs dlogit | worst row / median row | verdict |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for m in results:
        lines.append(f"| {m['type']} | {m['mode']} | {m['mean_kl']:.2e} ({m['kl_bar']:.0e}) | {m['max_kl']:.2e} | "
                     f"{100 * m['top1']:.2f}% | {m['max_abs']:.2e} | {m['row_ratio']:.2f} (row {m['worst_row']}"
                     f"{'' if m['row_bar'] else '; no bar'}) | "
                     f"{'pass' if m['passed'] else 'FAIL: ' + '; '.join(m['failures'])} |")
    (args.out / "hf_compare.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
