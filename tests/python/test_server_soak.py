"""apps/server/soak.py in CI: a short soak of a CPU qwen-server, and the soak's own checks caught on a
server that misbehaves on purpose.

- test_soak_cpu: 8 clients for 20 s against qwen-server (8 slots, tiny random qwen2 model with the
  real vocabulary, as in test_server.py). Pass criterion = soak.py's: zero 5xx / exceptions /
  failures, every stream not cancelled ending with one finish_reason chunk and [DONE], every bad case
  answered with its exact 4xx, slots idle within 30 s, RSS growth after a 5 s warm-up within
  64 MiB. The counters must be non-trivial (at least 10 completed streams, 3 cancelled, 3
  non-streaming, every bad case incl. the 16 MiB body) so the pass is not vacuous.
- test_flatness: the memory check on made-up samples (growth after warm-up over / under the limit).
- test_soak_detects_failures: a stdlib HTTP server whose streams end without [DONE] and which
  answers bad requests 500; soak.py must exit 1 naming both faults.
"""
import http.server
import json
import pathlib
import subprocess
import sys
import threading

from test_server import Server, tiny_model  # noqa: F401 - tiny_model is the model fixture

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOAK = ROOT / "apps" / "server" / "soak.py"
sys.path.insert(0, str(SOAK.parent))
import soak  # noqa: E402


def run_soak(url, *extra, timeout=90):
    r = subprocess.run([sys.executable, str(SOAK), "--url", url, "--json", *extra],
                       capture_output=True, text=True, timeout=timeout)
    return r.returncode, json.loads(r.stdout), r.stderr


def test_soak_cpu(bin_dir, tiny_model):  # noqa: F811 - the fixture imported above
    server = Server(bin_dir, tiny_model, parallel=8)
    try:
        rc, s, err = run_soak(server.url, "--server-pid", str(server.proc.pid), "--clients", "8",
                              "--duration", "20", "--warmup", "5", "--sample-interval", "1",
                              "--prompt-tokens", "64", "--max-tokens", "48", "--cancel-fraction", "0.3",
                              "--bad-fraction", "0.15")
    finally:
        server.stop()
    assert rc == 0 and s["passed"], json.dumps(s, indent=1) + err
    c = s["counts"]
    assert c["http_5xx"] == 0 and c["exceptions"] == 0 and s["failures"] == 0
    assert c["stream_completed"] >= 10 and c["stream_cancelled"] >= 3 and c["plain_completed"] >= 3, c
    assert c["bad_ok"] == c["bad_sent"] > len(s["bad_cases_ok"]), c
    assert set(s["bad_cases_ok"]) == {case[0] for case in soak.bad_cases(FakeTarget())}, s["bad_cases_ok"]
    assert s["completion_tokens"] > 0 and s["tokens_per_s"] > 0 and s["ttft"]["n"] > 0
    assert s["rss"]["after_warmup_samples"] >= 10 and s["rss"]["growth_after_warmup_mib"] <= 64
    assert server.proc.returncode == 0, "".join(server.log)


class FakeTarget:
    n_vocab, n_ctx = 151936, 1024


class Broken(http.server.BaseHTTPRequestHandler):
    """Answers like qwen-server, except that streams stop after one token without a finish chunk or
    [DONE], and every request it does not understand gets a 500."""
    protocol_version = "HTTP/1.0"  # the connection's close ends each body

    def log_message(self, *args):
        pass

    def reply(self, status, obj, ctype="application/json"):
        data = obj.encode() if isinstance(obj, str) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/v1/models":
            self.reply(200, {"data": [{"id": "fake", "meta": {"n_ctx": 1024, "n_vocab": 151936}}]})
        elif self.path == "/health":
            self.reply(200, {"status": "ok", "slots_active": 0, "requests_queued": 0})
        else:
            self.reply(200, "qwen_generated_tokens_total 0\n", "text/plain")

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            req = json.loads(body)
            ok = isinstance(req, dict) and req.get("stream") is True and "n" not in req
        except ValueError:
            ok = False
        if not ok:
            self.reply(500, {"error": {"message": "boom", "code": "internal_error"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chunk = {"choices": [{"index": 0, "text": "x", "delta": {"content": "x"}, "finish_reason": None}]}
        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())


def test_soak_detects_failures():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        rc, s, _ = run_soak(f"http://127.0.0.1:{httpd.server_port}", "--clients", "2", "--duration", "3",
                            "--warmup", "0", "--sample-interval", "1", "--oversized-fraction", "0",
                            "--plain-fraction", "0", "--cancel-fraction", "0")
    finally:
        httpd.shutdown()
    assert rc == 1 and not s["passed"] and s["failures"] > 0
    text = "\n".join(s["failure_examples"])
    assert "no [DONE]" in text and "HTTP 500, expected 400" in text, text
    assert s["counts"]["http_5xx"] > 0 and s["counts"]["stream_completed"] == 0


def test_flatness():
    """Growth = largest sample after warm-up minus the first one after it; exact MiB, limit inclusive."""
    # 500 MiB allocated during warm-up, then +5: passes.
    report, failure = soak.flatness([(0, 100), (4, 600), (6, 605), (8, 610)], 5, 64, "RSS")
    assert failure is None and report["growth_after_warmup_mib"] == 5 and report["max_mib"] == 610
    # +65 after warm-up: fails, naming the series and the limit.
    report, failure = soak.flatness([(0, 100), (6, 100), (7, 130), (8, 165)], 5, 64, "GPU memory")
    assert report["growth_after_warmup_mib"] == 65
    assert failure == "GPU memory grew 65.0 MiB after warm-up (limit 64 MiB)"
    # One sample after warm-up measures nothing: a failure, not a pass.
    assert "fewer than 2 samples" in soak.flatness([(0, 100), (6, 100)], 5, 64, "RSS")[1]
    assert soak.percentiles([0.1, 0.2, 0.3, 0.4]) == {"n": 4, "p50_ms": 200.0, "p90_ms": 400.0, "p99_ms": 400.0,
                                                      "max_ms": 400.0}
