#!/usr/bin/env python3
"""Generate ``tests/fixtures/kquant/``: one tiny Llama, quantized by llama.cpp's own quantizer
into the file types people download, with what transformers and llama.cpp compute on each file.

What it makes
-------------
1. A tiny, seeded, random Llama (hidden 256, intermediate 256, 1 layer, 8 query heads / 2 KV
   heads of 32, tied embeddings, vocab 320 with a byte-level BPE tokenizer in the metadata),
   shaped like the other GGUF fixtures (``make_decoder_fixtures.py``: ``shape_weights``,
   ``calibrate_eos``), written in F32 with the ``gguf`` package (llama.cpp's q/k row permutation).
   Every row length is 256, so llama.cpp quantizes every matrix to a K-quant and none falls back
   to a 32-value type. One layer and tied embeddings keep the files small (about 150-360 KB).
2. ``llama_cpp.llama_model_quantize`` (default parameters: llama.cpp's per-tensor mixes) of that
   file into each of ``FTYPES`` below: ``<name>.gguf``. The tensor types llama.cpp chose are read
   back with ``gguf.GGUFReader`` and recorded (``tensor_types`` in ``<name>.json``).
3. For each file and each prompt of ``PROMPTS`` (token ids, BOS first):
   * transformers (``AutoModelForCausalLM.from_pretrained(dir, gguf_file=<name>.gguf)``, which
     dequantizes every tensor with gguf-py's reference dequantizers; the tokenizer and config
     come from the GGUF metadata): the logits of the prompt (``hf_<i>`` in ``<name>.npz``,
     ``[len, vocab]`` float32) and its greedy continuation (``generate``, ``MAX_NEW`` new tokens,
     stopping after EOS; every step's top-1/top-2 gap is checked to exceed 1e-3, so other f32
     implementations must pick the same tokens);
   * llama.cpp (``llama_cpp.Llama(path, logits_all=True, n_threads=1)``: its CPU kernels on the
     quantized weights, activations quantized to Q8_K / Q8_0 as it does): the logits of the
     prompt evaluated as one batch (``llama_<i>``), then its greedy continuation evaluated one
     token at a time, with the top-1/top-2 gap of llama.cpp's logits at every step (``gaps``:
     where it is below 0.25 the choice is a near-tie that another kernel may order differently).
   The transformers model's weights are checked to equal gguf-py's dequantization of the file.

``<name>.json``: {"ftype", "tensor_types": {gguf name: type}, "prompts": [[ids]],
"transformers": {"greedy": [[ids]], "min_gap": smallest top-1/top-2 gap of its greedy steps}, "llama_cpp": {"greedy": [[ids]], "gaps": [[float]]},
"spread": [max |llama_i - hf_i| per prompt], "versions"}.

The tolerance tests use for dtype="auto" against llama.cpp is derived from these files by
``scripts/derive_kquant_tolerance.py`` (written to ``tolerance.json``).

Usage (the reference environment: torch, transformers, accelerate, gguf, llama-cpp-python):
    python scripts/make_kquant_fixtures.py          (deterministic up to llama.cpp's own kernels)
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gguf  # noqa: E402
import llama_cpp  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

import make_decoder_fixtures as mdf  # noqa: E402
from fixturelib import FIXTURES, MARGIN_MIN, ROOT, write_json  # noqa: E402

OUT = FIXTURES / "kquant"
SEED = 12000
CONFIG = dict(
    vocab_size=320,
    hidden_size=256,
    intermediate_size=256,
    num_hidden_layers=1,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=32,
    rms_norm_eps=1e-5,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    tie_word_embeddings=True,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
)
# The file types and, for each, the tensor types it must hold (llama.cpp's mixes; checked).
FTYPES = {
    "q4_k_m": ("LLAMA_FTYPE_MOSTLY_Q4_K_M", {"Q4_K", "Q6_K"}),
    "q5_k_m": ("LLAMA_FTYPE_MOSTLY_Q5_K_M", {"Q5_K", "Q6_K"}),
    "q6_k": ("LLAMA_FTYPE_MOSTLY_Q6_K", {"Q6_K"}),
    "q3_k_m": ("LLAMA_FTYPE_MOSTLY_Q3_K_M", {"Q3_K"}),
    "q2_k": ("LLAMA_FTYPE_MOSTLY_Q2_K", {"Q2_K"}),
    "iq4_xs": ("LLAMA_FTYPE_MOSTLY_IQ4_XS", {"IQ4_XS"}),
    "iq4_nl": ("LLAMA_FTYPE_MOSTLY_IQ4_NL", {"IQ4_NL"}),
    "q5_0": ("LLAMA_FTYPE_MOSTLY_Q5_0", {"Q5_0"}),
    "q5_1": ("LLAMA_FTYPE_MOSTLY_Q5_1", {"Q5_1"}),
}
# Token ids (BOS first) from the byte-level vocabulary's ordinary tokens (6..319).
PROMPTS = [
    [1, 84, 72, 69, 232, 81, 85, 73, 67, 75, 246, 82, 79, 87, 78],
    [1, 51, 250, 17, 300, 120, 77, 6, 199, 45, 90, 310],
    [1, 264, 101, 33, 58, 180, 12, 290, 143, 67, 219, 98, 31, 270, 155, 44, 88, 111, 203, 9],
]
MAX_NEW = 16
NEAR_TIE = 0.25


def base_model() -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED + 1)
    model = LlamaForCausalLM(LlamaConfig(**CONFIG)).eval()
    shape = {**mdf.GGUF_SHAPE, "out_scale": 6.0}  # tied: louder sublayers (as llama_gguf_q8_0)
    mdf.shape_weights(model, shape, gen)
    mdf.calibrate_eos(model, shape, gen)
    return model


def write_f32(path: Path, model: LlamaForCausalLM) -> None:
    """The F32 source file, through the decoder fixtures' writer (tokenizer metadata, permutation)."""
    mdf.FILE_TYPES[gguf.GGMLQuantizationType.F32] = gguf.LlamaFileType.ALL_F32
    mdf.GGUF_BASE.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.config.rope_parameters = CONFIG["rope_parameters"]
    tok = mdf.build_tokenizer("llama", CONFIG["vocab_size"])
    mdf.write_gguf(path, model, tok, gguf.GGMLQuantizationType.F32, tied=True)


