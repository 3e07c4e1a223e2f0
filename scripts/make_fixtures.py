#!/usr/bin/env python3
"""Generate the committed T5 parity fixtures under ``tests/fixtures/``.

What it makes
-------------
Three tiny, seeded, random T5 models, each a complete Hugging Face model
directory (config.json, weights, tokenizer.json, tokenizer_config.json,
special_tokens_map.json, optional generation_config.json), plus the
reference outputs of ``transformers`` for them:

* ``tests/fixtures/t5_v1_0/``   original T5: relu FFN, tied + rescaled head,
  inner dim (heads*d_kv = 48) != d_model (64), 3 encoder / 2 decoder layers,
  default buckets (32 / 128); one float32 ``model.safetensors``; a Hub-style
  config.json (no ``feed_forward_proj`` / ``relative_attention_max_distance``
  / ``tie_word_embeddings`` keys: the defaults apply); config vocab (400) is
  larger than the tokenizer (384), like the real t5 checkpoints.
* ``tests/fixtures/t5_v1_1/``   Flan-T5 style: gated-gelu (tanh gelu), untied
  ``lm_head.weight`` (no rescale), 2 encoder / 3 decoder layers, 3 heads,
  d_kv 16, d_model 40, 8 buckets / max distance 20; weights stored as
  bfloat16; Flan-style config.json with ``tie_word_embeddings: false``;
  no generation_config.json.
* ``tests/fixtures/t5_sharded/`` gated-gelu with a tied, rescaled head,
  1+1 layers, 2 heads, d_kv 32; float16 weights written by
  ``save_pretrained`` in two shards + ``model.safetensors.index.json``;
  config.json exactly as transformers 5.x writes it (``scale_decoder_outputs``
  key present); generation_config.json with non-default defaults
  (eos [1, 7], num_beams 2, max_new_tokens 9).

For every model: ``expected.json`` (cases, see layout below) and
``logits.npz`` (float32 arrays named after the logits cases).

expected.json layout::

    {
      "versions": {"torch": ..., "transformers": ..., "tokenizers": ...},
      "logits":   [{"name", "input_ids", "attention_mask", "decoder_input_ids"}],
      "generate": [{"name", "input_ids" (ragged, unpadded), "options", "sequences"}],
      "text":     [{"name", "prompts", "options", "texts"}]
    }

``sequences`` are in fasttx's API form: one row per transformers output row
(batch * num_return_sequences, same order), decoder start token dropped, cut
right after the first EOS id in effect (the ``eos_token_id`` option if given,
else the model's generation config); unchanged when no EOS was produced.
``options`` are the user-facing GenerationConfig names; the script also
passes ``do_sample=False`` (not recorded) so no generation config can turn
sampling on.  Options are applied on top of the model's generation config
exactly like ``model.generate(**options)`` does (this matters for
t5_sharded, whose generation_config.json sets num_beams=2 etc.).

Robustness: every generation case is run with the float32 model and with
``model.double()``; tokens must be identical.  The float64 run is repeated
with +-1e-4 of noise added to every score (3 seeds); tokens must not change
(this guards the beam decisions).  Greedy steps must have a top-1/top-2
margin > 1e-3 on the processed scores.  Inputs for each case are
picked deterministically from a candidate pool, taking the first that passes
these checks (and, for some cases, shows the behaviour the case is about,
e.g. beams that finish with EOS before max_new_tokens).

Made with (pip install torch transformers safetensors tokenizers numpy):
torch 2.15.0, transformers 5.24.0, tokenizers 0.23.3, safetensors 0.8.0,
numpy 2.4.6 (the exact versions are also recorded in each expected.json).

Usage:  python scripts/make_fixtures.py      (re-runnable, deterministic)
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
torch.use_deterministic_algorithms(True)

import safetensors  # noqa: E402
import tokenizers  # noqa: E402
import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessorList,
    T5Config,
    T5ForConditionalGeneration,
)

from fixturelib import (  # noqa: E402
    FIXTURES,
    MAX_TRIES,
    PROMPTS,
    ROOT,
    TEXT_PROMPT_SETS,
    TRAINING_LINES,
    Checked,
    Jitter,
    Pools,
    cache_kwargs,
    n_eos_finished,
    pad_right,
    pick,
    rows_for,
    strip_private,
    write_expected,
    write_json,
)

transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def build_tokenizer(vocab_size: int) -> Tokenizer:
    """A T5-like tokenizer: <pad>=0, </s>=1, <unk>=2, BPE (deterministic
    trainer), Metaspace pre-tokenizer/decoder, '$A </s>' post-processor."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<pad>", "</s>", "<unk>"],
        show_progress=False,
    )
    lines = TRAINING_LINES
    tok.train_from_iterator(lines * 2, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>",
        pair="$A </s> $B </s>",
        special_tokens=[("</s>", 1)],
    )
    assert tok.token_to_id("<pad>") == 0 and tok.token_to_id("</s>") == 1 and tok.token_to_id("<unk>") == 2
    assert tok.get_vocab_size() == vocab_size, (tok.get_vocab_size(), vocab_size)
    return tok


