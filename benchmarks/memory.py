#!/usr/bin/env python3
"""Where a fasttx process's memory goes: resident set size (anonymous and file-backed, from
/proc/self/status) after each stage of loading a model and generating with it, next to the bytes
of weights one decoding step reads (the weights "in their compute format").

    python benchmarks/memory.py [--model PATH] [--dtype auto|f32|int8] [--threads 2] [--new-tokens 128]
                                [--batch 8] [--prompt-tokens 512]

Defaults to the SmolLM2 GGUF (``fasttx.hub``) and its chat prompt; for an encoder-decoder model
(e.g. the t5-small that ``fasttx bench t5`` builds in ``~/.cache/fasttx-bench/t5-small-random``)
the prompt is 32 source tokens. ``--prompt-tokens N`` (decoder-only models): the N-token chat
prompt of ``fasttx bench``'s ``prompt512_b1`` workload instead (``fasttx.bench.prompts``);
``--batch B``: B copies of the prompt in one batch. Then the budget of issue 14 is checked: the
peak RSS against weights + KV cache (the cache the generation reserves: rows x positions x bytes
per position) + 64 MB, both as it stands and less the process before loading (interpreter, numpy,
tokenizers). Linux only.
"""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path


def status() -> dict:
    """VmRSS / RssAnon / RssFile in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) / 1024
    return out


# Issue 14's allowance for everything but the weights and the KV cache (scratch buffers, logits).
SCRATCH_BUDGET_MB = 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1, help="prompts in the batch (copies of one prompt)")
    ap.add_argument("--prompt-tokens", type=int, default=None,
                    help="decoder-only: a chat prompt of exactly this many tokens (default: the chat prompt)")
    stages = [("interpreter", status())]
    # Imported here, after the first measurement: the interpreter alone comes first.
    import numpy as np
    from common import MESSAGES, add_model_arguments, load_model, prompt_ids

    from fasttx.bench.prompts import long_prompt_ids

    add_model_arguments(ap)
    args = ap.parse_args()
    stages.append(("import fasttx (numpy, tokenizers)", status()))
    if args.model is None:
        from common import default_model

        args.model = default_model()  # fetched (if need be) before the load is measured
    model = load_model(args)
    stages.append(("fasttx.load", status()))
    n = args.new_tokens
    if args.prompt_tokens is not None:
        if model.is_encoder_decoder:
            ap.error("--prompt-tokens is for decoder-only models")
        ids = np.array([long_prompt_ids(model, args.prompt_tokens)] * args.batch, dtype=np.int64)
    else:
        ids = prompt_ids(model, args.batch)
    if model.is_encoder_decoder or args.batch > 1 or args.prompt_tokens is not None:
        model.generate_ids(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        what = f"generate {n} tokens, batch {args.batch} x {ids.shape[1]}-token prompt"
    else:  # text in, text out: the tokenizer's share of the memory counts too
        model.generate(model.chat_prompt(MESSAGES), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        what = f"generate {n} tokens"
    stages.append((what, status()))

    weights = model._native.decode_weight_bytes / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded = stages[1][1]["VmRSS"]
    print(f"{Path(args.model).name} dtype={args.dtype}: weights read per step {weights:.1f} MB")
    print(f"{'stage':50} {'RSS MB':>8} {'anon':>8} {'file':>8}")
    for name, s in stages:
        print(f"{name:50} {s['VmRSS']:8.1f} {s['RssAnon']:8.1f} {s['RssFile']:8.1f}")
    print(f"peak RSS {peak:.1f} MB = {peak / weights:.2f}x the weights; "
          f"peak minus the process before loading {peak - loaded:.1f} MB = {(peak - loaded) / weights:.2f}x")
    out = {"weights_mb": weights, "peak_rss_mb": peak, "before_load_mb": loaded}
    if not model.is_encoder_decoder:
        # The cache generate reserves: every row, prompt plus new tokens (model.py reserves them).
        session = model._native.start(ids, np.ones_like(ids))
        positions = ids.shape[1] + n
        if model.max_positions is not None:
            positions = min(positions, max(model.max_positions, ids.shape[1] + 1))
        kv = args.batch * positions * session.cache_bytes_per_position / 1e6
        rest = peak - weights - kv
        print(f"KV cache {kv:.1f} MB ({args.batch} rows x {positions} positions x "
              f"{session.cache_bytes_per_position} bytes)")
        print(f"peak - weights - KV cache = {rest:.1f} MB (budget {SCRATCH_BUDGET_MB} MB: "
              f"{'within' if rest <= SCRATCH_BUDGET_MB else 'OVER'}); less the process before loading "
              f"({loaded:.1f} MB): {rest - loaded:.1f} MB "
              f"({'within' if rest - loaded <= SCRATCH_BUDGET_MB else 'OVER'})")
        # What generating itself added beyond the cache: the step's scratch buffers and logits.
        after_load = stages[2][1]["VmRSS"]
        print(f"peak - RSS after fasttx.load ({after_load:.1f} MB) - KV cache = {peak - after_load - kv:.1f} MB "
              "(the generation's scratch and logits)")
        out.update({"kv_cache_mb": kv, "margin_mb": rest, "margin_after_load_mb": rest - loaded,
                    "scratch_mb": peak - after_load - kv,
                    "batch": args.batch, "prompt_tokens": int(ids.shape[1]), "new_tokens": n})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
