"""qwen-server tool calling with the real `openai` client, on a random-weight qwen2 model (real
Qwen vocabulary) whose GGUF carries Qwen2.5's real tool-calling template
(chat_templates/qwen2.5.jinja).

What is checked, and how strictly:
- the prompt a tools request renders to (POST /apply-template) equals jinja2's render of the same
  template with transformers' settings, byte for byte (no tolerance), for tools, assistant
  tool_calls and tool results; the server hands the template function.arguments as the parsed
  object (the wire carries a JSON string), so the reference does the same;
- a round trip through the openai client (tools + an assistant tool_calls turn + tool results
  sent back) is accepted and its usage.prompt_tokens equals the HF tokenizers count of jinja2's
  render (exact);
- with tools, streamed text equals non-streamed text at temperature 0 (the <tool_call> parser
  passes plain text through unchanged; a random model does not write calls unless constrained);
- tool_choice "required" and a named function, enforced by a grammar (sampling/tool_grammar.h):
  20 requests over seeds, temperatures (0.3 to 1.3), streaming or not and parallel_tool_calls
  true / false / unset each reply with tool_calls only (content null, no content deltas) and
  finish_reason "tool_calls"; every call names a declared tool (the named one when named), has a
  unique "call_" id, and arguments that parse as JSON and validate against that tool's parameters
  with the `jsonschema` package; parallel_tool_calls false gives exactly one call. All 20 must
  (no tolerance). A random model's logits are noise, so the structure is the grammar's doing.
  16 choices of one request include one with several calls (parallel_tool_calls unset) and have
  exactly one each with it false;
- streamed calls come as OpenAI sends them: a delta with index, id, type and name (arguments ""),
  then the arguments;
- each of those replies sent back (the assistant tool_calls turn plus a role "tool" result per
  call) is accepted, its usage.prompt_tokens equals the HF tokenizers count of jinja2's render of
  the same conversation (exact), and the answer is a normal reply;
- the legacy functions / function_call fields, malformed tools, tool_calls or tool_choice, an
  unknown function name, two tools of one name, and what a required call cannot be combined with
  (response_format, a logit_bias ban, ignore_eos, parallel_tool_calls false under "auto",
  parameters that are not an object schema) are refused with 400 naming the field.
"""
import json
import pathlib
import subprocess
import sys

import jsonschema
import pytest
from tokenizers import Tokenizer

from test_chat_templates import BOS, compile_template
from test_server import openai_client, serve

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = (pathlib.Path(__file__).parent / "chat_templates" / "qwen2.5.jinja").read_text(encoding="utf-8")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city (°C), \"quoted\"",
    "parameters": {"type": "object", "required": ["city"],
                   "properties": {"city": {"type": "string", "description": "城市"}, "unit": {"enum": ["c", "f"]}}}}}
CLOCK = {"type": "function", "function": {"name": "now", "parameters": {"type": "object", "properties": {}}}}

CONVERSATION = [
    {"role": "system", "content": "You can call tools."},
    {"role": "user", "content": "Weather in Tokyo, and the time?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"東京\", \"unit\": \"c\"}"}},
        {"id": "call_b", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_a", "content": "{\"temp\": 21}"},
    {"role": "tool", "tool_call_id": "call_b", "content": "12:00"},
]


def reference_prompt(messages, tools):
    """jinja2's render, as transformers' apply_chat_template(messages, tools=tools,
    add_generation_prompt=True), with tool-call arguments parsed as the server does."""
    msgs = json.loads(json.dumps(messages))
    for m in msgs:
        for call in m.get("tool_calls") or []:
            call["function"]["arguments"] = json.loads(call["function"]["arguments"])
    return compile_template(TEMPLATE).render(messages=msgs, tools=tools, documents=None, add_generation_prompt=True,
                                             bos_token=BOS, eos_token="<|im_end|>")


@pytest.fixture(scope="module")
def tool_model(tmp_path_factory, tokenizer_dir):
    d = tmp_path_factory.mktemp("tools")
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = TEMPLATE
    (d / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    out = d / "tiny-qwen2.5-tools.gguf"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_model.py"), "-o", str(out), "--arch", "qwen2",
         "--n-embd", "64", "--n-layer", "2", "--n-head", "4", "--n-head-kv", "2", "--n-ff", "128",
         "--n-vocab", "151936", "--n-ctx-train", "4096", "--type", "F16", "--seed", "7",
         "--vocab", str(tokenizer_dir / "tokenizer.json"), "--vocab-config", str(d / "tokenizer_config.json")],
        check=True, capture_output=True, timeout=120)
    return out