def write_tokenizer(out: Path, tok: Tokenizer) -> None:
    tok.save(str(out / "tokenizer.json"))
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "model_max_length": 512,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
    }
    write_json(out / "tokenizer_config.json", tok_cfg)
    write_json(out / "special_tokens_map.json", {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})


# ---------------------------------------------------------------------------
# Model specs
# ---------------------------------------------------------------------------

# Hub-style config.json of t5-small (original T5), minus task_specific_params.
V1_0_CONFIG = {
    "architectures": ["T5ForConditionalGeneration"],
    "d_ff": 96,
    "d_kv": 12,
    "d_model": 64,
    "decoder_start_token_id": 0,
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "t5",
    "n_positions": 512,
    "num_decoder_layers": 2,
    "num_heads": 4,
    "num_layers": 3,
    "output_past": True,
    "pad_token_id": 0,
    "relative_attention_num_buckets": 32,
    "vocab_size": 400,
}

# Hub-style config.json of google/flan-t5-small, minus task_specific_params.
V1_1_CONFIG = {
    "architectures": ["T5ForConditionalGeneration"],
    "d_ff": 80,
    "d_kv": 16,
    "d_model": 40,
    "decoder_start_token_id": 0,
    "dense_act_fn": "gelu_new",
    "dropout_rate": 0.1,
    "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu",
    "initializer_factor": 1.0,
    "is_encoder_decoder": True,
    "is_gated_act": True,
    "layer_norm_epsilon": 1e-06,
    "model_type": "t5",
    "n_positions": 512,
    "num_decoder_layers": 3,
    "num_heads": 3,
    "num_layers": 2,
    "output_past": True,
    "pad_token_id": 0,
    "relative_attention_max_distance": 20,
    "relative_attention_num_buckets": 8,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.23.1",
    "use_cache": True,
    "vocab_size": 320,
}

SHARDED_CONFIG = dict(
    vocab_size=256,
    d_model=48,
    d_kv=32,
    d_ff=72,
    num_layers=1,
    num_decoder_layers=1,
    num_heads=2,
    relative_attention_num_buckets=16,
    relative_attention_max_distance=64,
    feed_forward_proj="gated-gelu",
    tie_word_embeddings=True,
)

SHARDED_GENERATION = dict(
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=[1, 7],
    num_beams=2,
    max_new_tokens=9,
)

SPECS = {
    "t5_v1_0": dict(
        seed=1000,
        tokenizer_vocab=384,
        tied=True,
        storage=torch.float32,
        head_std=1.0,  # tied: std of the shared embedding rows
        row_scale=(1.0, 1.0),  # per-row head scale range
        eos_scale={1: 1.6},  # multiply these head rows
        rel_bias_std=1.0,
        ln_jitter=0.25,
        q_scale=3.0,
        out_scale=1.0,
        center_wo=True,
        mix_a=2.0,
        mix_b=3.0,
        final_ln_scale=2.0,
    ),
    "t5_v1_1": dict(
        seed=2000,
        tokenizer_vocab=320,
        tied=False,
        storage=torch.bfloat16,
        head_std=0.5,
        row_scale=(1.0, 1.0),
        eos_scale={1: 1.6},
        rel_bias_std=1.0,
        ln_jitter=0.25,
        q_scale=3.0,
        out_scale=1.0,
        center_wo=False,
        mix_a=0.0,
        mix_b=0.0,
        final_ln_scale=1.0,
    ),
    "t5_sharded": dict(
        seed=3000,
        tokenizer_vocab=256,
        tied=True,
        storage=torch.float16,
        head_std=1.0,
        row_scale=(1.0, 1.0),
        eos_scale={1: 1.7, 7: 1.6},
        rel_bias_std=1.0,
        ln_jitter=0.25,
        q_scale=3.0,
        out_scale=1.0,
        center_wo=False,
        mix_a=2.0,
        mix_b=1.0,
        final_ln_scale=2.0,
        cross_out_scale=3.0,
        cross_q_scale=2.0,
    ),
}


