"""qwen-server constrained decoding (response_format json_object / json_schema, llama-server's
json_schema field) on the CPU backend, with a random-weight qwen2 model and the real Qwen
vocabulary (test_server.py's tiny model): a random model's logits are noise, so every structural
token it emits is the grammar's doing.

What is checked, and how strictly:
- 100 seeded random schemas (nested objects with required and optional properties, arrays with
  item bounds, enums, integers (some with minimum / maximum), numbers, booleans, nulls, bounded strings, anyOf, $ref into $defs),
  sampled at temperature 1: every answer finishes with "stop", validates with the `jsonschema`
  package and lists its properties in the schema's order (no tolerance: all 100 must);
- greedy, streaming and /v1/completions answers validate too; json_object answers parse as objects;
- max_tokens cutting the JSON short gives finish_reason "length";
- refused requests (an unsupported keyword, GBNF grammar, malformed response_format, a logit_bias
  ban) answer 400 naming the field and, for schema keywords, the keyword;
- a grammar that fails mid-generation ends its own request (500), not the one beside it.
"""
import concurrent.futures
import json
import random

import jsonschema
import pytest

from test_server import serve, tiny_model  # noqa: F401  (tiny_model is a fixture)

# The test schemas bound their strings, arrays and numbers, so answers stay far below this (the
# context is 1024 tokens); a stop before it is the grammar completing, not max_tokens.
MAX_TOKENS = 960
MSG = [{"role": "user", "content": "Answer in JSON."}]


@pytest.fixture(scope="module")
def server(bin_dir, tiny_model):  # noqa: F811
    yield from serve(bin_dir, tiny_model)


def random_schema(rng, depth=0):
    """A random schema of the supported keywords; strings, arrays and depth bounded so a random
    model's answer stays short."""
    kinds = ["string", "integer", "number", "boolean", "null", "enum", "typed_enum"]
    if depth < 2:
        kinds += ["object", "object", "array", "array", "anyOf"]
    kind = rng.choice(kinds)
    if kind == "string":
        hi = rng.randint(0, 8)
        return {"type": "string", "minLength": rng.randint(0, hi), "maxLength": hi}
    if kind == "integer" and rng.random() < 0.5:
        lo = rng.randint(-1000, 1000)
        return {"type": "integer", "minimum": lo, "maximum": lo + rng.randint(0, 3000)}
    if kind in ("integer", "number", "boolean", "null"):
        return {"type": kind}
    if kind == "enum":
        return {"enum": rng.sample(["red", "green", "blue", 1, 2.5, None, True, {"k": [1, "x"]}], rng.randint(1, 4))}
    if kind == "typed_enum":
        return {"type": "string", "enum": rng.sample(["small", "medium", "large", "é"], rng.randint(1, 3))}
    if kind == "array":
        lo = rng.randint(0, 2)
        return {"type": "array", "items": random_schema(rng, depth + 1), "minItems": lo,
                "maxItems": rng.randint(lo, 3)}
    if kind == "anyOf":
        return {"anyOf": [random_schema(rng, depth + 1) for _ in range(rng.randint(2, 3))]}
    return random_object(rng, depth)


def random_object(rng, depth):
    names = rng.sample(["id", "name", "tags", "size", "color", "count", "items", "meta", "ok", "x y"],
                       rng.randint(1, 4))
    props = {n: random_schema(rng, depth + 1) for n in names}
    return {"type": "object", "properties": props, "required": rng.sample(names, rng.randint(0, len(names))),
            "additionalProperties": False}


def schema_for(i):
    rng = random.Random(i)
    schema = random_object(rng, 0)
    if i % 5 == 0:  # a shared definition reached through $ref, twice
        schema = {"$defs": {"item": random_schema(rng, 1)}, "type": "object",
                  "properties": {"a": {"$ref": "#/$defs/item"},
                                 "b": {"type": "array", "items": {"$ref": "#/$defs/item"}, "maxItems": 2},
                                 "rest": schema},
                  "required": ["a", "b"], "additionalProperties": False}
    return schema


def post(server, body, path="/v1/chat/completions"):
    status, answer = server.request("POST", path, body)
    return status, answer


