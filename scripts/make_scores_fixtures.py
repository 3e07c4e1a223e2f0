#!/usr/bin/env python3
"""Generate the per-step score fixtures under ``tests/fixtures/scores/``.

What it makes
-------------
transformers' ``generate(..., return_dict_in_generate=True, output_scores=True,
output_logits=True)`` on tiny random models already committed as fixtures (``qwen2``:
decoder-only, vocab 320; ``bart``: encoder-decoder, vocab 421), for the cases
tests/test_scores.py replays with fasttx:

* ``greedy_eos``: a ragged batch of 2 (left-padded with a pad id distinct from EOS), row 0
  finishing early by EOS (the EOS id is picked from row 0's own greedy tokens), repetition
  penalty on: the finished row keeps receiving scores, fed the pad token, as transformers does;
* ``greedy_custom``: the same with two custom processors (``logits_processor``), one banning a
  token the plain run picks, one reading ``input_ids`` (it lowers each row's last token, pad
  included), so their position (after the built-in processors) and their ``input_ids`` are checked;
* ``sample_boost``: sampling (temperature 0.7, top_k 5, repetition penalty) with a custom processor
  that adds 60 to each row's best score: the draw is then that token with probability 1 - 1e-37,
  whatever the random generator (fasttx's is not torch's), so the sampled tokens agree and the
  processed scores (custom processor, then the warpers: transformers' ``scores`` include them)
  can be compared step by step (row 0 ends by EOS early, as in ``greedy_eos``); a second case
  without top_k keeps the full distribution;
* ``beam``: beam search, 2 inputs x 3 beams, 2 returned sequences, ``length_penalty`` 0.7 and two
  EOS ids (picked from the greedy tokens so that hypotheses finish early): ``scores`` (the
  processed log-probabilities of the running beams), ``logits`` and ``sequences_scores``;
* ``bart_greedy`` / ``bart_beam``: the encoder-decoder model with its generation config (forced
  BOS and EOS, no_repeat_ngram_size 3, 4 beams, length_penalty 2, early stopping), min_length 0;
  ``bart_greedy_eos`` with an EOS id that ends row 0 early (its decoder then fed the pad token).

Robustness: greedy cases need every top-1/top-2 gap of the processed scores above 1e-3 (fasttx's
float32 kernels differ from torch's in the last bits); the script asserts it.

Files::

    cases.json   {"versions", "cases": [{"name", "model", "input_ids", "options", "custom",
                   "sequences", "finish_reasons", "sequences_scores" (beam), "steps", "rows"}]}
    arrays.npz   "scores/<name>", "logits/<name>": float32 [steps, rows, vocab]

``options`` are generate options with transformers' names (also fasttx's); ``custom`` describes
the custom processors (``ban``: tokens set to -inf; ``last_token_penalty``: ``value`` subtracted
from the score of each row's last input id; ``boost_best``: ``value`` added to each row's best
score), which the test rebuilds in numpy. ``sequences``: the new tokens per returned sequence as
``generate_ids`` returns them (cut after the first EOS).

Usage:  /path/to/python-with-torch-and-transformers scripts/make_scores_fixtures.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
torch.use_deterministic_algorithms(True)

import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, LogitsProcessor, LogitsProcessorList  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
OUT = FIXTURES / "scores"
MARGIN_MIN = 1e-3


class Ban(LogitsProcessor):
    def __init__(self, tokens):
        self.tokens = list(tokens)

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        scores[:, self.tokens] = -float("inf")
        return scores


class LastTokenPenalty(LogitsProcessor):
    def __init__(self, value):
        self.value = value

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        rows = torch.arange(scores.shape[0])
        scores[rows, input_ids[:, -1]] -= self.value
        return scores


class BoostBest(LogitsProcessor):
    def __init__(self, value):
        self.value = value

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        rows = torch.arange(scores.shape[0])
        scores[rows, scores.argmax(dim=-1)] += self.value
        return scores


def custom_processors(custom: list[dict]) -> LogitsProcessorList:
    made = []
    for c in custom:
        if c["kind"] == "ban":
            made.append(Ban(c["tokens"]))
        elif c["kind"] == "last_token_penalty":
            made.append(LastTokenPenalty(c["value"]))
        elif c["kind"] == "boost_best":
            made.append(BoostBest(c["value"]))
        else:
            raise ValueError(c)
    return LogitsProcessorList(made)


def batch(rows: list[list[int]], pad: int, left: bool):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r)
        mask[i, sl] = 1
    return ids, mask


def eos_list(model, options) -> list[int]:
    eos = options.get("eos_token_id", model.generation_config.eos_token_id)
    if eos is None:
        return []
    return [eos] if isinstance(eos, int) else list(eos)


def run(model, rows, options, custom=(), pad=0):
    enc_dec = model.config.is_encoder_decoder
    ids, mask = batch(rows, pad, left=not enc_dec)
    with torch.no_grad():
        res = model.generate(
            input_ids=ids,
            attention_mask=mask,
            logits_processor=custom_processors(list(custom)),
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            **options,
        )
    width = 1 if enc_dec else ids.shape[1]
    eos = eos_list(model, options)
    sequences, reasons = [], []
    for row in res.sequences[:, width:].tolist():
        for j, t in enumerate(row):
            if t in eos:
                row = row[: j + 1]
                break
        sequences.append(row)
        reasons.append("stop" if row and row[-1] in eos else "length")
    return res, sequences, reasons


def greedy_margin(res, sequences) -> float:
    """Smallest top-1/top-2 gap of the processed scores over the rows still generating."""
    best = float("inf")
    for step, sc in enumerate(res.scores):
        top = torch.topk(sc.double(), 2, dim=-1).values
        for r, seq in enumerate(sequences):
            if step < len(seq):
                best = min(best, float(top[r, 0] - top[r, 1]))
    return best


def main() -> None:
    qwen = AutoModelForCausalLM.from_pretrained(str(FIXTURES / "qwen2"), dtype=torch.float32).eval()
    bart = AutoModelForSeq2SeqLM.from_pretrained(str(FIXTURES / "bart"), dtype=torch.float32).eval()
    cases, arrays = [], {}

    def add(name, model_name, model, rows, options, custom=(), pad=0, greedy=True):
        res, sequences, reasons = run(model, rows, options, custom, pad)
        if greedy:
            margin = greedy_margin(res, sequences)
            assert margin > MARGIN_MIN, (name, margin)
        case = {
            "name": name,
            "model": model_name,
            "input_ids": rows,
            "options": options,
            "custom": list(custom),
            "sequences": sequences,
            "finish_reasons": reasons,
            "steps": len(res.scores),
            "rows": int(res.scores[0].shape[0]),
        }
        if getattr(res, "sequences_scores", None) is not None:
            case["sequences_scores"] = [float(x) for x in res.sequences_scores.tolist()]
        cases.append(case)
        arrays[f"scores/{name}"] = torch.stack(res.scores).numpy().astype(np.float32)
        arrays[f"logits/{name}"] = torch.stack(res.logits).numpy().astype(np.float32)
        print(f"{name}: {sequences} {reasons} steps={len(res.scores)}")
        return sequences

    rows = [[17, 40, 93, 121, 8, 250, 66], [201, 33, 5, 77]]
    pad = 1
    base = {"max_new_tokens": 6, "pad_token_id": pad, "repetition_penalty": 1.2}
    # Plain run (EOS ids unlikely to come up: the generation config's), to pick an EOS id row 0
    # produces at its third step and row 1 never does.
    _, plain, _ = run(qwen, rows, {**base, "eos_token_id": [2]}, pad=pad)
    eos = next(t for t in plain[0][2:] if t not in plain[1] and t not in plain[0][:2] and t != pad)
    add("greedy_eos", "qwen2", qwen, rows, {**base, "eos_token_id": eos}, pad=pad)
    banned = plain[1][1]
    custom = [{"kind": "ban", "tokens": [banned]}, {"kind": "last_token_penalty", "value": 1.5}]
    add("greedy_custom", "qwen2", qwen, rows, {**base, "eos_token_id": eos}, custom, pad=pad)

    sample = {"max_new_tokens": 5, "pad_token_id": pad, "eos_token_id": eos, "do_sample": True,
              "temperature": 0.7, "repetition_penalty": 1.3}
    boost = [{"kind": "boost_best", "value": 60.0}]
    torch.manual_seed(0)
    add("sample_boost", "qwen2", qwen, rows, {**sample, "top_k": 5}, boost, pad=pad, greedy=False)
    torch.manual_seed(0)
    add("sample_boost_full", "qwen2", qwen, rows, {**sample, "top_k": 0}, boost, pad=pad, greedy=False)

    beam_eos = sorted({plain[0][1], plain[1][2]})
    beam = {"max_new_tokens": 6, "pad_token_id": pad, "eos_token_id": beam_eos, "num_beams": 3,
            "num_return_sequences": 2, "length_penalty": 0.7}
    add("beam", "qwen2", qwen, rows, beam, pad=pad, greedy=False)

    enc_rows = [[0, 31, 200, 57, 9, 140, 2], [0, 88, 12, 2]]
    bart_plain = add("bart_greedy", "bart", bart, enc_rows, {"max_new_tokens": 7, "num_beams": 1, "min_length": 0}, pad=1)
    bart_eos = next(t for t in bart_plain[0][1:] if t not in bart_plain[1])
    add("bart_greedy_eos", "bart", bart, enc_rows,
        {"max_new_tokens": 7, "num_beams": 1, "min_length": 0, "eos_token_id": bart_eos}, pad=1)
    add("bart_beam", "bart", bart, enc_rows, {"max_new_tokens": 5, "min_length": 0, "num_return_sequences": 2},
        pad=1, greedy=False)

    if OUT.exists():
        for p in OUT.iterdir():
            p.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
    doc = {"versions": versions, "cases": cases}
    (OUT / "cases.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    np.savez_compressed(OUT / "arrays.npz", **arrays)
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
