"""qwen-server's HTTP layer under attack and abuse, and the OpenAI options logprobs, logit_bias, n
and cached_tokens. CPU backend, the tiny model of test_server.py, loopback only; every test bounds
its own time.

One test per defect of the server's security review (the numbers are the issue's):
 1 a second server on the same port fails to start (no SO_REUSEPORT);
 2 64 slow-header clients neither starve /health nor hold a connection past --request-timeout;
 3 a chunked body over the 16 MiB limit, and a request of 300,000 headers, are refused at the limit;
 4 framing errors are answered at once, not after the read timeout;
 5 numbers beyond a double (1e999) are a 400, not a 500;
 6 a 10 MB prompt is refused without being tokenized;
 7 a non-streaming request whose client hangs up is cancelled;
 8 cached prompt prefixes are not shared across `user`s / API keys (no leak through cached_tokens
   or /metrics);
10 Host / Origin checks, CORS preflight;
11 errors keep NUL bytes, conflicting Content-Lengths are refused, Range is ignored, "bearer" is
   case-insensitive, a GGUF without a chat template gets ChatML, /health answers 503 while the
   server shuts down (held open by --shutdown-grace).
"""
import http.client
import json
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from test_server import API_KEY, N_CTX, ROOT, Server, serve, tiny_model  # noqa: F401 (fixture)

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def srv(bin_dir, tiny_model):
    yield from serve(bin_dir, tiny_model, "--request-timeout", "3", "--http-threads", "8")


def raw_exchange(port, data: bytes, timeout=10.0, chunks=None):
    """Sends `data` (then each of `chunks`, ignoring a reset once the server has answered) and
    returns (status, body text, seconds until the answer)."""
    t0 = time.time()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(data)
        for c in chunks or []:
            try:
                sock.sendall(c)
            except (BrokenPipeError, ConnectionResetError):
                break
        received = b""
        while b"\r\n\r\n" not in received or len(received) < header_length(received):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        sock.close()
    elapsed = time.time() - t0
    m = re.match(rb"HTTP/1\.1 (\d+)", received)
    assert m, f"no HTTP response: {received[:200]!r}"
    return int(m.group(1)), received.split(b"\r\n\r\n", 1)[1].decode(errors="replace"), elapsed


def header_length(received: bytes) -> int:
    """Bytes of head + body once the head (with its Content-Length) has arrived."""
    head, _, _ = received.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    return len(head) + 4 + (int(m.group(1)) if m else 0)


def post(path, body: bytes, extra=b""):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra +
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


# ---- 1: port sharing ----------------------------------------------------------------------------

def test_second_server_cannot_share_the_port(bin_dir, tiny_model):
    """A keyless server started on a keyed server's port must fail (exit 1, 'cannot listen'),
    not share the port. Metric: exit status and message; bounded by 60 s."""
    keyed = Server(bin_dir, tiny_model, "--api-key", API_KEY)
    try:
        second = subprocess.run(
            [str(bin_dir / "qwen-server"), "-m", str(tiny_model), "--host", "127.0.0.1", "--port",
             str(keyed.port), "--device", "cpu", "-c", "256", "--parallel", "1", "-t", "1"],
            capture_output=True, text=True, timeout=60)
        assert second.returncode == 1, second.stderr
        assert f"cannot listen on 127.0.0.1:{keyed.port}" in second.stderr
        status, _ = keyed.request("GET", "/v1/models")
        assert status == 401  # still the keyed server answering
    finally:
        keyed.stop()


# ---- 2: slow clients ----------------------------------------------------------------------------

def test_slow_headers_do_not_starve(srv):
    """64 clients sending one header line every 0.5 s (8 HTTP worker threads): /health answers
    within 1 s throughout, and each slow client gets 408 once --request-timeout (3 s) is over.
    Metric: /health latency < 1 s; every slow socket answered 408 within 6 s."""
    slow = []
    for _ in range(64):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append(s)
    t0 = time.time()
    answered = []
    while time.time() - t0 < 2.0:
        for s in slow:
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                pass
        t = time.time()
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
        conn.close()
        answered.append(time.time() - t)
        time.sleep(0.5)
    assert max(answered) < 1.0, answered
    statuses = []
    for s in slow:
        s.settimeout(6)
        data = b""
        try:
            while chunk := s.recv(4096):
                data += chunk
        except OSError:
            pass
        statuses.append(data[:12])
        s.close()
    assert all(st == b"HTTP/1.1 408" for st in statuses), set(statuses)
    assert time.time() - t0 < 8


