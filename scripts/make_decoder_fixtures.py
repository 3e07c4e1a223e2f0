#!/usr/bin/env python3
"""Generate the committed decoder-only parity fixtures under ``tests/fixtures/``.

Companion of ``scripts/make_fixtures.py`` (the T5 fixtures): same layout, same
robustness rules, decoder-only models.  It imports that script's shared helpers
(corpus, JSON writers, the score-jitter processor, thresholds) and changes nothing
there.

What it makes
-------------
Tiny, seeded, random models, each a complete Hugging Face model directory
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
special_tokens_map.json, generation_config.json where stated), plus
``expected.json`` and ``logits.npz`` with what ``transformers`` computes:

* ``llama_gqa/``     LlamaForCausalLM, 6 heads / 2 KV heads (GQA), explicit
  head_dim 12 with hidden 48 (q width 72 != hidden), tied embeddings,
  rope_theta 500, rms_norm_eps 1e-5, 2 layers, float32.  config.json in the
  Hub (transformers 4.x) style: top-level ``rope_theta``, ``head_dim``.
  generation_config.json: bos 1, eos [2, 5], pad 0.
* ``llama_untied/``  LlamaForCausalLM, MQA (1 KV head), untied lm_head,
  attention_bias (q/k/v/o biases), 3 layers, linear RoPE scaling factor 2,
  max_position_embeddings 64, float16 weights; config.json exactly as
  transformers 5.x writes it (``rope_parameters: {rope_type: linear, factor: 2.0,
  rope_theta}``); no generation_config.json (bos 1 / eos 2 from config.json, no pad:
  transformers pads with EOS; tokenizer pad token is ``</s>`` too).
* ``qwen2/``         Qwen2ForCausalLM (q/k/v biases), 4 heads / 2 KV heads,
  untied, 2 layers, rope_theta 1e6, bfloat16 weights, config as 5.x writes it;
  generation_config.json: bos 0, eos [2, 0], pad 0; tokenizer adds no BOS.
* ``gpt2/``          GPT2LMHeadModel, n_positions 48, n_embd 48, 4 heads, 2
  layers, gelu_new, float32; laid out like the Hub's openai-community/gpt2:
  tensor names without the ``transformer.`` prefix, the ``h.N.attn.bias`` causal
  mask buffers stored, no lm_head (tied), Hub-style config.json; the one special
  token ``<|endoftext|>`` is the LAST id (bos = eos), no pad token.
* ``gpt2_scaled/``   GPT2LMHeadModel with scale_attn_by_inverse_layer_idx,
  activation "gelu" (erf), n_inner 80, n_embd 40, 3 layers, n_positions 64, float16,
  written by save_pretrained (``transformer.`` prefix); no generation_config.json.
* ``llama_gguf_{f16,q8_0,q4_0,q4_1}/``  ``model.gguf`` only (no config.json, no
  tokenizer.json: both come from the GGUF metadata), written with the ``gguf``
  package's GGUFWriter from a tiny HF Llama (hidden 64, 4 heads / 2 KV heads,
  head_dim 16, ffn 128, 2 layers, vocab 320): llama.cpp's Q/K row permutation,
  ggml dimension order, gpt2-style BPE tokenizer metadata (``tokenizer.ggml.model
  = gpt2``, ``pre = default``, bos 1 / eos 2 / pad 0, add_bos_token true).
  f16: F16 2-D weights + F32 norms, untied (output.weight present);
  q8_0: Q8_0 weights, TIED (no output.weight); q4_0 / q4_1: Q4_0 / Q4_1, untied.
  References come from ``AutoModelForCausalLM.from_pretrained(dir,
  gguf_file="model.gguf", dtype=torch.float32)`` (transformers dequantizes) and
  ``AutoTokenizer.from_pretrained(dir, gguf_file="model.gguf")``.

expected.json layout (as in the T5 fixtures)::

    {
      "versions": {"torch": ..., "transformers": ..., "tokenizers": ..., "gguf": ...},
      "logits":   [{"name", "input_ids", "attention_mask"}],
      "generate": [{"name", "input_ids" (ragged, unpadded), "options", "sequences"}],
      "text":     [{"name", "prompts", "options", "texts"}]
    }

* logits: RIGHT-padded batches (pad = the model's pad id, else 0) with their
  attention mask; ``logits.npz`` holds ``model(input_ids, attention_mask).logits``
  (float32, [batch, len, vocab]) under the case name.  A plain forward numbers
  positions 0..len-1 whatever the mask says, so right padding keeps every real
  token at its true position (pad positions are included in the arrays).
* generate: ragged ``input_ids``; transformers gets them LEFT-padded with the pad id
  in effect (``pad_token_id`` option / generation config, else the first EOS id:
  what transformers itself falls back to, and what fasttx pads with) plus the mask.
  ``sequences``: one row per output row (batch * num_return_sequences, same order),
  NEW tokens only, cut right after the first EOS id in effect; unchanged when no
  EOS was produced.  ``options`` are GenerationConfig names applied on top of the
  model's generation config (``do_sample=False`` is also passed, not recorded).
* text: ``tokenizer(prompts, padding=True, padding_side="left")`` ->
  ``generate(**options)`` -> ``batch_decode(out[:, prompt_width:],
  skip_special_tokens=True)`` (the new tokens' text, which is what fasttx's
  ``generate`` returns for a decoder-only model).

Robustness (every generation and text case): identical tokens from the float32 and
the float64 (``model.double()``) model; identical tokens with +-1e-4 of noise on
every score (float64, 3 seeds); greedy top-1/top-2 margins > 1e-3 on the processed
scores at every step of every unfinished row; and for batched cases each row
generated ALONE (float32) gives the same tokens as in the batch.  Inputs are picked
deterministically from a candidate pool (first that passes, and for some cases that
shows the behaviour the case is about, e.g. an EOS before max_new_tokens).  Logits
cases: each row alone (unpadded) gives the same logits as in the right-padded batch.

Weight shaping (random models are otherwise flat, repetitive and never stop):
N(0,1) embeddings, fan-in scaled projections, queries x3, attention/MLP output
projections x2..x6 (louder sublayers, so a tied head does not just re-predict the
current token), jittered norm weights, random biases; then ``calibrate_eos``: each
EOS head row becomes s * (its random direction + the mean final-hidden-state
direction), with s set so that EOS would win ~6% of greedy steps on random prompts,
and the final norm is scaled so that |logits| peak around 20 (keeps float32 noise of
the logits ~1-3e-5 against the tests' 1e-4).

transformers 5.x behaviours these fixtures pin (see tests/fixtures/README-decoder.md):
* no max_new_tokens / max_length anywhere: 20 NEW tokens (max_length = padded prompt
  width + 20, capped at max_position_embeddings), not max_length 20 in total;
* repetition_penalty ignores the left padding of each row (``prompt_ignore_length``);
* generate() numbers positions from the attention mask (cumsum - 1), a plain forward
  does not;
* a GGUF's rms eps is float32 (1e-5 -> 9.999999747378752e-06); its byte-level
  tokenizer gains an extra "<|endoftext|>" special token past the vocabulary when the
  file names no unknown token.

Made with torch 2.15.0, transformers 5.24.0, tokenizers 0.23.3, safetensors 0.8.0,
gguf 0.19.0, numpy 2.4.6 (recorded in each expected.json).  ``accelerate`` must be
installed for transformers to load a GGUF.

Usage:  python scripts/make_decoder_fixtures.py [name ...]   (deterministic; no
names = all models)
"""