def shape_weights(model: T5ForConditionalGeneration, spec: dict, gen: torch.Generator) -> None:
    """Make the random model decisive: jittered norms, strong relative biases
    (so a wrong bucket shows), spread head rows, boosted EOS rows."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_norm.weight"):
                p.copy_(1.0 + spec["ln_jitter"] * torch.randn(p.shape, generator=gen))
            elif name.endswith("relative_attention_bias.weight"):
                p.copy_(spec["rel_bias_std"] * torch.randn(p.shape, generator=gen))
            elif name.endswith(".q.weight"):
                # sharper, content-dependent attention (diffuse attention makes the
                # cross-attention output the same at every step)
                p.mul_(spec.get("q_scale", 1.0))
                if "EncDecAttention" in name:
                    p.mul_(spec.get("cross_q_scale", 1.0))
            elif name.endswith((".o.weight", ".wo.weight")):
                # louder sublayers: the residual stream is not just the input embedding
                # (a random tied T5 otherwise repeats its last token forever)
                p.mul_(spec["out_scale"])
                if "EncDecAttention" in name:
                    # the decoder's output should depend on the input text
                    p.mul_(spec.get("cross_out_scale", 1.0))
                if name.endswith(".wo.weight") and spec.get("center_wo"):
                    # relu outputs have a positive mean: remove the constant direction
                    # it would add to every position
                    p.sub_(p.mean(dim=1, keepdim=True))
        # Token mixing: the decoder self-attention maps the (normalised) embeddings of
        # the tokens it attends to through a * (b*R - I), R a random rotation, via
        # o = a * (b*R - I) @ pinv(v).  The "-I" part cancels the input embedding in
        # the residual stream and the "R" part turns it into some other direction, so
        # the next token depends on the current one (and on the history) without
        # being the same token.  Without it a random tied T5 repeats a token forever.
        a = spec.get("mix_a", 0.0)
        if a:
            d = model.config.d_model
            for block in model.decoder.block[: spec.get("mix_layers", 1)]:
                att = block.layer[0].SelfAttention
                rot, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
                mix = a * (spec.get("mix_b", 1.0) * rot - torch.eye(d, dtype=torch.float64))
                att.o.weight.copy_((mix @ torch.linalg.pinv(att.v.weight.double())).float())
        head = model.shared.weight if spec["tied"] else model.lm_head.weight
        head.copy_(spec["head_std"] * torch.randn(head.shape, generator=gen))
        # per-row scale in [0.6, 1.4] so some tokens are "louder" than others
        lo, hi = spec.get("row_scale", (1.0, 1.0))
        head.mul_(lo + (hi - lo) * torch.rand(head.shape[0], 1, generator=gen))
        for tid, s in spec["eos_scale"].items():
            head[tid].mul_(s)
        # spread the logits (clearer top-1/top-2 margins) without touching the rest
        model.decoder.final_layer_norm.weight.mul_(spec.get("final_ln_scale", 1.0))


def build_model(name: str, out: Path) -> None:
    spec = SPECS[name]
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    if name == "t5_v1_0":
        cfg = T5Config.from_dict(dict(V1_0_CONFIG))
    elif name == "t5_v1_1":
        cfg = T5Config.from_dict(dict(V1_1_CONFIG))
    else:
        cfg = T5Config(**SHARDED_CONFIG, decoder_start_token_id=0)
    model = T5ForConditionalGeneration(cfg).eval()
    if not spec["tied"]:
        # transformers 5.x forces tying at construction: give the head its own tensor.
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
    shape_weights(model, spec, gen)
    # round to the storage dtype
    model.to(spec["storage"])

    if name == "t5_v1_0":
        sd = saved_state_dict(model)
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        write_json(out / "config.json", V1_0_CONFIG)
        write_json(out / "generation_config.json", {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0})
    elif name == "t5_v1_1":
        sd = saved_state_dict(model)
        sd["lm_head.weight"] = model.lm_head.weight.detach().clone().contiguous()
        save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt"})
        write_json(out / "config.json", V1_1_CONFIG)
    else:
        total = sum(t.numel() * t.element_size() for t in saved_state_dict(model).values())
        model.generation_config = GenerationConfig(**SHARDED_GENERATION)
        model.save_pretrained(str(out), max_shard_size=total // 2 + 4096)
        shards = sorted(p.name for p in out.glob("*.safetensors"))
        assert shards == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"], shards
        assert (out / "model.safetensors.index.json").exists()


def saved_state_dict(model) -> dict:
    """Tensors under the names transformers' save_pretrained writes."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        from safetensors import safe_open

        with safe_open(os.path.join(tmp, "model.safetensors"), "pt") as f:
            names = set(f.keys())
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if k in names}
    assert set(sd) == names
    return sd


