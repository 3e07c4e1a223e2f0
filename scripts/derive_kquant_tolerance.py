#!/usr/bin/env python3
"""Derive the tolerance of ``tests/test_kquants.py``'s dtype="auto" check against llama.cpp, from
the fixtures ``scripts/make_kquant_fixtures.py`` wrote: ``tests/fixtures/kquant/tolerance.json``.

The reasoning, per fixture file:
* ``spread`` = max |llama.cpp's logits - transformers' logits| over the fixture prompts.
  transformers computes with the exactly dequantized weights in f32; llama.cpp's kernels also
  quantize the activations (Q8_K for the K-quants and IQ4_XS, Q8_0 for the 32-value types), and
  that is nearly all of the spread (llama.cpp on the unquantized F32 file differs from transformers
  by < 0.01 on these logits).
* fasttx with dtype="auto" computes either exactly (a type it dequantizes at load: its distance
  to llama.cpp is the spread) or with quantized activations of its own, whose error e against the
  exact logits is of the kind llama.cpp's is. By the triangle inequality
  |fasttx - llama.cpp| <= e + spread, so with e no larger than llama.cpp's own error the bound is
  2 x spread. ``MARGIN`` = 2 x 1.25: the 1.25 lets fasttx's activation error exceed llama.cpp's by
  a quarter (another block layout of the activations) and nothing more.

Usage:  python scripts/derive_kquant_tolerance.py      (needs numpy only)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

KQUANT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kquant"
TRIANGLE = 2.0
ACTIVATION_ALLOWANCE = 1.25
MARGIN = TRIANGLE * ACTIVATION_ALLOWANCE


def main() -> int:
    files = {}
    for meta in sorted(KQUANT.glob("*.json")):
        if meta.name == "tolerance.json":
            continue
        arrays = np.load(meta.with_suffix(".npz"))
        n = len(json.loads(meta.read_text())["prompts"])
        spread = max(float(np.abs(arrays[f"llama_{i}"] - arrays[f"hf_{i}"]).max()) for i in range(n))
        files[meta.stem] = {"spread": round(spread, 6), "atol": round(MARGIN * spread, 4)}
        print(f"{meta.stem:8s} spread {spread:.4f}  atol {MARGIN * spread:.4f}")
    out = {
        "about": "dtype='auto' logits vs llama.cpp's: atol = margin x spread, spread = max |llama.cpp - "
                 "transformers| on the file's prompts (scripts/derive_kquant_tolerance.py says why)",
        "margin": MARGIN,
        "files": files,
    }
    (KQUANT / "tolerance.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
