#!/usr/bin/env python3
"""Soak test of a running qwen-server: many concurrent clients for a long time, with cancellations
and bad requests mixed in; checks that nothing fails, leaks or hangs.

Each of --clients threads loops until --duration seconds have passed, drawing every request from
its own seeded random generator (--seed): a streaming chat or completion with a random prompt
length and max_tokens (some cancelled mid-stream: the client closes the socket after a random
number of events), a non-streaming request, or a bad request (malformed JSON, an unknown field, an
out-of-range value, a prompt over the context, an oversized body, ...) with the status it must get.

It fails (exit status 1) on any of:
  - a 5xx, a connection error or timeout, or a status other than the one expected;
  - a stream not cancelled that does not end with exactly one finish_reason chunk and then
    `data: [DONE]` as its last event, or whose HTTP body is cut short; an `error` event;
  - a bad request not answered with its 4xx and an OpenAI-shaped {"error": {...}} body;
  - a slot still active or a request still queued --drain-timeout seconds after the last client;
  - resource growth after warm-up: the server's RSS (VmRSS of --server-pid, Linux) or, when
    `nvidia-smi` exists, the GPU memory it uses, sampled every --sample-interval s; growth is the
    largest sample after --warmup s minus the first sample after it, and must stay within
    --rss-growth-mb (default 64 MiB) and --vram-growth-mb (default 64 MiB).
Every bad case is sent once before the load, so each is checked whatever the draws.
Reported: request counts by kind (and of each bad case answered as expected), aggregate tokens/s
(client-counted tokens of completed requests, and the server's qwen_generated_tokens_total over the
same time, which includes cancelled ones), latency percentiles (time to first token of every
stream that got one, total time of completed requests) and the memory samples (start/end/max).
A markdown summary, or JSON with --json. Standard library only (the GPU machine has no network):

  qwen-server -m model.gguf --device cuda --parallel 64 -c 1024 --port 8080 &
  python3 apps/server/soak.py --url http://127.0.0.1:8080 --server-pid $! --clients 64 --duration 600
"""
import argparse
import http.client
import json
import math
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly count ancient "
         "golden coins under the pale winter moon and nobody hears them").split()
MAX_BODY = 16 * 1024 * 1024  # the server's body limit (docs/SERVER.md): one byte more is a 413
MIB = 1024 * 1024


class Stats:
    """Counters, latencies and failures shared by the client threads (under one lock)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.tokens = 0
        self.ttft = []
        self.total = []
        self.failures = []  # (kind, message); every one is a failure, the first 20 are reported
        self.n_failures = 0

    def count(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def fail(self, kind, message):
        with self.lock:
            self.n_failures += 1
            if len(self.failures) < 20:
                self.failures.append(f"{kind}: {message}")


class Target:
    """The server's address plus what the requests must respect (context, vocabulary)."""

    def __init__(self, url, timeout):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.timeout = u.hostname, u.port or 80, timeout
        status, body = self.request("GET", "/v1/models")
        if status != 200:
            raise SystemExit(f"GET /v1/models: HTTP {status}")
        card = json.loads(body)["data"][0]
        self.model, self.n_ctx, self.n_vocab = card["id"], card["meta"]["n_ctx"], card["meta"]["n_vocab"]

    def connect(self):
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method, path, body=None):
        conn = self.connect()
        try:
            conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def metric(self, name):
        status, text = self.request("GET", "/metrics")
        m = re.search(rf"^{name} (\S+)$", text.decode(), re.M) if status == 200 else None
        return float(m.group(1)) if m else None

    def health(self):
        status, body = self.request("GET", "/health")
        return json.loads(body) if status == 200 else {"status": status}


