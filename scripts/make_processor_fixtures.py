#!/usr/bin/env python3
"""Generate the logits-processor fixtures under ``tests/fixtures/processors/``.

What it makes
-------------
Deterministic score arrays and token histories, and what transformers' own logits processors and
warpers make of them, for every processor fasttx implements (``fasttx.generation.processors``):

* one processor at a time, built directly from transformers' classes with the arguments
  ``_get_logits_processor`` would give them: ``RepetitionPenaltyLogitsProcessor`` (penalty 1.3 /
  0.8; ``prompt_ignore_length`` = each row's left padding as a 1-D tensor, which is what
  ``_get_logits_processor`` passes in 5.x: ``(attention_mask != 0).argmax(1)``, or None),
  ``NoRepeatNGramLogitsProcessor`` (n = 1..4), ``MinLengthLogitsProcessor`` and
  ``MinNewTokensLengthLogitsProcessor`` (one / several EOS ids, thresholds on both sides of the
  current length), ``TemperatureLogitsWarper`` (0.5 / 1.3), ``TopKLogitsWarper`` (k = 1 / 3 /
  vocab + 5), ``TopPLogitsWarper`` (0.3 / 0.9 / 1.0), ``MinPLogitsWarper`` (0.05 / 0.5), the
  warpers with ``min_tokens_to_keep`` 1 and 2;
* whole processor lists for GenerationConfig options ("generate" cases): the list is the one a real
  (tiny, random) model's ``generate`` builds, captured from ``_get_logits_processor`` after
  ``generate`` has prepared the config, the special tokens, the lengths (``min_new_tokens``
  overriding ``min_length``) and the expanded batch (``num_beams`` / ``num_return_sequences``);
  so order, defaults (``top_k`` 50) and ``min_tokens_to_keep`` (``len(eos) + 1`` for beam
  sampling) are transformers' own. Decoder-only (Llama) and encoder-decoder (T5) models.

Inputs: float32 ``[rows, vocab]`` scores, vocab 64..200 (plus one 4096-wide set, below): plain
normal logits, values on a coarse grid (ties, including at the top and a row of all-equal scores),
rows with many ``-inf`` (only one / two / three finite tokens), log-probabilities (beam search),
peaked rows, near-flat rows. Histories are rectangular as in transformers' ``input_ids``: a
left-padded prompt (pad id 0; one row holds a genuine token 0 in its prompt) then the generated
tokens, drawn from small alphabets so that n-grams repeat, the last tokens repeating an earlier
n-gram in most rows. "paired" histories give rows 2i and 2i+1 the same prompt (two beams or two
sampled sequences of one input).

``wide`` (2 x 4096, near-flat): rows found by a deterministic search on which transformers'
``TopPLogitsWarper(0.1)`` keeps another set of tokens than a float32 running sum of the sorted
probabilities would: torch's CPU ``cumsum`` accumulates float32 in double.

Ties. ``torch.sort`` (unstable) and ``torch.topk`` do not specify the order of equal values, so
where a tie straddles a warper's cut (top-p's cumulative threshold, min-p's ``min_tokens_to_keep``
best) which of the tied tokens transformers removes is an accident of the sort. Each warper case
is therefore also run on several column permutations of its input; tokens whose fate changes with
the permutation are listed as ``ambiguous`` (row, token, value when kept), and the script checks
that the number of them removed per row does not change. Tests compare everything else exactly
and, within an ambiguous group, the count removed and the kept values.

Files::

    cases.json   {"versions", "histories": {name: {"ids", "padding", "prompt_len"}},
                  "cases": [{"name", "kind", "scores", "history", "params" | "options",
                             "model", "model_defaults", "hf", "ambiguous"}]}
    arrays.npz   "scores/<set>" float32 inputs, "expected/<case name>" float32 outputs

``kind`` is the fasttx processor (``repetition_penalty``, ``no_repeat_ngram``, ``min_length``,
``min_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``min_p``) with ``params``, or
``generate`` with ``options`` (GenerationConfig names; ``num_beams > 1`` means the list was built
for beam search), ``model`` (``decoder-only`` / ``encoder-decoder``) and the model's generation
config defaults. ``hf`` names transformers' processors in the order they ran.

Made with (pip install torch transformers numpy): torch 2.15.0, transformers 5.24.0,
numpy 2.4.6 (the exact versions are also recorded in cases.json).

Usage:  python scripts/make_processor_fixtures.py      (re-runnable, deterministic)
"""

