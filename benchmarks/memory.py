#!/usr/bin/env python3
"""Where a fasttx process's memory goes: resident set size (anonymous and file-backed, from
/proc/self/status) after each stage of loading a model and generating with it, next to the bytes
of weights one decoding step reads (the weights "in their compute format").

    python benchmarks/memory.py [--model PATH] [--dtype auto|f32|int8] [--threads 2] [--new-tokens 128]

Defaults to the SmolLM2 GGUF (``fasttx.hub``) and its chat prompt; for an encoder-decoder model
(e.g. ``~/.cache/fasttx-bench/t5-small-random``) the prompt is 32 source tokens. Linux only.
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
    ap.add_argument("--model", default=None, help="model directory or .gguf (default: SmolLM2)")
    ap.add_argument("--dtype", default="auto", choices=["auto", "f32", "int8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    args = ap.parse_args()

    stages = [("interpreter", status())]
    import numpy as np

    import fasttx

    stages.append(("import fasttx (numpy, tokenizers)", status()))
    if args.model is None:
        from fasttx.hub import default_model_path

        args.model = str(default_model_path(progress=True))
    model = fasttx.load(args.model, dtype=args.dtype, threads=args.threads)
    stages.append(("fasttx.load", status()))
    n = args.new_tokens
    if model.is_encoder_decoder:
        model.generate_ids(np.arange(3, 35, dtype=np.int64)[None, :], max_new_tokens=n, min_new_tokens=n)
    else:
        text = model.chat_prompt([{"role": "user", "content": "Write a short news report about artificial intelligence."}])
        model.generate(text, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    stages.append((f"generate {n} tokens", status()))

    weights = model._native.decode_weight_bytes / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded = stages[1][1]["VmRSS"]
    print(f"{args.model} dtype={args.dtype}: weights read per step {weights:.1f} MB")
    print(f"{'stage':38} {'RSS MB':>8} {'anon':>8} {'file':>8}")
    for name, s in stages:
        print(f"{name:38} {s['VmRSS']:8.1f} {s['RssAnon']:8.1f} {s['RssFile']:8.1f}")
    print(f"peak RSS {peak:.1f} MB = {peak / weights:.2f}x the weights; "
          f"peak minus the process before loading {peak - loaded:.1f} MB = {(peak - loaded) / weights:.2f}x")
    print(json.dumps({"weights_mb": weights, "peak_rss_mb": peak, "before_load_mb": loaded}))


if __name__ == "__main__":
    main()