from __future__ import annotations

import copy
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

# One thread: these models are tiny, and on a busy 2-core machine two OpenMP threads make
# each tiny matmul ~100x slower (spin-waiting).  Decisions are checked to be robust anyway.
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import gguf  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LogitsProcessorList,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from fixturelib import (  # noqa: E402
    FIXTURES,
    MAX_TRIES,
    PROMPTS,
    ROOT,
    TEXT_PROMPT_SETS,
    TRAINING_LINES,
    Checked,
    Pools,
    add_gguf_tensor,
    add_gguf_tokenizer,
    close_gguf,
    eos_ids_in_effect,
    fresh_fixture_dir,
    gen_cfg_value,
    gguf_tensor_name,
    gguf_writer,
    n_eos_finished,
    pad_left,
    pad_right,
    pick,
    reference_versions,
    rows_for,
    strip_private,
    write_expected,
    write_json,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

GGUF_FILE = "model.gguf"

# ---------------------------------------------------------------------------
# Tokenizers: byte-level BPE (GPT-2 pre-tokenizer regex), trained deterministically
# ---------------------------------------------------------------------------

TOKENIZERS = {
    # Llama-style: <pad>=0 <s>=1 </s>=2, two chat-ish specials and a second EOS <|eot|>=5; BOS added
    "llama": dict(specials=["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|eot|>"], bos="<s>",
                  config=dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>")),
    # Llama-2 style ids: <unk>=0 <s>=1 </s>=2; BOS added; no pad token of its own (pad = eos, as users do)
    "llama2": dict(specials=["<unk>", "<s>", "</s>"], bos="<s>",
                   config=dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")),
    # Qwen2-style: no BOS added
    "qwen2": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None,
                  config=dict(bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")),
    # GPT-2 style: the only special token is appended LAST (like id 50256)
    "gpt2": dict(specials=[], trailing=["<|endoftext|>"], bos=None,
                 config=dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>")),
}


def build_tokenizer(style: str, vocab_size: int) -> Tokenizer:
    st = TOKENIZERS[style]
    trailing = st.get("trailing", [])
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2 split regex
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(trailing),
        min_frequency=1,
        special_tokens=st["specials"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = TRAINING_LINES
    tok.train_from_iterator(lines * 2, trainer)
    if trailing:
        tok.add_special_tokens(trailing)
    if st["bos"] is not None:
        bos_id = tok.token_to_id(st["bos"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{st['bos']} $A", pair=f"{st['bos']} $A {st['bos']} $B", special_tokens=[(st["bos"], bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    for i, s in enumerate(st["specials"]):
        assert tok.token_to_id(s) == i
    return tok


def write_tokenizer(out: Path, tok: Tokenizer, style: str) -> None:
    tok.save(str(out / "tokenizer.json"))
    special = {k: v for k, v in TOKENIZERS[style]["config"].items() if v is not None}
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special,
        "model_max_length": 2048,
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
    }
    write_json(out / "tokenizer_config.json", cfg)
    write_json(out / "special_tokens_map.json", special)


# ---------------------------------------------------------------------------
# Model specs
# ---------------------------------------------------------------------------

# Hub (transformers 4.x) style config.json: rope_theta at the top level, explicit head_dim.
LLAMA_GQA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "head_dim": 12,
    "hidden_act": "silu",
    "hidden_size": 48,
    "initializer_range": 0.02,
    "intermediate_size": 96,
    "max_position_embeddings": 128,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 6,
    "num_hidden_layers": 2,
    "num_key_value_heads": 2,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500.0,
    "tie_word_embeddings": True,
    "torch_dtype": "float32",
    "transformers_version": "4.46.0",
    "use_cache": True,
    "vocab_size": 352,
}

# Hub (openai-community/gpt2) style config.json, minus task_specific_params.
GPT2_CONFIG = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 383,
    "embd_pdrop": 0.1,
    "eos_token_id": 383,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 48,
    "n_embd": 48,
    "n_head": 4,
    "n_layer": 2,
    "n_positions": 48,
    "resid_pdrop": 0.1,
    "summary_activation": None,
    "summary_first_dropout": 0.1,
    "summary_proj_to_labels": True,
    "summary_type": "cls_index",
    "summary_use_proj": True,
    "vocab_size": 384,
}

GGUF_BASE = dict(
    vocab_size=320,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)

# Shaping knobs (see shape_weights): emb_std, q_scale, out_scale, ln_jitter, bias_std,
# head_std, eos_rate and logit_max (see calibrate_eos), pos_std (gpt2).
SPECS = {
    "llama_gqa": dict(
        kind="llama", seed=4000, tokenizer="llama", vocab=352, storage=torch.float32, tied=True,
        eos=[2, 5], pad=0, emb_std=1.0, q_scale=3.0, out_scale=6.0, ln_jitter=0.25, head_std=1.0,
        eos_rate=0.06, logit_max=20.0,
    ),
    "llama_untied": dict(
        kind="llama", seed=5000, tokenizer="llama2", vocab=352, storage=torch.float16, tied=False,
        eos=[2], pad=None, emb_std=1.0, q_scale=3.0, out_scale=2.0, ln_jitter=0.25, bias_std=0.5,
        head_std=1.0, eos_rate=0.06, logit_max=20.0,
    ),
    "qwen2": dict(
        kind="qwen2", seed=6000, tokenizer="qwen2", vocab=320, storage=torch.bfloat16, tied=False,
        eos=[2, 0], pad=0, emb_std=1.0, q_scale=3.0, out_scale=2.0, ln_jitter=0.25, bias_std=0.5,
        head_std=1.0, eos_rate=0.06, logit_max=20.0,
    ),
    "gpt2": dict(
        kind="gpt2", seed=7000, tokenizer="gpt2", vocab=384, storage=torch.float32, tied=True,
        eos=[383], pad=None, emb_std=1.0, pos_std=0.5, q_scale=3.0, out_scale=6.0, ln_jitter=0.25,
        bias_std=0.2, head_std=1.0, eos_rate=0.06, logit_max=20.0,
    ),
    "gpt2_scaled": dict(
        kind="gpt2", seed=8000, tokenizer="gpt2", vocab=320, storage=torch.float16, tied=True,
        eos=[319], pad=None, emb_std=1.0, pos_std=0.5, q_scale=3.0, out_scale=6.0, ln_jitter=0.25,
        bias_std=0.2, head_std=1.0, eos_rate=0.06, logit_max=20.0,
    ),
}

GGUF_SPECS = {
    "llama_gguf_f16": dict(seed=9000, qtype=gguf.GGMLQuantizationType.F16, tied=False),
    # tied: louder sublayers, or the tied head keeps predicting the current token
    "llama_gguf_q8_0": dict(seed=9100, qtype=gguf.GGMLQuantizationType.Q8_0, tied=True, shape=dict(out_scale=6.0)),
    "llama_gguf_q4_0": dict(seed=9000, qtype=gguf.GGMLQuantizationType.Q4_0, tied=False),
    "llama_gguf_q4_1": dict(seed=9000, qtype=gguf.GGMLQuantizationType.Q4_1, tied=False),
}
GGUF_SHAPE = dict(
    kind="llama", tokenizer="llama", vocab=320, eos=[2], pad=0, emb_std=1.0, q_scale=3.0, out_scale=2.0,
    ln_jitter=0.25, head_std=1.0, eos_rate=0.06, logit_max=20.0,
)

ALL_MODELS = [*SPECS, *GGUF_SPECS]


# ---------------------------------------------------------------------------
# Building models
# ---------------------------------------------------------------------------


def shape_weights(model, spec: dict, gen: torch.Generator) -> None:
    """Make the random model decisive: N(0,1) embeddings, fan-in scaled projections with
    sharper queries and louder sublayer outputs (so the residual stream is not just the
    current token's embedding, which makes a tied model repeat its input), jittered norms,
    random biases.  EOS rows and the logit scale are set afterwards by calibrate_eos."""

    def rnd(shape, std=1.0):
        return std * torch.randn(shape, generator=gen)

    gpt2 = spec["kind"] == "gpt2"
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("embed_tokens.weight", "wte.weight")):
                p.copy_(rnd(p.shape, spec["emb_std"]))
            elif name.endswith("wpe.weight"):
                p.copy_(rnd(p.shape, spec["pos_std"]))
            elif name.endswith("lm_head.weight"):
                p.copy_(rnd(p.shape, spec["head_std"]))
            elif "norm" in name or ".ln_" in name:
                if name.endswith("bias"):
                    p.copy_(rnd(p.shape, 0.1))
                else:
                    p.copy_(1.0 + rnd(p.shape, spec["ln_jitter"]))
            elif name.endswith("bias"):
                p.copy_(rnd(p.shape, spec.get("bias_std", 0.0)))
            else:
                fan_in = p.shape[0] if gpt2 else p.shape[1]  # Conv1D stores [in, out]
                p.copy_(rnd(p.shape, 1.0 / math.sqrt(fan_in)))
                if name.endswith("q_proj.weight"):
                    p.mul_(spec["q_scale"])
                if name.endswith("attn.c_attn.weight"):
                    q = p[:, : p.shape[1] // 3]
                    q.mul_(spec["q_scale"])
                if name.endswith(("o_proj.weight", "down_proj.weight", "c_proj.weight")):
                    p.mul_(spec["out_scale"])


def calibrate_eos(model, spec: dict, gen: torch.Generator) -> dict:
    """Set each EOS head row to s * (its random direction + the mean hidden-state direction),
    s chosen so that EOS would be the greedy choice at about `eos_rate` of the steps of greedy
    runs (EOS suppressed) from random prompts: a random LM otherwise rarely or never ends a
    sequence.  Then scale the final norm so that |logits| stay around `logit_max`.
    Returns {eos id: s, "final_norm": c}."""
    st = TOKENIZERS[spec["tokenizer"]]
    lo = len(st["specials"])
    hi = spec["vocab"] - len(st.get("trailing", []))
    bos = st["specials"].index(st["bos"]) if st["bos"] else None
    eos_ids = spec["eos"]
    head = model.get_output_embeddings().weight
    hs = []
    with torch.no_grad():
        for k in range(24):
            n = 4 + int(torch.randint(0, 24, (1,), generator=gen))
            row = torch.randint(lo, hi, (n,), generator=gen).tolist()
            ids = torch.tensor([([bos] if bos is not None else []) + row])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                                 suppress_tokens=eos_ids, eos_token_id=None, pad_token_id=0)
            h = model.base_model(out[:, :-1]).last_hidden_state[0, ids.shape[1] - 1:]
            hs.append(h)
        h = torch.cat(hs)  # states that chose each generated token
        logits = h @ head.T
        others = logits.clone()
        others[:, eos_ids] = -math.inf
        top = others.max(dim=-1).values
        # direction: the row's own random direction plus the mean hidden-state direction (so
        # that EOS scores positively in most states, and is context dependent)
        mu = h.mean(dim=0)
        mu = mu / mu.norm()
        scales = {}
        for e in eos_ids:
            u = head[e] / head[e].norm() + mu
            proj = h @ u
            pos = proj > 0
            # scale s makes EOS win where s * proj > top
            ratios = torch.sort(top[pos] / proj[pos]).values
            q = spec["eos_rate"] / len(eos_ids)
            idx = min(len(ratios) - 1, max(0, int(q * len(h))))
            s = float(ratios[idx]) * 1.001
            head[e].copy_(s * u)
            scales[e] = s
        # Uniform logit scale: a final-norm factor c scales every logit by c (decisions and
        # margin ratios unchanged) so that the largest |logit| of the calibration states is
        # `logit_max`.  Keeps float32 rounding noise of the logits ~1e-5, well inside the
        # parity tests' 1e-4.
        c = spec["logit_max"] / float((h @ head.T).abs().max())
        final = model.transformer.ln_f if spec["kind"] == "gpt2" else model.model.norm
        final.weight.mul_(c)
        if getattr(final, "bias", None) is not None:
            final.bias.mul_(c)
        scales["final_norm"] = c
    return scales


def new_llama_like(name: str, spec: dict):
    if name == "llama_gqa":
        cfg = LlamaConfig.from_dict(dict(LLAMA_GQA_CONFIG))
        return LlamaForCausalLM(cfg)
    if name == "llama_untied":
        cfg = LlamaConfig(
            vocab_size=spec["vocab"], hidden_size=40, intermediate_size=88, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=1, head_dim=10, attention_bias=True,
            max_position_embeddings=64, rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
            bos_token_id=1, eos_token_id=2, pad_token_id=None,
        )
        return LlamaForCausalLM(cfg)
    if name == "qwen2":
        cfg = Qwen2Config(
            vocab_size=spec["vocab"], hidden_size=48, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False,
            use_sliding_window=False, bos_token_id=0, eos_token_id=2, pad_token_id=0,
        )
        return Qwen2ForCausalLM(cfg)
    if name == "gpt2":
        return GPT2LMHeadModel(GPT2Config.from_dict(dict(GPT2_CONFIG)))
    if name == "gpt2_scaled":
        cfg = GPT2Config(
            vocab_size=spec["vocab"], n_positions=64, n_embd=40, n_layer=3, n_head=4, n_inner=80,
            activation_function="gelu", scale_attn_by_inverse_layer_idx=True, bos_token_id=319,
            eos_token_id=319,
        )
        return GPT2LMHeadModel(cfg)
    raise ValueError(name)


def untie_if_needed(model, tied: bool) -> None:
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if not tied and head.weight.data_ptr() == emb.weight.data_ptr():
        head.weight = torch.nn.Parameter(torch.empty_like(emb.weight))


def saved_names(model) -> set[str]:
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        with safe_open(os.path.join(tmp, "model.safetensors"), "pt") as f:
            return set(f.keys())


def build_model(name: str, out: Path) -> None:
    spec = SPECS[name]
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    model = new_llama_like(name, spec).eval()
    untie_if_needed(model, spec["tied"])
    shape_weights(model, spec, gen)
    spec["_eos_scales"] = calibrate_eos(model, spec, gen)
    model.to(spec["storage"])
    names = saved_names(model)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k in names}
    assert set(sd) == names, (set(sd) ^ names)

    if name == "llama_gqa":
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        write_json(out / "config.json", LLAMA_GQA_CONFIG)
        write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": [2, 5], "pad_token_id": 0})
    elif name == "gpt2":
        # openai-community/gpt2 layout: no "transformer." prefix, causal-mask buffers stored
        hub = {k.removeprefix("transformer."): v for k, v in sd.items()}
        n = GPT2_CONFIG["n_positions"]
        for i in range(GPT2_CONFIG["n_layer"]):
            hub[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.float32)).view(1, 1, n, n).contiguous()
        assert "lm_head.weight" not in hub
        save_file(hub, str(out / "model.safetensors"), metadata={"format": "pt"})
        write_json(out / "config.json", GPT2_CONFIG)
        write_json(out / "generation_config.json", {"bos_token_id": 383, "eos_token_id": 383})
    else:
        if name == "qwen2":
            model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=[2, 0], pad_token_id=0)
        model.save_pretrained(str(out))
        assert sorted(p.name for p in out.glob("*.safetensors")) == ["model.safetensors"]
        if name != "qwen2":
            # no generation_config.json: transformers derives it from config.json
            (out / "generation_config.json").unlink(missing_ok=True)


def load_model(out: Path):
    return AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()


def verify_loaded(name: str, out: Path, m32) -> None:
    """Every stored tensor is a model parameter (or a GPT-2 mask buffer) loaded exactly;
    tying and the RoPE variant are what the config says."""
    spec = SPECS[name]
    with safe_open(str(out / "model.safetensors"), "pt") as h:
        stored = {k: h.get_tensor(k) for k in h.keys()}
    params = dict(m32.named_parameters(remove_duplicate=False))
    for k, t in stored.items():
        if name == "gpt2" and k.endswith(".attn.bias"):
            assert t.dtype == torch.float32
            continue
        assert t.dtype == spec["storage"], (name, k, t.dtype)
        pk = k if k in params else f"transformer.{k}"
        assert pk in params, f"{name}: {k} not a model parameter"
        assert torch.equal(params[pk].detach(), t.float()), f"{name}: {k} not loaded exactly"
    head, emb = m32.get_output_embeddings().weight, m32.get_input_embeddings().weight
    assert (head.data_ptr() == emb.data_ptr()) == spec["tied"], name
    assert ("lm_head.weight" in stored) == (not spec["tied"]), name
    check_runtime_config(name, m32)


def check_runtime_config(name: str, m32) -> None:
    cfg = m32.config
    if name == "gpt2":
        assert cfg.activation_function == "gelu_new" and cfg.n_positions == 48
    if name == "gpt2_scaled":
        assert cfg.scale_attn_by_inverse_layer_idx and cfg.activation_function == "gelu" and cfg.n_inner == 80
        scal = [blk.attn.scaling for blk in m32.transformer.h]
        assert all(abs(s - (10 ** -0.5) / (i + 1)) < 1e-12 for i, s in enumerate(scal)), scal
    if cfg.model_type in ("llama", "qwen2"):
        hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        theta, factor = {"llama_gqa": (500.0, 1.0), "llama_untied": (10000.0, 2.0), "qwen2": (1e6, 1.0)}.get(
            name, (GGUF_BASE["rope_theta"], 1.0)
        )
        want = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd)) / factor
        got = m32.model.rotary_emb.inv_freq
        assert torch.allclose(got, want, rtol=1e-6, atol=0), (name, got, want)
        assert m32.model.rotary_emb.attention_scaling == 1.0


