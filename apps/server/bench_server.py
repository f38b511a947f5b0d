#!/usr/bin/env python3
"""Aggregate generation throughput of a running qwen-server with N concurrent streams.

Each stream sends its own random prompt of exactly --prompt-tokens token ids (distinct, so no slot
reuses another's cached prefix) to /v1/completions with stream = true, ignore_eos and
max_tokens = --gen-tokens, at temperature 0. Reported per stream count:
  aggregate tok/s = all generated tokens / wall time from the first request to the last [DONE],
  TTFT = time to the first content chunk (median and max over streams).
Each stream count runs --repeat times (fresh prompts each time) and reports the median run: a run
lasts 0.2-0.6 s, so one late first token (a client thread scheduled late, say) moves a single
run's figure by several percent. The per-run figures are listed beside it.
Standard library only (runs on machines without the openai package). Start the server with
--parallel >= the largest stream count and -c >= prompt + generated tokens, e.g.

  qwen-server -m model.gguf --device cuda --parallel 64 -c 512 --port 8080 &
  python3 apps/server/bench_server.py --url http://127.0.0.1:8080 --streams 1,8,32,64
"""
import argparse
import http.client
import json
import random
import statistics
import threading
import time
import urllib.parse


def stream_once(url, prompt_ids, gen_tokens):
    """One streamed completion; returns (chunks with text, seconds to first text, seconds total)."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    body = json.dumps({"prompt": prompt_ids, "max_tokens": gen_tokens, "temperature": 0, "ignore_eos": True,
                       "stream": True})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    ttft, usage = None, None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        if line == "data: [DONE]":
            break
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(chunk["error"]["message"])
        if ttft is None and chunk["choices"] and chunk["choices"][0]["text"]:
            ttft = time.perf_counter() - t0
        usage = chunk.get("usage") or usage
    conn.close()
    return usage["completion_tokens"], ttft or 0.0, time.perf_counter() - t0


def run(url, n_streams, prompt_tokens, gen_tokens, n_vocab, rng):
    prompts = [[rng.randrange(1000, min(n_vocab, 150000)) for _ in range(prompt_tokens)] for _ in range(n_streams)]
    results = [None] * n_streams
    errors = []

    def worker(i):
        try:
            results[i] = stream_once(url, prompts[i], gen_tokens)
        except Exception as e:  # reported below; one failed stream invalidates the run
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} of {n_streams} streams failed: {errors[0]}")
    generated = sum(r[0] for r in results)
    ttfts = [r[1] for r in results]
    return {"streams": n_streams, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
            "generated": generated, "wall_s": round(wall, 3), "aggregate_tok_s": round(generated / wall, 1),
            "ttft_median_ms": round(statistics.median(ttfts) * 1e3, 1), "ttft_max_ms": round(max(ttfts) * 1e3, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--streams", default="1,8,32,64", help="comma-separated concurrent stream counts")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5, help="runs per stream count; the median run is reported")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat {args.repeat}: at least one run per stream count")

    u = urllib.parse.urlparse(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", "/v1/models")
    card = json.loads(conn.getresponse().read())["data"][0]
    conn.close()
    n_vocab = card["meta"]["n_vocab"]
    if card["meta"]["n_ctx"] < args.prompt_tokens + args.gen_tokens:
        raise SystemExit(f"the server's context {card['meta']['n_ctx']} < prompt + generated tokens")
    rng = random.Random(args.seed)
    run(args.url, 1, args.prompt_tokens, 8, n_vocab, rng)  # warm-up (first-call allocations, graphs)
    print(f"# model {card['id']}, {card['meta']['n_slots']} slots x {card['meta']['n_ctx']} context")
    for n in (int(x) for x in args.streams.split(",")):
        if n > card["meta"]["n_slots"]:
            print(f"# note: {n} streams on {card['meta']['n_slots']} slots: the rest queue")
        runs = [run(args.url, n, args.prompt_tokens, args.gen_tokens, n_vocab, rng) for _ in range(args.repeat)]
        median = sorted(runs, key=lambda r: r["aggregate_tok_s"])[len(runs) // 2]
        print(json.dumps({**median, "runs_tok_s": [r["aggregate_tok_s"] for r in runs]}), flush=True)


if __name__ == "__main__":
    main()
