"""What the fixture scripts share: where fixtures go and how they are written (GGUF files
included), running
transformers' ``generate`` for a case and checking that its decisions are robust (``Checked``),
and the candidate prompts cases are picked from (``Pools``, ``pick``).

A sibling module of the ``make_*.py`` scripts: ``python scripts/make_fixtures.py`` puts this
folder on ``sys.path``, so they import it directly. Import it after setting torch's threads.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import shutil
from pathlib import Path
from typing import Callable

import gguf
import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer
from transformers import LogitsProcessor

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

MARGIN_MIN = 1e-3  # greedy: smallest allowed top-1/top-2 gap of the processed scores
JITTER_EPS = 1e-4  # all cases: decisions must survive +-JITTER_EPS noise on every score (f64)
JITTER_RUNS = 3
MAX_TRIES = 60  # candidate inputs `pick` tries per case

PROMPTS = [
    "Translate English to German: The house is wonderful.",
    "Summarize: Every morning the baker wakes up early.",
    "Question: What is the capital of France?",
    "The quick brown fox",
    "Beam search keeps several hypotheses and returns the best ones.",
    "Rust is fast.",
    "My sister prefers red, but I like blue and green.",
    "Please bring your umbrella.",
    "Scientists observed the planet for ten years and found rivers.",
    "hello world",
    "Numbers like 7 and 2024 appear in the text of the meeting.",
    "A normal computer can run a small model.",
]

# The text every fixture tokenizer is trained on (BPE, deterministic).
CORPUS = """\
The quick brown fox jumps over the lazy dog.
A small model can still learn the shape of a language.
Translate English to German: The house is wonderful.
Summarize: The meeting was long and nobody agreed on anything.
In the beginning there was a simple idea: make text generation fast on a normal computer.
Numbers like 1, 2, 3, 42 and 2024 appear in text; so do questions? And exclamations!
She sells sea shells by the sea shore, and the shells she sells are surely sea shells.
Rust is a systems programming language that runs blazingly fast and prevents segfaults.
Python is often used for machine learning, data analysis, and quick experiments.
The weather today is sunny with a light breeze from the west, perfect for a walk.
Question: What is the capital of France? Answer: Paris is the capital of France.
Every morning the baker wakes up early to prepare fresh bread for the village.
Beam search keeps several hypotheses and returns the best ones by their score.
Greedy decoding always picks the most likely next token at every single step.
Attention lets every position look at every other position in the sequence.
The encoder reads the whole input; the decoder writes the output one token at a time.
Mountains, rivers, forests and oceans cover the surface of our beautiful planet.
My favourite colours are blue, green and yellow, but my sister prefers red.
Please remember to bring your umbrella because it might rain later this evening.
Scientists observed that the temperature increased by two degrees over ten years.
"""
TRAINING_LINES = [line for line in CORPUS.splitlines() if line.strip()]

TEXT_PROMPT_SETS = [
    ["Translate English to German: The house is wonderful.", "Question: What is the capital of France?"],
    ["Summarize: The meeting was long.", "hello world", "Rust is a systems programming language that runs fast."],
    ["The quick brown fox", "Please remember to bring your umbrella because it might rain."],
    ["My favourite colours are blue and green.", "Every morning the baker wakes up early."],
]

# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def fresh_fixture_dir(name: str) -> Path:
    """tests/fixtures/<name>, emptied: a fixture is always written whole, never over an old one."""
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def fixture_size(name: str) -> int:
    """Bytes of tests/fixtures/<name> (each fixture directory is kept under 500 KB)."""
    return sum(p.stat().st_size for p in (FIXTURES / name).iterdir())


def reference_versions() -> dict:
    """The reference libraries' versions a GGUF-making script records in its expected.json."""
    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__, "gguf": importlib.metadata.version("gguf")}


