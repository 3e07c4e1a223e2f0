#!/usr/bin/env python3
"""Generate the committed Gemma 2 / Gemma 3 parity fixtures under ``tests/fixtures/gemma*``.

Same layout, robustness rules and cases as ``scripts/make_decoder_fixtures.py`` (whose helpers it
imports: tokenizers, weight shaping, case selection, expected.json writer); see
tests/fixtures/README-gemma.md for what each fixture varies. Run with the reference tools::

    python scripts/make_gemma_fixtures.py [name ...]

Every model is tiny, seeded and random; transformers computes the references (float32). The
GGUF fixtures are written with the ``gguf`` package the way llama.cpp's converter writes Gemma
(norm weights stored as ``1 + w``, no q/k permutation) and their references come from
``AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)``, with the config values its GGUF
mapping leaves at class defaults (query_pre_attn_scalar, soft-caps) passed as overrides: those
the file states and llama.cpp reads.
"""

from __future__ import annotations

import copy
import importlib.metadata
import math
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import tokenizers
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma2Config, Gemma2ForCausalLM
from transformers import Gemma3ForCausalLM, Gemma3TextConfig, GenerationConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_decoder_fixtures as mdf  # noqa: E402
from fixturelib import (  # noqa: E402
    FIXTURES, JITTER_EPS, JITTER_RUNS, PROMPTS, Checked, Jitter, eos_ids_in_effect, greedy_min_margin,
    to_api_sequences, write_json,
)

torch.set_num_threads(1)

# Gemma's special ids: <pad>=0 <eos>=1 <bos>=2 <unk>=3, chat turns 4/5; BOS added.
mdf.TOKENIZERS["gemma"] = dict(
    specials=["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], bos="<bos>",
    config=dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"),
)

SHAPE = dict(kind="gemma", tokenizer="gemma", emb_std=1.0, q_scale=3.0, out_scale=2.0, ln_jitter=0.25,
             bias_std=0.3, head_std=1.0, eos_rate=0.06, logit_max=20.0)

# name -> (config class, config kwargs, storage dtype, generation config or None, config.json style)
SPECS = {
    # Gemma 2: both soft-caps small enough to act, window 6 < prompts, GQA 4/2, head_dim 16 with
    # hidden 48, query_pre_attn_scalar 24 != head_dim, tied, eos [1, 5]; config as 5.x writes it.
    "gemma2_softcap": dict(
        seed=11000, cls="gemma2", vocab=320, storage=torch.float32, tied=True, eos=[1, 5], pad=0,
        config=dict(hidden_size=48, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=6,
                    attn_logit_softcapping=4.0, final_logit_softcapping=12.0, max_position_embeddings=128,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
        generation=dict(bos_token_id=2, eos_token_id=[1, 5], pad_token_id=0),
    ),
    # Gemma 2: soft-caps off (null), untied, MQA, attention biases, explicit layer_types
    # (global first), window 5, linear RoPE x2, gelu (erf), float16; no generation_config.json.
    "gemma2_nocap": dict(
        seed=12200, cls="gemma2", vocab=320, storage=torch.float16, tied=False, eos=[1], pad=0, eos_rate=0.12,
        config=dict(hidden_size=40, intermediate_size=72, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=12, query_pre_attn_scalar=12, sliding_window=5,
                    attn_logit_softcapping=None, final_logit_softcapping=None, attention_bias=True,
                    hidden_activation="gelu",
                    layer_types=["full_attention", "sliding_attention", "sliding_attention"],
                    max_position_embeddings=128, rms_norm_eps=1e-5,
                    rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0}),
        generation=None,
    ),
    # Gemma 3 text, Hub (4.x) style config.json: rope_theta 1e6 + rope_scaling linear x8 on the
    # global layers, rope_local_base_freq 10000 on the sliding ones, sliding_window_pattern 3,
    # window 7, q/k norms, GQA 4/2, head_dim 16 with hidden 32, query_pre_attn_scalar 24, tied, eos [1, 5].
    "gemma3_hub": dict(
        seed=13000, cls="gemma3", vocab=320, storage=torch.float32, tied=True, eos=[1, 5], pad=0,
        config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=5, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24, sliding_window=7,
                    max_position_embeddings=256, sliding_window_pattern=3, rope_theta=1000000.0,
                    rope_local_base_freq=10000.0, rope_scaling={"rope_type": "linear", "factor": 8.0}),
        generation=dict(bos_token_id=2, eos_token_id=[1, 5], pad_token_id=0),
        hub_style=True,
    ),
    # Gemma 3 text as 5.x writes it (nested rope_parameters, layer_types), untied, MQA, final
    # soft-cap 15, local base 100, global linear x4, bfloat16; no generation_config.json.
    "gemma3_nested": dict(
        seed=14000, cls="gemma3", vocab=320, storage=torch.bfloat16, tied=False, eos=[1], pad=0,
        config=dict(hidden_size=40, intermediate_size=80, num_hidden_layers=4, num_attention_heads=2,
                    num_key_value_heads=1, head_dim=20, query_pre_attn_scalar=32, sliding_window=4,
                    final_logit_softcapping=15.0, max_position_embeddings=128, rms_norm_eps=1e-5,
                    layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
                    rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 20000.0},
                                     "sliding_attention": {"rope_type": "default", "rope_theta": 100.0}}),
        generation=None,
    ),
}