# ---------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------


def llama_permute(w: np.ndarray, n_head: int, n_head_kv: int | None) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
FILE_TYPES = {
    gguf.GGMLQuantizationType.F16: gguf.LlamaFileType.MOSTLY_F16,
    gguf.GGMLQuantizationType.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    gguf.GGMLQuantizationType.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    gguf.GGMLQuantizationType.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1,
}


def gguf_name(hf: str) -> str:
    return gguf_tensor_name(hf, GGUF_LAYER_NAMES)


def write_gguf(path: Path, model: LlamaForCausalLM, tok: Tokenizer, qtype, tied: bool) -> dict:
    cfg = model.config
    w = gguf_writer(path, "llama", cfg)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(FILE_TYPES[qtype])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    n_tokens = add_gguf_tokenizer(w, tok, bos=GGUF_BASE["bos_token_id"], eos=GGUF_BASE["eos_token_id"],
                                  pad=GGUF_BASE["pad_token_id"])
    assert n_tokens == cfg.vocab_size

    stored = {}
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight" and tied:
            continue
        a = t.detach().float().numpy()
        if hf.endswith("q_proj.weight"):
            a = llama_permute(a, cfg.num_attention_heads, cfg.num_attention_heads)
        elif hf.endswith("k_proj.weight"):
            a = llama_permute(a, cfg.num_attention_heads, cfg.num_key_value_heads)
        name = gguf_name(hf)
        stored[name] = add_gguf_tensor(w, name, a, qtype)
    close_gguf(w)
    return stored


