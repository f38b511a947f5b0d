"""Tokenizer parity: qwen-tokenize vs the PyPI `tokenizers` library on the real Qwen vocabulary.

Metric: exact equality of the id sequences on every corpus string (tolerance: zero mismatches),
and decode(encode(s)) == NFC(s) on every string (HF's own NFC normalizer as the reference).
The corpus (>= 5,000 strings, fixed seed) is generated below: hand-written hard cases, prose with
contractions in any case, code, numbers of every length, whitespace runs, many scripts, emoji
sequences, combining marks in NFC and NFD, Hangul jamo, random code points, very long words.
"""
import json
import pathlib
import random
import subprocess
import sys
import unicodedata

import gguf
import pytest
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gguf_vocab  # noqa: E402

SEED = 1234
MIN_CORPUS = 5000

HARD_CASES = [
    "", " ", "  ", "\n", "\r\n", "\t", " \n", "\n ", "a", "A", "1", "'", "''", "'s", " 's",
    "Hello world", "Hello  world", "Hello   world ", "Hello\tworld", "Hello\n\nworld", "Hello\r\n\r\nworld",
    "it's", "IT'S", "It'S", "they're", "THEY'RE", "we've", "WE'VE", "I'm", "I'M", "you'll", "YOU'LL",
    "he'd", "HE'D", "don't", "DON'T", "'ll've'd", "'sup", "'S'T'RE'VE'M'LL'D", "rock'n'roll", "x'ſx", "a'\u017f",
    "o'clock", "ma'am", "y'all", "'tis", "‘quoted’", "“double”", "l'été", "dell'anno",
    "trailing space ", "trailing spaces   ", "trailing tab\t", "trailing newline\n", "  leading", "\t\tleading tabs",
    "a \nb", "a  \n  b", "a\n\n\nb", "a \r\n b", "a\r\rb", "a\n \n b", "x\u00a0y", "x\u00a0\u00a0y", "x\u3000y",
    "x\u2003\u2003y", "x\u000by\u000cz", "x\u0085y", "x\u2028y\u2029z", "x\u001cy\u001fz", "x\u200by", "x\ufeffy",
    "12345678901234567890", "3.14159", "-42", "1,000,000", "1e-10", "0x1F", "٣٤٥", "१२३", "١٢٣abc", "Ⅻ", "½",
    "½¼¾", "²³", "①②③", "v1.2.3-beta+build.5", "2024-01-01T12:34:56Z", "$1,234.56", "50%", "#hashtag", "@user",
    "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Windows\\System32", "/usr/local/bin",
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_start|>user\nhi<|im_end|>", "<think>x</think>",
    "<tool_call>{}</tool_call>", "<|im_start|<|im_end|>>", "<<|im_end|>", "<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>",
    "<|vision_start|><|image_pad|><|vision_end|>", "< |im_end| >", "<|IM_END|>",
    "中文", "你好，世界！", "日本語のテキスト、カタカナとひらがな。", "한국어 텍스트입니다.", "العربية نص", "עברית טקסט",
    "हिन्दी पाठ", "ภาษาไทยข้อความ", "Русский текст", "Ελληνικά κείμενο", "Ǆǅǆ", "ﬁﬂﬀ", "Ⓐⓑ", "𝕳𝖊𝖑𝖑𝖔", "𝟏𝟐𝟑",
    "👋", "👋🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵🇺🇸", "1️⃣", "❤️", "🧑🏿‍💻", "😀😃😄😁", "a👍b",
    "e\u0301", "é", "e\u0301\u0301", "a\u0308\u0301", "a\u0301\u0308", "a\u0323\u0302", "a\u0302\u0323",
    "\u0301", "\u0301a", "Å", "\u212b", "\u2126", "\u1100\u1161", "\u1100\u1161\u11a8", "\uac00\u11a8", "\u1100\u1161x",
    "\u0915\u093c", "\u0958", "\u0f40\u0fb5", "\ufb2a", "\u1e9b\u0323", "\u00c7\u0301", "ḍ̇", "q\u0307\u0323",
    "\U0001d15e", "\u0344", "\u0340\u0341", "\u2329\u232a", "\u0387", "\u037e",
    "a" * 300, "ab" * 500, "x" * 5000, "9" * 200, "!" * 100, " " * 100, "\n" * 50, "\t" * 33, "中" * 400,
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b",
    "Supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "\uffff", "\U0010ffff", "\U000e0001", "\ue000", "\U000f0000", "\u0378", "\U0002ebf0", "\U00016d40", "\U0001ccf0",
    "\ufffd", "\u0000", "a\u0000b", "\u007f", "\u0080\u0081", "\u00ad",
]

