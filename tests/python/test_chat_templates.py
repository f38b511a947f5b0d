"""Chat rendering: qwen-tokenize --chat (our Jinja engine, src/tokenizer/jinja*.cpp, and the
built-in families forced by name) vs jinja2 rendering of the real template strings.

The reference renders each template the way transformers' apply_chat_template does (sandboxed
jinja2 environment, trim_blocks + lstrip_blocks, loopcontrols, raise_exception, tojson as
json.dumps(ensure_ascii=False), tools=None and documents=None unless given), with bos_token /
eos_token and the extra variables passed through. Conversations include tools, assistant
tool_calls (arguments as an object and as a string) and tool results. Templates: the Qwen3 one shipped in
the shared tokenizer_config.json, and the Qwen2, Qwen2.5, SmolLM2, plain ChatML, Llama 3, Llama 3.2,
Gemma 2 and Gemma 3 templates in chat_templates/. Metric: exact string equality of the rendered text for
every conversation x add_generation_prompt x variables (tolerance: none), the same error for
conversations a template rejects, and ids equal to HF tokenizers' encoding of the rendered text.
"""
import datetime
import functools
import json
import pathlib
import subprocess
import sys

import jinja2
import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gguf_vocab  # noqa: E402

TEMPLATE_DIR = pathlib.Path(__file__).parent / "chat_templates"
BOS = "<|endoftext|>"  # any vocabulary token will do: it shows where {{ bos_token }} lands
EOS = "<|im_end|>"

# template name -> (source file or None for the shared Qwen3 one, the built-in family that
# reproduces it for conversations without tools)
TEMPLATES = {
    "qwen3": (None, "qwen3"),
    "qwen2": ("qwen2.jinja", "qwen2"),
    "qwen2.5": ("qwen2.5.jinja", "qwen2.5"),
    "smollm2": ("smollm2.jinja", "qwen2"),
    "chatml": ("chatml.jinja", "chatml"),
    "llama3": ("llama3.jinja", "llama3"),
    "llama3.2": ("llama3.2.jinja", "llama3.2"),
    "gemma2": ("gemma2.jinja", "gemma"),
    "gemma3": ("gemma3.jinja", "gemma"),
}


def m(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = [
    [m("user", "Hello!")],
    [m("system", "You are terse."), m("user", "Hi")],
    [m("system", "Be nice."), m("user", "What is 2+2?"), m("assistant", "4"), m("user", "And 3+3?")],
    [m("user", "a"), m("assistant", "b"), m("user", "c"), m("assistant", "d")],
    [m("user", "  padded with spaces  \n\n"), m("assistant", "\t answer \u3000"), m("user", "\u001c x \u001f")],
    [m("user", "中文问题？"), m("assistant", "回答 👋🏽"), m("user", "e\u0301 NFD")],
    [m("user", ""), m("assistant", ""), m("user", "empty turns before")],
    [m("user", "q1"), m("assistant", "<think>\nold reasoning\n</think>\n\nold answer"), m("user", "q2"),
     m("assistant", "<think>new reasoning</think>new answer")],
    [m("user", "q"), m("assistant", "\n\n<think>\n\nr\n\n</think>\n\n\nanswer with </think> twice </think> tail")],
    [m("user", "weather?"), m("assistant", "calling"), m("tool", "{\"temp\": 20}"), m("tool", "{\"rain\": 0}"),
     m("assistant", "<think>tool said</think>It is 20 degrees.")],
    [m("user", "<tool_response>\nx\n</tool_response>"), m("assistant", "<think>a</think>b")],
    [m("user", "first"), m("system", "mid-conversation system"), m("user", "second")],
    [m("user", "literal <|im_start|> and <|im_end|> inside"), m("assistant", "<start_of_turn> <|eot_id|>")],
    [m("system", "only system")],
    [m("assistant", "assistant first"), m("user", "then user")],
    [m("user", "one"), m("user", "two in a row")],
    [m("system", "  sys  "), m("user", "call it"), m("tool", "line\n\"quoted\" \u00e9 \u0001"), m("assistant", "done")],
]
VARIABLES = [{}, {"enable_thinking": False}, {"enable_thinking": True}, {"date_string": "01 Jan 2042"}]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city, \"quoted\" é中",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
                   "required": ["city"]}}}