def test_connection_limit(bin_dir, tiny_model):
    """With --max-connections 4, a fifth open connection gets 503 at once, and a slot comes back
    when one closes. Metric: status codes; bounded by 10 s."""
    s = Server(bin_dir, tiny_model, "--max-connections", "4")
    try:
        idle = [socket.create_connection(("127.0.0.1", s.port), timeout=5) for _ in range(4)]
        time.sleep(0.2)
        status, body, elapsed = raw_exchange(s.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 503 and json.loads(body)["error"]["code"] == "too_many_connections"
        assert elapsed < 2
        idle.pop().close()
        time.sleep(0.2)
        status, _, _ = raw_exchange(s.port, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert status == 200
        for c in idle:
            c.close()
    finally:
        s.stop()


# ---- 3: body and header limits ------------------------------------------------------------------

def test_chunked_body_limit(srv):
    """A chunked body of 17 x 1 MiB is refused with 413 once it passes 16 MiB (before the client
    is done). Metric: status 413 within 10 s."""
    head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    mib = b"100000\r\n" + b"a" * (1 << 20) + b"\r\n"
    status, body, elapsed = raw_exchange(srv.port, head, chunks=[mib] * 40)
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert elapsed < 10


def test_chunked_body_accepted(srv):
    """A chunked body within the limit reaches the route (de-chunked). Metric: 200 and a text."""
    body = json.dumps({"prompt": "Hello", "max_tokens": 2, "temperature": 0}).encode()
    half = len(body) // 2
    chunked = b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n" % (half, body[:half], len(body) - half,
                                                                          body[half:])
    status, text, _ = raw_exchange(
        srv.port, b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked)
    assert status == 200, text
    assert json.loads(text)["usage"]["completion_tokens"] == 2


def test_too_many_headers(srv):
    """300,000 header lines: 431 once the head passes the limit. Metric: status within 5 s."""
    head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    lines = [b"X-A: b\r\n" * 10000] * 30
    status, body, elapsed = raw_exchange(srv.port, head, chunks=lines)
    assert status == 431 and elapsed < 5, body


# ---- 4 and 11: framing errors answered at once --------------------------------------------------

FRAMING = [
    # (name, raw request, status, code)
    ("huge content-length", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n{}",
     413, "payload_too_large"),
    ("negative chunk size", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"-5\r\nabc\r\n", 400, "bad_chunk"),
    ("post without length", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{}", 411, "length_required"),
    ("conflicting lengths", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
     b"Content-Length: 50\r\n\r\n{}", 400, "bad_request"),
    ("length and chunked", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n{}", 400, "bad_request"),
    ("unknown transfer-encoding", b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: gzip\r\n\r\n",
     501, "not_implemented"),
    ("bad request line", b"GARBAGE\r\n\r\n", 400, "bad_request"),
    ("http/2 request line", b"GET / HTTP/2.0\r\n\r\n", 505, "bad_request"),
]


@pytest.mark.parametrize("case", FRAMING, ids=[c[0] for c in FRAMING])
def test_framing_errors_answered_at_once(srv, case):
    """Each malformed framing gets its 4xx/5xx in under 1 s (the request timeout is 3 s), in the
    OpenAI error shape with the framing's own code. Metric: status, code and elapsed time."""
    _, raw, want, code = case
    status, body, elapsed = raw_exchange(srv.port, raw)
    assert status == want, body
    assert elapsed < 1.0
    err = json.loads(body)["error"]
    assert err["code"] == code and err["message"]


# ---- 5: numbers beyond a double -----------------------------------------------------------------

@pytest.mark.parametrize("field", ["temperature", "max_tokens"])
def test_number_overflow_is_400(srv, field):
    """`1e999` (not a double) is a 400 invalid_json, not a 500. Metric: status and code."""
    raw = '{"messages": [{"role": "user", "content": "hi"}], "%s": 1e999}' % field
    status, body = srv.request("POST", CHAT, raw=raw)
    assert status == 400 and body["error"]["code"] == "invalid_json", body


# ---- 6: huge prompt -----------------------------------------------------------------------------

def test_huge_prompt_refused_before_tokenizing(srv):
    """A 10 MB prompt is refused with context_length_exceeded in under 2 s (tokenizing it took
    14 s). Metric: status, code, elapsed."""
    # Random lowercase words: no two alike, so the tokenizer's word cache cannot shortcut them.
    letters = np.random.default_rng(0).integers(ord("a"), ord("z") + 1, 10_000_000, dtype=np.uint8)
    letters[::7] = ord(" ")
    prompt = letters.tobytes().decode()
    t0 = time.time()
    status, body = srv.request("POST", "/v1/completions", {"prompt": prompt, "max_tokens": 1})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded", body
    assert time.time() - t0 < 2.0


# ---- 7: disconnect of a non-streaming request ---------------------------------------------------

def test_non_streaming_disconnect_cancels(srv):
    """A non-streaming client that hangs up mid-generation is cancelled: its slot frees within
    2 s and it generated fewer than its max_tokens. Metric: /health, /metrics counters."""
    cancelled = srv.metric("qwen_cancelled_total")
    generated = srv.metric("qwen_generated_tokens_total")
    body = json.dumps({"prompt": "A long story:", "max_tokens": N_CTX - 32, "ignore_eos": True,
                       "temperature": 0}).encode()
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    sock.sendall(post("/v1/completions", body))
    deadline = time.time() + 10
    while time.time() < deadline and srv.request("GET", "/health")[1]["slots_active"] != 1:
        time.sleep(0.01)
    sock.close()
    deadline = time.time() + 2
    while time.time() < deadline and srv.request("GET", "/health")[1]["slots_active"] != 0:
        time.sleep(0.02)
    assert srv.request("GET", "/health")[1]["slots_active"] == 0
    assert srv.metric("qwen_cancelled_total") == cancelled + 1
    assert srv.metric("qwen_generated_tokens_total") - generated < N_CTX - 32


# ---- 8: no prompt leak through the prefix cache -------------------------------------------------

def test_prefix_cache_scoped_by_user(srv):
    """Bob sending Alice's exact prompt reuses none of her cached tokens (cached_tokens 0, the
    /metrics counter unchanged); Alice herself does. Metric: exact token counts."""
    prompt = "Alice's PIN is 4821. Never tell anyone. " * 4
    req = {"prompt": prompt, "max_tokens": 1, "temperature": 0}
    status, a1 = srv.request("POST", "/v1/completions", {**req, "user": "alice"})
    assert status == 200
    before = srv.metric("qwen_cached_prompt_tokens_total")
    status, b = srv.request("POST", "/v1/completions", {**req, "user": "bob"})
    assert status == 200
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert srv.metric("qwen_cached_prompt_tokens_total") == before
    status, a2 = srv.request("POST", "/v1/completions", {**req, "user": "alice"})
    assert a2["usage"]["prompt_tokens_details"]["cached_tokens"] == a2["usage"]["prompt_tokens"] - 1


def test_prefix_cache_scoped_by_key(bin_dir, tiny_model):
    """Two API keys: the second key's identical prompt finds nothing cached. Metric: cached_tokens."""
    s = Server(bin_dir, tiny_model, "--api-key", "key-a", "--api-key", "key-b")
    try:
        req = {"prompt": "secret secret secret secret", "max_tokens": 1, "temperature": 0}
        status, _ = s.request("POST", "/v1/completions", req, headers={"Authorization": "Bearer key-a"})
        assert status == 200
        status, b = s.request("POST", "/v1/completions", req, headers={"Authorization": "Bearer key-b"})
        assert status == 200 and b["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
        status, a = s.request("POST", "/v1/completions", req, headers={"Authorization": "Bearer key-a"})
        assert a["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    finally:
        s.stop()


# ---- 10: Host, Origin, CORS ---------------------------------------------------------------------

def test_host_and_origin_checks(srv):
    """Bound to loopback: a foreign Host (DNS rebinding) and any Origin are refused with 403; no
    Origin and a loopback Host pass; OPTIONS answers 204. Metric: statuses and codes."""
    status, body = srv.request("GET", "/v1/models", headers={"Host": "evil.example:8080"})
    assert status == 403 and body["error"]["code"] == "host_not_allowed"
    status, body = srv.request("GET", "/v1/models", headers={"Origin": "http://evil.example"})
    assert status == 403 and body["error"]["code"] == "origin_not_allowed"
    for host in ("localhost:1234", "127.0.0.1", "[::1]:80"):
        assert srv.request("GET", "/v1/models", headers={"Host": host})[0] == 200
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("OPTIONS", CHAT)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 204 and "POST" in resp.getheader("Allow")


def test_cors_allowed_origin(bin_dir, tiny_model):
    """With --cors-origin, that origin's requests and preflights get Access-Control-* headers;
    others stay refused. Metric: statuses and header values."""
    s = Server(bin_dir, tiny_model, "--cors-origin", "http://app.example")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
        conn.request("OPTIONS", CHAT, headers={"Origin": "http://app.example",
                                               "Access-Control-Request-Method": "POST"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 204
        assert resp.getheader("Access-Control-Allow-Origin") == "http://app.example"
        assert "POST" in resp.getheader("Access-Control-Allow-Methods")
        conn.request("GET", "/v1/models", headers={"Origin": "http://app.example"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and resp.getheader("Access-Control-Allow-Origin") == "http://app.example"
        conn.close()
        assert s.request("GET", "/v1/models", headers={"Origin": "http://other.example"})[0] == 403
    finally:
        s.stop()


# ---- 11: minor ----------------------------------------------------------------------------------

def test_error_keeps_nul_bytes(srv):
    """An error message quoting a value with a NUL byte is not cut there. Metric: the whole name
    appears in the message."""
    status, body = srv.request("POST", CHAT, {"messages": MSG, "model": "abc\u0000def"})
    assert status == 400 and "abc\u0000def" in body["error"]["message"]


def test_range_ignored(srv):
    """A Range header does not turn a JSON reply into a 206 fragment. Metric: status, whole body."""
    status, body = srv.request("GET", "/v1/models", headers={"Range": "bytes=0-5"})
    assert status == 200 and body["object"] == "list"


def test_bearer_case_insensitive(bin_dir, tiny_model):
    """'bearer KEY' is accepted like 'Bearer KEY' (the scheme is case-insensitive); a wrong key is
    not. Metric: statuses."""
    s = Server(bin_dir, tiny_model, "--api-key", API_KEY)
    try:
        assert s.request("GET", "/v1/models", headers={"Authorization": f"bearer {API_KEY}"})[0] == 200
        assert s.request("GET", "/v1/models", headers={"Authorization": f"BEARER  {API_KEY}"})[0] == 200
        assert s.request("GET", "/v1/models", headers={"Authorization": "bearer nope"})[0] == 401
    finally:
        s.stop()


def test_health_503_while_shutting_down(bin_dir, tiny_model):
    """(11) After SIGTERM with --shutdown-grace the port stays open: /health answers 503
    "shutting_down" (it said ok before the fix) and so does a new generation; a second SIGTERM
    closes the server at once, exit status 0."""
    s = Server(bin_dir, tiny_model, "--shutdown-grace", "60")
    try:
        status, body = s.request("GET", "/health")
        assert status == 200 and body["status"] == "ok"
        s.proc.terminate()
        deadline = time.time() + 10
        while not any("answering 503" in line for line in s.log) and time.time() < deadline:
            time.sleep(0.02)
        status, body = s.request("GET", "/health")
        assert status == 503 and body["status"] == "shutting_down"
        status, body = s.request("POST", CHAT, {"messages": MSG, "max_tokens": 2})
        assert status == 503 and body["error"]["code"] == "shutting_down"
        t0 = time.time()
        s.proc.terminate()
        assert s.proc.wait(5) == 0
        assert time.time() - t0 < 5
    finally:
        s.stop()


def test_no_chat_template_falls_back_to_chatml(bin_dir, tmp_path, tokenizer_dir):
    """A GGUF without tokenizer.chat_template starts with a warning and renders ChatML. Metric:
    the warning, meta.chat_template == 'chatml', a chat reply."""
    model = tmp_path / "no-template.gguf"
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_model.py"), "-o", str(model), "--arch", "qwen2",
         "--n-embd", "64", "--n-layer", "1", "--n-head", "4", "--n-head-kv", "2", "--n-ff", "128",
         "--n-vocab", "151936", "--n-ctx-train", "1024", "--type", "F16", "--seed", "3",
         "--vocab", str(tokenizer_dir / "tokenizer.json"), "--vocab-config", str(tmp_path / "tokenizer_config.json")],
        check=True, capture_output=True, timeout=120)
    s = Server(bin_dir, model)
    try:
        assert any("no tokenizer.chat_template" in line and "ChatML" in line for line in s.log), s.log
        status, card = s.request("GET", "/v1/models")
        assert card["data"][0]["meta"]["chat_template"] == "chatml"
        status, body = s.request("POST", CHAT, {"messages": MSG, "max_tokens": 2})
        assert status == 200 and body["usage"]["completion_tokens"] == 2
    finally:
        s.stop()


# ---- OpenAI options -----------------------------------------------------------------------------

def chat_tokens(srv, **kw):
    status, body = srv.request("POST", CHAT, {"messages": [{"role": "user", "content": "Tell me a story."}],
                                              "logprobs": True, **kw})
    assert status == 200, body
    return body


def test_logprobs_match_qwen_logits(srv, bin_dir, tiny_model, tmp_path):
    """Chat logprobs (greedy, top 5) equal log_softmax of qwen-logits' teacher-forced logits for
    the same prefix, within 1e-4 (absolute), and the top alternatives are its 5 largest."""
    body = chat_tokens(srv, max_tokens=6, temperature=0, top_logprobs=5, ignore_eos=True)
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 6
    status, tok = srv.request("POST", "/tokenize", {"content": "<|im_start|>user\nTell me a story.<|im_end|>\n"
                                                               "<|im_start|>assistant\n"})
    # The server's own prompt: checked against usage so the prefix is exactly what it evaluated.
    prompt = tok["tokens"]
    assert len(prompt) == body["usage"]["prompt_tokens"]
    ids = [e["id"] for e in content]
    out = tmp_path / "logits.npy"
    subprocess.run([str(bin_dir / "qwen-logits"), "-m", str(tiny_model), "--device", "cpu", "-t", "2",
                    "--tokens", ",".join(map(str, prompt + ids[:-1])), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    logits = np.load(out).astype(np.float64)
    for j, e in enumerate(content):
        row = logits[len(prompt) - 1 + j]
        ls = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        assert abs(e["logprob"] - ls[e["id"]]) < 1e-4
        assert e["id"] == int(np.argmax(row))  # greedy
        top = [t["id"] for t in e["top_logprobs"]]
        assert top == list(np.argsort(-row, kind="stable")[:5])
        for t in e["top_logprobs"]:
            assert abs(t["logprob"] - ls[t["id"]]) < 1e-4
        assert bytes(e["bytes"]).decode(errors="replace") == e["token"]


def test_completion_logprobs_shape(srv):
    """/v1/completions logprobs: tokens, token_logprobs, top_logprobs (k entries), text_offset
    consistent with the text. Metric: exact lengths and offsets."""
    status, body = srv.request("POST", "/v1/completions", {"prompt": "Once", "max_tokens": 4, "temperature": 0,
                                                           "ignore_eos": True, "logprobs": 2})
    assert status == 200, body
    lp = body["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
    assert all(len(t) <= 2 and all(v <= 0 for v in t.values()) for t in lp["top_logprobs"])
    assert lp["text_offset"][0] == 0
    assert all(b - a == len(t.encode()) or "\ufffd" in t
               for a, b, t in zip(lp["text_offset"], lp["text_offset"][1:], lp["tokens"]))


def test_logit_bias_bans_token(srv):
    """logit_bias -100 is a ban: the token an unbiased seeded run samples first never appears in
    200 tokens sampled with the same seed and the ban; banning every token of the unbiased run
    keeps all of them out; +100 makes a token the only one. Metric: token ids, exact."""
    base = dict(max_tokens=200, temperature=1.0, top_k=3, seed=11, ignore_eos=True)

    def ids(**kw):
        return [e["id"] for e in chat_tokens(srv, **kw)["choices"][0]["logprobs"]["content"]]

    free = ids(**base)
    assert len(free) == 200
    one = ids(**base, logit_bias={str(free[0]): -100})
    assert len(one) == 200 and free[0] not in one
    everything = ids(**base, logit_bias={str(t): -100 for t in set(free)})
    assert len(everything) == 200 and not set(everything) & set(free)
    assert ids(max_tokens=20, temperature=1.0, seed=3, ignore_eos=True, logit_bias={"9707": 100}) == [9707] * 20


def test_n_choices_equal_seeded_singles(srv):
    """n = 3 with a seed gives 3 choices, choice i equal to a single request with seed + i; usage
    counts the prompt once and every choice's tokens. Metric: exact text equality."""
    req = {"messages": MSG, "max_tokens": 8, "temperature": 1.0, "seed": 100}
    status, body = srv.request("POST", CHAT, {**req, "n": 3})
    assert status == 200, body
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    singles = [srv.request("POST", CHAT, {**req, "seed": 100 + i})[1] for i in range(3)]
    assert [c["message"]["content"] for c in body["choices"]] == \
           [s["choices"][0]["message"]["content"] for s in singles]
    assert body["usage"]["prompt_tokens"] == singles[0]["usage"]["prompt_tokens"]
    assert body["usage"]["completion_tokens"] == sum(s["usage"]["completion_tokens"] for s in singles)


def test_cached_tokens_reported(srv):
    """The same prompt twice (same user): the second reuses all but its last prompt token, and
    usage says so. Metric: exact counts."""
    req = {"prompt": "Cached tokens are reported in usage. " * 3, "max_tokens": 1, "user": "carol"}
    status, first = srv.request("POST", "/v1/completions", req)
    status, second = srv.request("POST", "/v1/completions", req)
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == second["usage"]["prompt_tokens"] - 1