def build_gguf(name: str, out: Path, tok: Tokenizer) -> None:
    spec = GGUF_SPECS[name]
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    base = {k: v for k, v in GGUF_BASE.items() if k not in ("rope_theta",)}
    cfg = LlamaConfig(**base, tie_word_embeddings=spec["tied"],
                      rope_parameters={"rope_type": "default", "rope_theta": GGUF_BASE["rope_theta"]})
    model = LlamaForCausalLM(cfg).eval()
    untie_if_needed(model, spec["tied"])
    shape = {**GGUF_SHAPE, **spec.get("shape", {})}
    shape_weights(model, shape, gen)
    spec["_eos_scales"] = calibrate_eos(model, shape, gen)
    stored = write_gguf(out / GGUF_FILE, model, tok, spec["qtype"], spec["tied"])

    # what the file holds, read back with gguf's reader, dequantized and un-permuted,
    # must be what transformers loads
    reader = gguf.GGUFReader(str(out / GGUF_FILE))
    assert {t.name: t.tensor_type for t in reader.tensors} == stored
    assert ("output.weight" in stored) == (not spec["tied"])
    return model


def load_gguf_model(out: Path):
    return AutoModelForCausalLM.from_pretrained(str(out), gguf_file=GGUF_FILE, dtype=torch.float32).eval()


