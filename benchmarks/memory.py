#!/usr/bin/env python3
"""Where a fasttx process's memory goes: resident set size (anonymous and file-backed, from
/proc/self/status) after each stage of loading a model and generating with it, next to the bytes
of weights one decoding step reads (the weights "in their compute format").

    python benchmarks/memory.py [--model PATH] [--dtype auto|f32|int8] [--threads 2] [--new-tokens 128]

Defaults to the SmolLM2 GGUF (``fasttx.hub``) and its chat prompt; for an encoder-decoder model
(e.g. the t5-small that ``fasttx bench t5`` builds in ``~/.cache/fasttx-bench/t5-small-random``)
the prompt is 32 source tokens. Linux only.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    stages = [("interpreter", status())]
    # Imported here, after the first measurement: the interpreter alone comes first.
    from common import MESSAGES, add_model_arguments, load_model, prompt_ids

    add_model_arguments(ap)
    args = ap.parse_args()
    stages.append(("import fasttx (numpy, tokenizers)", status()))
    if args.model is None:
        from common import default_model

        args.model = default_model()  # fetched (if need be) before the load is measured
    model = load_model(args)
    stages.append(("fasttx.load", status()))
    n = args.new_tokens
    if model.is_encoder_decoder:
        model.generate_ids(prompt_ids(model), max_new_tokens=n, min_new_tokens=n)
    else:  # text in, text out: the tokenizer's share of the memory counts too
        model.generate(model.chat_prompt(MESSAGES), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    stages.append((f"generate {n} tokens", status()))

    weights = model._native.decode_weight_bytes / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded = stages[1][1]["VmRSS"]
    print(f"{Path(args.model).name} dtype={args.dtype}: weights read per step {weights:.1f} MB")
    print(f"{'stage':38} {'RSS MB':>8} {'anon':>8} {'file':>8}")
    for name, s in stages:
        print(f"{name:38} {s['VmRSS']:8.1f} {s['RssAnon']:8.1f} {s['RssFile']:8.1f}")
    print(f"peak RSS {peak:.1f} MB = {peak / weights:.2f}x the weights; "
          f"peak minus the process before loading {peak - loaded:.1f} MB = {(peak - loaded) / weights:.2f}x")
    print(json.dumps({"weights_mb": weights, "peak_rss_mb": peak, "before_load_mb": loaded}))


if __name__ == "__main__":
    main()