# GGUF: (architecture, base HF spec, quantization, tied)
GGUF_SPECS = {
    "gemma2_gguf_f16": dict(seed=15100, arch="gemma2", qtype=gguf.GGMLQuantizationType.F16, tied=True, eos_rate=0.12,
                            config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        query_pre_attn_scalar=16, sliding_window=6,
                                        attn_logit_softcapping=5.0, final_logit_softcapping=12.0,
                                        max_position_embeddings=128,
                                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0})),
    "gemma3_gguf_q8_0": dict(seed=16000, arch="gemma3", qtype=gguf.GGMLQuantizationType.Q8_0, tied=False,
                             config=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=7,
                                         num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                                         query_pre_attn_scalar=32, sliding_window=5, max_position_embeddings=128,
                                         rope_parameters={
                                             "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                                             "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}})),
}
GGUF_VOCAB = 320
ALL = [*SPECS, *GGUF_SPECS]


class RowwiseF64Checked(Checked):
    """fixturelib's checks, with the float64 model run row by row on batches: transformers'
    float64 Gemma turns the hidden states of left-padding positions into NaN, and the zero
    attention weights on them then spread NaN into the real rows (float32 stays finite), so a
    float64 batch is no reference. Each row alone (no padding) is; with `alone` also checked, the
    float32 batch equals the rows alone, so the float64 comparison is the same one."""

    def run(self, rows, options):
        if len(rows) == 1:
            return super().run(rows, options)
        opts = dict(options)
        r32 = self.run_generate(self.m32, rows, opts)
        eos = eos_ids_in_effect(self.m32, opts)
        seqs = to_api_sequences(r32, eos)
        n = opts.get("num_return_sequences", 1)
        same = stable = alone = True
        for i, row in enumerate(rows):
            want = seqs[i * n:(i + 1) * n]
            alone = alone and to_api_sequences(self.run_generate(self.m32, [row], opts), eos) == want
            same = same and to_api_sequences(self.run_generate(self.m64, [row], opts), eos) == want
            for seed in range(JITTER_RUNS):
                if not (same and stable):
                    break
                rj = self.run_generate(self.m64, [row], opts, Jitter(seed, JITTER_EPS))
                stable = to_api_sequences(rj, eos) == want
        stable = stable and same
        nb = opts.get("num_beams", self.m32.generation_config.num_beams or 1)
        margin = greedy_min_margin(r32, eos) if nb == 1 else None
        return dict(same=same, stable=stable, alone=alone, margin=margin, sequences=seqs, eos=eos,
                    num_beams=nb, raw=r32)


mdf.Checked = RowwiseF64Checked