def verify_gguf_loaded(name: str, out: Path, m32, base) -> None:
    spec = GGUF_SPECS[name]
    cfg = m32.config
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "rms_norm_eps", "vocab_size", "bos_token_id",
              "eos_token_id", "pad_token_id"):
        want = GGUF_BASE[k]
        if k == "rms_norm_eps":
            want = float(np.float32(want))  # GGUF stores it as float32: 9.999999747378752e-06
        assert getattr(cfg, k) == want, (k, getattr(cfg, k), want)
    assert cfg.rope_parameters["rope_theta"] == GGUF_BASE["rope_theta"]
    tied = m32.lm_head.weight.data_ptr() == m32.model.embed_tokens.weight.data_ptr()
    assert tied == spec["tied"] == cfg.tie_word_embeddings, name
    # transformers' weights == gguf's own dequantization of the file, un-permuted
    reader = gguf.GGUFReader(str(out / GGUF_FILE))
    params = dict(m32.named_parameters(remove_duplicate=False))
    inv = {gguf_name(k): k for k in params if k != "lm_head.weight" or not spec["tied"]}
    max_q_err = 0.0
    for t in reader.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        hf = inv[t.name]
        if hf.endswith("q_proj.weight"):
            a = unpermute(a, cfg.num_attention_heads, cfg.num_attention_heads)
        elif hf.endswith("k_proj.weight"):
            a = unpermute(a, cfg.num_attention_heads, cfg.num_key_value_heads)
        assert torch.equal(params[hf].detach(), torch.from_numpy(a.astype(np.float32))), (name, hf)
        max_q_err = max(max_q_err, float((params[hf].detach() - base.state_dict()[hf].float()).abs().max()))
    check_runtime_config(name, m32)
    return max_q_err


def unpermute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    if n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------
# Running transformers
# ---------------------------------------------------------------------------


def pad_id_in_effect(model, options: dict) -> int:
    """What transformers fills finished rows with, and what users (and fasttx) pad prompts
    with: the pad token, else the first EOS id."""
    pad = gen_cfg_value(model, options, "pad_token_id")
    if pad is not None:
        return pad
    eos = eos_ids_in_effect(model, options)
    return eos[0] if eos else 0


def run_generate(model, rows, options, jitter=None):
    ids, mask = pad_left(rows, pad_id_in_effect(model, options))
    extra = {"logits_processor": LogitsProcessorList([jitter])} if jitter is not None else {}
    with torch.no_grad():
        res = model.generate(
            input_ids=ids,
            attention_mask=mask,
            **extra,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            **options,
        )
    res.prompt_width = ids.shape[1]
    return res


def effective_max_new(model, options, width: int) -> int:
    """New-token budget of a left-padded batch `width` wide, as transformers 5.x computes it:
    max_new_tokens, else max_length - width, else (nothing set) 20 new tokens capped so that
    width + new <= max_position_embeddings."""
    mx = options.get("max_new_tokens", model.generation_config.max_new_tokens)
    if mx is not None:
        return mx
    ml = options.get("max_length", model.generation_config.max_length)
    if ml is not None:
        return ml - width
    return min(width + 20, model.config.max_position_embeddings) - width


# ---------------------------------------------------------------------------
# Inputs and cases
# ---------------------------------------------------------------------------


