"""Our GPT-2 tokenizer against the real tiktoken, through `gpt2-worker tokenize`.

tiktoken cannot download its files here, so the reference "gpt2" encoding is built offline from
assets/gpt2.tiktoken. Every comparison goes through the built binary:
$GPT2_BUILD_DIR/worker/gpt2-worker tokenize (GPT2_BUILD_DIR defaults to <repo>/build);
GPT2_TOKENIZE_CMD overrides the whole command (e.g. a scratch driver) for development.

Run: .venv/bin/python -m pytest tests/reference/test_tokenizer.py
"""

import glob
import json
import os
import random
import shlex
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VOCAB = REPO / "assets" / "gpt2.tiktoken"
EOT = "<|endoftext|>"
DOCS_GLOB = "/usr/share/doc/python3*/html/_sources/**/*.txt"




def tokenize_command():
    override = os.environ.get("GPT2_TOKENIZE_CMD")
    if override:
        return shlex.split(override)
    build = Path(os.environ.get("GPT2_BUILD_DIR", REPO / "build"))
    return [str(build / "worker" / "gpt2-worker"), "tokenize"]


def run(flags, data: bytes, expect_rc=0):
    """Runs the tokenize command with `flags` on stdin `data`; returns (stdout, stderr)."""
    command = tokenize_command() + flags
    if not Path(command[0]).exists():
        pytest.fail(f"{command[0]} does not exist: build the project first (or set GPT2_BUILD_DIR)")
    env = dict(os.environ, GPT2_VOCAB=str(VOCAB))
    proc = subprocess.run(command, input=data, capture_output=True, env=env, timeout=600)
    assert proc.returncode == expect_rc, (
        f"{command} exited {proc.returncode}, expected {expect_rc}: {proc.stderr.decode(errors='replace')}"
    )
    return proc.stdout, proc.stderr


def ours_jsonl(texts, allow_special=False):
    """Ids of each text, all sent through one --jsonl invocation."""
    flags = ["--jsonl"] + (["--allow-special"] if allow_special else [])
    data = "".join(json.dumps(t) + "\n" for t in texts).encode()
    out, _ = run(flags, data)
    lines = out.decode().splitlines()
    assert len(lines) == len(texts)
    return [json.loads(line) for line in lines]


def assert_same_ids(enc, texts, ours, allow_special=False):
    for i, (text, got) in enumerate(zip(texts, ours)):
        want = enc.encode(text, allowed_special="all") if allow_special else enc.encode_ordinary(text)
        if got != want:
            at = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            raise AssertionError(
                f"text #{i} ({text[:60]!r}...): first difference at id {at}: "
                f"ours {got[at:at + 8]} vs tiktoken {want[at:at + 8]}"
            )


# --- real text ------------------------------------------------------------------------------------


def python_docs():
    """The Python documentation sources (Debian's python3-doc), each file once."""
    paths = sorted({os.path.realpath(p) for p in glob.glob(DOCS_GLOB, recursive=True)})
    return [(p, Path(p).read_bytes().decode("utf-8", errors="replace")) for p in paths]


def test_every_python_docs_file_matches_tiktoken(enc):
    docs = python_docs()
    if not docs:
        pytest.skip(f"no files match {DOCS_GLOB} (apt-get install python3-doc)")
    texts = [text for _, text in docs]
    ours = ours_jsonl(texts)
    for (path, text), got in zip(docs, ours):
        assert got == enc.encode_ordinary(text), f"ids differ from tiktoken on {path}"
    print(f"{len(docs)} files, {sum(len(t.encode()) for t in texts)} bytes identical")


def test_hello_world():
    out, _ = run([], b"Hello world")
    assert out == b"15496 995\n"
    out, _ = run(["--json"], b"Hello world")
    assert out == b"[15496, 995]\n"


# --- adversarial text -----------------------------------------------------------------------------