def new_model(cls: str, vocab: int, tied: bool, config: dict):
    common = dict(vocab_size=vocab, tie_word_embeddings=tied, bos_token_id=2, eos_token_id=1, pad_token_id=0)
    if cls == "gemma2":
        return Gemma2ForCausalLM(Gemma2Config(**common, **config))
    config = dict(config)
    pattern = config.pop("sliding_window_pattern", None)
    extra = {} if pattern is None else {"sliding_window_pattern": pattern}
    rope = {}
    if "rope_theta" in config:  # Hub style: let the config class fold these in, as from a file
        rope = {k: config.pop(k) for k in ("rope_theta", "rope_local_base_freq", "rope_scaling") if k in config}
    return Gemma3ForCausalLM(Gemma3TextConfig(**common, **config, **extra, **rope))


def shape(model, gen: torch.Generator, tied: bool) -> None:
    """make_decoder_fixtures' shaping, then Gemma's: norm weights are offsets from 1 (jittered
    around 0.2; Gemma 3's query norms around 2), and embeddings scaled by 1/sqrt(hidden) so that transformers' sqrt(hidden) embedding
    scale gives the residual stream unit size (louder tables drown the normalised sublayers)."""
    spec = dict(SHAPE)
    mdf.shape_weights(model, spec, gen)
    d = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "q_norm" in name:
                # Gemma 3 normalises each query head, which undoes the sharper query projection:
                # a factor ~3 here gives the attention the same contrast.
                p.copy_(2.0 + 0.25 * torch.randn(p.shape, generator=gen))
            elif "norm" in name:
                p.copy_(0.2 + 0.25 * torch.randn(p.shape, generator=gen))
        model.model.embed_tokens.weight.mul_(1.0 / math.sqrt(d) * 1.5)
        if not tied:
            model.lm_head.weight.copy_(torch.randn(model.lm_head.weight.shape, generator=gen))


def calibrate(model, eos: list[int], gen: torch.Generator, eos_rate: float = SHAPE["eos_rate"]) -> dict:
    """make_decoder_fixtures.calibrate_eos for Gemma: its final norm multiplies by (1 + w), so the
    uniform logit scale c becomes w <- c (1 + w) - 1."""
    final = model.model.norm
    saved = final.weight.detach().clone()
    # calibrate_eos scales `weight` by c: run it on a norm whose factor is the weight itself.
    with torch.no_grad():
        final.weight.add_(1.0)
    orig_forward = type(final).forward

    def plain(self, x):
        out = self._norm(x.float()) * self.weight.float()
        return out.type_as(x)

    type(final).forward = plain
    try:
        scales = mdf.calibrate_eos(model, dict(SHAPE, vocab=model.config.vocab_size, eos=eos, eos_rate=eos_rate), gen)
    finally:
        type(final).forward = orig_forward
    with torch.no_grad():
        final.weight.sub_(1.0)
    assert not torch.equal(saved, final.weight)
    return scales


def build_hf(name: str, out: Path) -> None:
    spec = SPECS[name]
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    model = new_model(spec["cls"], spec["vocab"], spec["tied"], spec["config"]).eval()
    mdf.untie_if_needed(model, spec["tied"])
    shape(model, gen, spec["tied"])
    calibrate(model, spec["eos"], gen, spec.get("eos_rate", SHAPE["eos_rate"]))
    model.to(spec["storage"])
    if spec["generation"] is not None:
        model.generation_config = GenerationConfig(**spec["generation"])
    model.save_pretrained(str(out))
    if spec["generation"] is None:
        (out / "generation_config.json").unlink(missing_ok=True)
    if spec.get("hub_style"):
        # rewrite config.json as the Hub's 4.x Gemma 3 configs are: top-level rope keys
        import json

        cfg = json.loads((out / "config.json").read_text())
        for k in ("rope_parameters", "layer_types"):
            cfg.pop(k, None)
        cfg.update({k: v for k, v in spec["config"].items()
                    if k in ("rope_theta", "rope_local_base_freq", "rope_scaling", "sliding_window_pattern")})
        write_json(out / "config.json", cfg)


