"""Long prompts go through the decoder in chunks of positions (each chunk attending to the cache
the earlier ones filled), so that a prefill's activations are sized by the chunk, not the prompt.
Chunking must not change a bit: the last logits of a long prompt equal those of the same prompt
fed in one pass (``last_only=False`` never chunks), for f32 and quantized weights, ragged
(left-padded) batches included; and the cache reserved for a whole generation gives the tokens of
a cache that grows.

Parity of the one-pass path itself with transformers is tests/test_decoder_parity.py's."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import FIXTURES

# Longer than two chunks (128 rows a pass: 128 positions at batch 1, 42 at batch 3) and not a
# multiple of one: the last chunk is short.
LONG = 300

CASES = [
    ("qwen2", "f32"),  # 256 positions: a 200-token prompt (below) still spans two chunks
    ("llama_gguf_q4_1", "auto"),  # the quantized kernels
    ("llama_gguf_q8_0", "auto"),
]


def _model(name: str, dtype: str):
    import fasttx

    path = FIXTURES / name
    if (path / "model.gguf").is_file():
        path = path / "model.gguf"
    return fasttx.load(path, dtype=dtype, threads=2)


def _ragged_batch(model, lengths: list[int], seed: int):
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.zeros((len(lengths), width), dtype=np.int64)
    mask = np.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, width - n :] = rng.integers(3, model.vocab_size, n)
        mask[r, width - n :] = 1
    return ids, mask


@pytest.mark.parametrize("name,dtype", CASES)
def test_a_chunked_prefill_gives_the_bits_of_one_pass(name, dtype):
    model = _model(name, dtype)
    limit = model.max_positions or LONG
    lengths = [min(LONG, limit - 8), min(LONG, limit - 8) - 61, 129]
    ids, mask = _ragged_batch(model, lengths, seed=len(name))
    chunked = model._native.start(ids, mask).step(ids, mask)  # last_only: chunked
    whole = model._native.start(ids, mask).step(ids, mask, last_only=False)[:, -1]
    assert chunked.shape == whole.shape
    assert np.array_equal(chunked, whole), f"max diff {np.abs(chunked - whole).max()}"


@pytest.mark.parametrize("name,dtype", CASES[:2])
def test_generation_after_a_long_prompt_matches_token_by_token_feeding(name, dtype):
    """Greedy tokens after a long prompt equal those of a session fed one token per step (no
    chunking, a cache that grows by doubling instead of being reserved)."""
    model = _model(name, dtype)
    limit = model.max_positions or LONG
    ids, mask = _ragged_batch(model, [min(LONG, limit - 20)], seed=3)
    new = 12
    got = model.generate_ids(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False)
    session = model._native.start(ids, mask)
    for i in range(ids.shape[1] - 1):
        session.step(ids[:, i : i + 1], mask[:, i : i + 1])
    logits = session.step(ids[:, -1:], mask[:, -1:])
    want = []
    for _ in range(new):
        token = int(np.argmax(logits[0]))
        want.append(token)
        logits = session.step(np.array([[token]]), np.array([[1]]))
    assert np.asarray(got)[0].tolist() == want  # generate_ids returns the new tokens of a decoder-only model


# Batch 8 x 512 (tests/fixtures/long_prompts, scripts/make_long_prompt_fixtures.py): a prefill
# chunked by rows (16 positions of each of the 8 rows a pass) against transformers' last logits.
# The prompts run past the models' max_position_embeddings (rotary positions go on; only the
# Python layer refuses them), hence the native session.
BATCH8_ATOL = {("qwen2", "f32"): 1e-4, ("llama_gguf_q4_1", "f32"): 1e-4,
               # the native Q4_1 kernels' bound of tests/test_decoder_parity.py (8-bit activations)
               ("llama_gguf_q4_1", "auto"): 1.5}


@pytest.mark.parametrize("name,dtype", list(BATCH8_ATOL))
def test_a_batch_8_prefill_of_512_tokens_matches_transformers(name, dtype):
    ref = np.load(FIXTURES / "long_prompts" / f"{name}.npz")
    ids, mask = ref["input_ids"].astype(np.int64), ref["attention_mask"].astype(np.int64)
    assert ids.shape == (8, 512)
    model = _model(name, dtype)
    chunked = model._native.start(ids, mask).step(ids, mask)  # last_only: chunked by rows
    np.testing.assert_allclose(chunked, ref["logits"], rtol=0, atol=BATCH8_ATOL[(name, dtype)])
    # And, beyond the reference: the same bits as one unchunked pass.
    whole = model._native.start(ids, mask).step(ids, mask, last_only=False)[:, -1]
    assert np.array_equal(chunked, whole), f"max diff {np.abs(chunked - whole).max()}"
