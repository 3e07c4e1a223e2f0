"""K-quant weights (Q4_K, Q6_K) run by fasttx's native super-block kernels (dtype="auto") against
the same weights dequantized to float32 (dtype="f32": gguf-py's dequantizers, bit for bit, so the
exact weights of the file), and requantized to int8 (dtype="int8").

The model is a tiny Llama written here with the `gguf` package: the tokenizer of the
llama_gguf_q4_1 fixture, dimensions that are multiples of 256 (K-quant rows are whole
super-blocks), and random Q4_K / Q6_K blocks with the scale sizes llama.cpp's quantizer gives
weights of about ±0.05 (Q4_K_M's mix: Q6_K for `output.weight` and one layer's `ffn_down`,
Q4_K elsewhere). The weights are identical on both paths, so what separates dtype="auto" from
dtype="f32" is the 8-bit quantization of the activations per block of 32 (`d = max|x|/127`).

Tolerance: a matrix product of rows of `k` values whose activations are rounded by at most half
a step, `max|x|/254`, moves by at most `Σ|w|·max|x|/254`, typically `sqrt(k/3)·rms(w)·max|x|/254`:
a fraction of a percent per projection, compounding through 2 layers and the head. Measured on
this model (AVX-512 and AVX2 give the same bits for dtype="auto" and "int8"): max |auto - f32|
= 0.037 with logits up to |2.4|; the bound is about twice that. The bound still catches a kernel
that reads a scale from the wrong place: swapping two sub-blocks' scales in one matrix moves the
(f32) logits by 0.28 (blk.1.attn_q, Q4_K), 0.77 (blk.0.ffn_down, Q6_K), 1.9 (output, Q6_K).
int8 (per-channel 8-bit weights requantized from the exact K-quant values, plus the same
activation quantization): measured 0.089, bound 0.18.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES

gguf = pytest.importorskip("gguf")

HIDDEN, FF, HEADS, KV_HEADS, LAYERS = 256, 512, 4, 2, 2
AUTO_ATOL = 0.08
INT8_ATOL = 0.18


def _q4_k_blocks(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q4_K super-blocks (144 bytes): `w = (d·sc)·q - dmin·m`, 6-bit sc/m, q 0..15."""
    nb = rows * cols // 256
    b = rng.integers(0, 256, size=(nb, 144), dtype=np.uint8)
    # d·63·15 ≈ 0.1 (the span of a sub-block), dmin·63 ≈ 0.05 (its minimum).
    b[:, 0:2] = (rng.uniform(0.5, 1.5, nb) * 1e-4).astype(np.float16).view(np.uint8).reshape(nb, 2)
    b[:, 2:4] = (rng.uniform(0.5, 1.5, nb) * 8e-4).astype(np.float16).view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, cols // 256 * 144)


def _q6_k_blocks(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """Random Q6_K super-blocks (210 bytes): `w = (d·sc)·(q - 32)`, sc int8, q 0..63."""
    nb = rows * cols // 256
    b = rng.integers(0, 256, size=(nb, 210), dtype=np.uint8)
    # d·127·32 ≈ 0.1; d of either sign, as llama.cpp stores it.
    d = rng.uniform(0.5, 1.5, nb) * 2.5e-5 * rng.choice([-1.0, 1.0], nb)
    b[:, 208:210] = d.astype(np.float16).view(np.uint8).reshape(nb, 2)
    return b.reshape(rows, cols // 256 * 210)


def _write_model(path) -> None:
    src = gguf.GGUFReader(str(FIXTURES / "llama_gguf_q4_1" / "model.gguf"))
    field = lambda key: src.fields[key].contents()  # noqa: E731
    vocab = len(field("tokenizer.ggml.tokens"))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(HIDDEN // HEADS)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model(field("tokenizer.ggml.model"))
    w.add_tokenizer_pre(field("tokenizer.ggml.pre"))
    w.add_token_list(field("tokenizer.ggml.tokens"))
    w.add_token_types(field("tokenizer.ggml.token_type"))
    w.add_token_merges(field("tokenizer.ggml.merges"))
    w.add_bos_token_id(field("tokenizer.ggml.bos_token_id"))
    w.add_eos_token_id(field("tokenizer.ggml.eos_token_id"))
    w.add_pad_token_id(field("tokenizer.ggml.padding_token_id"))
    w.add_add_bos_token(field("tokenizer.ggml.add_bos_token"))

    rng = np.random.default_rng(12)
    Q4_K, Q6_K = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K

    def quant(name: str, rows: int, cols: int, kind) -> None:
        make = _q4_k_blocks if kind == Q4_K else _q6_k_blocks
        w.add_tensor(name, make(rng, rows, cols), raw_dtype=kind)

    def norm(name: str) -> None:
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32))

    head_dim = HIDDEN // HEADS
    quant("token_embd.weight", vocab, HIDDEN, Q4_K)
    for i in range(LAYERS):
        p = f"blk.{i}"
        quant(f"{p}.attn_q.weight", HIDDEN, HIDDEN, Q4_K)
        quant(f"{p}.attn_k.weight", KV_HEADS * head_dim, HIDDEN, Q4_K)
        quant(f"{p}.attn_v.weight", KV_HEADS * head_dim, HIDDEN, Q6_K if i == 0 else Q4_K)
        quant(f"{p}.attn_output.weight", HIDDEN, HIDDEN, Q4_K)
        quant(f"{p}.ffn_gate.weight", FF, HIDDEN, Q4_K)
        quant(f"{p}.ffn_up.weight", FF, HIDDEN, Q4_K)
        quant(f"{p}.ffn_down.weight", HIDDEN, FF, Q6_K if i == 0 else Q4_K)
        norm(f"{p}.attn_norm.weight")
        norm(f"{p}.ffn_norm.weight")
    norm("output_norm.weight")
    quant("output.weight", vocab, HIDDEN, Q6_K)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def kquant_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("kquant") / "model.gguf"
    _write_model(path)
    return path


def _logits(model) -> np.ndarray:
    ids = np.array([[1, 5, 17, 42, 99, 200, 7, 300, 11, 64, 128, 250]])
    return model.logits(ids, attention_mask=np.ones_like(ids))


@pytest.mark.parametrize("dtype,atol", [("auto", AUTO_ATOL), ("int8", INT8_ATOL)])
def test_k_quant_kernels_follow_the_dequantized_weights(kquant_model, dtype, atol):
    import fasttx

    want = _logits(fasttx.load(kquant_model, dtype="f32", threads=2))
    got = _logits(fasttx.load(kquant_model, dtype=dtype, threads=2))
    assert got.shape == want.shape and np.isfinite(got).all()
    err = np.abs(got - want).max()
    assert err <= atol, f"{dtype}: max |logits - f32 logits| = {err} (logits up to {np.abs(want).max()})"
    # The weights stayed quantized (dtype="auto") or became int8: the activations were quantized.
    assert err > 1e-4, f"{dtype}: logits equal the f32 path's, nothing ran quantized"
    assert (got.argmax(-1) == want.argmax(-1)).mean() >= 0.9


def test_k_quant_results_do_not_depend_on_threads(kquant_model):
    import fasttx

    one = _logits(fasttx.load(kquant_model, dtype="auto", threads=1))
    three = _logits(fasttx.load(kquant_model, dtype="auto", threads=3))
    assert one.tobytes() == three.tobytes()
