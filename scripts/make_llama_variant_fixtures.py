#!/usr/bin/env python3
"""Generate the Llama-variant parity fixtures under ``tests/fixtures/`` (issue 13): Qwen3,
SmolLM3, Mistral with a sliding window, Phi-3 (partial rotary, LongRoPE), and GGUF files of
llama.cpp's ``qwen3`` and ``phi3`` architectures.

Same layout, weight shaping and robustness checks as ``make_decoder_fixtures.py`` (whose
helpers it imports; see tests/fixtures/README-decoder.md), with a shorter case list per model:
three logits cases (right-padded; one 40-token row, longer than every window here and past
the LongRoPE model's original context), greedy single / ragged-3, two beam cases (ragged), and
a text case.

Models (knobs varied so that wrong code fails):

* ``qwen3_window/``    Qwen3: hidden 48, 6 heads / 2 KV heads, head_dim 16 (q width 96 !=
  hidden), untied, attention_bias (q/k/v/o biases), 3 layers, bfloat16 weights, use_sliding_window with
  sliding_window 7 from max_window_layers 1 (layers 1, 2 sliding, layer 0 global);
  generation_config eos [2, 0], pad 0.
* ``qwen3_tied/``      Qwen3: hidden 32, 4 heads / 1 KV head (MQA), head_dim 12, tied, no
  biases, 2 layers, rope_theta 1e4; eos 2 from config.json only (no generation_config.json, no
  pad: transformers pads with EOS; Llama-2 style tokenizer whose pad token is ``</s>``).
* ``smollm3/``         SmolLM3: hidden 48, 4 heads / 2 KV heads, 4 layers, no_rope_layer_interval
  2 (layers 1 and 3 without RoPE), use_sliding_window with sliding_window 9 (so the no-rope
  layers are sliding), tied, bfloat16 weights, rope_theta 2e6 (class default); eos [2, 5], pad 0.
* ``mistral_window/``  Mistral: hidden 48, 4 heads / 2 KV heads, head_dim 12, 2 layers,
  sliding_window 6 (every prompt is longer); eos [2, 5], pad 0.
* ``phi3_partial/``    Phi-3: hidden 48, 3 heads / 1 KV head, head_dim 16, partial_rotary_factor
  0.5 (8 rotating dims), fused qkv_proj / gate_up_proj, 2 layers, untied; eos [2, 5], pad 0.
* ``phi3_longrope/``   Phi-3: hidden 64, 4 heads / 2 KV heads, head_dim 16, partial_rotary_factor
  0.75 (12 rotating dims), float16 weights, LongRoPE with
  random short/long factors, original_max_position_embeddings 20, max_position_embeddings 80
  (attention factor sqrt(1 + ln 4 / ln 20)); prompts + generations cross position 20, so the
  long factors take over mid-generation exactly as transformers switches them (per forward
  pass, on the largest position of the batch: results of a batch depend on its company here,
  in transformers as in fasttx, so the cases are recorded without the row-alone check).
* ``qwen3_gguf/``      llama.cpp ``qwen3`` GGUF (F16 2-D weights, F32 norms incl. attn_q_norm /
  attn_k_norm): hidden 64, ffn 64, 2 heads / 1 KV head, head_dim 128 (transformers' GGUF loader takes
  Qwen3's class default 128: it does not read attention.key_length), 2 layers, untied.
* ``phi3_gguf/``       llama.cpp ``phi3`` GGUF (F16): fused attn_qkv and ffn_up ([gate | up]),
  hidden 64, 4 heads / 2 KV heads, 2 layers, full rotary, no rope factor tensors (transformers'
  GGUF loader reads neither rope.dimension_count nor rope_factors_*).

Usage:  /path/to/refvenv/python scripts/make_llama_variant_fixtures.py [name ...]
"""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_decoder_fixtures as mdf  # noqa: E402  (sets torch threads / determinism)

import gguf  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    MistralConfig,
    MistralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

from fixturelib import (  # noqa: E402
    Checked, add_gguf_tensor, add_gguf_tokenizer, close_gguf, fixture_size, fresh_fixture_dir, gguf_tensor_name,
    gguf_writer, n_eos_finished, pick, reference_versions, strip_private, write_expected,
)

SHAPE = dict(emb_std=1.0, q_scale=3.0, out_scale=2.0, ln_jitter=0.25, bias_std=0.5, head_std=1.0,
             eos_rate=0.06, logit_max=20.0)


