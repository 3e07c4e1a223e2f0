#!/usr/bin/env python3
"""Per-step cost of logits processing (processors, warpers and the token choice) against the cost
of a decoding step, on the two benchmark models (see BENCHMARKS.md, "Logits processing").

    python benchmarks/processor_cost.py [--threads 2] [--steps 64]

For each model and batch shape it times ``session.step`` (the native forward of one token per row)
over ``--steps`` steps, then, on the logits of those steps and histories as long as the
benchmark's (prompt + generated tokens), the Python work ``fasttx.generation.search`` does per
step for several option sets: ``processors.apply_all`` plus argmax (greedy), or plus the native
warpers and seeded draw (``search.sample_tokens``) when sampling. Prints a table of medians and the ratio processing / step.

Needs: the t5-small-shaped random model that ``fasttx bench t5`` builds (default
``~/.cache/fasttx-bench/t5-small-random``) and the SmolLM2 GGUF (``fasttx.hub``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import T5_MODEL_DIR, default_model

import fasttx
from fasttx.generation import processors, search
from fasttx.generation.options import resolve

OPTION_SETS = {
    "greedy, min_new_tokens (benchmark default)": {"min_new_tokens": 128},
    "greedy + repetition_penalty 1.2": {"min_new_tokens": 128, "repetition_penalty": 1.2},
    "greedy + no_repeat_ngram_size 3": {"min_new_tokens": 128, "no_repeat_ngram_size": 3},
    "sample: temperature 0.7, top_k 50, top_p 0.9": {"do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.9},
    "sample: top_k 0, top_p 0.9 (full sort)": {"do_sample": True, "top_k": 0, "top_p": 0.9},
    "sample: min_p 0.05": {"do_sample": True, "top_k": 0, "min_p": 0.05},
    "all of the above": {
        "min_new_tokens": 128, "repetition_penalty": 1.2, "no_repeat_ngram_size": 3,
        "do_sample": True, "temperature": 0.7, "top_k": 50, "top_p": 0.9, "min_p": 0.05,
    },
}  # fmt: skip


def time_steps(model, ids: np.ndarray, steps: int) -> tuple[float, list[np.ndarray]]:
    native = model._native
    session = native.start(ids, np.ones_like(ids))
    first = model.generation_config.get("decoder_start_token_id", 0) if model.is_encoder_decoder else None
    tokens = np.full((ids.shape[0], 1), first, dtype=np.int64) if first is not None else ids
    logits = session.step(tokens, None)
    out, times = [], []
    for _ in range(steps):
        tokens = logits.argmax(axis=-1)[:, None].astype(np.int64)
        t = time.perf_counter()
        logits = session.step(tokens, None)
        times.append(time.perf_counter() - t)
        out.append(logits.copy())
    return statistics.median(times), out


def time_processing(model, logits: list[np.ndarray], prompt_len: int, options: dict) -> float:
    rows, vocab = logits[0].shape
    opts = resolve(options, model.generation_config, model.vocab_size)
    # As search.sample_or_greedy: the processors in numpy, sampling's warpers and draw natively.
    procs = processors.build(opts, prompt_len, [0] * rows)
    rng = np.random.default_rng(0)
    history = [rng.integers(0, vocab, size=prompt_len).tolist() for _ in range(rows)]
    sampler = search.RowSampler(1, history, list(range(rows))) if opts.do_sample else None
    times = []
    for step_logits in logits:
        scores = step_logits.copy()
        t = time.perf_counter()
        processors.apply_all(procs, scores, history, range(rows))
        if sampler is None:
            chosen = np.argmax(scores, axis=-1).tolist()
        else:
            chosen = search.sample_tokens(model._native, scores, opts, sampler, range(rows))
        times.append(time.perf_counter() - t)
        for h, c in zip(history, chosen):
            h.append(int(c))
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--t5-dir", type=Path, default=Path(T5_MODEL_DIR).expanduser())
    args = ap.parse_args()

    smollm2 = default_model()
    shapes = [
        ("t5-small f32, batch 1", args.t5_dir, "auto", 1, 32),
        ("t5-small f32, batch 8", args.t5_dir, "auto", 8, 32),
        ("SmolLM2 Q4_1, batch 1", smollm2, "auto", 1, 39),
        ("SmolLM2 f32, batch 1", smollm2, "f32", 1, 39),
    ]
    print(f"threads {args.threads}, {args.steps} steps; medians per step\n")
    print("| model | options | step ms | processing ms | processing / step |")
    print("| --- | --- | --- | --- | --- |")
    for label, path, dtype, batch, prompt_len in shapes:
        model = fasttx.load(path, dtype=dtype, threads=args.threads)
        ids = np.random.default_rng(0).integers(3, min(model.vocab_size, 32000), size=(batch, prompt_len))
        step, logits = time_steps(model, ids, args.steps)
        decoder_prompt = 1 if model.is_encoder_decoder else prompt_len
        for name, options in OPTION_SETS.items():
            cost = time_processing(model, logits, decoder_prompt, options)
            print(f"| {label} | {name} | {step * 1e3:.2f} | {cost * 1e3:.3f} | {cost / step:.1%} |")


if __name__ == "__main__":
    main()