def load_model(out: Path) -> T5ForConditionalGeneration:
    model = T5ForConditionalGeneration.from_pretrained(str(out), dtype=torch.float32).eval()
    return model


# ---------------------------------------------------------------------------
# Running transformers
# ---------------------------------------------------------------------------


def run_generate(model, rows, options, jitter: Jitter | None = None):
    """generate() on right-padded (pad 0) encoder inputs; each output row starts with the
    decoder start token."""
    ids, mask = pad_right(rows)
    extra = {"logits_processor": LogitsProcessorList([jitter])} if jitter is not None else {}
    with torch.no_grad():
        res = model.generate(
            input_ids=ids,
            attention_mask=mask,
            **cache_kwargs(model),
            **extra,
            do_sample=False,  # not recorded: only guards against a generation config with sampling
            return_dict_in_generate=True,
            output_scores=True,
            **options,
        )
    res.prompt_width = 1  # the decoder start token
    return res


def effective_max_new(model, options):
    return options.get("max_new_tokens", model.generation_config.max_new_tokens)


# ---------------------------------------------------------------------------
# Inputs and cases
# ---------------------------------------------------------------------------

class T5Pools(Pools):
    """Random rows of ordinary (non-special) tokens end with </s>, as T5 inputs do."""

    def rand_row(self, n: int) -> list[int]:
        # n tokens including the trailing </s>
        return [int(x) for x in self.rng.randint(3, self.vocab, size=n - 1)] + [1]


