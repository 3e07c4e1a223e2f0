#!/usr/bin/env python3
"""Time the native decoding step alone (no Python generation loop): prefill of a prompt, then
the median of ``--steps`` single-token steps. What kernel changes are measured with.

    python benchmarks/decode_step.py --model PATH [--dtype auto|f32|int8] [--threads 2] [--steps 64] [--repeats 3] [--batch 1]

Defaults to the SmolLM2 GGUF (``fasttx.hub``) and its chat prompt; for an encoder-decoder model
(e.g. the t5-small that ``fasttx bench t5`` builds in ``~/.cache/fasttx-bench/t5-small-random``)
the prompt is 32 source tokens and the steps feed the decoder start token. ``FASTTX_ISA=avx2|scalar`` compares
instruction sets; ``perf record -g python benchmarks/decode_step.py ...`` gives the profile.
``--batch N`` runs N copies of the prompt (the prefill then times a batch, e.g. T5's encoder over
N×32 tokens; the GB/s figure stays that of one weight pass per step).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from common import add_model_arguments, load_model, prompt_ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(ap)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1, help="copies of the prompt decoded together")
    args = ap.parse_args()

    model = load_model(args)
    native = model._native
    ids = prompt_ids(model, args.batch)
    first = np.zeros((args.batch, 1), dtype=np.int64) if model.is_encoder_decoder else ids
    prefill, steps = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()  # prefill: the encoder (T5) or the prompt, and the first token
        session = native.start(ids, np.ones_like(ids))
        logits = session.step(first, None)
        prefill.append(time.perf_counter() - t)
        token = logits.argmax(-1).astype(np.int64)[:, None]
        for _ in range(args.steps):
            t = time.perf_counter()
            logits = session.step(token, None)
            steps.append(time.perf_counter() - t)
            token = logits.argmax(-1).astype(np.int64)[:, None]
    step = statistics.median(steps)
    # (decode_weight_bytes is absent from builds older than this script: then no GB/s figure.)
    weights = getattr(native, "decode_weight_bytes", None)
    rate = f", {weights / step / 1e9:.1f} GB/s of weights" if weights else ""
    print(
        f"{Path(args.model).name} dtype={args.dtype} threads={args.threads}: prefill {statistics.median(prefill) * 1e3:.1f} ms "
        f"({ids.shape[0]}×{ids.shape[1]} tokens), decode step median {step * 1e3:.2f} ms ({1 / step:.1f} tokens/s){rate}"
    )


if __name__ == "__main__":
    main()