ENGLISH = ("the of and to in is you that it he was for on are as with his they at be this have from or one "
           "had by word but not what all were we when your can said there use an each which she do how their if "
           "will up other about out many then them these so some her would make like him into time has look two "
           "more write go see number no way could people my than first water been call who oil its now find long "
           "down day did get come made may part Tokenizer Qwen GPU CUDA kernel attention matrix").split()
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "n't"]
PUNCT = list(".,;:!?-()[]{}\"'/\\@#$%^&*_+=<>|~`…—–«»¿¡")

SCRIPTS = {
    "zh": "我们的模型支持多种语言包括中文英文和代码这是一个测试句子用于检查分词器是否与参考实现完全一致。",
    "ja": "吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。カタカナ、ひらがな、漢字。",
    "ko": "다람쥐 헌 쳇바퀴에 타고파. 한국어 문장을 토큰화합니다. 가나다라마바사아자차카타파하",
    "ar": "هذا نص عربي لاختبار المقسم. الأرقام ١٢٣٤٥ والحروف مع التشكيل: مَرْحَبًا",
    "he": "זהו טקסט בעברית לבדיקה, עם ניקוד: שָׁלוֹם עוֹלָם",
    "hi": "यह हिंदी में एक परीक्षण वाक्य है। संख्याएँ १२३४५ और संयुक्ताक्षर क्ष त्र ज्ञ",
    "th": "นี่คือประโยคทดสอบภาษาไทย ไม่มีช่องว่างระหว่างคำ ๑๒๓",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю. Ёлка, ЁЖ.",
    "el": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Άλφα, Ώμέγα, ΐ ΰ.",
    "vi": "Tiếng Việt có dấu: Nguyễn Thị Minh Khai, phở bò, đường phố.",
    "de": "Größenwahn, Straße, Fußgängerübergänge ÄÖÜ äöü ß ẞ",
    "misc": "Ǳ ǲ ǳ ŉ ſ ﬅ İ ı K Å Ω µ ÿ Ÿ ꙮ ᚠᚢᚦ ᎠᎡᎢ ⴀⴁ ꯀꯁ 𐌰𐌱 𓀀𓀁",
}

CODE = [
    "def f(x):\n    return x * 2\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) {\n  sum += a[i] * b[i];\n}\n",
    "#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; return v.size(); }\n",
    "const x = async () => { await fetch('/api'); };\r\nconsole.log(`x=${x}`);\r\n",
    "fn main() -> Result<(), Box<dyn Error>> {\n    let v: Vec<u8> = vec![0xff; 16];\n    Ok(())\n}\n",
    "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"héllo\")\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 AND name LIKE '%o%' ORDER BY id DESC;",
    "<!DOCTYPE html>\n<html><body><div class=\"a\">&nbsp;&lt;x&gt;</div></body></html>",
    '{"key": [1, 2.5, -3e10, true, null], "nested": {"a": "b\\n"}}',
    "    if (x) {\n        y();\n    }    \n\n    \n",
    "$ ls -la | grep '^d' && echo \"done\" 2>&1 >/dev/null",
    "\\begin{equation} E = mc^2 \\end{equation} % comment",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares\n",
    "public static void main(String[] args) throws IOException {}",
    "__init__ __name__ == '__main__' self._private_var_123",
    "a+=1;b-=2;c*=3;d/=4;e%=5;f<<=1;g>>=2;h&=i|j^k;",
]