def generate_cases(model_name: str, checker: Checked, pools: Pools):
    m = checker.m32
    sharded = model_name == "t5_sharded"
    # t5_sharded's generation_config.json says num_beams=2: greedy cases must say num_beams=1.
    greedy = {"num_beams": 1} if sharded else {}
    cases = []

    def add(name, rows, options, r):
        cases.append(
            dict(name=name, input_ids=rows, options=options, sequences=r["sequences"],
                 _margin=r["margin"], _same=r["same"], _stable=r["stable"], _eos_finished=n_eos_finished(r, effective_max_new(m, options)),
                 _rows_total=len(r["sequences"]), _beams=r["num_beams"])
        )

    def eos_somewhere(r, options):
        return n_eos_finished(r, effective_max_new(m, options)) >= 1

    def no_eos_somewhere(r, options):
        mx = effective_max_new(m, options)
        return any(len(s) == mx and s[-1] not in r["eos"] for s in r["sequences"])

    # 1. greedy, batch of 1
    o = {**greedy, "max_new_tokens": 16}
    rows, r = pick(checker, pools, "single", o)
    add("greedy_single", rows, o, r)

    # 2. greedy, ragged batch of 3 (very different lengths); one row stops at EOS, one does not
    o = {**greedy, "max_new_tokens": 20}
    rows, r = pick(checker, pools, "ragged3", o, lambda r: eos_somewhere(r, o) and no_eos_somewhere(r, o))
    add("greedy_ragged3", rows, o, r)

    # 3. greedy with min_new_tokens forcing generation past an EOS (preferably one
    #    where a later EOS then ends the sequence before max_new_tokens)
    o0 = {**greedy, "max_new_tokens": 20}
    chosen = None
    for k in range(MAX_TRIES):
        rows = rows_for("single", pools, k + 3)
        r0 = checker.run(rows, o0)
        s = r0["sequences"][0]
        if not (Checked.ok(r0) and s[-1] in r0["eos"] and len(s) <= 10):
            continue
        o = {**greedy, "max_new_tokens": 20, "min_new_tokens": len(s) + 2}
        r = checker.run(rows, o)
        if Checked.ok(r):
            if n_eos_finished(r, 20):
                chosen = (rows, o, r)
                break
            chosen = chosen or (rows, o, r)
    if chosen is None:
        raise RuntimeError("no min_new_tokens candidate")
    add("greedy_min_new_tokens", *chosen)

    # 4. explicit eos_token_id list: cut greedy output at a token it produces anyway
    o0 = {**greedy, "max_new_tokens": 16}
    for k in range(MAX_TRIES):
        rows = rows_for("single", pools, k + 5)
        r0 = checker.run(rows, o0)
        s = r0["sequences"][0]
        cand = [t for j, t in enumerate(s[2:-2], start=2) if t not in s[:j] and t not in (0, 1)]
        if not (Checked.ok(r0) and cand):
            continue
        o = {**greedy, "max_new_tokens": 16, "eos_token_id": [cand[0], 1]}
        r = checker.run(rows, o)
        if Checked.ok(r) and r["sequences"][0][-1] == cand[0]:
            break
    else:
        raise RuntimeError("no eos-list candidate")
    add("greedy_eos_list", rows, o, r)

    # 5. beam 3, early_stopping False, length_penalty 1.0
    o = {"num_beams": 3, "early_stopping": False, "length_penalty": 1.0, "max_new_tokens": 14}
    rows, r = pick(checker, pools, "single", o, lambda r: eos_somewhere(r, o))
    add("beam3_es_false_lp1", rows, o, r)

    # 6. beam 4, 2 returned, length_penalty 0.6, early_stopping True, ragged batch of 2
    o = {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.6, "early_stopping": True, "max_new_tokens": 14}
    rows, r = pick(checker, pools, "ragged2", o, lambda r: n_eos_finished(r, 14) >= 2)
    add("beam4_nrs2_lp06_es_true", rows, o, r)

    # 7. beam 3, early_stopping "never", length_penalty 2.0
    o = {"num_beams": 3, "early_stopping": "never", "length_penalty": 2.0, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "ragged2", o, prefer=lambda r: eos_somewhere(r, o))
    add("beam3_never_lp2", rows, o, r)

    # 8. beam 2, negative length penalty (favours short hypotheses)
    o = {"num_beams": 2, "length_penalty": -0.5, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "single", o, lambda r: eos_somewhere(r, o))
    add("beam2_lp_neg05", rows, o, r)

    # 9. beam 5, all 5 returned
    o = {"num_beams": 5, "num_return_sequences": 5, "max_new_tokens": 10}
    rows, r = pick(checker, pools, "single_long", o, lambda r: eos_somewhere(r, o))
    add("beam5_nrs5", rows, o, r)

    # 10. beam 3 with two EOS ids (more candidates kept per step)
    o = {"num_beams": 3, "max_new_tokens": 12, "eos_token_id": [1, 5]}
    rows, r = pick(checker, pools, "ragged2", o, lambda r: eos_somewhere(r, o))
    add("beam3_eos_list", rows, o, r)

    # 11. beam search that never reaches EOS in some rows (max_new_tokens bound)
    o = {"num_beams": 3, "num_return_sequences": 3, "length_penalty": 1.0, "max_new_tokens": 6}
    rows, r = pick(checker, pools, "ragged3", o, prefer=lambda r: eos_somewhere(r, o) and no_eos_somewhere(r, o))
    add("beam3_nrs3_ragged3_short", rows, o, r)

    # 12. beam with min_new_tokens
    o = {"num_beams": 2, "min_new_tokens": 5, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "single", o, prefer=lambda r: eos_somewhere(r, o))
    add("beam2_min_new_tokens", rows, o, r)

    if sharded:
        # generation_config.json defaults only: num_beams 2, max_new_tokens 9, eos [1, 7]
        o = {}
        rows, r = pick(checker, pools, "ragged2", o, lambda r: eos_somewhere(r, o))
        add("defaults", rows, o, r)
        # defaults with a single EOS override
        o = {"eos_token_id": 1}
        rows, r = pick(checker, pools, "ragged3", o, prefer=lambda r: eos_somewhere(r, o))
        add("defaults_eos_override", rows, o, r)
    return cases