@pytest.fixture(scope="module")
def server(bin_dir, tool_model):
    yield from serve(bin_dir, tool_model, parallel=2)


@pytest.fixture(scope="module")
def client(server):
    with openai_client(server) as c:
        yield c


@pytest.mark.parametrize("case", ["tools", "calls_and_results", "no_tools", "tool_choice_none"])
def test_rendered_prompt_equals_jinja2(server, case):
    body = {"messages": CONVERSATION[:2], "tools": [WEATHER, CLOCK]}
    want = reference_prompt(CONVERSATION[:2], [WEATHER, CLOCK])
    if case == "calls_and_results":
        body = {"messages": CONVERSATION, "tools": [WEATHER, CLOCK], "tool_choice": "auto"}
        want = reference_prompt(CONVERSATION, [WEATHER, CLOCK])
    elif case == "no_tools":
        body = {"messages": CONVERSATION}
        want = reference_prompt(CONVERSATION, None)
    elif case == "tool_choice_none":  # the tools are left out of the prompt
        body = {"messages": CONVERSATION[:2], "tools": [WEATHER], "tool_choice": "none"}
        want = reference_prompt(CONVERSATION[:2], None)
    status, got = server.request("POST", "/apply-template", body)
    assert status == 200, got
    assert got["prompt"] == want
    assert (case in ("tools", "calls_and_results")) == ("<tools>" in want)


def test_round_trip_with_openai_client(client, tokenizer_json):
    hf = Tokenizer.from_file(str(tokenizer_json))
    want = reference_prompt(CONVERSATION, [WEATHER, CLOCK])
    r = client.chat.completions.create(model="tiny-qwen2.5-tools", messages=CONVERSATION, tools=[WEATHER, CLOCK], tool_choice="auto",
                                       max_tokens=8, temperature=0)
    assert r.usage.prompt_tokens == len(hf.encode(want, add_special_tokens=False).ids)
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    # A random model writes no <tool_call> block: plain content, a plain finish.
    assert choice.message.tool_calls is None and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")