class DecoderPools(Pools):
    """Candidate prompts: tokenized sentences (with the tokenizer's BOS if it adds one) and
    random rows of ordinary tokens (no special ids)."""

    medium_base = 8
    long_base, long_spread = 20, 13

    def __init__(self, tok: Tokenizer, seed: int, n_special: int, bos: int | None, max_len: int):
        super().__init__(tok, seed)
        self.lo, self.hi = n_special, self.vocab - (1 if n_special == 0 else 0)
        self.bos = bos
        self.max_len = max_len

    def rand_row(self, n: int, cap: bool = True) -> list[int]:
        if cap:
            n = min(n, self.max_len)
        body = [int(x) for x in self.rng.randint(self.lo, self.hi, size=n - (self.bos is not None))]
        return ([self.bos] if self.bos is not None else []) + body


def generate_cases(name: str, checker: Checked, pools: Pools, max_total: int):
    m = checker.m32
    cases = []

    def maxnew(o, rows):
        return effective_max_new(m, o, max(len(x) for x in rows))

    def add(cname, rows, options, r):
        assert max(len(x) for x in rows) + maxnew(options, rows) <= max_total, (name, cname)
        cases.append(dict(
            name=cname, input_ids=rows, options=options, sequences=r["sequences"],
            _margin=r["margin"], _same=r["same"], _stable=r["stable"], _alone=r["alone"],
            _eos_finished=n_eos_finished(r, maxnew(options, rows)), _rows_total=len(r["sequences"]),
            _beams=r["num_beams"],
        ))

    def eos_somewhere(o):
        return lambda r, o=o: n_eos_finished(r, o["max_new_tokens"]) >= 1

    def eos_mid(o):
        """some row ends with EOS after at least 4 tokens (not right away)"""
        return lambda r, o=o: any(
            4 <= len(s) < o["max_new_tokens"] and s[-1] in r["eos"] for s in r["sequences"])

    def no_eos_somewhere(o):
        return lambda r, o=o: any(len(s) == o["max_new_tokens"] and s[-1] not in r["eos"] for s in r["sequences"])

    # 1. greedy, batch of 1 (preferably one that stops at EOS)
    o = {"max_new_tokens": 16}
    rows, r = pick(checker, pools, "single", o, prefer=eos_mid(o))
    add("greedy_single", rows, o, r)

    # 2. greedy, ragged batch of 3 (left padding): one row stops at EOS, one does not
    o = {"max_new_tokens": 14}
    rows, r = pick(checker, pools, "ragged3", o, lambda r: eos_somewhere(o)(r) and no_eos_somewhere(o)(r))
    add("greedy_ragged3", rows, o, r)

    # 3. min_new_tokens forcing generation past an EOS
    o0 = {"max_new_tokens": 16}
    chosen = None
    for k in range(MAX_TRIES):
        rows = rows_for("single", pools, k + 3)
        if rows is None:
            continue
        r0 = checker.run(rows, o0)
        s = r0["sequences"][0]
        if not (Checked.ok(r0) and s[-1] in r0["eos"] and len(s) <= 8):
            continue
        o = {"max_new_tokens": 16, "min_new_tokens": len(s) + 2}
        r = checker.run(rows, o)
        if Checked.ok(r):
            if n_eos_finished(r, 16):
                chosen = (rows, o, r)
                break
            chosen = chosen or (rows, o, r)
    if chosen is None:
        raise RuntimeError(f"{name}: no min_new_tokens candidate")
    add("greedy_min_new_tokens", *chosen)

    # 4. explicit eos_token_id list: cut greedy output at a token it produces anyway
    o0 = {"max_new_tokens": 14}
    model_eos = eos_ids_in_effect(m, {})
    for k in range(MAX_TRIES):
        rows = rows_for("single", pools, k + 5)
        if rows is None:
            continue
        r0 = checker.run(rows, o0)
        s = r0["sequences"][0]
        cand = [t for j, t in enumerate(s[2:-2], start=2) if t not in s[:j] and t not in model_eos]
        if not (Checked.ok(r0) and cand):
            continue
        o = {"max_new_tokens": 14, "eos_token_id": [cand[0], model_eos[0]]}
        r = checker.run(rows, o)
        if Checked.ok(r) and r["sequences"][0][-1] == cand[0]:
            break
    else:
        raise RuntimeError(f"{name}: no eos-list candidate")
    add("greedy_eos_list", rows, o, r)

    # 5. repetition_penalty 1.3, greedy, ragged batch of 2.  transformers 5.x passes
    #    prompt_ignore_length = number of left-pad tokens per row: pads are NOT penalized
    #    (this matters when pad == EOS, as for llama_untied / gpt2, or pad is a likely token)
    o = {"max_new_tokens": 14, "repetition_penalty": 1.3}
    rows, r = pick(checker, pools, "ragged2", o, prefer=eos_mid(o))
    add("greedy_repetition_penalty", rows, o, r)

    # 6. no_repeat_ngram_size 2, greedy
    o = {"max_new_tokens": 16, "no_repeat_ngram_size": 2}
    rows, r = pick(checker, pools, "single", o, prefer=eos_mid(o), start=2)
    add("greedy_no_repeat_ngram2", rows, o, r)

    # 7. beam 3, early_stopping False, length_penalty 1.0
    o = {"num_beams": 3, "early_stopping": False, "length_penalty": 1.0, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "single", o, eos_somewhere(o), prefer=eos_mid(o))
    add("beam3_es_false_lp1", rows, o, r)

    # 8. beam 4, 2 returned, length_penalty 0.6, early_stopping True, ragged batch of 2
    o = {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.6, "early_stopping": True, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "ragged2", o, lambda r: n_eos_finished(r, 12) >= 2)
    add("beam4_nrs2_lp06_es_true", rows, o, r)

    # 9. beam 3, early_stopping "never", length_penalty 2.0
    o = {"num_beams": 3, "early_stopping": "never", "length_penalty": 2.0, "max_new_tokens": 10}
    rows, r = pick(checker, pools, "ragged2", o, prefer=eos_mid(o))
    add("beam3_never_lp2", rows, o, r)

    # 10. beam 3 + repetition_penalty 1.3 (applied to log-probs in beam search), ragged batch
    o = {"num_beams": 3, "repetition_penalty": 1.3, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "ragged2", o, prefer=eos_mid(o), start=1)
    add("beam3_repetition_penalty", rows, o, r)

    # 11. beam 3 + no_repeat_ngram_size 2, 2 returned, ragged batch
    o = {"num_beams": 3, "no_repeat_ngram_size": 2, "num_return_sequences": 2, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "ragged2", o, prefer=eos_mid(o), start=3)
    add("beam3_no_repeat_ngram2", rows, o, r)

    # 12. beam 3 with an explicit EOS list (more candidates kept per step)
    o = {"num_beams": 3, "max_new_tokens": 10, "eos_token_id": [model_eos[0], 3 if model_eos[0] != 3 else 4]}
    rows, r = pick(checker, pools, "ragged3", o, prefer=eos_mid(o))
    add("beam3_eos_list", rows, o, r)

    # 13. beam 2, negative length penalty, ragged batch of 3, max_new_tokens bound for some rows
    o = {"num_beams": 2, "length_penalty": -0.5, "max_new_tokens": 8}
    rows, r = pick(checker, pools, "ragged3", o, prefer=lambda r: eos_somewhere(o)(r) and no_eos_somewhere(o)(r))
    add("beam2_lp_neg05_ragged3", rows, o, r)

    if name == "llama_gqa":
        # generation_config.json defaults only: eos [2, 5], pad 0, default max_length 20
        # (max_length counts the prompt for a decoder-only model)
        o = {}
        rows, r = pick(checker, pools, "ragged2", o,
                       prefer=lambda r: any(q and q[-1] in r["eos"] for q in r["sequences"]))
        add("defaults", rows, o, r)
        o = {}
        rows, r = pick(checker, pools, "single", o, start=4)
        add("defaults_single", rows, o, r)
    if name in ("llama_untied", "gpt2"):
        # no length option anywhere, long prompt: transformers' "20 new tokens" default is
        # capped at max_position_embeddings (64 / gpt2's n_positions 48) -> fewer new tokens
        o = {}
        chosen = None
        for k in range(MAX_TRIES):
            rows = [pools.rand_row(max_total - 8 - k % 7, cap=False)]
            budget = maxnew(o, rows)
            assert budget < 20 and len(rows[0]) + budget == max_total
            r = checker.run(rows, o)
            if Checked.ok(r):
                chosen = chosen or (rows, r)
                if len(r["sequences"][0]) == budget and r["sequences"][0][-1] not in r["eos"]:
                    chosen = (rows, r)
                    break
        if chosen is None:
            raise RuntimeError(f"{name}: no defaults_capped candidate")
        add("defaults_capped", chosen[0], o, chosen[1])
    return cases