WS_PIECES = [" ", "  ", "\t", "\n", "\r\n", "\r", "\u00a0", "\u3000", "\u2003", "\u000b", "\u000c", "\u0085",
             "\u2028", " \n", "\n ", "\t\n", "\n\n", "   "]
EMOJI = ["😀", "👍🏻", "👍🏿", "👩‍🔬", "👨‍👨‍👦", "🏴‍☠️", "🇫🇷", "#️⃣", "☺️", "🤷‍♀️", "🫠", "🐈‍⬛", "🧔🏽‍♂️"]
COMBINING = [chr(c) for c in range(0x300, 0x370)] + ["\u0483", "\u0591", "\u05b0", "\u064b", "\u093c", "\u0e48",
                                                     "\u1ab0", "\u1dc0", "\u20d0", "\ufe20", "\u3099", "\u309a"]


def _random_cp(rng):
    """A random Unicode scalar value (no surrogates), weighted towards the planes in use."""
    r = rng.random()
    if r < 0.5:
        cp = rng.randrange(0x80, 0x10000)
    elif r < 0.8:
        cp = rng.randrange(0x10000, 0x40000)
    else:
        cp = rng.randrange(0x20, 0x110000)
    if 0xD800 <= cp <= 0xDFFF:
        cp = 0xE000
    return chr(cp)


def _prose(rng):
    words = []
    for _ in range(rng.randint(3, 30)):
        w = rng.choice(ENGLISH)
        if rng.random() < 0.15:
            w = w.upper() if rng.random() < 0.5 else w.capitalize()
        if rng.random() < 0.12:
            c = rng.choice(CONTRACTIONS)
            c = "".join(ch.upper() if rng.random() < 0.4 else ch for ch in c)
            w += c
        if rng.random() < 0.1:
            w += rng.choice(PUNCT)
        words.append(w)
    sep = rng.choice([" ", " ", " ", "  ", "\n", "\t"])
    return sep.join(words) + rng.choice(["", ".", "!", "?", " ", "\n", "...", " \n"])


def _number(rng, length):
    digits = "".join(rng.choice("0123456789") for _ in range(length))
    form = rng.randrange(6)
    if form == 1:
        digits = "-" + digits
    elif form == 2 and length > 1:
        digits = digits[: length // 2] + "." + digits[length // 2:]
    elif form == 3:
        digits = "x" + digits + "y"
    elif form == 4:
        digits = " " + digits + " "
    elif form == 5:
        digits = "{:,}".format(int(digits))
    return digits


def _script_sample(rng):
    text = rng.choice(list(SCRIPTS.values()))
    a = rng.randrange(len(text))
    b = rng.randrange(a, min(len(text), a + 60) + 1)
    s = text[a:b]
    if rng.random() < 0.3:
        s += rng.choice(WS_PIECES) + rng.choice(ENGLISH)
    return s


def _combining(rng):
    out = []
    for _ in range(rng.randint(1, 8)):
        out.append(rng.choice("aeiouAEIOUnczsgkαωиж가"))
        for _ in range(rng.randint(0, 3)):
            out.append(rng.choice(COMBINING))
        if rng.random() < 0.2:
            out.append(" ")
    s = "".join(out)
    form = rng.randrange(3)
    return unicodedata.normalize("NFD", s) if form == 0 else unicodedata.normalize("NFC", s) if form == 1 else s


def _hangul_jamo(rng):
    out = []
    for _ in range(rng.randint(1, 6)):
        out.append(chr(0x1100 + rng.randrange(19)) + chr(0x1161 + rng.randrange(21)))
        if rng.random() < 0.5:
            out.append(chr(0x11A8 + rng.randrange(27)))
    return "".join(out)


def _whitespace_mix(rng):
    parts = []
    for _ in range(rng.randint(1, 10)):
        parts.append(rng.choice(WS_PIECES) if rng.random() < 0.5 else rng.choice(ENGLISH + PUNCT + ["123", "中文"]))
    return "".join(parts)


def _random_cps(rng):
    return "".join(_random_cp(rng) if rng.random() < 0.7 else rng.choice("ab 1.\n") for _ in range(rng.randint(1, 20)))


def _long_word(rng):
    alphabet = rng.choice(["abcdefghijklmnopqrstuvwxyz", "0123456789", "中文日本語한국어", "!@#$%^&*", "аблд"])
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(100, 3000)))