ADVERSARIAL = [
    "",
    " ",
    "\n",
    "Hello world",
    "It's, they'll, we've, you're, I'd, I'm, 's 't 'd 'm",
    "IT'S THEY'LL WE'VE YOU'RE I'D I'M 'S 'T 'LL 'Ve",
    "'''s''ll ''' 's's 'x",
    "👋🏽 👩‍👩‍👧‍👦 🏳️‍🌈 🧑🏿‍🚀 ❤️‍🔥 🇯🇵🇫🇷 *️⃣",
    "e\u0301 a\u0308\u0323 Z\u0351\u0352\u0357\u0358 \u0301\u0301\u0301 x\u20dd",
    "漢字かなカナ、日本語の文章。中文（简体）。한국어 텍스트.",
    "مرحبا بالعالم ١٢٣ — नमस्ते दुनिया १२३ — ไทย ๑๒๓",
    "\x00\x01\x02\x07\x08\x1b[31mred\x1b[0m\x7f\x1c\x1d\x1e\x1f",
    "a\u0085b\u0085\u0085 c \u0085",
    "a\u00a0b\u00a0\u00a0c \u00a0 d",
    "x\u3000y\u3000\u3000z\u2000\u2001\u2002\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u1680end",
    "\u180e\u200b\u200c\u200d\u2060\ufeff mongolian vowel separator and zero-width",
    "tab\tvt\x0bff\x0ccr\rlf\ncrlf\r\n",
    " " * 10_000 + "x",
    " " * 10_001,
    "\n" * 12_000 + "end",
    "\n \n \n" * 3000,
    "1" * 10_000,
    "0123456789" * 2000 + "x",
    "a" * 20_000,
    "ab" * 10_000,
    "!@#$%^&*()" * 1000,
    "\u00e9" * 10_000,
    "🙂" * 3000,
    "x \t \n  \n\n   y",
    "   leading and trailing   ",
    "numbers 3.14159 1,000,000 ½ ⅔ Ⅻ ① ²³ ١٢ 𝟘𝟙",
    "<|endoftext|>",
    "before<|endoftext|>after <|endoftext|><|endoftext|> end",
    "<|endoftext|", "|endoftext|>", "<|endoftext|><|",
    "\ufffd\ufffd \ufffd replacement",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒮𝒸𝓇𝒾𝓅𝓉 \U0001F600\U0010FFFF\U000E0001",
    "Kaktovik 𝋀𝋁𝋂 Garay 𐵊𐵋𐵌 Kawi 𑼄𑼅 Ext-H 𱍐𱍑 Ext-I 𮯰 (Unicode 15/16 letters and digits)",
]


def test_adversarial_strings_match_tiktoken(enc):
    assert_same_ids(enc, ADVERSARIAL, ours_jsonl(ADVERSARIAL))


def test_adversarial_strings_with_allow_special_match_tiktoken(enc):
    assert_same_ids(enc, ADVERSARIAL, ours_jsonl(ADVERSARIAL, allow_special=True), allow_special=True)


def test_endoftext_is_text_unless_allowed(enc):
    text = "a<|endoftext|>b"
    out, _ = run(["--json"], text.encode())
    assert json.loads(out) == enc.encode_ordinary(text)
    assert 50256 not in json.loads(out)
    out, _ = run(["--json", "--allow-special"], text.encode())
    assert json.loads(out) == enc.encode(text, allowed_special="all")
    assert json.loads(out).count(50256) == 1


def test_jsonl_accepts_objects_with_text_field(enc):
    data = b'{"text": "Hello world", "id": 7}\n\n"Hello"\n'
    out, _ = run(["--jsonl"], data)
    assert out.decode().splitlines() == [json.dumps(enc.encode_ordinary("Hello world")), "[15496]"]


def test_every_code_point_in_context_matches_tiktoken(enc):
    # Each code point next to letters, digits, punctuation and spaces, so that a difference in
    # the letter / number / space classes (another Unicode version, PCRE2's \s holding U+180E)
    # changes the pieces. GPT-2 has tokens that join a character's last byte to the first bytes
    # of 醒, 士 or 極, so only a split before those shows in the ids for most code points.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    texts = []
    for start in range(0, len(chars), 4096):
        texts.append("".join(f"a{c}b {c}1{c}.{c}醒{c}士{c}極 {c}\u3000x" for c in chars[start:start + 4096]))
    assert_same_ids(enc, texts, ours_jsonl(texts))


# --- invalid UTF-8 on stdin -----------------------------------------------------------------------

INVALID_UTF8 = [
    b"\x80",                                 # lone continuation byte
    b"abc\x80\x80\xbfdef",                   # run of continuation bytes
    b"\xc3",                                 # truncated 2-byte sequence at the end
    b"\xc3 x",                               # truncated, then ASCII
    b"\xe2\x82",                             # truncated 3-byte sequence
    b"\xe2\x82 \xe2",
    b"\xf0\x9f\x98",                         # truncated 4-byte sequence (emoji)
    b"\xf0\x9f\x98 smile",
    b"\xc0\xaf \xc1\xbf",                    # overlong '/' and DEL
    b"\xe0\x80\xaf \xe0\x9f\xbf",            # overlong 3-byte
    b"\xf0\x80\x80\xaf \xf0\x8f\xbf\xbf",    # overlong 4-byte
    b"\xed\xa0\x80 \xed\xbf\xbf \xed\xa0\xbd\xed\xb8\x80",  # UTF-8 encoded surrogates
    b"\xf4\x90\x80\x80 \xf5\x80\x80\x80",    # above U+10FFFF
    b"\xff \xfe \xff\xfe\xfd",
    b"\xfe\xff\x00h\x00i",                   # a UTF-16 BOM and text
    b"mixed \xe4\xb8\xad\xe6\x96 text \xf0\x9f\x91\x8b\xf0\x9f",
    b"\x00\x00 nul bytes \x00",
    bytes(range(256)),
    bytes(range(255, -1, -1)) * 4,
]