def test_100_random_schemas_validate(server):
    """All 100 answers (temperature 1, seeded) finish with "stop" and validate."""
    def one(i):
        schema = schema_for(i)
        body = {"messages": MSG, "max_tokens": MAX_TOKENS, "temperature": 1.0, "seed": i,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": f"s{i}", "schema": schema, "strict": True}}}
        status, answer = post(server, body)
        assert status == 200, answer
        choice = answer["choices"][0]
        text = choice["message"]["content"]
        assert choice["finish_reason"] == "stop", (i, text)
        value = json.loads(text)
        jsonschema.validate(value, schema)
        assert list(value) == [k for k in schema["properties"] if k in value], "properties out of schema order"
        return answer["usage"]["completion_tokens"]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        tokens = list(pool.map(one, range(100)))
    assert len(tokens) == 100 and min(tokens) >= 2


def test_greedy_stream_and_completions_validate(server):
    """temperature 0 (the sampler's argmax over the masked logits), a stream's concatenated deltas,
    /v1/completions, and llama-server's top-level json_schema all validate."""
    for i in range(100, 106):
        schema = schema_for(i)
        rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        status, a = post(server, {"messages": MSG, "max_tokens": MAX_TOKENS, "temperature": 0, "response_format": rf})
        assert status == 200, a
        jsonschema.validate(json.loads(a["choices"][0]["message"]["content"]), schema)

        status, c = post(server, {"prompt": "JSON:", "max_tokens": MAX_TOKENS, "seed": i, "json_schema": schema},
                         path="/v1/completions")
        assert status == 200, c
        assert c["choices"][0]["finish_reason"] == "stop"
        jsonschema.validate(json.loads(c["choices"][0]["text"]), schema)

        status, events = server.request("POST", "/v1/chat/completions",
                                        {"messages": MSG, "max_tokens": MAX_TOKENS, "seed": i, "stream": True,
                                         "response_format": rf})
        assert status == 200
        chunks = [json.loads(line[6:]) for line in events.splitlines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
        jsonschema.validate(json.loads(text), schema)


def test_json_object(server):
    """json_object: any object. Inside a free string a random model picks the closing quote about
    once in 150,000 tokens, so logit_bias (+9 on '"' and '}') makes strings and objects close
    sooner; the grammar still decides where they may appear. Each of 6 answers must finish ("stop")
    and parse as an object, and some must hold members."""
    quote = server.request("POST", "/tokenize", {"content": '"'})[1]["tokens"]
    brace = server.request("POST", "/tokenize", {"content": "}"})[1]["tokens"]
    assert len(quote) == 1 and len(brace) == 1
    objects = []
    for seed in range(6):
        status, a = post(server, {"messages": MSG, "max_tokens": MAX_TOKENS, "seed": seed,
                                  "logit_bias": {str(quote[0]): 9, str(brace[0]): 9},
                                  "response_format": {"type": "json_object"}})
        assert status == 200, a
        assert a["choices"][0]["finish_reason"] == "stop", a
        objects.append(json.loads(a["choices"][0]["message"]["content"]))
        assert isinstance(objects[-1], dict)
    assert any(objects)


def test_truncated_answer_reports_length(server):
    """max_tokens that cuts the JSON short: finish_reason "length", the text a prefix that does not
    parse (the client sees it is truncated)."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 8, "maxLength": 8}},
              "required": ["a"], "additionalProperties": False}
    status, a = post(server, {"messages": MSG, "max_tokens": 2, "seed": 1,
                              "response_format": {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}})
    assert status == 200, a
    assert a["choices"][0]["finish_reason"] == "length"
    assert a["choices"][0]["message"]["content"].startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(a["choices"][0]["message"]["content"])


def test_failing_grammar_ends_only_its_request(server):
    """A schema whose parses multiply past the recogniser's bound (1,000 overlapping anyOf
    branches, the bound is 256) fails its own request mid-generation (500 naming the cause) while a request running
    beside it finishes normally."""
    ambiguous = {"anyOf": [{"type": "string"} for _ in range(1000)]}
    normal = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
              "required": ["a"], "additionalProperties": False}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ok = pool.submit(post, server, {"messages": MSG, "max_tokens": MAX_TOKENS, "seed": 3, "json_schema": normal})
        bad = pool.submit(post, server, {"messages": MSG, "max_tokens": MAX_TOKENS, "json_schema": ambiguous})
        status, a = bad.result()
        assert status == 500 and "ambiguous" in a["error"]["message"], a
        status, a = ok.result()
        assert status == 200 and a["choices"][0]["finish_reason"] == "stop", a
        jsonschema.validate(json.loads(a["choices"][0]["message"]["content"]), normal)


REFUSED = [
    # (body extras, status code, param, words the message must contain)
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": {
        "type": "object", "properties": {"d": {"type": "string", "format": "date-time"}}}}}},
     "unsupported_value", "response_format.json_schema.schema", ["'format'", "#/properties/d"]),
    ({"json_schema": {"type": "object", "properties": {"n": {"type": "number", "minimum": 0}}}},
     "unsupported_value", "json_schema", ["'minimum'", "#/properties/n"]),
    ({"json_schema": {"type": "string", "pattern": "^[a-z]+$"}}, "unsupported_value", "json_schema", ["'pattern'"]),
    ({"json_schema": {"allOf": [{"type": "string"}]}}, "unsupported_value", "json_schema", ["'allOf'"]),
    ({"json_schema": {"type": "strng"}}, "invalid_value", "json_schema", ["'type'", "strng"]),
    ({"grammar": "root ::= \"{}\""}, "unsupported_value", "grammar", ["GBNF"]),
    ({"response_format": {"type": "json_object", "schema": {}}}, "unsupported_value", "response_format.schema", []),
    ({"response_format": {"type": "xml"}}, "invalid_value", "response_format.type", []),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}, "extra": 1}}}, "unsupported_value",
     "response_format.json_schema.extra", []),
    ({"response_format": {"type": "json_object"}, "json_schema": {}}, "invalid_value", "json_schema", []),
    ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "unsupported_value", "ignore_eos", []),
    ({"response_format": {"type": "json_object"}, "logit_bias": {"92": -100}}, "unsupported_value", "logit_bias",
     ["-100"]),
]


@pytest.mark.parametrize("extra,code,param,words", REFUSED, ids=[r[2] + ":" + r[1] for r in REFUSED])
def test_refused(server, extra, code, param, words):
    for path, base in [("/v1/chat/completions", {"messages": MSG}), ("/v1/completions", {"prompt": "x"})]:
        status, a = post(server, {**base, "max_tokens": 4, **extra}, path=path)
        assert status == 400, a
        err = a["error"]
        assert (err["code"], err["param"]) == (code, param), err
        for w in words:
            assert w in err["message"], err
