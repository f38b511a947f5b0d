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
  passes plain text through unchanged; its call extraction is tests/unit/test_tool_calls.cpp,
  since a random model does not write calls);
- tool_choice "required" / a named function, the legacy functions / function_call fields and
  malformed tools or tool_calls are refused with 400 naming the field.
"""
import json
import pathlib
import subprocess
import sys

import openai
import pytest
from tokenizers import Tokenizer

from test_chat_templates import BOS, compile_template
from test_server import Server

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
    s = Server(bin_dir, tool_model, parallel=2)
    yield s
    s.stop()
    assert s.proc.returncode == 0, "qwen-server did not exit cleanly:\n" + "".join(s.log)


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
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


@pytest.mark.parametrize("extra,param", [
    ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}, "tool_choice"),
    ({"tool_choice": "auto"}, "tool_choice"),
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