def text_cases(model_name: str, tok_hf, checker: Checked):
    sharded = model_name == "t5_sharded"
    specs = [
        ("text_greedy", {**({"num_beams": 1} if sharded else {}), "max_new_tokens": 12}),
        ("text_beam", {"num_beams": 3, "max_new_tokens": 10, "length_penalty": 1.0}),
    ]
    if sharded:
        specs.append(("text_defaults", {}))
    out = []
    for i, (name, options) in enumerate(specs):
        for j in range(len(TEXT_PROMPT_SETS)):
            prompts = TEXT_PROMPT_SETS[(i + j) % len(TEXT_PROMPT_SETS)]
            enc = tok_hf(prompts)
            rows = enc["input_ids"]
            r = checker.run(rows, options)
            if not Checked.ok(r):
                continue
            # the transformers way: tokenizer(padding) -> generate -> batch_decode
            batch = tok_hf(prompts, padding=True, return_tensors="pt")
            with torch.no_grad():
                seqs = checker.m32.generate(**batch, do_sample=False, **cache_kwargs(checker.m32), **options)
            assert torch.equal(seqs, r["raw"].sequences), "tokenizer padding differs from pad_right()"
            texts = tok_hf.batch_decode(seqs, skip_special_tokens=True)
            out.append(dict(name=name, prompts=prompts, options=options, texts=texts,
                            _margin=r["margin"], _same=r["same"], _stable=r["stable"]))
            break
        else:
            raise RuntimeError(f"no clean prompt set for {name}")
    return out


def logits_cases(pools: Pools, m32, m64):
    rng = np.random.RandomState(7)
    vocab = m32.config.vocab_size

    def dec(batch, n):
        d = rng.randint(1, vocab, size=(batch, n))
        d[:, 0] = 0
        return d.tolist()

    specs = [
        ("logits_0", [pools.sent[0], pools.sent[3]], dec(2, 7)),  # batch of 2, second padded
        ("logits_1", [pools.rand_row(60)], dec(1, 30)),  # beyond max_distance for small configs
        ("logits_2", [pools.rand_row(140), pools.rand_row(97)], dec(2, 132)),  # past 128 in both stacks
    ]
    cases, arrays, diffs = [], {}, {}
    for name, rows, d in specs:
        ids, mask = pad_right(rows)
        dids = torch.tensor(d)
        with torch.no_grad():
            l32 = m32(input_ids=ids, attention_mask=mask, decoder_input_ids=dids).logits
            l64 = m64(input_ids=ids, attention_mask=mask, decoder_input_ids=dids).logits
        arrays[name] = l32.numpy().astype(np.float32)
        diffs[name] = float((l32.double() - l64).abs().max())
        cases.append(dict(name=name, input_ids=ids.tolist(), attention_mask=mask.tolist(), decoder_input_ids=d))
    return cases, arrays, diffs


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def verify_loaded(name: str, out: Path, m32) -> None:
    from safetensors import safe_open

    files = sorted(out.glob("*.safetensors"))
    stored = {}
    for f in files:
        with safe_open(str(f), "pt") as h:
            for k in h.keys():
                stored[k] = h.get_tensor(k)
    want_dtype = SPECS[name]["storage"]
    assert all(t.dtype == want_dtype for t in stored.values()), name
    params = dict(m32.named_parameters(remove_duplicate=False))
    for k, t in stored.items():
        assert k in params, f"{name}: {k} not a model parameter"
        assert torch.equal(params[k].detach(), t.float()), f"{name}: {k} not loaded exactly"
    tied = m32.lm_head.weight.data_ptr() == m32.shared.weight.data_ptr()
    if SPECS[name]["tied"]:
        assert "lm_head.weight" not in stored and tied and m32.config.scale_decoder_outputs, name
    else:
        assert "lm_head.weight" in stored and not tied and not m32.config.scale_decoder_outputs, name
    assert m32.encoder.embed_tokens.weight.data_ptr() == m32.shared.weight.data_ptr()
    assert m32.decoder.embed_tokens.weight.data_ptr() == m32.shared.weight.data_ptr()


