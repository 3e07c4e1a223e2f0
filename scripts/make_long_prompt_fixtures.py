#!/usr/bin/env python3
"""The reference logits of tests/test_long_prompts.py's batch-8 case: what transformers computes
for the last position of each row of a ragged (left-padded) batch of 8 prompts of up to 512
tokens, on two committed tiny models.

    /path/to/reference/venv/bin/python scripts/make_long_prompt_fixtures.py

Writes ``tests/fixtures/long_prompts/<model>.npz`` with ``input_ids`` [8, 512] (int32, left
padding 0), ``attention_mask`` [8, 512] (uint8) and ``logits`` [8, vocab] (float32), plus
``max_abs_f32_vs_f64``: how far transformers' float32 logits lie from its float64 ones (the
arithmetic noise a comparison has to allow).

Models: ``qwen2/`` (float32 computation of its bfloat16 safetensors) and ``llama_gguf_q4_1/``
(transformers dequantizes the GGUF to float32). Both use rotary positions, which transformers
computes for any position: the prompts are longer than the models' ``max_position_embeddings``
(256 and 128), which only fasttx's Python layer refuses; the test drives the native session.

Positions are those ``generate`` gives a left-padded batch: ``cumsum(mask) - 1`` (pads at 1,
never attended to), as fasttx numbers a step's real tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
OUT = FIXTURES / "long_prompts"
# Row lengths: the full 512, lengths around the chunk boundaries of every batch size, a short row.
LENGTHS = [512, 511, 449, 385, 300, 257, 129, 17]
SEED = 14


def load(name: str, dtype):
    path = FIXTURES / name
    kwargs = {"gguf_file": "model.gguf"} if (path / "model.gguf").is_file() else {}
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs).eval()


def batch(vocab: int):
    rng = np.random.default_rng(SEED)
    width = max(LENGTHS)
    ids = np.zeros((len(LENGTHS), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, n in enumerate(LENGTHS):
        ids[r, width - n :] = rng.integers(3, vocab, n)
        mask[r, width - n :] = 1
    return ids, mask


def last_logits(model, ids, mask) -> np.ndarray:
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    positions = (mask_t.cumsum(-1) - 1).masked_fill(mask_t == 0, 1)
    with torch.no_grad():
        out = model(input_ids=ids_t, attention_mask=mask_t, position_ids=positions).logits
    return out[:, -1].double().numpy()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name in ("qwen2", "llama_gguf_q4_1"):
        m32 = load(name, torch.float32)
        ids, mask = batch(m32.config.vocab_size)
        l32 = last_logits(m32, ids, mask)
        l64 = last_logits(load(name, torch.float64), ids, mask)
        noise = float(np.abs(l32 - l64).max())
        np.savez_compressed(OUT / f"{name}.npz", input_ids=ids.astype(np.int32), attention_mask=mask.astype(np.uint8),
                            logits=l32.astype(np.float32), max_abs_f32_vs_f64=np.float64(noise))
        print(f"{name}: logits {l32.shape}, max |f32 - f64| {noise:.2e}")


if __name__ == "__main__":
    main()