def make_generation(rng, target, args, stream):
    """A random valid generation request: (path, body dict, max_tokens)."""
    max_tokens = rng.randint(1, args.max_tokens)
    room = target.n_ctx - max_tokens - 64  # the chat template's own tokens fit in the 64
    body = {"max_tokens": max_tokens, "stream": stream, "seed": rng.randrange(1 << 31)}
    body["temperature"] = rng.choice((0, 0.7, 1.0))
    if rng.random() < 0.5:
        body["ignore_eos"] = True  # long streams: a random model ends early otherwise
    if rng.random() < 0.5:
        # Random token ids: distinct prompts, so slots do not reuse each other's cache much.
        n = rng.randint(1, max(1, min(args.prompt_tokens, room)))
        body["prompt"] = [rng.randrange(min(1000, target.n_vocab - 1), min(target.n_vocab, 150000)) for _ in range(n)]
        return "/v1/completions", body, max_tokens
    n = rng.randint(1, max(1, min(args.prompt_tokens, room) // 2))  # a word is at most 2 tokens
    body["messages"] = [{"role": "user", "content": " ".join(rng.choice(WORDS) for _ in range(n))}]
    if stream and rng.random() < 0.5:
        body["stream_options"] = {"include_usage": True}
    return "/v1/chat/completions", body, max_tokens


def bad_cases(target):
    """Requests the server must refuse: (name, path, raw body bytes, expected status); the last one,
    a body one byte over the limit, is drawn only --oversized-fraction of the time."""
    ok = {"prompt": "Hello", "max_tokens": 4}
    cases = [
        ("malformed JSON", "/v1/completions", '{"prompt": "Hello", "max_tokens": ', 400),
        ("not an object", "/v1/chat/completions", "[1, 2, 3]", 400),
        ("unknown field", "/v1/completions", {**ok, "frobnicate": True}, 400),
        ("temperature out of range", "/v1/completions", {**ok, "temperature": 7.5}, 400),
        ("temperature 1e999", "/v1/completions", '{"prompt": "Hello", "temperature": 1e999}', 400),
        ("max_tokens 0", "/v1/completions", {**ok, "max_tokens": 0}, 400),
        ("max_tokens a string", "/v1/completions", {**ok, "max_tokens": "ten"}, 400),
        ("top_p out of range", "/v1/chat/completions",
         {"messages": [{"role": "user", "content": "Hi"}], "top_p": 1.5}, 400),
        ("token id outside vocabulary", "/v1/completions", {"prompt": [target.n_vocab + 7], "max_tokens": 4}, 400),
        ("prompt over the context", "/v1/completions", {"prompt": [1000] * (target.n_ctx + 1), "max_tokens": 4}, 400),
        ("messages missing", "/v1/chat/completions", {"max_tokens": 4}, 400),
        ("unknown role", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "Hi"}]}, 400),
        ("17 stop strings", "/v1/completions", {**ok, "stop": [str(i) for i in range(17)]}, 400),
        ("unknown model", "/v1/completions", {**ok, "model": "no-such-model"}, 400),
        ("n > 1 with stream", "/v1/completions", {**ok, "n": 2, "stream": True}, 400),
        ("unknown route", "/v1/no-such-route", ok, 404),
    ]
    cases = [(n, p, (b if isinstance(b, str) else json.dumps(b)).encode(), st) for n, p, b, st in cases]
    # A 16 MiB + 1 byte JSON body: refused as it passes the limit (413), not read in full first.
    pad = MAX_BODY + 1 - len(b'{"prompt": ""}')
    return cases + [("oversized body", "/v1/completions", b'{"prompt": "' + b"a" * pad + b'"}', 413)]


def bad_request(rng, cases, oversized_fraction):
    return cases[-1] if rng.random() < oversized_fraction else rng.choice(cases[:-1])