from __future__ import annotations

import json

import numpy as np
import torch
import transformers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    T5Config,
    T5ForConditionalGeneration,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from fixturelib import FIXTURES

OUT = FIXTURES / "processors"
PAD = 0
PERMUTATIONS = 16  # column permutations tried per warper case to find tie-order-dependent tokens


# --------------------------------------------------------------------------------------------
# Inputs


def score_sets(rng: np.random.Generator) -> dict[str, np.ndarray]:
    sets: dict[str, np.ndarray] = {}

    sets["plain"] = (rng.standard_normal((6, 64)) * 2.5).astype(np.float32)
    sets["plain"][0, :5] = 0.0  # exact zeros (repetition penalty: neither branch of `s < 0` differs)

    ties = np.round(rng.standard_normal((6, 97)) * 2.0 * 2) / 2  # a 0.5 grid: many equal values
    ties[2, [3, 40, 77]] = ties[2].max() + 1.0  # three-way tie at the top
    ties[3, [10, 11]] = ties[3].max() + 0.5  # two-way tie at the top
    ties[5, :] = 1.5  # every token equal
    sets["ties"] = ties.astype(np.float32)

    ni = (rng.standard_normal((6, 150)) * 3.0).astype(np.float32)
    ni[rng.random(ni.shape) < 0.35] = -np.inf
    ni[0, :] = -np.inf
    ni[0, 17] = 2.0  # a single finite token
    ni[1, :] = -np.inf
    ni[1, [4, 120]] = [1.0, -0.5]  # two finite tokens
    ni[2, :] = -np.inf
    ni[2, [9, 60, 61]] = [0.25, 0.25, -1.0]  # three, two of them tied
    sets["neginf"] = ni

    lp = torch.log_softmax(torch.from_numpy((rng.standard_normal((6, 120)) * 2.0).astype(np.float32)), -1).numpy()
    lp[1, rng.choice(120, 30, replace=False)] = -np.inf  # as after a ban
    sets["logprobs"] = lp.astype(np.float32)

    pk = (rng.standard_normal((6, 80)) * 1.0).astype(np.float32)
    for r in range(6):
        top = rng.choice(80, 2, replace=False)
        pk[r, top[0]] = 8.0 + r * 0.5  # one dominant token ...
        pk[r, top[1]] = 7.0 + r * 0.3  # ... and a runner-up
    pk[5, 11] = pk[5].max()  # a tie at the top
    sets["peaked"] = pk

    sets["flat"] = (rng.standard_normal((6, 200)) * 0.05).astype(np.float32)
    return sets


def wide_rows(rng: np.random.Generator, p: float = 0.1, want: int = 2) -> np.ndarray:
    """Near-flat 4096-wide rows on which top-p with a float32 running sum disagrees with torch."""
    found = []
    for _ in range(5000):
        s = (rng.standard_normal(4096) * 0.3).astype(np.float32)
        ref = TopPLogitsWarper(p)(None, torch.from_numpy(s[None].copy())).numpy()[0]
        order = np.argsort(s, kind="stable")
        ss = s[order]
        e = np.exp(ss - ss.max(), dtype=np.float32)
        cum32 = np.cumsum(e / e.sum(), dtype=np.float32)
        removed32 = int((cum32 <= np.float32(1 - p)).sum())
        if removed32 != int(np.isneginf(ref).sum()):
            found.append(s)
            if len(found) == want:
                return np.stack(found)
    raise RuntimeError("no float32-sensitive top-p row found")