def make_one(name: str, versions: dict) -> dict:
    import copy

    spec = SPECS[name]
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    tok = build_tokenizer(spec["tokenizer_vocab"])
    write_tokenizer(out, tok)
    build_model(name, out)

    tok_hf = AutoTokenizer.from_pretrained(str(out))
    assert len(tok_hf) == tok.get_vocab_size()
    assert (tok_hf.pad_token_id, tok_hf.eos_token_id, tok_hf.unk_token_id) == (0, 1, 2)
    for p in PROMPTS:
        assert tok_hf(p)["input_ids"] == tok.encode(p).ids

    m32 = load_model(out)
    verify_loaded(name, out, m32)
    m64 = copy.deepcopy(m32).double()
    checker = Checked(m32, m64, run_generate, alone=False)
    pools = T5Pools(tok, spec["seed"] + 7)

    lcases, arrays, ldiffs = logits_cases(pools, m32, m64)
    gcases = generate_cases(name, checker, pools)
    tcases = text_cases(name, tok_hf, checker)

    np.savez(out / "logits.npz", **arrays)
    write_expected(
        out / "expected.json",
        {
            "versions": versions,
            "logits": lcases,
            "generate": [strip_private(c) for c in gcases],
            "text": [strip_private(c) for c in tcases],
        },
    )
    for f in out.iterdir():
        f.chmod(0o644)  # safetensors writes 0600
    return dict(name=name, logits_diff=ldiffs, gen=gcases, text=tcases)


def main() -> int:
    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__}
    summaries = [make_one(name, versions) for name in SPECS]

    print(f"versions: {versions} (safetensors {safetensors.__version__}, numpy {np.__version__})")
    overall_margin = math.inf
    for s in summaries:
        print(f"\n== {s['name']}")
        for k, v in s["logits_diff"].items():
            print(f"  {k}: max |f32 - f64| logits = {v:.2e}")
        for c in s["gen"]:
            m = c["_margin"]
            if m is not None:
                overall_margin = min(overall_margin, m)
            kind = "greedy" if c["_beams"] == 1 else f"beam{c['_beams']}"
            lens = [len(q) for q in c["sequences"]]
            print(
                f"  {c['name']:28s} {kind:6s} f32==f64: {c['_same']}  jitter-stable: {c['_stable']}  "
                f"margin: {'-' if m is None else f'{m:.4f}':>7s}  eos-finished rows: {c['_eos_finished']}/{c['_rows_total']}  lens {lens}"
            )
        for c in s["text"]:
            m = c["_margin"]
            if m is not None:
                overall_margin = min(overall_margin, m)
            print(f"  {c['name']:28s} f32==f64: {c['_same']}  jitter-stable: {c['_stable']}  margin: {'-' if m is None else f'{m:.4f}'}  texts: {c['texts']}")
        n_beam_eos = sum(1 for c in s["gen"] if c["_beams"] > 1 and c["_eos_finished"] > 0)
        n_greedy_eos = sum(1 for c in s["gen"] if c["_beams"] == 1 and c["_eos_finished"] > 0)
        print(f"  beam cases with EOS-finished returned rows: {n_beam_eos}; greedy cases with EOS: {n_greedy_eos}")
    print(f"\nminimum greedy top1-top2 margin over all cases: {overall_margin:.4f}")
    total = 0
    for p in sorted(FIXTURES.rglob("*")):
        if p.is_file():
            total += p.stat().st_size
            print(f"  {p.relative_to(ROOT)}  {p.stat().st_size} bytes")
    print(f"total fixtures size: {total / 1024:.1f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