def test_stream_with_tools_equals_whole(client):
    kw = dict(model="tiny-qwen2.5-tools", messages=CONVERSATION[:2], tools=[WEATHER], max_tokens=24, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    parts, finish = [], None
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            assert c.delta.tool_calls is None
            parts.append(c.delta.content or "")
            finish = c.finish_reason or finish
    assert "".join(parts) == whole and finish in ("stop", "length")


# Tools for enforced calls: their strings are bounded, so a random model's arguments end well within
# max_tokens (an unbounded string would run on: a closing quote is one token in 150,000).
BOUNDED = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}},
    {"type": "function", "function": {"name": "set_alarm", "parameters": {
        "type": "object", "required": ["time", "repeat"], "additionalProperties": False, "properties": {
            "time": {"type": "string", "minLength": 4, "maxLength": 5}, "repeat": {"type": "boolean"},
            "labels": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
            "volume": {"type": "number"}}}}},
    {"type": "function", "function": {"name": "now", "parameters": {
        "type": "object", "properties": {}, "additionalProperties": False}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in BOUNDED}
ASK = [{"role": "user", "content": "Set an alarm and tell me the weather."}]
MAX_TOKENS = 480  # calls take about 40 to 120 tokens each; the context is 1024


def enforced_cases():
    """20 (seed, temperature, tool_choice, stream, parallel_tool_calls) combinations."""
    temps = [0.3, 0.7, 1.0, 1.3]
    choices = ["required", {"type": "function", "function": {"name": "set_alarm"}},
               {"type": "function", "function": {"name": "get_weather"}}, "required"]
    parallel = [None, True, False]
    return [(i, temps[i % 4], choices[(i // 2) % 4], i % 2 == 1, parallel[i % 3]) for i in range(20)]


def collect_stream(chunks):
    """The calls, content and finish_reason of a streamed reply; checks each call's first delta
    carries index, id, type and name with arguments "", and later ones only arguments."""
    calls, content, finish = {}, "", None
    for chunk in chunks:
        for c in chunk.choices:
            content += c.delta.content or ""
            finish = c.finish_reason or finish
            for d in c.delta.tool_calls or []:
                if d.index not in calls:
                    assert d.id and d.type == "function" and d.function.name and d.function.arguments == "", d
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
                else:
                    assert d.id is None and d.function.name is None, d
                    calls[d.index]["arguments"] += d.function.arguments
    assert sorted(calls) == list(range(len(calls)))
    return [calls[i] for i in sorted(calls)], content, finish


@pytest.mark.parametrize("seed,temperature,tool_choice,stream,parallel", enforced_cases())
def test_enforced_tool_calls_validate_and_round_trip(client, tokenizer_json, seed, temperature, tool_choice, stream,
                                                     parallel):
    kw = dict(model="tiny-qwen2.5-tools", messages=ASK, tools=BOUNDED, tool_choice=tool_choice, seed=seed,
              temperature=temperature, max_tokens=MAX_TOKENS)
    if parallel is not None:
        kw["parallel_tool_calls"] = parallel
    if stream:
        calls, content, finish = collect_stream(client.chat.completions.create(stream=True, **kw))
        assert content == ""
    else:
        choice = client.chat.completions.create(**kw).choices[0]
        assert choice.message.content is None
        calls = [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
                 for c in choice.message.tool_calls or []]
        assert all(c.type == "function" for c in choice.message.tool_calls)
        finish = choice.finish_reason
    assert finish == "tool_calls" and len(calls) >= 1, (finish, calls)
    if parallel is False:
        assert len(calls) == 1
    assert len({c["id"] for c in calls}) == len(calls) and all(c["id"].startswith("call_") for c in calls)
    for c in calls:
        if isinstance(tool_choice, dict):
            assert c["name"] == tool_choice["function"]["name"]
        jsonschema.validate(json.loads(c["arguments"]), PARAMS[c["name"]])

    # Round trip: the calls and a result for each, sent back; the prompt is the template's own.
    conversation = ASK + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls]}] + [{"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls]
    r = client.chat.completions.create(model="tiny-qwen2.5-tools", messages=conversation, tools=BOUNDED,
                                       max_tokens=8, seed=seed)
    want = reference_prompt(conversation, BOUNDED)
    hf = Tokenizer.from_file(str(tokenizer_json))
    assert r.usage.prompt_tokens == len(hf.encode(want, add_special_tokens=False).ids)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_parallel_calls_are_several_and_valid(client):
    """parallel_tool_calls unset under "required": 16 choices at temperature 1.3, each one or more
    valid calls (all must), and at least one choice with several (the repeat of the grammar is
    exercised, not only its first call); the same with parallel_tool_calls false: exactly one each."""
    counts = {}
    for parallel in (None, False):
        kw = {} if parallel is None else {"parallel_tool_calls": parallel}
        r = client.chat.completions.create(model="tiny-qwen2.5-tools", messages=ASK, tools=BOUNDED,
                                           tool_choice="required", n=16, seed=5, temperature=1.3,
                                           max_tokens=MAX_TOKENS, **kw)
        counts[parallel] = []
        for choice in r.choices:
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            for c in choice.message.tool_calls:
                jsonschema.validate(json.loads(c.function.arguments), PARAMS[c.function.name])
            counts[parallel].append(len(choice.message.tool_calls))
    assert min(counts[None]) >= 1 and max(counts[None]) >= 2, counts
    assert counts[False] == [1] * 16, counts


@pytest.mark.parametrize("extra,param", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}}, "tool_choice"),
    ({"tools": [], "tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER, WEATHER], "tool_choice": "required"}, "tools[1]"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "required", "logit_bias": {"27": -100}}, "logit_bias"),
    ({"tools": [WEATHER], "tool_choice": "required", "ignore_eos": True}, "ignore_eos"),
    ({"tools": [WEATHER], "parallel_tool_calls": False}, "parallel_tool_calls"),
    ({"tools": [WEATHER], "tool_choice": "required", "parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"parallel_tool_calls": True}, "parallel_tool_calls"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
      "tool_choice": "required"}, "tools[0].function.parameters"),
    ({"tools": [WEATHER, {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}}}}],
      "tool_choice": "required"}, "tools[1].function.parameters"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"functions": [WEATHER["function"]]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tools": {"type": "function"}}, "tools"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [
        {"id": "x", "type": "function", "function": {"name": "now", "arguments": "not json"}}]}]},
     "messages[1].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [{"id": "x"}]}]},
     "messages[1].tool_calls[0]"),
    ({"messages": [{"role": "tool"}]}, "messages[0].content"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
])
def test_refusals_name_the_field(server, extra, param):
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, **extra}
    status, got = server.request("POST", "/v1/chat/completions", body)
    assert status == 400, got
    assert got["error"]["param"] == param, got