def text_cases(name: str, tok_hf, checker: Checked, max_total: int):
    specs = [
        ("text_greedy", {"max_new_tokens": 12}),
        ("text_beam", {"num_beams": 3, "max_new_tokens": 10, "length_penalty": 1.0}),
    ]
    out = []
    for i, (cname, options) in enumerate(specs):
        for j in range(len(TEXT_PROMPT_SETS)):
            prompts = TEXT_PROMPT_SETS[(i + j) % len(TEXT_PROMPT_SETS)]
            rows = tok_hf(prompts)["input_ids"]
            if max(len(x) for x in rows) + options["max_new_tokens"] > max_total:
                continue
            r = checker.run(rows, options)
            if not Checked.ok(r):
                continue
            # the transformers way: tokenizer(padding, left) -> generate -> decode the new tokens
            batch = tok_hf(prompts, padding=True, padding_side="left", return_tensors="pt")
            assert batch["input_ids"].tolist() == pad_left(rows, pad_id_in_effect(checker.m32, options))[0].tolist()
            with torch.no_grad():
                seqs = checker.m32.generate(**batch, do_sample=False, **options)
            assert torch.equal(seqs, r["raw"].sequences), "tokenizer padding differs from pad_left()"
            texts = tok_hf.batch_decode(seqs[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            assert texts == [tok_hf.decode(s, skip_special_tokens=True) for s in r["sequences"]]
            out.append(dict(name=cname, prompts=prompts, options=options, texts=texts,
                            _margin=r["margin"], _same=r["same"], _stable=r["stable"], _alone=r["alone"]))
            break
        else:
            raise RuntimeError(f"{name}: no clean prompt set for {cname}")
    return out


def logits_cases(pools: Pools, m32, m64, pad: int, long_len: int):
    specs = [
        ("logits_0", [pools.sent[3], pools.sent[5]]),  # batch of 2, the second right-padded
        ("logits_1", [pools.rand_row(long_len, cap=False)]),  # one long row (gpt2: all 48 positions)
        ("logits_2", [pools.rand_row(9), pools.rand_row(12), pools.rand_row(5)]),
    ]
    cases, arrays, diffs = [], {}, {}
    for name, rows in specs:
        ids, mask = pad_right(rows, pad)
        with torch.no_grad():
            l32 = m32(input_ids=ids, attention_mask=mask).logits
            l64 = m64(input_ids=ids, attention_mask=mask).logits
        arrays[name] = l32.numpy().astype(np.float32)
        diffs[name] = float((l32.double() - l64).abs().max())
        # the real positions do not depend on the padding: each row alone gives the same logits
        for i, r in enumerate(rows):
            with torch.no_grad():
                alone = m32(input_ids=torch.tensor([r])).logits[0]
            d = float((alone - l32[i, : len(r)]).abs().max())
            assert d < 1e-4, (name, i, d)
        cases.append(dict(name=name, input_ids=ids.tolist(), attention_mask=mask.tolist()))
    return cases, arrays, diffs


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def model_limits(name: str) -> int:
    """Longest prompt + new tokens a case may use."""
    if name == "gpt2":
        return GPT2_CONFIG["n_positions"]
    if name in ("gpt2_scaled", "llama_untied"):
        return 64
    return 96


def logits_len(name: str) -> int:
    return 48 if name == "gpt2" else 40


def finish(name, out, m32, tok_hf, tok, pools, pad, versions, extra=None):
    m64 = copy.deepcopy(m32).double()
    checker = Checked(m32, m64, run_generate, alone=True)
    max_total = model_limits(name)
    lcases, arrays, ldiffs = logits_cases(pools, m32, m64, pad, logits_len(name))
    gcases = generate_cases(name, checker, pools, max_total)
    tcases = text_cases(name, tok_hf, checker, max_total)
    np.savez_compressed(out / "logits.npz", **arrays)
    write_expected(out / "expected.json", {
        "versions": versions,
        "logits": lcases,
        "generate": [strip_private(c) for c in gcases],
        "text": [strip_private(c) for c in tcases],
    })
    for f in out.iterdir():
        f.chmod(0o644)
    return dict(name=name, logits_diff=ldiffs, gen=gcases, text=tcases, **(extra or {}))


def make_hf(name: str, versions: dict) -> dict:
    spec = SPECS[name]
    out = fresh_fixture_dir(name)
    tok = build_tokenizer(spec["tokenizer"], spec["vocab"])
    write_tokenizer(out, tok, spec["tokenizer"])
    build_model(name, out)

    tok_hf = AutoTokenizer.from_pretrained(str(out))
    assert len(tok_hf) == tok.get_vocab_size()
    for p in PROMPTS:
        assert tok_hf(p)["input_ids"] == tok.encode(p).ids
    m32 = load_model(out)
    verify_loaded(name, out, m32)
    assert eos_ids_in_effect(m32, {}) == spec["eos"], (name, m32.generation_config.eos_token_id)
    assert m32.generation_config.pad_token_id == spec["pad"], (name, m32.generation_config.pad_token_id)
    pad = pad_id_in_effect(m32, {})
    assert tok_hf.pad_token_id in (None, pad), (name, tok_hf.pad_token_id, pad)
    if tok_hf.pad_token_id is None:
        tok_hf.pad_token = tok_hf.convert_ids_to_tokens(pad)  # what users do for GPT-2
    n_special = len(TOKENIZERS[spec["tokenizer"]]["specials"])
    bos = tok.token_to_id(TOKENIZERS[spec["tokenizer"]]["bos"]) if TOKENIZERS[spec["tokenizer"]]["bos"] else None
    pools = DecoderPools(tok, spec["seed"] + 7, n_special, bos, model_limits(name) - 20)
    return finish(name, out, m32, tok_hf, tok, pools, pad if spec["pad"] is not None else 0, versions)


def make_gguf(name: str, versions: dict) -> dict:
    out = fresh_fixture_dir(name)
    tok = build_tokenizer(GGUF_SHAPE["tokenizer"], GGUF_SHAPE["vocab"])
    base = build_gguf(name, out, tok)

    tok_hf = AutoTokenizer.from_pretrained(str(out), gguf_file=GGUF_FILE)
    # transformers quirk: its GGUF byte-level tokenizer (GPT2Tokenizer) adds its default unk
    # token "<|endoftext|>" as one extra special token past the model's vocabulary when the
    # file names no unknown token.  It never occurs in these prompts or outputs.
    extra = {i: t.content for i, t in tok_hf.added_tokens_decoder.items() if i >= tok.get_vocab_size()}
    assert len(tok_hf) == tok.get_vocab_size() + len(extra) and set(extra.values()) <= {"<|endoftext|>"}, extra
    for i in range(tok.get_vocab_size()):
        assert tok_hf.convert_ids_to_tokens(i) == tok.id_to_token(i), i
    for p in PROMPTS:
        assert tok_hf(p)["input_ids"] == tok.encode(p).ids, (p, tok_hf(p)["input_ids"], tok.encode(p).ids)
    assert (tok_hf.bos_token_id, tok_hf.eos_token_id, tok_hf.pad_token_id) == (1, 2, 0)
    m32 = load_gguf_model(out)
    q_err = verify_gguf_loaded(name, out, m32, base)
    assert eos_ids_in_effect(m32, {}) == [2] and m32.generation_config.pad_token_id == 0
    pools = DecoderPools(tok, GGUF_SPECS[name]["seed"] + 7, len(TOKENIZERS["llama"]["specials"]), 1, 76)
    return finish(name, out, m32, tok_hf, tok, pools, 0, versions, dict(q_err=q_err))


def main(argv: list[str]) -> int:
    versions = reference_versions()
    names = argv or ALL_MODELS
    unknown = set(names) - set(ALL_MODELS)
    if unknown:
        raise SystemExit(f"unknown models: {sorted(unknown)}; choose from {ALL_MODELS}")
    summaries = [make_hf(n, versions) if n in SPECS else make_gguf(n, versions) for n in names]

    print(f"versions: {versions} (safetensors {safetensors.__version__}, numpy {np.__version__})")
    overall = math.inf
    for s in summaries:
        qerr = f"  (max |dequantized - original| weight: {s['q_err']:.3g})" if "q_err" in s else ""
        print(f"\n== {s['name']}{qerr}")
        for k, v in s["logits_diff"].items():
            print(f"  {k}: max |f32 - f64| logits = {v:.2e}")
        for c in s["gen"]:
            m = c["_margin"]
            if m is not None:
                overall = min(overall, m)
            kind = "greedy" if c["_beams"] == 1 else f"beam{c['_beams']}"
            lens = [len(q) for q in c["sequences"]]
            print(f"  {c['name']:28s} {kind:6s} f32==f64: {c['_same']}  jitter-stable: {c['_stable']}  "
                  f"alone==batch: {c['_alone']}  margin: {'-' if m is None else f'{m:.4f}':>7s}  "
                  f"eos-finished rows: {c['_eos_finished']}/{c['_rows_total']}  lens {lens}")
        for c in s["text"]:
            m = c["_margin"]
            if m is not None:
                overall = min(overall, m)
            print(f"  {c['name']:28s} f32==f64: {c['_same']}  jitter-stable: {c['_stable']}  "
                  f"margin: {'-' if m is None else f'{m:.4f}'}  texts: {c['texts']}")
        nb = sum(1 for c in s["gen"] if c["_beams"] > 1 and c["_eos_finished"] > 0)
        ng = sum(1 for c in s["gen"] if c["_beams"] == 1 and c["_eos_finished"] > 0)
        print(f"  beam cases with EOS-finished returned rows: {nb}; greedy cases with EOS: {ng}")
    print(f"\nminimum greedy top1-top2 margin over all cases: {overall:.4f}")
    total = 0
    for n in ALL_MODELS:
        d = FIXTURES / n
        if not d.exists():
            continue
        for p in sorted(d.iterdir()):
            total += p.stat().st_size
            print(f"  {p.relative_to(ROOT)}  {p.stat().st_size} bytes")
    print(f"total decoder fixtures size: {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
