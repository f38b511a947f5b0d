"""qwen-server end to end on the CPU backend: a tiny synthetic qwen2 model with the real Qwen
vocabulary (scripts/make_model.py), talked to with the real `openai` client and with raw HTTP.

What is checked, and how strictly:
- routes answer in the OpenAI shapes the official client parses (exact field checks);
- at temperature 0, streamed text == non-streamed text, and 16 concurrent clients (4 slots, so 12
  queue) each get exactly the text a sequential run gave (string equality, no tolerance);
- a fixed seed at temperature 1 reproduces its text exactly;
- every error case returns its HTTP status and {"error": {"message", "type", "code"}};
- a client that disconnects mid-stream is cancelled and its slot freed within 10 s.
"""
import concurrent.futures
import http.client
import json
import pathlib
import random
import re
import socket
import subprocess
import sys
import threading
import time

import openai
import pytest
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
N_CTX = 1024
N_SLOTS = 4
API_KEY = "sk-test-key"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tokenizer_dir) -> pathlib.Path:
    """A 2-layer qwen2 model (n_embd 64) with the real 151,936-entry vocabulary and chat template."""
    out = tmp_path_factory.mktemp("server") / "tiny-qwen2.gguf"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_model.py"), "-o", str(out), "--arch", "qwen2",
         "--n-embd", "64", "--n-layer", "2", "--n-head", "4", "--n-head-kv", "2", "--n-ff", "128",
         "--n-vocab", "151936", "--n-ctx-train", "4096", "--type", "F16", "--seed", "7",
         "--vocab", str(tokenizer_dir / "tokenizer.json"), "--vocab-config", str(tokenizer_dir / "tokenizer_config.json")],
        check=True, capture_output=True, timeout=120)
    return out