def _code(rng):
    s = rng.choice(CODE)
    if rng.random() < 0.5:
        s = s.replace("    ", rng.choice(["\t", "  ", "        "]))
    if rng.random() < 0.3:
        s = s.replace("\n", "\r\n")
    return s


def _specials_in_text(rng):
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
                "<|fim_middle|>", "<|vision_pad|>"]
    return "".join(rng.choice(specials) if rng.random() < 0.4 else _prose(rng)[:20] for _ in range(rng.randint(1, 6)))


def _emoji(rng):
    return "".join(rng.choice(EMOJI) + (rng.choice(["", " ", "a", "1"])) for _ in range(rng.randint(1, 6)))


def build_corpus():
    rng = random.Random(SEED)
    corpus = list(HARD_CASES)
    corpus += [_number(rng, n) for n in range(1, 61) for _ in range(3)]
    generators = [(_prose, 900), (_code, 250), (_script_sample, 900), (_combining, 500), (_hangul_jamo, 150),
                  (_whitespace_mix, 600), (_random_cps, 700), (_long_word, 40), (_specials_in_text, 300),
                  (_emoji, 200)]
    for gen, count in generators:
        corpus += [gen(rng) for _ in range(count)]
    # Mixed documents: several kinds glued together.
    mixers = [g for g, _ in generators if g is not _long_word]
    for _ in range(400):
        corpus.append("".join(rng.choice(mixers)(rng) for _ in range(rng.randint(2, 5))))
    assert len(corpus) >= MIN_CORPUS
    return corpus


@pytest.fixture(scope="module")
def vocab_gguf(tmp_path_factory, tokenizer_json):
    return gguf_vocab.write_tokenizer_gguf(tmp_path_factory.mktemp("tok") / "qwen2-vocab.gguf", tokenizer_json,
                                           tokenizer_json.parent / "tokenizer_config.json")


@pytest.fixture(scope="module")
def corpus():
    return build_corpus()


def run_tool(bin_dir, args, lines):
    """Runs qwen-tokenize once over JSON Lines; returns the parsed output lines."""
    proc = subprocess.run([str(bin_dir / "qwen-tokenize"), *args], input="".join(lines),
                          capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert proc.returncode == 0, proc.stderr
    # split("\n"), not splitlines(): U+2028, U+0085 etc. may appear raw inside JSON strings.
    return [json.loads(line) for line in proc.stdout.split("\n") if line]


def encode_all(bin_dir, gguf_path, texts, special):
    lines = [json.dumps(t, ensure_ascii=False) + "\n" for t in texts]
    return run_tool(bin_dir, ["-m", str(gguf_path)] + (["--special"] if special else []), lines)


def assert_same(texts, ours, ref, label):
    assert len(ours) == len(ref)
    bad = [i for i in range(len(texts)) if ours[i] != ref[i]]
    detail = "\n".join(f"  {texts[i][:80]!r}\n    ours {ours[i][:40]}\n    hf   {ref[i][:40]}" for i in bad[:10])
    assert not bad, f"{label}: {len(bad)} of {len(texts)} strings differ from HF tokenizers:\n{detail}"


@pytest.mark.parametrize("special", [False, True], ids=["plain", "parse_special"])
def test_ids_match_hf(bin_dir, vocab_gguf, tokenizer_json, corpus, special):
    hf = Tokenizer.from_file(str(tokenizer_json))
    # HF always splits out every added token; encode_special_tokens=True makes the special ones
    # plain text, which is what parse_special=false means for control tokens.
    hf.encode_special_tokens = not special
    ref = [e.ids for e in hf.encode_batch(corpus, add_special_tokens=False)]
    ours = encode_all(bin_dir, vocab_gguf, corpus, special)
    assert_same(corpus, ours, ref, "parse_special" if special else "plain")


LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
# The other pre-tokenizers, as their models' tokenizer.json files configure them (no normalizer).
OTHER_PRE = {
    "llama-bpe": ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": False},
        BYTE_LEVEL]}, True),
    "gpt2": (dict(BYTE_LEVEL, use_regex=True), False),
    "smollm": ({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, dict(BYTE_LEVEL, use_regex=True)]}, False),
}