def check_runtime(name: str, m32, cfg: dict) -> None:
    c = m32.config
    hd = c.head_dim
    if c.model_type == "gemma2":
        assert c.attn_logit_softcapping == cfg.get("attn_logit_softcapping")
        theta = cfg["rope_parameters"]["rope_theta"]
        factor = cfg["rope_parameters"].get("factor", 1.0)
        want = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd)) / factor
        assert torch.allclose(m32.model.rotary_emb.inv_freq, want, rtol=1e-6, atol=0)
    else:
        rp = c.rope_parameters
        for lt in set(c.layer_types):
            theta = rp[lt]["rope_theta"]
            factor = rp[lt].get("factor", 1.0) if rp[lt]["rope_type"] == "linear" else 1.0
            want = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd)) / factor
            got = getattr(m32.model.rotary_emb, f"{lt}_inv_freq")
            assert torch.allclose(got, want, rtol=1e-6, atol=0), (name, lt)
        print(f"  {name}: layer_types {c.layer_types}, rope {rp}")
    assert c.final_logit_softcapping == cfg.get("final_logit_softcapping", c.final_logit_softcapping)
    assert c.query_pre_attn_scalar == cfg["query_pre_attn_scalar"]


def make_hf(name: str, versions: dict) -> dict:
    spec = SPECS[name]
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = mdf.build_tokenizer("gemma", spec["vocab"])
    mdf.write_tokenizer(out, tok, "gemma")
    build_hf(name, out)
    tok_hf = AutoTokenizer.from_pretrained(str(out))
    for p in PROMPTS:
        assert tok_hf(p)["input_ids"] == tok.encode(p).ids
    m32 = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    check_runtime(name, m32, spec["config"])
    tied = m32.lm_head.weight.data_ptr() == m32.model.embed_tokens.weight.data_ptr()
    assert tied == spec["tied"]
    assert mdf.eos_ids_in_effect(m32, {}) == spec["eos"], m32.generation_config
    pools = mdf.DecoderPools(tok, spec["seed"] + 7, 6, 2, mdf.model_limits(name) - 20)
    return mdf.finish(name, out, m32, tok_hf, tok, pools, 0, versions)


GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
GGUF_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def gguf_name(hf: str) -> str:
    if hf in GGUF_NAMES:
        return GGUF_NAMES[hf]
    parts = hf.split(".")
    return f"blk.{parts[2]}." + GGUF_LAYER_NAMES[".".join(parts[3:])]


def write_gguf(path: Path, model, tok, spec: dict) -> dict:
    cfg = model.config
    arch = spec["arch"]
    tj = __import__("json").loads(tok.to_str())
    tokens = [None] * len(tj["model"]["vocab"])
    for t, i in tj["model"]["vocab"].items():
        tokens[i] = t
    for added in tj["added_tokens"]:
        tokens[added["id"]] = added["content"]
    specials = {a["content"] for a in tj["added_tokens"] if a["special"]}
    types = [gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t in tokens]
    merges = [" ".join(m) if isinstance(m, list) else m for m in tj["model"]["merges"]]

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"tiny-random-{arch}")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_sliding_window(cfg.sliding_window)
    if arch == "gemma2":
        w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
        w.add_attn_logit_softcapping(cfg.attn_logit_softcapping)
        w.add_final_logit_softcapping(cfg.final_logit_softcapping)
    else:
        w.add_rope_freq_base(cfg.rope_parameters["full_attention"]["rope_theta"])
    w.add_file_type(mdf.FILE_TYPES[spec["qtype"]])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    stored = {}
    for hf, t in model.state_dict().items():
        if hf == "lm_head.weight" and spec["tied"]:
            continue
        a = t.detach().float().numpy()
        name = gguf_name(hf)
        if name.endswith("norm.weight"):
            a = a + np.float32(1.0)  # llama.cpp's Gemma converters store 1 + w
        if a.ndim == 1:
            w.add_tensor(name, a.astype(np.float32))
            stored[name] = gguf.GGMLQuantizationType.F32
        else:
            w.add_tensor(name, gguf.quants.quantize(a, spec["qtype"]), raw_dtype=spec["qtype"])
            stored[name] = spec["qtype"]
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return stored