def write_json(path: Path, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_expected(path: Path, obj: dict) -> None:
    """expected.json: one case per line (readable diffs, small file)."""

    def one(x):
        return json.dumps(x, ensure_ascii=False, separators=(", ", ": "))

    parts = []
    for key, val in obj.items():
        if isinstance(val, list):
            body = ",\n".join("    " + one(c) for c in val)
            parts.append(f'  "{key}": [\n{body}\n  ]' if val else f'  "{key}": []')
        else:
            parts.append(f'  "{key}": {one(val)}')
    text = "{\n" + ",\n".join(parts) + "\n}\n"
    assert json.loads(text) == obj
    path.write_text(text, encoding="utf-8")


def strip_private(d: dict) -> dict:
    """A case without its ``_``-prefixed statistics (printed, not recorded)."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


# ---------------------------------------------------------------------------
# GGUF files as llama.cpp's converters write them (the calls' order is the files' key order)
# ---------------------------------------------------------------------------

# transformers' names of the tensors outside the layers, and llama.cpp's.
GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


def gguf_tensor_name(hf: str, layer_names: dict[str, str]) -> str:
    """llama.cpp's name of transformers' tensor `hf`: `layer_names` maps the part after
    `model.layers.<i>.` (an architecture's own table)."""
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    parts = hf.split(".")
    assert parts[:2] == ["model", "layers"], hf
    return f"blk.{parts[2]}." + layer_names[".".join(parts[3:])]


def gguf_writer(path: Path, arch: str, cfg) -> gguf.GGUFWriter:
    """A writer of a GGUF file of llama.cpp architecture `arch`, with the name and the sizes every
    decoder's metadata starts with (from the transformers config `cfg`)."""
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-random-{arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    return w


def add_gguf_tokenizer(w: gguf.GGUFWriter, tok: Tokenizer, bos: int, eos: int, pad: int) -> int:
    """The BPE tokenizer `tok` as llama.cpp's `gpt2` tokenizer keys hold it (added special tokens
    CONTROL, merges as "a b" strings), its BOS added; returns the number of tokens."""
    tj = json.loads(tok.to_str())
    tokens = [None] * len(tj["model"]["vocab"])
    for t, i in tj["model"]["vocab"].items():
        tokens[i] = t
    for added in tj["added_tokens"]:
        tokens[added["id"]] = added["content"]
    assert None not in tokens
    specials = {a["content"] for a in tj["added_tokens"] if a["special"]}
    types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(pad)
    w.add_add_bos_token(True)
    return len(tokens)


def add_gguf_tensor(w: gguf.GGUFWriter, name: str, a: np.ndarray, qtype) -> gguf.GGMLQuantizationType:
    """Adds `a`: a vector (norm weights) in F32, as llama.cpp's converters keep them; a matrix in
    `qtype`. Returns the type stored."""
    if a.ndim == 1:
        w.add_tensor(name, a.astype(np.float32))
        return gguf.GGMLQuantizationType.F32
    w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)
    return qtype


def close_gguf(w: gguf.GGUFWriter) -> None:
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------------------
# Running transformers
# ---------------------------------------------------------------------------


def cache_kwargs(model) -> dict:
    """transformers 5.x sizes generate()'s default cache from config.num_hidden_layers,
    which T5Config maps to num_layers (the ENCODER depth): with num_decoder_layers >
    num_layers generate() dies with an IndexError in cache_utils.  Pass a lazily
    grown cache instead (same DynamicCache layers, so the same computation)."""
    if model.config.is_encoder_decoder and model.config.num_decoder_layers > model.config.num_layers:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        return {"cache": EncoderDecoderCache(DynamicCache(), DynamicCache())}
    return {}


def gen_cfg_value(model, options: dict, key: str):
    return options[key] if key in options else getattr(model.generation_config, key)


def eos_ids_in_effect(model, options: dict) -> list[int]:
    eos = gen_cfg_value(model, options, "eos_token_id")
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def pad_left(rows: list[list[int]], pad: int):
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, n - len(r):] = torch.tensor(r)
        mask[i, n - len(r):] = 1
    return ids, mask


def pad_right(rows: list[list[int]], pad: int = 0):
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


class Jitter(LogitsProcessor):
    """Adds uniform noise in [-eps, eps] to the (processed) scores: a decision that
    survives it is not a near-tie that another implementation could flip."""

    def __init__(self, seed: int, eps: float):
        self.gen = torch.Generator().manual_seed(seed)
        self.eps = eps

    def __call__(self, input_ids, scores):
        noise = torch.rand(scores.shape, generator=self.gen, dtype=torch.float64).to(scores.dtype)
        return scores + (2 * noise - 1) * self.eps


# run_generate(model, rows, options, jitter) -> generate()'s output with `prompt_width` set: the
# columns of `sequences` before the first generated token (each script pads its own way).
RunGenerate = Callable[..., object]


def to_api_sequences(res, eos: list[int]) -> list[list[int]]:
    """The generated tokens of each row, cut right after the first EOS id in effect."""
    out = []
    for row in res.sequences[:, res.prompt_width:].tolist():
        for j, t in enumerate(row):
            if t in eos:
                row = row[: j + 1]
                break
        out.append(row)
    return out


def greedy_min_margin(res, eos: list[int]) -> float:
    """Smallest top1-top2 gap of the processed scores over unfinished rows."""
    seqs = res.sequences
    finished = torch.zeros(seqs.shape[0], dtype=torch.bool)
    best = math.inf
    for step, sc in enumerate(res.scores):
        top = torch.topk(sc.double(), 2, dim=-1).values
        gap = top[:, 0] - top[:, 1]
        for b in range(seqs.shape[0]):
            if not finished[b]:
                best = min(best, float(gap[b]))
        tok = seqs[:, res.prompt_width + step]
        finished |= torch.tensor([int(t) in eos for t in tok])
    return best


class Checked:
    """Runs a case in f32 and f64 (+ jitter), with `alone`, also each row alone; tracks the
    robustness statistics."""

    def __init__(self, m32, m64, run_generate: RunGenerate, alone: bool):
        self.m32, self.m64 = m32, m64
        self.run_generate = run_generate
        self.check_alone = alone

    def run(self, rows, options):
        opts = dict(options)
        r32 = self.run_generate(self.m32, rows, opts)
        r64 = self.run_generate(self.m64, rows, opts)
        same = r32.sequences.shape == r64.sequences.shape and bool(torch.equal(r32.sequences, r64.sequences))
        # f64 with tiny noise on every score, a few times: decisions must not move
        stable = same
        for seed in range(JITTER_RUNS):
            if not stable:
                break
            rj = self.run_generate(self.m64, rows, opts, Jitter(seed, JITTER_EPS))
            stable = rj.sequences.shape == r32.sequences.shape and bool(torch.equal(rj.sequences, r32.sequences))
        eos = eos_ids_in_effect(self.m32, opts)
        nb = opts.get("num_beams", self.m32.generation_config.num_beams or 1)
        margin = greedy_min_margin(r32, eos) if nb == 1 else None
        seqs = to_api_sequences(r32, eos)
        alone = True
        if self.check_alone and same and stable and len(rows) > 1:
            n = opts.get("num_return_sequences", 1)
            for i, r in enumerate(rows):
                ra = self.run_generate(self.m32, [r], opts)
                if to_api_sequences(ra, eos) != seqs[i * n:(i + 1) * n]:
                    alone = False
                    break
        return dict(same=same, stable=stable, alone=alone, margin=margin, sequences=seqs, eos=eos,
                    num_beams=nb, raw=r32)

    @staticmethod
    def ok(r):
        return r["same"] and r["stable"] and r["alone"] and (r["margin"] is None or r["margin"] > MARGIN_MIN)


def n_eos_finished(r, max_new):
    """Rows that end with an EOS before max_new_tokens was reached."""
    return sum(1 for s in r["sequences"] if s and s[-1] in r["eos"] and len(s) < max_new)


# ---------------------------------------------------------------------------
# Candidate inputs
# ---------------------------------------------------------------------------


class Pools:
    """Candidate prompts, in a fixed order: the tokenized PROMPTS, then random rows of ordinary
    tokens (``rand_row``, each script's own). ``k`` numbers the candidates."""

    medium_base = 10  # random medium rows: medium_base + k % 9 tokens
    long_base, long_spread = 30, 31  # long rows: long_base + 7k % long_spread tokens
    max_len: float = math.inf  # longest prompt a case may use

    def __init__(self, tok: Tokenizer, seed: int):
        self.rng = np.random.RandomState(seed)
        self.vocab = tok.get_vocab_size()
        self.sent = [tok.encode(p).ids for p in PROMPTS]

    def rand_row(self, n: int) -> list[int]:
        raise NotImplementedError

    def short(self, k):
        return self.rand_row(3 + k % 4)

    def medium(self, k):
        return self.sent[k % len(self.sent)] if k < len(self.sent) else self.rand_row(self.medium_base + k % 9)

    def long(self, k):
        return self.rand_row(self.long_base + (7 * k) % self.long_spread)


def rows_for(kind: str, pools: Pools, k: int) -> list[list[int]] | None:
    """Candidate ``k`` of a batch kind, or None where it does not qualify."""
    if kind == "single":
        rows = [pools.medium(k)]
    elif kind == "single_long":
        rows = [pools.long(k)]
    elif kind == "ragged2":
        rows = [pools.medium(k), pools.long(k)]
    elif kind == "ragged3":
        rows = [pools.long(k), pools.short(k), pools.medium(k)]
    else:
        raise ValueError(kind)
    if len({len(r) for r in rows}) != len(rows):
        return None  # ragged batches must really be ragged
    if max(len(r) for r in rows) > pools.max_len:
        return None  # prompt + new tokens must fit (gpt2: n_positions)
    return rows


def pick(checker: Checked, pools: Pools, kind: str, options: dict, want=None, prefer=None, start=0):
    """First candidate input (deterministic order) that passes the robustness
    checks and the case-specific predicate `want(result)`.  `prefer` is a
    softer predicate: the first candidate satisfying it is taken if there is
    one, else the first that passes `want`."""
    fallback = None
    for k in range(start, start + MAX_TRIES):
        rows = rows_for(kind, pools, k)
        if rows is None:
            continue
        r = checker.run(rows, options)
        if Checked.ok(r) and (want is None or want(r)):
            if prefer is None or prefer(r):
                return rows, r
            if fallback is None:
                fallback = (rows, r)
    if fallback is not None:
        return fallback
    raise RuntimeError(
        f"{checker.m32.name_or_path}: no candidate input for {kind} {options} passed the checks; change seeds/scales"
    )