def add_digit_merges(tj):
    """Qwen has no multi-digit tokens, which would hide how a pre-tokenizer groups digits (\\p{N}
    vs \\p{N}{1,3} vs ' ?\\p{N}+'). Appends tokens and lowest-rank merges for every digit pair and
    triple and for space + digit, so digit grouping shows in the ids. The added tokens are dropped
    (HF renumbers added tokens that sit inside the grown vocabulary; they are tested above)."""
    tj["added_tokens"] = []
    vocab, merges = tj["model"]["vocab"], tj["model"]["merges"]
    next_id = max(vocab.values()) + 1
    digits = "0123456789"
    new = [(a, b) for a in digits for b in digits] + [(a + b, c) for a in digits for b in digits for c in digits]
    new += [("\u0120", d) for d in digits]  # "Ġ" is the byte-level space
    as_pairs = bool(merges) and not isinstance(merges[0], str)
    for left, right in new:
        if left + right not in vocab:
            vocab[left + right] = next_id
            next_id += 1
        merges.append([left, right] if as_pairs else f"{left} {right}")


@pytest.mark.parametrize("pre", sorted(OTHER_PRE))
def test_other_pretokenizers_match_hf(bin_dir, tokenizer_json, tmp_path, corpus, pre):
    """The Qwen vocabulary re-run with the llama-bpe / gpt2 / smollm pre-tokenizers on both sides."""
    pre_tokenizer, ignore_merges = OTHER_PRE[pre]
    tj = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    tj["normalizer"] = None
    tj["pre_tokenizer"] = pre_tokenizer
    tj["model"]["ignore_merges"] = ignore_merges  # Llama 3 takes whole-word vocabulary hits as is
    add_digit_merges(tj)
    variant = tmp_path / "tokenizer.json"
    variant.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")
    path = gguf_vocab.write_tokenizer_gguf(tmp_path / f"{pre}.gguf", variant, pre=pre)
    hf = Tokenizer.from_file(str(variant))
    hf.encode_special_tokens = True
    ref = [e.ids for e in hf.encode_batch(corpus, add_special_tokens=False)]
    assert_same(corpus, encode_all(bin_dir, path, corpus, special=False), ref, pre)


def test_decode_roundtrip_is_nfc(bin_dir, vocab_gguf, tokenizer_json, corpus):
    hf = Tokenizer.from_file(str(tokenizer_json))
    ids = encode_all(bin_dir, vocab_gguf, corpus, special=False)
    decoded = run_tool(bin_dir, ["-m", str(vocab_gguf), "--decode"], [json.dumps(x) + "\n" for x in ids])
    expected = [hf.normalizer.normalize_str(t) for t in corpus]
    bad = [i for i in range(len(corpus)) if decoded[i] != expected[i]]
    assert not bad, f"{len(bad)} strings do not round-trip, first: {corpus[bad[0]][:80]!r} -> {decoded[bad[0]][:80]!r}"