def make_history(rng: np.random.Generator, rows: int, vocab: int, prompt_len: int, new: int, paired: bool) -> dict:
    """Left-padded prompts (pad 0) of width ``prompt_len`` followed by ``new`` generated tokens."""
    ids, padding = [], []
    prompt: list[int] = []
    pad = 0
    alphabet = np.arange(3, 8)
    for r in range(rows):
        if not paired or r % 2 == 0:
            plen = prompt_len if r == 0 else int(rng.integers(2, prompt_len + 1))
            alphabet = rng.choice(np.arange(1, min(vocab, 48)), size=5, replace=False)
            body = [int(t) for t in rng.choice(alphabet, size=plen)]
            if r == 2 or (paired and r == 4):
                body[0] = 0  # a genuine token 0 (the pad id) inside the prompt: it is penalised
            pad = prompt_len - plen
            prompt = [PAD] * pad + body
        seq = prompt + [int(t) for t in rng.choice(alphabet, size=new)]
        if r % 3 != 2:  # end on a repeat of an earlier bigram: 2- and 3-gram bans trigger
            i = int(rng.integers(pad, len(seq) - 3))
            seq[-2:] = seq[i : i + 2]
        ids.append(seq)
        padding.append(pad)
    return {"ids": ids, "padding": padding, "prompt_len": prompt_len}


# --------------------------------------------------------------------------------------------
# transformers side


def hf_names(procs) -> list[str]:
    out = []
    for p in procs:
        name = type(p).__name__
        attrs = {
            "RepetitionPenaltyLogitsProcessor": ["penalty", "prompt_ignore_length"],
            "NoRepeatNGramLogitsProcessor": ["ngram_size"],
            "MinLengthLogitsProcessor": ["min_length", "eos_token_id"],
            "MinNewTokensLengthLogitsProcessor": ["prompt_length_to_skip", "min_new_tokens", "eos_token_id"],
            "TemperatureLogitsWarper": ["temperature"],
            "TopKLogitsWarper": ["top_k", "min_tokens_to_keep"],
            "TopPLogitsWarper": ["top_p", "min_tokens_to_keep"],
            "MinPLogitsWarper": ["min_p", "min_tokens_to_keep"],
        }.get(name)
        if attrs is None:
            raise RuntimeError(f"transformers built {name}, which fasttx does not implement")
        args = []
        for a in attrs:
            v = getattr(p, a)
            if isinstance(v, torch.Tensor):
                v = v.tolist()
            args.append(f"{a}={v}")
        out.append(f"{name}({', '.join(args)})")
    return out


WARPERS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper)
ORDER_DEPENDENT = (TopPLogitsWarper, MinPLogitsWarper)


def run_hf(procs, history: dict, scores: np.ndarray) -> tuple[np.ndarray, list]:
    """Applies ``procs`` as ``_sample`` / ``_beam_search`` do, and finds the tie-order-dependent
    tokens (see the module docstring)."""
    ids = torch.tensor(history["ids"], dtype=torch.long)
    expected = LogitsProcessorList(procs)(ids, torch.from_numpy(scores.copy())).numpy()

    first = next((i for i, p in enumerate(procs) if isinstance(p, ORDER_DEPENDENT)), None)
    if first is None:
        return expected, []
    rest = procs[first:]
    assert all(isinstance(p, WARPERS) for p in rest), "history-dependent processor after a warper"
    mid = LogitsProcessorList(procs[:first])(ids, torch.from_numpy(scores.copy())).numpy()
    # Value of each token when kept: the sort-based warpers only remove; temperature rescales.
    kept_value = mid.copy()
    for p in rest:
        if isinstance(p, TemperatureLogitsWarper):
            kept_value = p(None, torch.from_numpy(kept_value)).numpy()
    prng = np.random.default_rng(1234)
    vocab = scores.shape[1]
    perms = [np.arange(vocab)[::-1]] + [prng.permutation(vocab) for _ in range(PERMUTATIONS - 1)]
    removed = np.isneginf(expected)
    differs = np.zeros_like(removed)
    for perm in perms:
        out = LogitsProcessorList(rest)(None, torch.from_numpy(mid[:, perm].copy())).numpy()
        back = np.empty_like(out)
        back[:, perm] = out
        r = np.isneginf(back)
        assert (r.sum(1) == removed.sum(1)).all(), "tie order changed how many tokens are removed"
        differs |= r != removed
    # A group of equal scores with removed and kept members: which members is the sort's accident
    # (16 permutations need not show every member of a large group).
    for row in range(scores.shape[0]):
        for value in np.unique(mid[row][np.isfinite(mid[row])]):
            group = mid[row] == value
            if removed[row][group].any() and not removed[row][group].all():
                differs[row] |= group
    ambiguous = []
    for row, tok in zip(*np.nonzero(differs)):
        ambiguous.append([int(row), int(tok), float(kept_value[row, tok])])
    return expected, ambiguous