CLOCK = {"type": "function", "function": {"name": "now", "description": "", "parameters": {"type": "object", "properties": {}}}}


def call(name, arguments, call_id="call_1"):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# (conversation, variables): tool definitions, tool calls and results as OpenAI clients send them.
TOOL_CASES = [
    ([m("user", "Weather in Paris?")], {"tools": [WEATHER]}),
    ([m("system", "Use tools."), m("user", "Weather in Paris and time?")], {"tools": [WEATHER, CLOCK]}),
    ([m("user", "Weather in Paris?"),
      {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"city": "Paris", "days": 2})]},
      {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 20}"}], {"tools": [WEATHER]}),
    ([m("user", "Weather and time?"),
      {"role": "assistant", "content": "Let me check.", "tool_calls": [
          call("get_weather", {"city": "東京", "nested": {"a": [1, 2.5, None, True]}}), call("now", {}, "call_2")]},
      {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
      {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
      m("assistant", "Sunny at noon."), m("user", "thanks")], {"tools": [WEATHER, CLOCK]}),
    ([m("user", "q"), {"role": "assistant", "content": "", "tool_calls": [call("now", "{\"tz\": \"UTC\"}")]},
      {"role": "tool", "content": "noon"}], {}),
    ([m("user", "q"), {"role": "assistant", "content": "<think>plan</think>calling",
                       "tool_calls": [{"type": "function", "function": {"name": "now", "arguments": {}}}]},
      {"role": "tool", "content": "<b>noon</b>"}], {"tools": [CLOCK], "enable_thinking": False}),
]


class RaisedByTemplate(jinja2.exceptions.TemplateError):
    """raise_exception() in a template: its message must reach our error text too."""


def raise_exception(message):
    raise RaisedByTemplate(message)


@functools.lru_cache(maxsize=None)
def compile_template(source):
    """transformers' _compile_jinja_template, without the assistant-mask extension."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env.from_string(source)


def jinja_render(source, messages, add_generation_prompt, variables):
    variables = {"tools": None, "documents": None, **variables}
    try:
        return {"text": compile_template(source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                         bos_token=BOS, eos_token=EOS, **variables)}
    except RaisedByTemplate as e:
        return {"error": str(e)}
    except Exception as e:  # noqa: BLE001 - TypeError, UndefinedError...: ours must fail too
        return {"error": "", "python": repr(e)}


def template_source(name, tokenizer_json):
    file, _ = TEMPLATES[name]
    if file is None:
        config = json.loads((tokenizer_json.parent / "tokenizer_config.json").read_text(encoding="utf-8"))
        return config["chat_template"]
    return (TEMPLATE_DIR / file).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def hf(tokenizer_json):
    return Tokenizer.from_file(str(tokenizer_json))


def make_gguf(path, tokenizer_json, source):
    return gguf_vocab.write_tokenizer_gguf(path, tokenizer_json, tokenizer_json.parent / "tokenizer_config.json",
                                           chat_template=source, bos_token=BOS)


@pytest.fixture(scope="module")
def qwen3_gguf(tmp_path_factory, tokenizer_json):
    """The shared vocabulary with its own (Qwen3) template and BOS = <|endoftext|>."""
    return make_gguf(tmp_path_factory.mktemp("chat") / "chat.gguf", tokenizer_json,
                     template_source("qwen3", tokenizer_json))


def run_chat(bin_dir, gguf_path, requests, extra_args=()):
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
    proc = subprocess.run([str(bin_dir / "qwen-tokenize"), "-m", str(gguf_path), "--chat", "-", *extra_args],
                          input=lines, capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.split("\n") if line]
    assert len(out) == len(requests)
    return out


def cases():
    for conv in CONVERSATIONS:
        for gen in (True, False):
            for variables in VARIABLES:
                yield conv, gen, variables
    for conv, variables in TOOL_CASES:
        for gen in (True, False):
            yield conv, gen, variables


@pytest.mark.parametrize("form", ["escaped", "raw"])
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_render_matches_jinja(bin_dir, tokenizer_json, qwen3_gguf, hf, tmp_path, name, form):
    """form: newlines in the template's string literals as the escape \\n (as most configs write
    them) or as raw newlines (as e.g. SmolLM2's config does); both render the same in Jinja."""
    source = template_source(name, tokenizer_json)
    if form == "raw":
        source = source.replace("\\n", "\n")
    all_cases = list(cases())
    requests = [dict(variables, messages=conv, add_generation_prompt=gen) for conv, gen, variables in all_cases]
    # The shared Qwen3 template is read from the GGUF's tokenizer.chat_template; the others (and
    # the raw form) are passed as a template file.
    file_args = []
    if TEMPLATES[name][0] is not None or form == "raw":
        template_file = tmp_path / "template.jinja"
        template_file.write_text(source, encoding="utf-8")
        file_args = ["--chat-template-file", str(template_file)]
    ours = run_chat(bin_dir, qwen3_gguf, requests, file_args)
    mismatches = []
    for (conv, gen, variables), got in zip(all_cases, ours):
        want = jinja_render(source, conv, gen, variables)
        if "error" in want:
            # Same rejection, and our message carries the template's own text.
            if "error" not in got or want["error"] not in got["error"]:
                mismatches.append((conv, gen, variables, want, got))
            continue
        if got.get("text") != want["text"]:
            mismatches.append((conv, gen, variables, want, got))
            continue
        assert got["template"] == "jinja"
        assert got["ids"] == hf.encode(want["text"], add_special_tokens=False).ids
    detail = "\n".join(f"  {c} gen={g} vars={v}\n    jinja {w}\n    ours  {o}" for c, g, v, w, o in mismatches[:5])
    assert not mismatches, f"{name} ({form}): {len(mismatches)} of {len(all_cases)} renders differ:\n{detail}"


def test_custom_unsupported_and_forced_templates(bin_dir, tokenizer_json, tmp_path):
    """A custom template is run as written (equal to jinja2); one using a construct the engine does
    not implement is an error naming the template line and --chat-template; forcing a name renders
    that built-in family (equal to jinja2 on the family's template), which refuses tool calls."""
    custom = "{% for message in messages %}[{{ message['role'] | upper }}:{{ message['content'] }}]{% endfor %}"
    path = make_gguf(tmp_path / "custom.gguf", tokenizer_json, custom)
    conv = [m("user", "hi"), m("assistant", "yo")]
    got = run_chat(bin_dir, path, [conv])[0]
    assert got["template"] == "jinja" and got["text"] == jinja_render(custom, conv, True, {})["text"], got

    bad = make_gguf(tmp_path / "bad.gguf", tokenizer_json, "line one\n{% include 'other.jinja' %}")
    proc = subprocess.run([str(bin_dir / "qwen-tokenize"), "-m", str(bad), "--chat", "-"],
                          input=json.dumps(conv) + "\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0, proc.stdout
    assert "line 2" in proc.stderr and "include" in proc.stderr and "--chat-template" in proc.stderr, proc.stderr

    for forced, source_name in [("llama3", "llama3"), ("gemma", "gemma3"), ("qwen2", "qwen2"), ("chatml", "chatml")]:
        got = run_chat(bin_dir, path, [conv], ["--chat-template", forced])[0]
        want = jinja_render(template_source(source_name, tokenizer_json), conv, True, {})
        assert got["text"] == want["text"], (forced, got, want)
    tool_conv = TOOL_CASES[2][0]
    got = run_chat(bin_dir, path, [tool_conv], ["--chat-template", "qwen2.5"])[0]
    assert "tool_calls" in got.get("error", ""), got


def test_chat_file_and_vars(bin_dir, qwen3_gguf, tokenizer_json, tmp_path):
    """--chat FILE.json (a messages array) with --vars and --no-generation-prompt, as documented."""
    conv = [m("system", "sys"), m("user", "hi")]
    path = tmp_path / "conv.json"
    path.write_text(json.dumps(conv, indent=2), encoding="utf-8")
    source = template_source("qwen3", tokenizer_json)
    for args, gen, variables in [([], True, {}), (["--vars", '{"enable_thinking": false}'], True, {"enable_thinking": False}),
                                 (["--no-generation-prompt"], False, {})]:
        proc = subprocess.run([str(bin_dir / "qwen-tokenize"), "-m", str(qwen3_gguf), "--chat", str(path), *args],
                              capture_output=True, text=True, encoding="utf-8", timeout=60)
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout)
        assert got["text"] == jinja_render(source, conv, gen, variables)["text"], args