def make_gguf(name: str, versions: dict) -> dict:
    spec = GGUF_SPECS[name]
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = mdf.build_tokenizer("gemma", GGUF_VOCAB)
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    model = new_model(spec["arch"], GGUF_VOCAB, spec["tied"], spec["config"]).eval()
    mdf.untie_if_needed(model, spec["tied"])
    shape(model, gen, spec["tied"])
    calibrate(model, [1], gen, spec.get("eos_rate", SHAPE["eos_rate"]))
    stored = write_gguf(out / mdf.GGUF_FILE, model, tok, spec)

    tok_hf = AutoTokenizer.from_pretrained(str(out), gguf_file=mdf.GGUF_FILE)
    for p in PROMPTS:
        assert tok_hf(p)["input_ids"] == tok.encode(p).ids
    # transformers' GGUF mapping reads neither the attention scale nor Gemma 2's soft-caps:
    # give it the values the file states (and llama.cpp uses).
    overrides = {"query_pre_attn_scalar": spec["config"]["query_pre_attn_scalar"]}
    if spec["arch"] == "gemma2":
        overrides.update(attn_logit_softcapping=spec["config"]["attn_logit_softcapping"],
                         final_logit_softcapping=spec["config"]["final_logit_softcapping"])
    m32 = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=mdf.GGUF_FILE, dtype=torch.float32,
                                               **overrides).eval()
    c = m32.config
    assert c.model_type == ("gemma2" if spec["arch"] == "gemma2" else "gemma3_text"), c.model_type
    assert c.sliding_window == spec["config"]["sliding_window"] and c.head_dim == spec["config"]["head_dim"]
    assert c.query_pre_attn_scalar == spec["config"]["query_pre_attn_scalar"]
    if spec["arch"] == "gemma3":
        assert c.layer_types == ["sliding_attention"] * 5 + ["full_attention", "sliding_attention"], c.layer_types
        assert c.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0
        assert c.rope_parameters["full_attention"]["rope_theta"] == 1000000.0
    tied = m32.lm_head.weight.data_ptr() == m32.model.embed_tokens.weight.data_ptr()
    assert tied == spec["tied"]
    # transformers' weights == gguf's dequantization of the file (norms: minus the 1)
    reader = gguf.GGUFReader(str(out / mdf.GGUF_FILE))
    assert {t.name: t.tensor_type for t in reader.tensors} == stored
    params = dict(m32.named_parameters(remove_duplicate=False))
    inv = {gguf_name(k): k for k in params if k != "lm_head.weight" or not spec["tied"]}
    q_err = 0.0
    base = model.state_dict()
    for t in reader.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        hf = inv[t.name]
        if t.name.endswith("norm.weight"):
            a = a - np.float32(1.0)
        assert torch.equal(params[hf].detach(), torch.from_numpy(a.astype(np.float32))), (name, hf)
        q_err = max(q_err, float((params[hf].detach() - base[hf].float()).abs().max()))
    pools = mdf.DecoderPools(tok, spec["seed"] + 7, 6, 2, 76)
    return mdf.finish(name, out, m32, tok_hf, tok, pools, 0, versions, dict(q_err=q_err))


def main(argv: list[str]) -> int:
    versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                "tokenizers": tokenizers.__version__, "gguf": importlib.metadata.version("gguf")}
    names = argv or ALL
    unknown = set(names) - set(ALL)
    if unknown:
        raise SystemExit(f"unknown models: {sorted(unknown)}; choose from {ALL}")
    for n in names:
        s = make_hf(n, versions) if n in SPECS else make_gguf(n, versions)
        qerr = f" (max |dequantized - original| weight {s['q_err']:.3g})" if "q_err" in s else ""
        print(f"== {n}{qerr}")
        for k, v in s["logits_diff"].items():
            print(f"  {k}: max |f32 - f64| logits = {v:.2e}")
        for c in s["gen"] + s["text"]:
            m = c["_margin"]
            print(f"  {c['name']:28s} margin {'-' if m is None else f'{m:.4f}'}  "
                  f"lens {[len(q) for q in c.get('sequences', [])]}")
        size = sum(p.stat().st_size for p in (FIXTURES / n).iterdir())
        print(f"  size {size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
