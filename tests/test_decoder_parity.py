"""fasttx against transformers on tiny random decoder-only models (Llama GQA/MQA, Qwen2, GPT-2,
Llama GGUF f16/q8_0/q4_0/q4_1): logits within 1e-4, generated tokens identical, decoded text
identical, batch results independent of batch composition.

Fixtures: tests/fixtures/README-decoder.md (made by scripts/make_decoder_fixtures.py). Every
parity test loads the model with dtype="f32": transformers' reference runs in float32 (GGUF
weights dequantized to float32), so fasttx must compute in float32 too. The GGUF quantized
files also get a dtype="auto" test (fasttx's native quantized kernels, which quantize the
activations as ggml does) with a looser, measured bound."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (
    FIXTURES,
    assert_each_row_alone_matches_its_batch,
    assert_stream_concatenates_to_texts,
    cached_loader,
    expected,
    expected_logits,
    fixture_model_path,
    fixture_models,
    parity_cases,
)

HF_MODELS = ["llama_gqa", "llama_untied", "qwen2", "gpt2", "gpt2_scaled"]
GGUF_MODELS = ["llama_gguf_f16", "llama_gguf_q8_0", "llama_gguf_q4_0", "llama_gguf_q4_1"]
DECODER_MODELS = HF_MODELS + GGUF_MODELS
PRESENT = [m for m in DECODER_MODELS if m in set(fixture_models())]

# dtype="auto" on a GGUF file: max |fasttx logits - transformers logits| allowed (whole arrays,
# pad positions included), about twice the error measured with fasttx's native kernels on these
# fixtures (threads 1 and 2 give the same numbers; see README-decoder.md):
#   q8_0 0.893, q4_0 0.711, q4_1 0.767 (logits of these fixtures reach |17|..|18|).
# transformers dequantizes every weight to float32 and computes in float32; ggml-style kernels
# also quantize the ACTIVATIONS per 32-block (Q8_0 for Q8_0 / Q4_0 weights, Q8_1 for Q4_1). A
# float64 emulation of that (activations rounded to 8-bit blocks, dequantized weights) lands
# 0.45..1.08 away from transformers on the same cases, so the error is inherent, not a bug; these
# random models with loud sublayers amplify it more than trained ones do.
#   f16: fasttx's native F16 path currently matches its f32 path (max 1.8e-5, as dtype="f32"),
# so it gets the parity bound; llama.cpp-style f16 activations would need ~0.05 (emulated 0.021).
NATIVE_LOGITS_ATOL = {
    "llama_gguf_f16": 1e-4,
    "llama_gguf_q8_0": 1.8,
    "llama_gguf_q4_0": 1.5,
    "llama_gguf_q4_1": 1.5,
}


@pytest.fixture(scope="session")
def load_decoder():
    """Each fixture model loaded once per session per dtype."""
    return cached_loader(GGUF_MODELS)


def _cases(kind: str, batched_only: bool = False, models=None):
    return parity_cases(PRESENT if models is None else [m for m in models if m in PRESENT], kind, batched_only)


def test_fixtures_present():
    # The parity suite is the point of the test run: a missing fixture must fail, not skip.
    assert set(DECODER_MODELS) <= set(fixture_models()), sorted(set(DECODER_MODELS) - set(fixture_models()))
    for name in GGUF_MODELS:
        assert (FIXTURES / name / "model.gguf").is_file(), name
    for name in HF_MODELS:
        assert (FIXTURES / name / "config.json").is_file() and (FIXTURES / name / "model.safetensors").is_file()


@pytest.mark.parametrize("model_name,case", _cases("logits"))
def test_logits_match_transformers(load_decoder, model_name, case):
    model = load_decoder(model_name)
    assert not model.is_encoder_decoder
    want = expected_logits(model_name)[case["name"]]
    got = model.logits(np.array(case["input_ids"]), attention_mask=np.array(case["attention_mask"]))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("model_name,case", _cases("generate"))
def test_generate_ids_match_transformers(load_decoder, model_name, case):
    model = load_decoder(model_name)
    got = model.generate_ids(case["input_ids"], **case["options"])
    assert got == case["sequences"]


@pytest.mark.parametrize("model_name,case", _cases("generate", batched_only=True))
def test_each_row_alone_matches_its_batch_result(load_decoder, model_name, case):
    """Left padding must not change results: every prompt generated alone gives the
    transformers result recorded for it inside the (left-padded) batch."""
    assert_each_row_alone_matches_its_batch(load_decoder(model_name), case)


@pytest.mark.parametrize("model_name,case", _cases("text"))
def test_text_generation_matches_transformers(load_decoder, model_name, case):
    model = load_decoder(model_name)
    assert model.generate(case["prompts"], **case["options"]) == case["texts"]
    for prompt, text in zip(case["prompts"], case["texts"]):
        assert model.generate(prompt, **case["options"]) == text


@pytest.mark.parametrize("model_name,case", _cases("text"))
def test_stream_concatenates_to_generate(load_decoder, model_name, case):
    assert_stream_concatenates_to_texts(load_decoder(model_name), case)


@pytest.mark.parametrize("model_name,case", _cases("logits", models=GGUF_MODELS))
def test_gguf_native_kernels_stay_close_to_transformers(load_decoder, model_name, case):
    """dtype="auto": the GGUF weights stay in their own format (F16 / Q8_0 / Q4_0 / Q4_1)."""
    model = load_decoder(model_name, "auto")
    want = expected_logits(model_name)[case["name"]]
    got = model.logits(np.array(case["input_ids"]), attention_mask=np.array(case["attention_mask"]))
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=NATIVE_LOGITS_ATOL[model_name])


def test_thread_count_does_not_change_results(model_name="llama_gqa"):
    import fasttx

    case = expected(model_name)["logits"][0]
    outs = []
    for threads in (1, 2, 3):
        model = fasttx.load(fixture_model_path(model_name, GGUF_MODELS), dtype="f32", threads=threads)
        assert model.threads == threads
        outs.append(model.logits(np.array(case["input_ids"]), attention_mask=np.array(case["attention_mask"])))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
