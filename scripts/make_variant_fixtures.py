#!/usr/bin/env python3
"""Tiny models for config variants the main fixture scripts do not cover, with transformers'
logits and greedy tokens: ``tests/fixtures/variants/<name>/`` (model directory without a
tokenizer) and ``expected.json`` + ``logits.npz``. Checked by tests/test_variants.py.

    pip install torch==2.15.0 transformers==5.24.0
    python scripts/make_variant_fixtures.py

Variants:
* ``gpt2_untied``: GPT2LMHeadModel with ``tie_word_embeddings=False`` (its own lm_head.weight,
  scaled so that it differs clearly from wte).
* ``t5_gated_silu``: T5 with ``feed_forward_proj="gated-silu"``, d_kv != d_model / heads, 3
  encoder and 1 decoder layers, 16 buckets, max distance 20.
* ``llama_rope_llama3``: Llama with llama3 rope scaling (factor 8, low/high freq factors 1/4,
  original max positions 16), 3 heads / 1 KV head, head_dim 16.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

from fixturelib import FIXTURES

OUT = FIXTURES / "variants"
INPUTS = [[5, 17, 33, 2, 99, 7], [1, 2, 3], [100, 101, 50, 50, 50, 9, 8, 7, 6]]


def gpt2_untied():
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=120, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
    return model


def t5_gated_silu():
    torch.manual_seed(1)
    cfg = T5Config(
        vocab_size=120, d_model=32, d_kv=12, d_ff=48, num_layers=3, num_decoder_layers=1, num_heads=3,
        relative_attention_num_buckets=16, relative_attention_max_distance=20,
        feed_forward_proj="gated-silu", tie_word_embeddings=False, decoder_start_token_id=0,
        eos_token_id=1, pad_token_id=0,
    )  # fmt: skip
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 2.0)
    return model


def llama_rope_llama3():
    torch.manual_seed(2)
    cfg = LlamaConfig(
        vocab_size=120, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=3,
        num_key_value_heads=1, head_dim=16, max_position_embeddings=128, rope_theta=10000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16},
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 1.0)
    return model


def record(name: str, model) -> None:
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    logits, cases = {}, []
    with torch.no_grad():
        for i, ids in enumerate(INPUTS):
            x = torch.tensor([ids])
            mask = torch.ones(1, len(ids), dtype=torch.long)
            if model.config.is_encoder_decoder:
                dec = [0] + ids[:3]
                logits[f"row{i}"] = model(input_ids=x, decoder_input_ids=torch.tensor([dec])).logits[0].numpy()
                seq = model.generate(x, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
                new = seq[0, 1:].tolist()
            else:
                dec = None
                logits[f"row{i}"] = model(x).logits[0].numpy()
                seq = model.generate(x, attention_mask=mask, max_new_tokens=8, min_new_tokens=8, do_sample=False)
                new = seq[0, len(ids):].tolist()
            cases.append({"input_ids": ids, "decoder_input_ids": dec, "greedy_8": new})
    np.savez_compressed(out / "logits.npz", **logits)
    (out / "expected.json").write_text(json.dumps(
        {"versions": {"torch": torch.__version__, "transformers": transformers.__version__}, "cases": cases},
        indent=1) + "\n")


if __name__ == "__main__":
    record("gpt2_untied", gpt2_untied())
    record("t5_gated_silu", t5_gated_silu())
    record("llama_rope_llama3", llama_rope_llama3())