def test_hf_decode_of_our_ids(bin_dir, vocab_gguf, tokenizer_json, corpus):
    """Our decoder agrees with HF's decoder on the same ids (incl. special tokens)."""
    hf = Tokenizer.from_file(str(tokenizer_json))
    sample = corpus[::7]
    ids = encode_all(bin_dir, vocab_gguf, sample, special=True)
    ours = run_tool(bin_dir, ["-m", str(vocab_gguf), "--decode"], [json.dumps(x) + "\n" for x in ids])
    ref = [hf.decode(x, skip_special_tokens=False) for x in ids]
    bad = [i for i in range(len(sample)) if ours[i] != ref[i]]
    assert not bad, f"{len(bad)} decodes differ, first: {ours[bad[0]][:80]!r} vs {ref[bad[0]][:80]!r}"


def every_code_point_chunks():
    """All Unicode scalar values in order, 48 per string, with a letter, a digit and a space mixed
    in so every code point meets each class boundary (\\p{L}, \\p{N}, \\s tables, NFC data)."""
    cps = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    chunks = []
    for i in range(0, len(cps), 48):
        part = cps[i:i + 48]
        chunks.append("".join(chr(c) + ("a" if k % 3 == 0 else "1" if k % 3 == 1 else " ")
                              for k, c in enumerate(part)))
    return chunks


def test_every_code_point(bin_dir, vocab_gguf, tokenizer_json):
    """Ids and the NFC round trip on every code point (23,000 strings, one process each way)."""
    hf = Tokenizer.from_file(str(tokenizer_json))
    hf.encode_special_tokens = True
    chunks = every_code_point_chunks()
    ref = [e.ids for e in hf.encode_batch(chunks, add_special_tokens=False)]
    ours = encode_all(bin_dir, vocab_gguf, chunks, special=False)
    assert_same(chunks, ours, ref, "every code point")
    decoded = run_tool(bin_dir, ["-m", str(vocab_gguf), "--decode"], [json.dumps(x) + "\n" for x in ours])
    expected = [hf.normalizer.normalize_str(t) for t in chunks]
    bad = [i for i in range(len(chunks)) if decoded[i] != expected[i]]
    assert not bad, f"{len(bad)} chunks do not round-trip to NFC, first: {chunks[bad[0]]!r}"


def _write_vocab_gguf(path, tokens, types, merges, pre="qwen2", model="gpt2"):
    writer = gguf.GGUFWriter(str(path), arch="qwen2")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("case", ["types_short", "bad_merge", "unknown_pre", "unknown_model"])
def test_bad_tokenizer_metadata_is_a_clear_error(bin_dir, tmp_path, case):
    """Inconsistent tokenizer metadata: exit code 1 and a message naming the key (no crash)."""
    tokens = [chr(c) for c in byte_level_alphabet()] + ["ab"]
    types, merges, pre, model = [1] * len(tokens), ["a b"], "qwen2", "gpt2"
    expected = {"types_short": "token_type", "bad_merge": "merges[1]", "unknown_pre": "tokenizer.ggml.pre",
                "unknown_model": "tokenizer.ggml.model"}[case]
    if case == "types_short":
        types = types[:-1]
    elif case == "bad_merge":
        merges = merges + ["a zz"]
    elif case == "unknown_pre":
        pre = "no-such-pre"
    else:
        model = "bert"
    path = tmp_path / "bad.gguf"
    _write_vocab_gguf(path, tokens, types, merges, pre, model)
    proc = subprocess.run([str(bin_dir / "qwen-tokenize"), "-m", str(path)], input='"ab"\n',
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert expected in proc.stderr and str(path) in proc.stderr, proc.stderr


def byte_level_alphabet():
    """GPT-2's byte -> code point map, in byte order."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or b >= 174]
    extra = iter(range(256, 256 + 68))
    return [b if b in printable else next(extra) for b in range(256)]