def tiny_decoder():
    cfg = LlamaConfig(
        vocab_size=256, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def tiny_t5():
    cfg = T5Config(
        vocab_size=256, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    return T5ForConditionalGeneration(cfg).eval()


class _Captured(Exception):
    pass


def captured_processors(model, history: dict, options: dict, copies: int):
    """The LogitsProcessorList ``model.generate(**options)`` builds for the prompts of ``history``
    (one input per ``copies`` rows), taken from ``_get_logits_processor`` before any decoding."""
    box = {}
    original = model._get_logits_processor

    def spy(*args, **kwargs):
        box["procs"] = original(*args, **kwargs)
        raise _Captured

    rows = history["ids"][::copies]
    if model.config.is_encoder_decoder:
        inputs = dict(input_ids=torch.tensor([[5, 6, 7, 1]] * len(rows)))
    else:
        p0 = history["prompt_len"]
        ids = torch.tensor([r[:p0] for r in rows], dtype=torch.long)
        pads = history["padding"][::copies]
        mask = torch.tensor([[0] * p + [1] * (p0 - p) for p in pads], dtype=torch.long)
        inputs = dict(input_ids=ids, attention_mask=mask)
    model._get_logits_processor = spy
    try:
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=40, **options)
    except _Captured:
        pass
    finally:
        del model._get_logits_processor
    return list(box["procs"])


# --------------------------------------------------------------------------------------------
# Cases


def single_cases(sets: dict, histories: dict) -> list[dict]:
    """One case per transformers processor instance: name, kind, params, score set, history."""
    out = []

    def add(sname, hname, kind, params, proc):
        label = "_".join(f"{k}{v}" for k, v in params.items() if k not in ("eos", "padding"))
        if "eos" in params:
            label += "_eos" + "-".join(map(str, np.atleast_1d(params["eos"])))
        if hname != f"{sname}_solo":
            label += f"_{hname}"
        name = f"{sname}/{kind}_{label}"
        out.append(dict(name=name, kind=kind, params=params, scores=sname, history=hname, procs=[proc]))

    for sname in sets:
        if sname == "wide":
            continue
        vocab = sets[sname].shape[1]
        hname = f"{sname}_solo"
        h = histories[hname]
        L, p0 = len(h["ids"][0]), h["prompt_len"]
        if sname in ("plain", "ties", "neginf", "logprobs"):
            for pen in (1.3, 0.8):
                add(sname, hname, "repetition_penalty", {"penalty": pen, "ignore_padding": True},
                    RepetitionPenaltyLogitsProcessor(pen, prompt_ignore_length=torch.tensor(h["padding"])))
                add(sname, hname, "repetition_penalty", {"penalty": pen, "ignore_padding": False},
                    RepetitionPenaltyLogitsProcessor(pen))  # fmt: skip
            for n in (1, 2, 3, 4):
                add(sname, hname, "no_repeat_ngram", {"n": n}, NoRepeatNGramLogitsProcessor(n))
            for eos in (2, [2, 5], [5, 7, 11]):
                for m in (L, L + 1):  # EOS allowed at length L; suppressed below L + 1
                    add(sname, hname, "min_length", {"min_length": m, "eos": eos}, MinLengthLogitsProcessor(m, eos))
            for m in (L - p0, L - p0 + 1):
                add(sname, hname, "min_new_tokens", {"min_new_tokens": m, "eos": [2, 5]},
                    MinNewTokensLengthLogitsProcessor(p0, m, [2, 5]))  # fmt: skip
        for t in (0.5, 1.3):
            add(sname, hname, "temperature", {"t": t}, TemperatureLogitsWarper(t))
        for k in (1, 3, vocab + 5):
            for keep in (1, 2):
                add(sname, hname, "top_k", {"k": k, "min_keep": keep}, TopKLogitsWarper(k, min_tokens_to_keep=keep))
        for p in (0.3, 0.9, 1.0):
            for keep in (1, 2):
                add(sname, hname, "top_p", {"p": p, "min_keep": keep}, TopPLogitsWarper(p, min_tokens_to_keep=keep))
        for p in (0.05, 0.5):
            for keep in (1, 2):
                add(sname, hname, "min_p", {"p": p, "min_keep": keep}, MinPLogitsWarper(p, min_tokens_to_keep=keep))

    # Ids past the scores' vocabulary (an embedding larger than the head): transformers ignores them.
    h = histories["beyond_vocab"]
    add("plain", "beyond_vocab", "repetition_penalty", {"penalty": 1.3, "ignore_padding": True},
        RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=torch.tensor(h["padding"])))  # fmt: skip
    for n in (1, 2):
        add("plain", "beyond_vocab", "no_repeat_ngram", {"n": n}, NoRepeatNGramLogitsProcessor(n))
    # History shorter than the n-gram: nothing banned.
    add("plain", "short", "no_repeat_ngram", {"n": 3}, NoRepeatNGramLogitsProcessor(3))
    # torch accumulates the cumulative top-p mass in double.
    add("wide", "wide", "top_p", {"p": 0.1, "min_keep": 1}, TopPLogitsWarper(0.1))
    return out