def longrope_factors(seed: int, n: int):
    g = torch.Generator().manual_seed(seed)
    short = (1.0 + torch.rand(n, generator=g) * 0.5).tolist()
    long = (1.0 + torch.rand(n, generator=g) * 6.0).tolist()
    return [round(x, 4) for x in short], [round(x, 4) for x in long]


def model_specs():
    short, long = longrope_factors(77, 6)
    return {
        "qwen3_window": dict(
            cls=Qwen3ForCausalLM, tokenizer="qwen2", vocab=320, seed=21000, tied=False, eos=[2, 0], pad=0,
            gen=dict(bos_token_id=0, eos_token_id=[2, 0], pad_token_id=0), storage=torch.bfloat16,
            config=Qwen3Config(
                vocab_size=320, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
                num_attention_heads=6, num_key_value_heads=2, head_dim=16, attention_bias=True,
                max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False,
                use_sliding_window=True, sliding_window=7, max_window_layers=1,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                bos_token_id=0, eos_token_id=2, pad_token_id=0),
            windows=[None, 7, 7]),
        "qwen3_tied": dict(
            cls=Qwen3ForCausalLM, tokenizer="llama2", vocab=320, seed=22000, tied=True, eos=[2], pad=None,
            gen=None, storage=torch.float32, shape=dict(out_scale=6.0),
            config=Qwen3Config(
                vocab_size=320, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=1, head_dim=12, max_position_embeddings=128,
                rms_norm_eps=1e-6, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                bos_token_id=1, eos_token_id=2, pad_token_id=None)),
        "smollm3": dict(
            cls=SmolLM3ForCausalLM, tokenizer="llama", vocab=352, seed=23000, tied=True, eos=[2, 5], pad=0,
            gen=dict(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=0), storage=torch.bfloat16,
            shape=dict(out_scale=6.0),
            config=SmolLM3Config(
                vocab_size=352, hidden_size=48, intermediate_size=96, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                no_rope_layer_interval=2, use_sliding_window=True, sliding_window=9,
                tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=0),
            windows=[None, 9, None, 9], rope=[1, 0, 1, 0]),
        "mistral_window": dict(
            cls=MistralForCausalLM, tokenizer="llama", vocab=320, seed=24000, tied=False, eos=[2, 5], pad=0,
            gen=dict(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=0), storage=torch.float32,
            config=MistralConfig(
                vocab_size=320, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=128,
                sliding_window=6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0),
            windows=[6, 6]),
        "phi3_partial": dict(
            cls=Phi3ForCausalLM, tokenizer="llama", vocab=320, seed=25000, tied=False, eos=[2, 5], pad=0,
            gen=dict(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=0), storage=torch.float32,
            config=Phi3Config(
                vocab_size=320, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=128,
                original_max_position_embeddings=128, partial_rotary_factor=0.5,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
                tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
        "phi3_longrope": dict(
            cls=Phi3ForCausalLM, tokenizer="llama", vocab=320, seed=26000, tied=False, eos=[2, 5], pad=0,
            gen=dict(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=0), storage=torch.float16, alone=False,
            config=Phi3Config(
                vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=80,
                original_max_position_embeddings=20,
                rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                                 "short_factor": short, "long_factor": long},
                tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    }


GGUF_SPECS = {
    "qwen3_gguf": dict(arch="qwen3", seed=27000, cls=Qwen3ForCausalLM, config=lambda: Qwen3Config(
        vocab_size=320, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=128, max_position_embeddings=128, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    "phi3_gguf": dict(arch="phi3", seed=28000, cls=Phi3ForCausalLM, config=lambda: Phi3Config(
        vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, original_max_position_embeddings=128,
        rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)),
}


def shape_and_calibrate(model, spec, tok_style):
    shape = {**SHAPE, **spec.get("shape", {}), "kind": "llama", "tokenizer": tok_style, "vocab": spec["vocab"],
             "eos": spec["eos"]}
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    mdf.untie_if_needed(model, spec["tied"])
    mdf.shape_weights(model, shape, gen)
    with torch.no_grad():  # Phi-3's fused qkv: sharpen its q rows like the others' q_proj
        for name, p in model.named_parameters():
            if name.endswith("qkv_proj.weight"):
                cfg = model.config
                hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
                p[: cfg.num_attention_heads * hd].mul_(shape["q_scale"])
    mdf.calibrate_eos(model, shape, gen)


def check_variant_config(name, spec, m32):
    """The knobs are what the fixture claims, as transformers built the model."""
    cfg = m32.config
    if "windows" in spec:
        got = [None if t == "full_attention" else cfg.sliding_window for t in getattr(cfg, "layer_types", [])] \
            if name != "mistral_window" else [cfg.sliding_window] * cfg.num_hidden_layers
        assert got == spec["windows"], (name, got)
    if "rope" in spec:
        assert list(cfg.no_rope_layers) == spec["rope"], cfg.no_rope_layers
    if name.startswith("phi3"):
        rot = m32.model.rotary_emb
        hd = cfg.hidden_size // cfg.num_attention_heads
        want = int(hd * cfg.rope_parameters["partial_rotary_factor"])
        assert rot.inv_freq.shape[0] * 2 == want, (rot.inv_freq.shape, want)
    if name == "phi3_longrope":
        af = m32.model.rotary_emb.attention_scaling
        assert abs(af - math.sqrt(1 + math.log(4.0) / math.log(20))) < 1e-12, af


def make_hf(name, spec, versions):
    out = fresh_fixture_dir(name)
    tok = mdf.build_tokenizer(spec["tokenizer"], spec["vocab"])
    mdf.write_tokenizer(out, tok, spec["tokenizer"])
    model = spec["cls"](spec["config"]).eval()
    shape_and_calibrate(model, spec, spec["tokenizer"])
    model.generation_config = GenerationConfig(**spec["gen"]) if spec["gen"] else GenerationConfig()
    model.to(spec["storage"])
    model.save_pretrained(str(out))
    if not spec["gen"]:
        (out / "generation_config.json").unlink(missing_ok=True)
    tok_hf = AutoTokenizer.from_pretrained(str(out))
    m32 = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    check_variant_config(name, spec, m32)
    assert mdf.eos_ids_in_effect(m32, {}) == spec["eos"], (name, m32.generation_config.eos_token_id)
    pad = mdf.pad_id_in_effect(m32, {})
    if tok_hf.pad_token_id is None:
        tok_hf.pad_token = tok_hf.convert_ids_to_tokens(pad)
    st = mdf.TOKENIZERS[spec["tokenizer"]]
    bos = tok.token_to_id(st["bos"]) if st["bos"] else None
    pools = mdf.DecoderPools(tok, spec["seed"] + 7, len(st["specials"]), bos, 40)
    return finish(name, out, m32, tok_hf, pools, spec["pad"] if spec["pad"] is not None else 0, versions,
                  alone=spec.get("alone", True))


# ---------------------------------------------------------------------------
# GGUF (llama.cpp names; qwen3 and phi3 keep transformers' q/k row order: no permutation)
# ---------------------------------------------------------------------------

LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf):
    return gguf_tensor_name(hf, LAYER_NAMES)


def write_gguf(path, arch, model, tok):
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf_writer(path, arch, cfg)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(hd)
    if arch == "qwen3":
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    add_gguf_tokenizer(w, tok, bos=1, eos=2, pad=0)
    for hf, t in model.state_dict().items():
        add_gguf_tensor(w, gguf_name(hf), t.detach().float().numpy(), gguf.GGMLQuantizationType.F16)
    close_gguf(w)


def make_gguf(name, spec, versions):
    out = fresh_fixture_dir(name)
    tok = mdf.build_tokenizer("llama", 320)
    model = spec["cls"](spec["config"]()).eval()
    shape_and_calibrate(model, dict(seed=spec["seed"], vocab=320, eos=[2], tied=False), "llama")
    write_gguf(out / mdf.GGUF_FILE, spec["arch"], model, tok)
    tok_hf = AutoTokenizer.from_pretrained(str(out), gguf_file=mdf.GGUF_FILE)
    m32 = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=mdf.GGUF_FILE, dtype=torch.float32).eval()
    assert m32.config.model_type == spec["arch"]
    # every weight transformers holds is the file's (f16-rounded) copy of the source model's
    src = model.state_dict()
    for k, v in m32.state_dict().items():
        if k in src:
            stored = src[k] if src[k].ndim == 1 else src[k].half().float()  # norms stay F32
            assert torch.equal(v, stored), (name, k)
    pools = mdf.DecoderPools(tok, spec["seed"] + 7, len(mdf.TOKENIZERS["llama"]["specials"]), 1, 40)
    return finish(name, out, m32, tok_hf, pools, 0, versions)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def generate_cases(checker, pools):
    cases = []

    def add(cname, rows, options, r):
        cases.append(dict(name=cname, input_ids=rows, options=options, sequences=r["sequences"],
                          _margin=r["margin"], _eos=n_eos_finished(r, options["max_new_tokens"]),
                          _rows=len(r["sequences"])))

    def eos_somewhere(o):
        return lambda r, o=o: n_eos_finished(r, o["max_new_tokens"]) >= 1

    o = {"max_new_tokens": 20}
    rows, r = pick(checker, pools, "single", o, prefer=eos_somewhere(o))
    add("greedy_single", rows, o, r)
    o = {"max_new_tokens": 16}
    rows, r = pick(checker, pools, "ragged3", o, prefer=eos_somewhere(o))
    add("greedy_ragged3", rows, o, r)
    o = {"max_new_tokens": 14, "repetition_penalty": 1.3}
    rows, r = pick(checker, pools, "ragged2", o, prefer=eos_somewhere(o), start=2)
    add("greedy_repetition_penalty", rows, o, r)
    o = {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.6, "early_stopping": True,
         "max_new_tokens": 12}
    rows, r = pick(checker, pools, "ragged2", o, prefer=eos_somewhere(o))
    add("beam4_nrs2_lp06_es_true", rows, o, r)
    o = {"num_beams": 3, "max_new_tokens": 12}
    rows, r = pick(checker, pools, "ragged3", o, prefer=eos_somewhere(o), start=1)
    add("beam3_ragged3", rows, o, r)
    return cases


def text_case(tok_hf, checker):
    options = {"max_new_tokens": 12}
    for prompts in mdf.TEXT_PROMPT_SETS:
        rows = tok_hf(prompts)["input_ids"]
        r = checker.run(rows, options)
        if not Checked.ok(r):
            continue
        batch = tok_hf(prompts, padding=True, padding_side="left", return_tensors="pt")
        with torch.no_grad():
            seqs = checker.m32.generate(**batch, do_sample=False, **options)
        assert torch.equal(seqs, r["raw"].sequences)
        texts = tok_hf.batch_decode(seqs[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [dict(name="text_greedy", prompts=prompts, options=options, texts=texts)]
    raise RuntimeError("no clean text prompt set")


def finish(name, out, m32, tok_hf, pools, pad, versions, alone=True):
    m64 = copy.deepcopy(m32).double()
    checker = Checked(m32, m64, mdf.run_generate, alone=alone)
    try:
        lcases, arrays, diffs = mdf.logits_cases(pools, m32, m64, pad, 40)
    except AssertionError:
        # LongRoPE: a row alone (shorter than the original context) uses the short factors, the
        # padded batch 40 wide the long ones; the batch is what is recorded.
        assert not alone, name
        lcases, arrays, diffs = logits_cases_batch_only(pools, m32, m64, pad)
    gcases = generate_cases(checker, pools)
    tcases = text_case(tok_hf, checker)
    np.savez_compressed(out / "logits.npz", **arrays)
    write_expected(out / "expected.json", {
        "versions": versions, "logits": lcases,
        "generate": [strip_private(c) for c in gcases], "text": tcases,
    })
    for f in out.iterdir():
        f.chmod(0o644)
    print(f"== {name}: logits f32-f64 {max(diffs.values()):.2e}; "
          + "; ".join(f"{c['name']} margin {c['_margin'] if c['_margin'] is None else round(c['_margin'], 4)} "
                      f"eos {c['_eos']}/{c['_rows']} lens {[len(s) for s in c['sequences']]}" for c in gcases),
          flush=True)
    return name


def logits_cases_batch_only(pools, m32, m64, pad):
    specs = [("logits_0", [pools.sent[3], pools.sent[5]]), ("logits_1", [pools.rand_row(40, cap=False)]),
             ("logits_2", [pools.rand_row(9), pools.rand_row(12), pools.rand_row(5)])]
    cases, arrays, diffs = [], {}, {}
    for name, rows in specs:
        ids, mask = mdf.pad_right(rows, pad)
        with torch.no_grad():
            l32 = m32(input_ids=ids, attention_mask=mask).logits
            l64 = m64(input_ids=ids, attention_mask=mask).logits
        arrays[name] = l32.numpy().astype(np.float32)
        diffs[name] = float((l32.double() - l64).abs().max())
        cases.append(dict(name=name, input_ids=ids.tolist(), attention_mask=mask.tolist()))
    return cases, arrays, diffs


def main(argv):
    versions = reference_versions()
    specs = model_specs()
    names = argv or [*specs, *GGUF_SPECS]
    for n in names:
        if n in specs:
            make_hf(n, specs[n], versions)
        elif n in GGUF_SPECS:
            make_gguf(n, GGUF_SPECS[n], versions)
        else:
            raise SystemExit(f"unknown fixture {n}")
    for n in names:
        size = fixture_size(n)
        print(f"  {n}: {size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