@pytest.mark.parametrize("raw", INVALID_UTF8, ids=lambda raw: raw[:12].hex())
def test_invalid_utf8_is_replaced_like_python(enc, raw):
    out, _ = run(["--json"], raw)
    assert json.loads(out) == enc.encode_ordinary(raw.decode("utf-8", errors="replace"))


def test_raw_stdin_default_output_matches(enc):
    raw = "Ünïcödé, 漢字 and 👩‍👩‍👧‍👦\n\tend\n".encode() + b"\xff"
    out, _ = run([], raw)
    assert out.endswith(b"\n")
    assert [int(x) for x in out.split()] == enc.encode_ordinary(raw.decode("utf-8", "replace"))


# --- decoding -------------------------------------------------------------------------------------


def test_decode_round_trip(enc):
    for text in ADVERSARIAL[:20] + ["👩‍👩‍👧‍👦 漢字 " * 50]:
        ids = enc.encode(text, allowed_special="all")
        out, _ = run(["--decode"], " ".join(map(str, ids)).encode())
        assert out == text.encode()
        out, _ = run(["--decode"], json.dumps(ids).encode())
        assert out == text.encode()


def test_decode_of_partial_characters_is_raw_bytes(enc):
    ids = enc.encode_ordinary("🙂")
    assert len(ids) > 1
    out, _ = run(["--decode"], str(ids[0]).encode())
    assert out == enc.decode_bytes(ids[:1])


def test_decode_jsonl_round_trip(enc):
    texts = ["Hello world", "漢字 🙂", "a<|endoftext|>b"]
    data = "".join(json.dumps(enc.encode(t, allowed_special="all")) + "\n" for t in texts).encode()
    out, _ = run(["--decode", "--jsonl"], data)
    assert [json.loads(line) for line in out.decode().splitlines()] == texts


def test_decode_rejects_bad_ids():
    _, err = run(["--decode"], b"15496\n995 50257\n", expect_rc=2)
    assert b"line 2" in err and b"50257" in err
    _, err = run(["--decode"], b"15496 hello", expect_rc=2)
    assert b"line 1" in err and b"hello" in err
    _, err = run(["--decode"], b"[15496, -1]", expect_rc=2)
    assert b"-1" in err


def test_jsonl_rejects_bad_lines():
    _, err = run(["--jsonl"], b'"fine"\n{not json}\n', expect_rc=2)
    assert b"line 2" in err
    _, err = run(["--jsonl"], b'"fine"\n"fine"\n[1, 2]\n', expect_rc=2)
    assert b"line 3" in err


# --- fuzz -----------------------------------------------------------------------------------------


def random_text(rng):
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " \t\n\r\x0b\x0c\u0085\u00a0\u1680\u2000\u2007\u2028\u2029\u202f\u205f\u3000\u180e\u200b",
        "'\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`",
        "'s'S'll'LL've're'd'm't",
        "éüñçøßÆŒ",
        "漢字日本語中文한국어",
        "مرحباनमस्ते",
        "\u0301\u0308\u0323\u200d\ufe0f",
        "🙂👋🏽👩🚀🇯🇵",
        "<|endoftext|>",
    ]
    parts = []
    for _ in range(rng.randint(1, 40)):
        kind = rng.random()
        if kind < 0.15:
            # any code point at all, surrogates excluded
            c = rng.randrange(0x110000 - 0x800)
            parts.append(chr(c + 0x800 if c >= 0xD800 else c))
        elif kind < 0.2:
            parts.append(rng.choice(pools[rng.randrange(len(pools))]) * rng.randint(2, 30))
        else:
            pool = pools[rng.randrange(len(pools))]
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
    return "".join(parts)


def test_random_unicode_fuzz_matches_tiktoken(enc):
    rng = random.Random(20240607)
    deadline = time.monotonic() + 30
    texts = []
    while len(texts) < 5000 and time.monotonic() < deadline:
        texts.append(random_text(rng))
    assert_same_ids(enc, texts, ours_jsonl(texts))
    assert_same_ids(enc, texts, ours_jsonl(texts, allow_special=True), allow_special=True)
