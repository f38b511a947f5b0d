"""Writes tests/data/jinja_cases.json: Jinja templates covering expressions, tests, filters,
methods, statements and whitespace control, with jinja2's rendering of each (transformers'
settings), which tests/unit/test_jinja.cpp requires our engine to reproduce byte for byte.
Run: python3 scripts/make_jinja_cases.py (needs jinja2)."""
import json
import pathlib

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.globals["strftime_now"] = lambda fmt: "unused"
env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
ctx = {"s": "  Hello, World  ", "n": 7, "f": 2.5, "xs": [3, 1, 2], "d": {"b": 1, "a": [True, None, "é"]},
       "msgs": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "t"}, {"role": "assistant", "content": "yo", "x": 1}],
       "empty": "", "none": None}
cases = [
 # expressions
 "{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 2 ** 10 }}|{{ 1 + 1.5 }}",
 "{{ 'a' ~ 1 ~ none ~ true }}|{{ 'ab' * 3 }}|{{ [1] + [2, 'x'] }}|{{ 10 - n }}",
 "{{ n > 5 and n < 10 }}|{{ not n }}|{{ none or 'dflt' }}|{{ 0 and 1 }}|{{ 'x' if n == 7 else 'y' }}|{{ 'x' if n == 8 }}",
 "{{ 'ell' in s }}|{{ 3 in xs }}|{{ 'b' in d }}|{{ 'z' not in d }}|{{ 1 == 1.0 }}|{{ 'a' < 'b' }}|{{ n != 7 }}",
 "{{ xs[0] }}|{{ xs[-1] }}|{{ xs[1:] }}|{{ xs[::-1] }}|{{ s[2:7] }}|{{ 'héllo'[1] }}|{{ 'héllo'[::-1] }}|{{ d.a[2] }}|{{ d['b'] }}|{{ d.zz }}|{{ xs[9] }}",
 "{{ d }}|{{ xs }}|{{ f }}|{{ none }}|{{ true }}|{{ {'k': 'it\\'s', 'q': \"a\\\"b\"} }}|{{ 1e20 }}|{{ 0.0001 }}|{{ 100000.0 }}",
 # tests
 "{{ n is defined }}|{{ zz is defined }}|{{ zz is undefined }}|{{ none is none }}|{{ s is string }}|{{ d is mapping }}|{{ xs is iterable }}|{{ n is number }}|{{ f is float }}|{{ n is integer }}|{{ n is odd }}|{{ n is divisibleby 7 }}|{{ n is not even }}|{{ true is sameas true }}|{{ 'ab' is lower }}",
 # filters
 "{{ s | trim }}|{{ s | upper }}|{{ s | lower | trim }}|{{ xs | length }}|{{ s | length }}|{{ zz | default('dv') }}|{{ empty | default('dv', true) }}|{{ xs | first }}|{{ xs | last }}|{{ xs | join('-') }}",
 "{{ msgs | map(attribute='role') | list }}|{{ msgs | selectattr('role', 'equalto', 'user') | list | length }}|{{ msgs | rejectattr('x') | map(attribute='content') | join(',') }}|{{ msgs | selectattr('x', 'defined') | list | length }}",
 "{{ d | tojson }}|{{ d | tojson(indent=2) }}|{{ 'x\"\\n\\u00e9' | tojson }}|{% for k, v in d | items %}{{ k }}{{ v }}{% endfor %}|{{ '42' | int + 1 }}|{{ 'x' | int }}|{{ 3 | string ~ 'a' }}|{{ 'a-b-c' | replace('-', '+') }}|{{ xs | reverse | list }}|{{ 'abc' | capitalize }}",
 # methods
 "{{ s.strip() }}|{{ s.lstrip() }}.|{{ s.rstrip() }}.|{{ 'xxhixx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ s.strip().startswith('Hell') }}|{{ 'f.py'.endswith(('.js', '.py')) }}|{{ 'aXa'.replace('a', 'b') }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}",
 "{{ d.items() | list | length }}|{{ d.keys() | list }}|{{ d.values() | list | length }}|{{ d.get('b') }}|{{ d.get('zz', 5) }}|{{ d.get('zz') }}",
 # statements
 "{% for x in xs %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ x }};{% endfor %}",
 "{% for x in [] %}a{% else %}empty{% endfor %}|{% for x in xs if x > 1 %}{{ loop.index }}:{{ x }} {% endfor %}|{% for k, v in d.items() %}{{ k }}={{ v }} {% endfor %}|{% for c in 'hé' %}[{{ c }}]{% endfor %}",
 "{% for x in xs %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 2 %}{% break %}{% endif %}{{ x }}{% endfor %}",
 "{% set ns = namespace(found=false, n=0) %}{% for m in msgs %}{% if m.role == 'tool' %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.found }} {{ ns.n }}",
 "{% set x = 1 %}{% for i in xs %}{% set x = i %}{% endfor %}{{ x }}|{% if true %}{% set y = 2 %}{% endif %}{{ y }}|{% set a, b = [1, 2] %}{{ a + b }}|{% set blk %}in {{ n }}{% endset %}{{ blk | upper }}",
 "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('a') }} {{ greet('b', '?') }} {{ greet(name='c', punct='.') }}",
 "{% if n == 1 %}one{% elif n == 7 %}seven{% else %}other{% endif %}|{{ range(3) | list }}|{{ range(1, 7, 2) | list }}|{{ dict(a=1) }}|{{ strftime_now is defined }}",
 # whitespace control
 "a\n  {% if true %}\n    b\n  {% endif %}\nc",
 "a  {{- ' b ' -}}  c\n{%- if true %} d {% endif -%}\n  e",
 "x\n    {# comment #}\ny  {%+ if true %}z{% endif +%}\nw",
 "  {% for x in xs %}\n  {{ x }}\n  {% endfor %}\nend\n",
 "line\r\nwin{{ 1 }}\r\n",
]
out = [[c, env.from_string(c).render(**ctx)] for c in cases]
path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "jinja_cases.json"
path.write_text(json.dumps({"context": ctx, "cases": out}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