GENERATE = [
    # (name, options, model, paired/copies, score sets)
    ("sample_t0.5_k3", {"do_sample": True, "temperature": 0.5, "top_k": 3}, "decoder-only", 1,
     ["plain", "ties", "neginf"]),
    ("sample_t1.3_p0.9", {"do_sample": True, "temperature": 1.3, "top_p": 0.9}, "decoder-only", 1,
     ["plain", "ties", "flat"]),  # top_k is transformers' default 50
    ("sample_p0.3_minp0.05", {"do_sample": True, "top_k": 0, "top_p": 0.3, "min_p": 0.05}, "decoder-only", 1,
     ["plain", "ties", "peaked", "neginf"]),
    ("sample_minp0.5", {"do_sample": True, "top_k": 0, "min_p": 0.5}, "decoder-only", 1,
     ["ties", "peaked", "flat"]),
    ("sample_everything", {"do_sample": True, "temperature": 0.7, "top_k": 10, "top_p": 0.9, "min_p": 0.05,
                           "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": "G+1",
                           "eos_token_id": [2, 5]}, "decoder-only", 1, ["plain", "ties", "neginf"]),
    ("greedy_penalties", {"repetition_penalty": 0.8, "no_repeat_ngram_size": 3, "min_length": "L+1",
                          "eos_token_id": 2}, "decoder-only", 1, ["plain", "logprobs"]),
    # min_new_tokens takes precedence: transformers resets min_length to min_new_tokens + prompt length.
    ("min_length_and_min_new_tokens", {"min_length": "L+5", "min_new_tokens": "G", "eos_token_id": [2, 5]},
     "decoder-only", 1, ["plain"]),
    ("min_length_and_min_new_tokens_suppress", {"min_length": "L", "min_new_tokens": "G+1", "eos_token_id": [2, 5]},
     "decoder-only", 1, ["plain"]),
    ("beam_penalties", {"num_beams": 2, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2,
                        "min_new_tokens": "G+1", "eos_token_id": [2, 5]}, "decoder-only", 2, ["logprobs"]),
    # Beam sampling keeps len(eos) + 1 tokens in every warper (top_k 1 becomes 3 here).
    ("beam_sample_keep", {"num_beams": 2, "do_sample": True, "top_k": 1, "top_p": 0.3, "min_p": 0.5,
                          "eos_token_id": [2, 5]}, "decoder-only", 2, ["logprobs", "peaked"]),
    ("beam_sample_keep_no_eos", {"num_beams": 2, "do_sample": True, "top_k": 1, "top_p": 0.3}, "decoder-only", 2,
     ["logprobs"]),
    ("sample_2_sequences", {"do_sample": True, "num_return_sequences": 2, "temperature": 1.3, "top_k": 5,
                            "repetition_penalty": 1.3, "eos_token_id": 2}, "decoder-only", 2, ["plain", "ties"]),
    ("t5_sample", {"do_sample": True, "repetition_penalty": 1.3, "min_new_tokens": "G+1", "top_k": 0, "top_p": 0.9,
                   "no_repeat_ngram_size": 2}, "encoder-decoder", 1, ["plain", "ties"]),
    ("t5_greedy_min_length", {"min_length": "L+1", "repetition_penalty": 0.8, "eos_token_id": [1, 2]},
     "encoder-decoder", 1, ["plain"]),
]  # fmt: skip