class Server:
    """A running qwen-server; its stderr is drained by a thread (and kept for failure messages)."""

    def __init__(self, bin_dir, model, *extra, parallel=N_SLOTS, n_ctx=N_CTX):
        exe = bin_dir / "qwen-server"
        if not exe.is_file():
            pytest.fail(f"{exe} not built (needs cpp-httplib)")
        self.proc = subprocess.Popen(
            [str(exe), "-m", str(model), "--host", "127.0.0.1", "--port", "0", "--device", "cpu",
             "-c", str(n_ctx), "--parallel", str(parallel), "-t", "2", *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log = []
        ready = threading.Event()
        self.port = None

        def drain():
            for line in self.proc.stderr:
                self.log.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60) or self.port is None:
            self.stop()
            pytest.fail("qwen-server did not start:\n" + "".join(self.log))
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def request(self, method, path, body=None, headers=None, raw=None):
        """Raw HTTP: returns (status, parsed JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        text = resp.read().decode()
        conn.close()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text

    def metric(self, name):
        status, text = self.request("GET", "/metrics")
        assert status == 200
        m = re.search(rf"^{name} (\S+)$", text, re.M)
        assert m, f"{name} missing from /metrics:\n{text}"
        return float(m.group(1))


def serve(bin_dir, model, *extra, **kw):
    """A module fixture's body (`yield from serve(...)`): the server while the module's tests run,
    then a clean exit asserted."""
    s = Server(bin_dir, model, *extra, **kw)
    yield s
    s.stop()
    assert s.proc.returncode == 0, "qwen-server did not exit cleanly:\n" + "".join(s.log)


def openai_client(server, timeout=120):
    """The openai client of `server` (no key, no retries); use it in a with-block, so it is closed
    before the server stops: idle keep-alive connections would hold its shutdown."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=timeout)


@pytest.fixture(scope="module")
def server(bin_dir, tiny_model):
    yield from serve(bin_dir, tiny_model)


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


def chat(client, content, **kw):
    args = dict(model="tiny-qwen2", messages=[{"role": "user", "content": content}], max_tokens=24,
                temperature=0)
    args.update(kw)
    return client.chat.completions.create(**args)


# ---- OpenAI client ---------------------------------------------------------------------------


def test_models(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny-qwen2"]
    assert models[0].object == "model"
    assert client.models.retrieve("tiny-qwen2").id == "tiny-qwen2"


def test_chat_completion(client):
    r = chat(client, "What is the capital of France?")
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 5 and 1 <= u.completion_tokens <= 24
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    if choice.finish_reason == "length":
        assert u.completion_tokens == 24


def test_chat_stream_equals_whole(client):
    for prompt in ["Tell me a story.", "Count to ten.", "你好，世界"]:
        whole = chat(client, prompt, max_tokens=40)
        chunks = list(chat(client, prompt, max_tokens=40, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert text == whole.choices[0].message.content
        finishes = [c.choices[0].finish_reason for c in chunks]
        assert finishes[:-1] == [None] * (len(chunks) - 1)
        assert finishes[-1] == whole.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stream_include_usage(client):
    chunks = list(chat(client, "Hi", max_tokens=8, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens


def test_completions_stream_equals_whole(client):
    prompt = "The quick brown fox"
    whole = client.completions.create(model="tiny-qwen2", prompt=prompt, max_tokens=32, temperature=0)
    assert whole.object == "text_completion"
    assert whole.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.completions.create(model="tiny-qwen2", prompt=prompt, max_tokens=32, temperature=0,
                                            stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_prompt_as_token_ids(server, client):
    """A prompt sent as token ids gives the same completion as its text."""
    text = "The quick brown fox"
    ids = server.request("POST", "/tokenize", {"content": text})[1]["tokens"]
    a = client.completions.create(model="tiny-qwen2", prompt=text, max_tokens=16, temperature=0)
    b = client.completions.create(model="tiny-qwen2", prompt=ids, max_tokens=16, temperature=0)
    assert b.choices[0].text == a.choices[0].text
    assert b.usage.prompt_tokens == len(ids)


def test_seed_reproducible(client):
    """The same request with the same seed gives the same text. The first request prefills its
    prompt and the next ones reuse it from the slot's cache, which moves the logits by ~1e-7 (batch
    vs one-token matmul paths); sampling this random model at temperature 1 turns that into another
    token now and then, so the compared requests both take the cached path."""
    chat(client, "Write a poem.", temperature=1.0, top_p=0.9, seed=1234, max_tokens=32)
    a = chat(client, "Write a poem.", temperature=1.0, top_p=0.9, seed=1234, max_tokens=32)
    b = chat(client, "Write a poem.", temperature=1.0, top_p=0.9, seed=1234, max_tokens=32)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_stop_string(client):
    base = client.completions.create(model="tiny-qwen2", prompt="Once upon a time", max_tokens=48, temperature=0)
    text = base.choices[0].text
    if len(text) < 12:
        pytest.fail(f"greedy continuation too short to cut with a stop string: {text!r}")
    stop = text[len(text) // 2:len(text) // 2 + 3]
    cut = text.find(stop)
    for stream in (False, True):
        r = client.completions.create(model="tiny-qwen2", prompt="Once upon a time", max_tokens=48,
                                      temperature=0, stop=[stop, "never-produced-stop"], stream=stream)
        if stream:
            chunks = list(r)
            got, finish = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
        else:
            got, finish = r.choices[0].text, r.choices[0].finish_reason
        assert got == text[:cut] and finish == "stop", (stream, stop, text)


def test_tokenize_matches_hf(server, tokenizer_json):
    hf = Tokenizer.from_file(str(tokenizer_json))
    text = "Hello world! Ünïcödé 123 <|im_start|>"
    # HF matches special tokens written in the text, as /tokenize does by default (parse_special).
    status, body = server.request("POST", "/tokenize", {"content": text})
    assert status == 200 and body["tokens"] == hf.encode(text, add_special_tokens=False).ids
    status, body = server.request("POST", "/detokenize", {"tokens": body["tokens"]})
    assert status == 200 and body["content"] == text


def test_health_and_metrics(server):
    status, body = server.request("GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["slots_total"] == N_SLOTS
    assert server.metric("qwen_requests_total") > 0
    assert server.metric("qwen_slots") == N_SLOTS


def test_decode_bytes_metric(server, client, tiny_model):
    """qwen_decode_bytes_total counts Model::decode_bytes of every batched step: a lone greedy request
    of 16 tokens adds, per token generated, between the weights of one step W (the file's tensors but
    the embedding table) and W plus one embedding row and the K/V of N_CTX + 2 positions (F32 cache on
    the cpu: 2 layers x {K, V} x 32 x 4 bytes), give or take one step (the first token comes from the
    prefill). The GB/s gauge is that counter over the step time (positive once steps ran)."""
    import gguf
    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(tiny_model).tensors}
    w = sum(n for name, n in tensors.items() if name != "token_embd.weight" or "output.weight" not in tensors)
    most = w + tensors["token_embd.weight"] // 151936 + (N_CTX + 2) * 2 * 2 * 32 * 4
    bytes0, tokens0 = server.metric("qwen_decode_bytes_total"), server.metric("qwen_generated_tokens_total")
    chat(client, "Count the bytes.", max_tokens=16, extra_body={"ignore_eos": True})
    steps = server.metric("qwen_generated_tokens_total") - tokens0
    added = server.metric("qwen_decode_bytes_total") - bytes0
    assert steps == 16 and w * (steps - 1) <= added <= most * (steps + 1), (added, w, most)
    assert server.metric("qwen_decode_gigabytes_per_second") > 0


@pytest.mark.parametrize("flags, mib", [(["-ctk", "bf16", "-ctv", "bf16"], 1.0), (["--kv-type", "f32"], 2.0)])
def test_kv_type_flags(bin_dir, tiny_model, flags, mib):
    """--kv-type and llama.cpp's -ctk/-ctv: the KV cache of the load line has the type's bytes, exactly
    2 layers x {K, V} x 4 slots x 1024 positions x 32 elements x 2 (bf16) or 4 (f32) bytes."""
    s = Server(bin_dir, tiny_model, *flags)
    try:
        assert any(f"(KV cache {mib:.1f} MiB)" in line for line in s.log), "".join(s.log)
    finally:
        s.stop()


# ---- concurrency ------------------------------------------------------------------------------


def test_concurrent_equals_sequential(server, client):
    """16 clients on 4 slots at temperature 0: each text equals the same prompt run alone."""
    prompts = [f"Request number {i}: say something about {w}." for i, w in
               enumerate(["cats", "dogs", "the sea", "rain", "bread", "stars", "trains", "music"] * 2)]
    prompts[15] = prompts[3]  # two identical prompts in flight at once

    def run(p):
        r = chat(client, p, max_tokens=24)
        return r.choices[0].message.content, r.choices[0].finish_reason

    sequential = [run(p) for p in prompts]
    generated_before = server.metric("qwen_generated_tokens_total")
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        concurrent_results = list(pool.map(run, prompts))
    assert concurrent_results == sequential
    assert server.metric("qwen_generated_tokens_total") > generated_before
    assert server.metric("qwen_requests_active") == 0 and server.metric("qwen_requests_queued") == 0


def test_disconnect_frees_slot(server):
    """A streaming client that hangs up is cancelled: its slot comes free long before max_tokens."""
    cancelled_before = server.metric("qwen_cancelled_total")
    sock = start_stream(server.port, "A very long story:", N_CTX - 32)
    received = b""
    while received.count(b"data: ") < 3:  # a few tokens have streamed: the slot is busy
        chunk = sock.recv(4096)
        assert chunk, "server closed the stream early"
        received += chunk
    status, health = server.request("GET", "/health")
    assert health["slots_active"] == 1
    sock.close()
    deadline = time.time() + 10
    while time.time() < deadline and server.request("GET", "/health")[1]["slots_active"] != 0:
        time.sleep(0.05)
    assert server.request("GET", "/health")[1]["slots_active"] == 0
    assert server.metric("qwen_cancelled_total") == cancelled_before + 1
    # The freed slot serves the next request.
    status, body = server.request("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 4})
    assert status == 200 and body["choices"][0]["finish_reason"] in ("stop", "length")


def start_stream(port, prompt, max_tokens):
    """Sends a streaming completion on a raw socket (so the test can hang up at will)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
                       "ignore_eos": True})
    sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
    return sock


def test_mixed_load_with_hangups(server, client):
    """12 streams that hang up at random points (some while still queued) mixed with 8 normal
    requests on 4 slots: the normal ones still equal their sequential text, and afterwards no
    slot is held and nothing is queued."""
    rng = random.Random(5)
    prompts = [f"Mixed load prompt {i}" for i in range(8)]

    def run(p):
        return client.completions.create(model="tiny-qwen2", prompt=p, max_tokens=16, temperature=0).choices[0].text

    sequential = [run(p) for p in prompts]

    def hang_up(i):
        sock = start_stream(server.port, f"Abandoned {i}", N_CTX - 64)
        want, got = rng.randrange(0, 6), b""
        while got.count(b"data: ") < want and (chunk := sock.recv(4096)):
            got += chunk
        sock.close()

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        abandoned = [pool.submit(hang_up, i) for i in range(12)]
        normal = pool.map(run, prompts)
        assert list(normal) == sequential
        for f in abandoned:
            f.result()
    deadline = time.time() + 15
    while time.time() < deadline:
        health = server.request("GET", "/health")[1]
        if health["slots_active"] == 0 and health["requests_queued"] == 0:
            break
        time.sleep(0.05)
    assert health["slots_active"] == 0 and health["requests_queued"] == 0, health


def test_chunked_prefill(bin_dir, tiny_model, server):
    """A long prompt fed in 16-token chunks between the decode steps of a running request: both
    texts equal those of the main server (which evaluates each prompt in one piece), and every
    prompt token is counted once in qwen_prompt_tokens_total."""
    long_prompt = " ".join(f"item{i}" for i in range(120))

    def complete(srv, prompt, n):
        status, body = srv.request("POST", "/v1/completions",
                                   {"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True})
        assert status == 200, body
        return body["choices"][0]["text"], body["usage"]["prompt_tokens"]

    ref_long, n_long = complete(server, long_prompt, 16)
    ref_short, n_short = complete(server, "A short one", 64)
    assert n_long > 200
    s = Server(bin_dir, tiny_model, "--prefill-chunk", "16", parallel=2)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            short = pool.submit(complete, s, "A short one", 64)
            time.sleep(0.05)  # the short request is decoding when the long one arrives
            long = pool.submit(complete, s, long_prompt, 16)
            assert long.result()[0] == ref_long
            assert short.result()[0] == ref_short
        assert s.metric("qwen_prompt_tokens_total") == n_long + n_short
    finally:
        s.stop()


# ---- errors -----------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]

ERROR_CASES = [
    # (name, method, path, raw body, status, code, param)
    ("malformed json", "POST", CHAT, '{"messages": [', 400, "invalid_json", None),
    ("body not an object", "POST", CHAT, "[1, 2]", 400, "invalid_type", None),
    ("missing messages", "POST", CHAT, json.dumps({"model": "tiny-qwen2"}), 400, "missing_field", "messages"),
    ("messages not a list", "POST", CHAT, json.dumps({"messages": "hi"}), 400, "invalid_type", "messages"),
    ("empty messages", "POST", CHAT, json.dumps({"messages": []}), 400, "invalid_value", "messages"),
    ("bad role", "POST", CHAT, json.dumps({"messages": [{"role": "robot", "content": "x"}]}), 400,
     "invalid_value", "messages[0].role"),
    ("content not text", "POST", CHAT, json.dumps({"messages": [{"role": "user", "content": 5}]}), 400,
     "invalid_type", "messages[0].content"),
    ("temperature string", "POST", CHAT, json.dumps({"messages": MSG, "temperature": "hot"}), 400,
     "invalid_type", "temperature"),
    ("temperature range", "POST", CHAT, json.dumps({"messages": MSG, "temperature": 5}), 400,
     "invalid_value", "temperature"),
    ("max_tokens zero", "POST", CHAT, json.dumps({"messages": MSG, "max_tokens": 0}), 400, "invalid_value",
     "max_tokens"),
    ("max_tokens float", "POST", CHAT, json.dumps({"messages": MSG, "max_tokens": 1.5}), 400, "invalid_type",
     "max_tokens"),
    ("stop too long", "POST", CHAT, json.dumps({"messages": MSG, "stop": ["x" * 1025]}), 400, "invalid_value",
     "stop"),
    ("stop wrong type", "POST", CHAT, json.dumps({"messages": MSG, "stop": [1]}), 400, "invalid_type", "stop"),
    ("n too large", "POST", CHAT, json.dumps({"messages": MSG, "n": 17}), 400, "invalid_value", "n"),
    ("n > 1 streamed", "POST", CHAT, json.dumps({"messages": MSG, "n": 2, "stream": True}), 400,
     "unsupported_value", "n"),
    ("logprobs streamed", "POST", CHAT, json.dumps({"messages": MSG, "logprobs": True, "stream": True}), 400,
     "unsupported_value", "logprobs"),
    ("top_logprobs alone", "POST", CHAT, json.dumps({"messages": MSG, "top_logprobs": 2}), 400, "invalid_value",
     "top_logprobs"),
    ("top_logprobs range", "POST", CHAT, json.dumps({"messages": MSG, "logprobs": True, "top_logprobs": 21}), 400,
     "invalid_value", "top_logprobs"),
    ("logprobs range", "POST", "/v1/completions", json.dumps({"prompt": "a", "logprobs": 21}), 400,
     "invalid_value", "logprobs"),
    ("logit_bias key", "POST", CHAT, json.dumps({"messages": MSG, "logit_bias": {"abc": 1}}), 400,
     "invalid_value", "logit_bias"),
    ("logit_bias id", "POST", CHAT, json.dumps({"messages": MSG, "logit_bias": {"151936": 1}}), 400,
     "invalid_value", "logit_bias"),
    ("logit_bias value", "POST", CHAT, json.dumps({"messages": MSG, "logit_bias": {"5": 101}}), 400,
     "invalid_value", "logit_bias"),
    # Not implemented, so refused by name rather than dropped (more in test_server_grammar.py).
    ("grammar", "POST", CHAT, json.dumps({"messages": MSG, "grammar": "root ::= \"a\""}), 400,
     "unsupported_value", "grammar"),
    ("json_schema pattern", "POST", CHAT,
     json.dumps({"messages": MSG, "json_schema": {"type": "string", "pattern": "a"}}), 400, "unsupported_value",
     "json_schema"),
    ("response_format json_schema without schema", "POST", CHAT,
     json.dumps({"messages": MSG, "response_format": {"type": "json_schema", "json_schema": {}}}), 400,
     "missing_field", "response_format.json_schema.schema"),
    ("tools", "POST", CHAT, json.dumps({"messages": MSG, "tools": [{"type": "function"}]}), 400,
     "invalid_type", "tools[0]"),
    ("tool_choice", "POST", CHAT, json.dumps({"messages": MSG, "tool_choice": "required", "tools": []}), 400,
     "invalid_value", "tool_choice"),  # a call is required, and there is no tool to call
    ("functions", "POST", CHAT, json.dumps({"messages": MSG, "functions": []}), 400, "unsupported_value",
     "functions"),
    ("unknown field", "POST", "/v1/completions", json.dumps({"prompt": "a", "mirostat": 2}), 400,
     "unsupported_value", "mirostat"),
    ("stream not bool", "POST", CHAT, json.dumps({"messages": MSG, "stream": "yes"}), 400, "invalid_type",
     "stream"),
    ("unknown model", "POST", CHAT, json.dumps({"messages": MSG, "model": "gpt-4"}), 400, "model_not_found",
     "model"),
    ("prompt too long", "POST", "/v1/completions", json.dumps({"prompt": "hello " * (N_CTX + 10)}), 400,
     "context_length_exceeded", "prompt"),
    ("missing prompt", "POST", "/v1/completions", json.dumps({"max_tokens": 3}), 400, "missing_field", "prompt"),
    ("detokenize bad id", "POST", "/detokenize", json.dumps({"tokens": [1, 10 ** 9]}), 400, "invalid_value",
     "tokens"),
    ("tokenize no content", "POST", "/tokenize", json.dumps({}), 400, "missing_field", "content"),
    ("nested json", "POST", CHAT, "[" * 100000 + "]" * 100000, 400, "invalid_type", None),
    ("nested field", "POST", CHAT, '{"messages": [], "n": ' + "[" * 100000 + "]" * 100000 + "}", 400,
     "invalid_type", "n"),
    ("prompt ids out of range", "POST", "/v1/completions", json.dumps({"prompt": [1, -5]}), 400, "invalid_value",
     "prompt"),
    ("prompt mixed list", "POST", "/v1/completions", json.dumps({"prompt": ["a", "b"]}), 400, "invalid_type",
     "prompt"),
    ("unknown route", "GET", "/v1/nothing", None, 404, "not_found", None),
    ("wrong method", "GET", CHAT, None, 404, "not_found", None),
    ("unknown model card", "GET", "/v1/models/gpt-4", None, 404, "model_not_found", "model"),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
def test_errors(server, case):
    _, method, path, raw, status, code, param = case
    got_status, body = server.request(method, path, raw=raw)
    assert got_status == status, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error"
    assert err["code"] == code
    assert err["param"] == param


def test_client_raises_on_error(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, "x", model="no-such-model")
    assert e.value.code == "model_not_found"


def test_garbage_does_not_hurt(server):
    """Random bytes, a truncated body and a half-sent request leave the server healthy."""
    for payload in [b"\x00\xff" * 500 + b"\r\n\r\n", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{"]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            try:
                while s.recv(4096):
                    pass
            except OSError:
                pass
    assert server.request("GET", "/health")[0] == 200


def test_api_key(bin_dir, tiny_model):
    s = Server(bin_dir, tiny_model, "--api-key", API_KEY)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": API_KEY}):
            status, body = s.request("GET", "/v1/models", headers=headers)
            assert status == 401 and body["error"]["code"] == "invalid_api_key", headers
        assert s.request("GET", "/health")[0] == 200
        with openai.OpenAI(base_url=s.url + "/v1", api_key=API_KEY, max_retries=0) as good:
            assert good.models.list().data[0].id == "tiny-qwen2"
        with openai.OpenAI(base_url=s.url + "/v1", api_key="sk-wrong", max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError):
                bad.models.list()
    finally:
        s.stop()


def test_shutdown_ends_requests(bin_dir, tiny_model):
    """SIGTERM with a stream running and a request queued: both end at once with a 503-style
    error and the server exits 0 within 5 s (not after the generations would have finished)."""
    s = Server(bin_dir, tiny_model, parallel=1)
    try:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=30)
        body = json.dumps({"prompt": "Go on:", "max_tokens": N_CTX - 32, "ignore_eos": True, "stream": True})
        # Connection: close, or httplib would keep the finished connection open for its keep-alive
        # timeout (5 s) and stop() waits for that.
        sock.sendall((f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n{body}").encode())
        received = bytearray()
        started = threading.Event()

        def read_stream():  # a client that keeps reading until the server closes
            while chunk := sock.recv(65536):
                received.extend(chunk)
                if received.count(b"data: ") >= 2:
                    started.set()
            started.set()

        reader = threading.Thread(target=read_stream)
        reader.start()
        assert started.wait(30)
        queued = concurrent.futures.ThreadPoolExecutor(1).submit(
            s.request, "POST", "/v1/completions", {"prompt": "Queued", "max_tokens": 4})
        deadline = time.time() + 10
        while s.request("GET", "/health")[1]["requests_queued"] != 1 and time.time() < deadline:
            time.sleep(0.02)
        t0 = time.time()
        s.proc.terminate()
        assert s.proc.wait(5) == 0
        assert time.time() - t0 < 5
        reader.join(5)
        assert b'"code":"shutting_down"' in received and b"data: [DONE]" in received
        status, body = queued.result(10)
        assert status == 503 and body["error"]["code"] == "shutting_down"
        sock.close()
    finally:
        s.stop()


def test_bench_server_reports_median_run(server):
    """apps/server/bench_server.py against the CPU server: one JSON line per stream count, each
    run generating exactly streams x gen tokens, and the reported run is the median of --repeat
    runs (exact comparisons); --repeat 0 is refused."""
    script = ROOT / "apps" / "server" / "bench_server.py"
    out = subprocess.run([sys.executable, str(script), "--url", server.url, "--streams", "1,3", "--prompt-tokens", "16",
                          "--gen-tokens", "8", "--repeat", "3"], check=True, capture_output=True, text=True,
                         timeout=300).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["streams"] for r in rows] == [1, 3]
    for r in rows:
        assert r["generated"] == r["streams"] * 8
        assert len(r["runs_tok_s"]) == 3
        assert r["aggregate_tok_s"] == sorted(r["runs_tok_s"])[1]
    bad = subprocess.run([sys.executable, str(script), "--url", server.url, "--repeat", "0"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--repeat 0" in bad.stderr