def quantize(src: Path, dst: Path, ftype: str) -> dict:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype)
    params.nthread = 1
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    assert rc == 0, (ftype, rc)
    reader = gguf.GGUFReader(str(dst))
    return {t.name: t.tensor_type.name for t in reader.tensors}


def check_transformers_weights(path: Path, m) -> None:
    """transformers' weights are gguf-py's dequantization of the file, un-permuted."""
    reader = gguf.GGUFReader(str(path))
    params = dict(m.named_parameters(remove_duplicate=False))
    inv = {mdf.gguf_name(k): k for k in params if k != "lm_head.weight"}
    cfg = m.config
    for t in reader.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
        hf = inv[t.name]
        if hf.endswith("q_proj.weight"):
            a = mdf.unpermute(a, cfg.num_attention_heads, cfg.num_attention_heads)
        elif hf.endswith("k_proj.weight"):
            a = mdf.unpermute(a, cfg.num_attention_heads, cfg.num_key_value_heads)
        assert torch.equal(params[hf].detach(), torch.from_numpy(a.astype(np.float32))), (path.name, hf)


def run_transformers(path: Path) -> tuple[list[np.ndarray], list[list[int]], float]:
    m = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    check_transformers_weights(path, m)
    logits, greedy, min_gap = [], [], math.inf
    with torch.no_grad():
        for p in PROMPTS:
            ids = torch.tensor([p])
            logits.append(m(ids).logits[0].numpy().astype(np.float32))
            out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=MAX_NEW, do_sample=False,
                             eos_token_id=CONFIG["eos_token_id"], pad_token_id=CONFIG["pad_token_id"],
                             output_scores=True, return_dict_in_generate=True)
            greedy.append(out.sequences[0, len(p):].tolist())
            for s in out.scores:
                top2 = torch.topk(s[0], 2).values
                min_gap = min(min_gap, float(top2[0] - top2[1]))
    # f32 implementations agree to ~1e-5 on these logits: a smaller gap would make the
    # transformers tokens a coin toss for any other f32 implementation.
    assert min_gap > MARGIN_MIN, (path.name, min_gap)
    return logits, greedy, min_gap


def run_llama_cpp(path: Path) -> tuple[list[np.ndarray], list[list[int]], list[list[float]]]:
    llm = llama_cpp.Llama(model_path=str(path), logits_all=True, n_threads=1, n_ctx=128, verbose=False)
    logits, greedy, gaps = [], [], []
    for p in PROMPTS:
        llm.reset()
        llm.eval(p)
        logits.append(np.array(llm.scores[: len(p)], dtype=np.float32))
        toks, gap = [], []
        for _ in range(MAX_NEW):
            row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            top2 = np.sort(row)[-2:]
            gap.append(float(top2[1] - top2[0]))
            t = int(np.argmax(row))
            toks.append(t)
            if t == CONFIG["eos_token_id"]:
                break
            llm.eval([t])
        greedy.append(toks)
        gaps.append(gap)
    return logits, greedy, gaps


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    versions = {k: importlib.metadata.version(k) for k in ("torch", "transformers", "gguf", "llama_cpp_python")}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "f32.gguf"
        write_f32(src, base_model())
        for name, (ftype, must_hold) in FTYPES.items():
            path = OUT / f"{name}.gguf"
            types = quantize(src, path, ftype)
            held = set(types.values())
            assert must_hold <= held, (name, held)
            hf_logits, hf_greedy, hf_gap = run_transformers(path)
            ll_logits, ll_greedy, gaps = run_llama_cpp(path)
            spread = [float(np.abs(a - b).max()) for a, b in zip(ll_logits, hf_logits)]
            arrays = {f"hf_{i}": a for i, a in enumerate(hf_logits)}
            arrays.update({f"llama_{i}": a for i, a in enumerate(ll_logits)})
            np.savez_compressed(OUT / f"{name}.npz", **arrays)
            write_json(OUT / f"{name}.json", {
                "ftype": ftype,
                "tensor_types": types,
                "prompts": PROMPTS,
                "transformers": {"greedy": hf_greedy, "min_gap": hf_gap},
                "llama_cpp": {"greedy": ll_greedy, "gaps": gaps},
                "spread": spread,
                "versions": versions,
            })
            agree = sum(a == b for a, b in zip(hf_greedy, ll_greedy))
            near = [[round(g, 3) for g in gs if g < NEAR_TIE] for gs in gaps]
            print(f"{name:7s} {path.stat().st_size:7d} bytes  types {sorted(held)}  "
                  f"max|llama-hf| {max(spread):.4f}  greedy hf==llama {agree}/{len(PROMPTS)}  "
                  f"near-ties {near}")
    print(f"in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