def send_bad(target, stats, name, path, raw, expected):
    """One bad request on a raw socket (a 16 MiB body may be answered before it is all sent)."""
    sock = socket.create_connection((target.host, target.port), timeout=target.timeout)
    try:
        head = (f"POST {path} HTTP/1.1\r\nHost: {target.host}:{target.port}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n").encode()
        try:
            sock.sendall(head + raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early: the answer is waiting to be read
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
    finally:
        sock.close()
    if resp.status != expected:
        stats.fail("bad request", f"{name}: HTTP {resp.status}, expected {expected}: {body[:200]!r}")
        return resp.status
    try:
        err = json.loads(body)["error"]
        if not (isinstance(err, dict) and err.get("message") and err.get("code")):
            raise ValueError("no message / code")
    except (ValueError, KeyError, TypeError) as e:
        stats.fail("bad request", f"{name}: HTTP {resp.status} without an OpenAI error body ({e}): {body[:200]!r}")
    stats.count("bad_ok")
    stats.count(f"bad_case:{name}")
    return resp.status


def send_stream(target, stats, path, body, max_tokens, cancel_after):
    """One streaming request; closes the connection after cancel_after events if that is set and the
    stream is still running. Returns the HTTP status."""
    conn = target.connect()
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            stats.fail("stream", f"HTTP {resp.status}: {resp.read()[:200]!r}")
            return resp.status
        ttft, finishes, usage, events, done = None, [], None, 0, False
        for raw in resp:
            line = raw.decode().rstrip("\r\n")
            if not line.startswith("data: "):
                continue  # blank separators and ": waiting" keep-alive comments
            if done:
                stats.fail("stream", f"event after [DONE]: {line[:200]}")
                return 200
            if line == "data: [DONE]":
                done = True
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                stats.fail("stream", f"error event: {line[:300]}")
                return 200
            events += 1
            for c in chunk.get("choices", []):
                if ttft is None and (c.get("text") or c.get("delta", {}).get("content")):
                    ttft = time.perf_counter() - t0
                if c.get("finish_reason") is not None:
                    finishes.append(c["finish_reason"])
            usage = chunk.get("usage") or usage
            if cancel_after is not None and events >= cancel_after and not finishes:
                stats.count("stream_cancelled")
                if ttft is not None:
                    stats.ttft.append(ttft)
                return 200  # the finally clause closes the socket mid-stream
        # The loop ends at the end of the chunked body; a body cut short raises IncompleteRead.
        if not done:
            stats.fail("stream", f"no [DONE] after {events} events (finish_reason {finishes})")
        elif len(finishes) != 1 or finishes[0] not in ("stop", "length"):
            stats.fail("stream", f"finish_reason chunks {finishes}, expected one 'stop' or 'length'")
        elif not usage or not 0 <= usage.get("completion_tokens", -1) <= max_tokens:
            stats.fail("stream", f"usage {usage} with max_tokens {max_tokens}")
        else:
            with stats.lock:
                stats.tokens += usage["completion_tokens"]
                stats.total.append(time.perf_counter() - t0)
                if ttft is not None:
                    stats.ttft.append(ttft)
            stats.count("stream_completed")
        return 200
    finally:
        conn.close()


def send_plain(target, stats, path, body, max_tokens):
    """One non-streaming request; returns the HTTP status."""
    t0 = time.perf_counter()
    status, raw = target.request("POST", path, json.dumps(body))
    if status != 200:
        stats.fail("non-streaming", f"HTTP {status}: {raw[:200]!r}")
        return status
    r = json.loads(raw)
    finish, usage = r["choices"][0].get("finish_reason"), r.get("usage") or {}
    if finish not in ("stop", "length") or not 0 <= usage.get("completion_tokens", -1) <= max_tokens:
        stats.fail("non-streaming", f"finish_reason {finish!r}, usage {usage}, max_tokens {max_tokens}")
        return status
    with stats.lock:
        stats.tokens += usage["completion_tokens"]
        stats.total.append(time.perf_counter() - t0)
    stats.count("plain_completed")
    return status


def client(i, target, stats, args, deadline, cases):
    rng = random.Random(f"{args.seed}:{i}")
    while time.monotonic() < deadline:
        x = rng.random()
        try:
            if x < args.bad_fraction:
                name, path, raw, expected = bad_request(rng, cases, args.oversized_fraction)
                stats.count("bad_sent")
                status = send_bad(target, stats, name, path, raw, expected)
            elif x < args.bad_fraction + args.plain_fraction:
                path, body, max_tokens = make_generation(rng, target, args, stream=False)
                stats.count("plain_sent")
                status = send_plain(target, stats, path, body, max_tokens)
            else:
                path, body, max_tokens = make_generation(rng, target, args, stream=True)
                # Cancel after 1 .. max_tokens events: some land before the end (most, with ignore_eos).
                cancel = rng.randint(1, max_tokens + 1) if rng.random() < args.cancel_fraction else None
                stats.count("stream_sent")
                status = send_stream(target, stats, path, body, max_tokens, cancel)
            if status >= 500:
                stats.count("http_5xx")
        except Exception as e:  # noqa: BLE001 - any exception is a failed request, counted and reported
            stats.count("exceptions")
            stats.fail("exception", f"{type(e).__name__}: {e}")


class Sampler(threading.Thread):
    """Samples the server's RSS and GPU memory every `interval` s until stopped."""

    def __init__(self, pid, interval):
        super().__init__(daemon=True)
        self.pid, self.interval, self.stop_event = pid, interval, threading.Event()
        self.smi = shutil.which("nvidia-smi")
        self.rss, self.vram = [], []  # (seconds since start, MiB)
        self.t0 = time.monotonic()

    def rss_mib(self):
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def vram_mib(self):
        """The server process's GPU memory, or the whole GPU's used memory when the driver does not
        list processes (containers often hide them)."""
        def query(what):
            out = subprocess.run([self.smi, f"--query-{what}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=30).stdout
            return [[x.strip() for x in line.split(",")] for line in out.strip().splitlines() if line.strip()]
        try:
            if self.pid:
                mine = [float(r[1]) for r in query("compute-apps=pid,used_memory") if r[0] == str(self.pid)]
                if mine:
                    return sum(mine)
            return sum(float(r[0]) for r in query("gpu=memory.used"))
        except (OSError, ValueError, IndexError, subprocess.SubprocessError):
            return None

    def sample(self):
        t = time.monotonic() - self.t0
        if self.pid:
            v = self.rss_mib()
            if v is not None:
                self.rss.append((t, v))
        if self.smi:
            v = self.vram_mib()
            if v is not None:
                self.vram.append((t, v))

    def run(self):
        while True:
            self.sample()
            if self.stop_event.wait(self.interval):
                self.sample()
                return


def flatness(samples, warmup, limit_mib, name):
    """start/end/max of a series and its growth after warm-up; a failure message if over limit_mib."""
    if not samples:
        return None, None
    after = [v for t, v in samples if t >= warmup]
    growth = max(after) - after[0] if len(after) >= 2 else 0.0
    report = {"start_mib": round(samples[0][1], 1), "end_mib": round(samples[-1][1], 1),
              "max_mib": round(max(v for _, v in samples), 1), "samples": len(samples),
              "after_warmup_samples": len(after), "growth_after_warmup_mib": round(growth, 1),
              "limit_mib": limit_mib}
    failure = None
    if len(after) < 2:
        failure = f"{name}: fewer than 2 samples after the {warmup} s warm-up: flatness not measured"
    elif growth > limit_mib:
        failure = f"{name} grew {growth:.1f} MiB after warm-up (limit {limit_mib} MiB)"
    return report, failure


def percentiles(xs):
    if not xs:
        return None
    xs = sorted(xs)
    pick = lambda q: round(xs[max(0, math.ceil(q * len(xs)) - 1)] * 1e3, 1)  # noqa: E731 - nearest rank
    return {"n": len(xs), "p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99), "max_ms": pick(1.0)}


def run_soak(args):
    target = Target(args.url, args.request_timeout)
    stats = Stats()
    sampler = Sampler(args.server_pid, args.sample_interval)
    cases = bad_cases(target)
    # Every bad case once up front, so each is checked whatever the random draws; then the load.
    for case in cases:
        stats.count("bad_sent")
        try:
            send_bad(target, stats, *case)
        except Exception as e:  # noqa: BLE001 - a failed request, reported
            stats.count("exceptions")
            stats.fail("exception", f"{case[0]}: {type(e).__name__}: {e}")
    gen0 = target.metric("qwen_generated_tokens_total")
    sampler.start()
    t0 = time.monotonic()
    deadline = t0 + args.duration
    threads = [threading.Thread(target=client, args=(i, target, stats, args, deadline, cases), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    # Cancelled streams are noticed at the server's next write: give it time to free every slot.
    drain_end = time.monotonic() + args.drain_timeout
    health = target.health()
    while time.monotonic() < drain_end and (health.get("slots_active") or health.get("requests_queued")):
        time.sleep(0.2)
        health = target.health()
    gen1 = target.metric("qwen_generated_tokens_total")
    sampler.stop_event.set()
    sampler.join()

    failures = list(stats.failures)
    if health.get("status") != "ok" or health.get("slots_active") or health.get("requests_queued"):
        failures.append(f"server not idle {args.drain_timeout} s after the last client: /health {health}")
    rss, f_rss = flatness(sampler.rss, args.warmup, args.rss_growth_mb, "RSS")
    vram, f_vram = flatness(sampler.vram, args.warmup, args.vram_growth_mb, "GPU memory")
    failures += [f for f in (f_rss, f_vram) if f]
    if args.server_pid and rss is None:
        failures.append(f"RSS of pid {args.server_pid} could not be read")
    c = stats.counts
    summary = {
        "url": args.url, "model": target.model, "n_ctx": target.n_ctx, "clients": args.clients,
        "duration_s": args.duration, "wall_s": round(wall, 1), "seed": args.seed,
        "counts": {k: c.get(k, 0) for k in ("stream_sent", "stream_completed", "stream_cancelled", "plain_sent",
                                            "plain_completed", "bad_sent", "bad_ok", "http_5xx", "exceptions")},
        "bad_cases_ok": {k[9:]: v for k, v in sorted(c.items()) if k.startswith("bad_case:")},
        "completion_tokens": stats.tokens,
        "tokens_per_s": round(stats.tokens / wall, 1),
        "server_generated_tokens_per_s": round((gen1 - gen0) / wall, 1) if None not in (gen0, gen1) else None,
        "ttft": percentiles(stats.ttft), "latency": percentiles(stats.total),
        "rss": rss, "vram": vram, "warmup_s": args.warmup,
        "failures": stats.n_failures + len(failures) - len(stats.failures),
        "failure_examples": failures[:20],
    }
    summary["passed"] = summary["failures"] == 0
    return summary


def markdown(s):
    c = s["counts"]
    out = [f"## Soak: {'PASS' if s['passed'] else 'FAIL'}", "",
           f"{s['clients']} clients for {s['wall_s']} s against {s['url']} (model {s['model']}, "
           f"context {s['n_ctx']}, seed {s['seed']})", "",
           "| requests | sent | ok |", "|---|---|---|",
           f"| streaming | {c['stream_sent']} | {c['stream_completed']} completed, {c['stream_cancelled']} cancelled |",
           f"| non-streaming | {c['plain_sent']} | {c['plain_completed']} |",
           f"| bad (expected 4xx) | {c['bad_sent']} | {c['bad_ok']} |", "",
           f"5xx: {c['http_5xx']}, exceptions: {c['exceptions']}, failures: {s['failures']}", "",
           f"Throughput: {s['tokens_per_s']} tok/s over completed requests ({s['completion_tokens']} tokens); "
           f"server-side {s['server_generated_tokens_per_s']} tok/s (qwen_generated_tokens_total, cancelled included)",
           "", "| latency | n | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
    for name, key in (("time to first token", "ttft"), ("total (completed)", "latency")):
        p = s[key]
        out.append(f"| {name} | " + (" | ".join(str(p[k]) for k in ("n", "p50_ms", "p90_ms", "p99_ms", "max_ms"))
                                     if p else "0 | - | - | - | -") + " |")
    out += ["", f"| memory (warm-up {s['warmup_s']} s) | start MiB | end MiB | max MiB | growth after warm-up | "
                "limit |", "|---|---|---|---|---|---|"]
    for name, key in (("server RSS", "rss"), ("GPU memory", "vram")):
        r = s[key]
        cells = ([r[k] for k in ("start_mib", "end_mib", "max_mib", "growth_after_warmup_mib", "limit_mib")]
                 if r else ["not sampled", "", "", "", ""])
        out.append(f"| {name} | " + " | ".join(str(x) for x in cells) + " |")
    if s["failure_examples"]:
        out += ["", "Failures (first 20):", ""] + [f"- {f}" for f in s["failure_examples"]]
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients")
    ap.add_argument("--duration", type=float, default=600, help="seconds of load")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-tokens", type=int, default=256, help="longest prompt (uniform 1..N tokens)")
    ap.add_argument("--max-tokens", type=int, default=256, help="largest max_tokens (uniform 1..N)")
    ap.add_argument("--cancel-fraction", type=float, default=0.2, help="streams that get a cancel point")
    ap.add_argument("--bad-fraction", type=float, default=0.1, help="requests that are bad")
    ap.add_argument("--oversized-fraction", type=float, default=0.02, help="bad requests with a 16 MiB + body")
    ap.add_argument("--plain-fraction", type=float, default=0.1, help="non-streaming requests")
    ap.add_argument("--server-pid", type=int, help="the server's pid, for RSS (and its GPU memory)")
    ap.add_argument("--sample-interval", type=float, default=5, help="seconds between memory samples")
    ap.add_argument("--warmup", type=float, default=60, help="seconds before the memory baseline")
    ap.add_argument("--rss-growth-mb", type=float, default=64, help="RSS growth allowed after warm-up, MiB")
    ap.add_argument("--vram-growth-mb", type=float, default=64, help="GPU memory growth allowed after warm-up, MiB")
    ap.add_argument("--request-timeout", type=float, default=300, help="socket timeout of a request, s")
    ap.add_argument("--drain-timeout", type=float, default=30, help="seconds the server may take to go idle")
    ap.add_argument("--json", action="store_true", help="print a JSON summary instead of markdown")
    args = ap.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.prompt_tokens < 1 or args.max_tokens < 1:
        ap.error("--clients, --duration, --prompt-tokens and --max-tokens must be positive")
    if args.bad_fraction + args.plain_fraction > 1 or min(args.bad_fraction, args.plain_fraction,
                                                          args.cancel_fraction, args.oversized_fraction) < 0:
        ap.error("the fractions must be in [0, 1] and --bad-fraction + --plain-fraction <= 1")
    if args.warmup + 2 * args.sample_interval > args.duration:
        ap.error(f"--warmup {args.warmup} leaves fewer than 2 samples in --duration {args.duration}")
    summary = run_soak(args)
    print(json.dumps(summary, indent=1) if args.json else markdown(summary), flush=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