def resolve_lengths(options: dict, L: int, G: int) -> dict:
    out = {}
    for k, v in options.items():
        if isinstance(v, str):
            base = {"L": L, "G": G}[v[0]]
            v = base + int(v[1:] or 0)
        out[k] = v
    return out


def main() -> None:
    rng = np.random.default_rng(20240601)
    sets = score_sets(rng)
    sets["wide"] = wide_rows(np.random.default_rng(7))

    histories: dict[str, dict] = {}
    for sname, s in sets.items():
        if sname == "wide":
            continue
        rows, vocab = s.shape
        histories[f"{sname}_solo"] = make_history(rng, rows, vocab, prompt_len=7, new=6, paired=False)
        histories[f"{sname}_paired"] = make_history(rng, rows, vocab, prompt_len=6, new=5, paired=True)
        # Encoder-decoder: the decoder start token 0, then the generated tokens.
        gen = [[0] + [int(t) for t in rng.choice(np.arange(1, 12), size=4)] for _ in range(rows)]
        for g in gen[:4]:
            g[-1] = g[1]  # the last token repeats an earlier one: a bigram ban follows
        histories[f"{sname}_t5"] = {"ids": gen, "padding": [0] * rows, "prompt_len": 1}
    bv = make_history(rng, 6, 64, prompt_len=5, new=4, paired=False)
    for r, seq in enumerate(bv["ids"]):
        seq[-1] = 64 + 3 * r  # past the 64-token vocabulary
        seq[-3] = 64 + 3 * r
    histories["beyond_vocab"] = bv
    histories["short"] = {"ids": [[5, 9]] * 6, "padding": [0] * 6, "prompt_len": 2}
    histories["wide"] = {"ids": [[1, 2, 3]] * 2, "padding": [0, 0], "prompt_len": 3}

    arrays: dict[str, np.ndarray] = {f"scores/{k}": v for k, v in sets.items()}
    cases = []
    for c in single_cases(sets, histories):
        expected, ambiguous = run_hf(c["procs"], histories[c["history"]], sets[c["scores"]])
        arrays[f"expected/{c['name']}"] = expected.astype(np.float32)
        cases.append(dict(name=c["name"], kind=c["kind"], params=c["params"], scores=c["scores"],
                          history=c["history"], hf=hf_names(c["procs"]), ambiguous=ambiguous))  # fmt: skip

    models = {"decoder-only": tiny_decoder(), "encoder-decoder": tiny_t5()}
    for name, options, model_kind, copies, snames in GENERATE:
        model = models[model_kind]
        defaults = {k: v for k, v in model.generation_config.to_diff_dict().items()
                    if k in ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id")}  # fmt: skip
        for sname in snames:
            suffix = "t5" if model_kind == "encoder-decoder" else ("paired" if copies > 1 else "solo")
            hname = f"{sname}_{suffix}"
            h = histories[hname]
            L = len(h["ids"][0])
            opts = resolve_lengths(options, L, L - h["prompt_len"])
            procs = captured_processors(model, h, opts, copies)
            expected, ambiguous = run_hf(procs, h, sets[sname])
            cname = f"{sname}/generate_{name}"
            arrays[f"expected/{cname}"] = expected.astype(np.float32)
            cases.append(dict(name=cname, kind="generate", options=opts, model=model_kind, model_defaults=defaults,
                              scores=sname, history=hname, hf=hf_names(procs), ambiguous=ambiguous))  # fmt: skip

    names = [c["name"] for c in cases]
    assert len(set(names)) == len(names), "duplicate case names"
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
    doc = {"versions": versions, "histories": histories, "cases": cases}
    text = json.dumps(doc, indent=None, separators=(",", ":"))
    # One case / history per line keeps diffs readable.
    text = text.replace(',"cases":[', ',\n"cases":[\n').replace('},{"name"', '},\n{"name"')
    (OUT / "cases.json").write_text(text + "\n")
    np.savez_compressed(OUT / "arrays.npz", **arrays)
    n_amb = sum(1 for c in cases if c["ambiguous"])
    print(f"versions: {versions}")
    print(f"{len(cases)} cases ({n_amb} with tie-order-dependent tokens) -> {OUT}")
    for f in sorted(OUT.iterdir()):
        print(f"  {f.name}: {f.stat().st_size / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
