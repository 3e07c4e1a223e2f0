"""fasttx against transformers on tiny random T5 models (v1.0, v1.1 / Flan-T5 style, sharded f16):
logits within 1e-4, generated tokens identical, decoded text identical."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import (
    assert_each_row_alone_matches_its_batch,
    assert_stream_concatenates_to_texts,
    expected,
    expected_logits,
    fixture_models,
    parity_cases,
)

T5_MODELS = fixture_models("t5")


def _cases(kind: str, batched_only: bool = False):
    return parity_cases(T5_MODELS, kind, batched_only)


def test_fixtures_present():
    # The parity suite is the point of the test run: an empty fixture set must fail, not skip.
    assert {"t5_v1_0", "t5_v1_1", "t5_sharded"} <= set(T5_MODELS)


@pytest.mark.parametrize("model_name,case", _cases("logits"))
def test_logits_match_transformers(load_fixture_model, model_name, case):
    model = load_fixture_model(model_name)
    want = expected_logits(model_name)[case["name"]]
    got = model.logits(
        np.array(case["input_ids"]),
        decoder_input_ids=np.array(case["decoder_input_ids"]),
        attention_mask=np.array(case["attention_mask"]),
    )
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("model_name,case", _cases("generate"))
def test_generate_ids_match_transformers(load_fixture_model, model_name, case):
    model = load_fixture_model(model_name)
    got = model.generate_ids(case["input_ids"], **case["options"])
    assert got == case["sequences"]


@pytest.mark.parametrize("model_name,case", _cases("generate", batched_only=True))
def test_each_row_alone_matches_its_batch_result(load_fixture_model, model_name, case):
    """Batch composition must not change results: every input generated alone gives the
    transformers result recorded for it inside the batch."""
    assert_each_row_alone_matches_its_batch(load_fixture_model(model_name), case)


@pytest.mark.parametrize("model_name,case", _cases("text"))
def test_text_generation_matches_transformers(load_fixture_model, model_name, case):
    model = load_fixture_model(model_name)
    assert model.generate(case["prompts"], **case["options"]) == case["texts"]
    for prompt, text in zip(case["prompts"], case["texts"]):
        assert model.generate(prompt, **case["options"]) == text


@pytest.mark.parametrize("model_name,case", _cases("text"))
def test_stream_concatenates_to_generate(load_fixture_model, model_name, case):
    assert_stream_concatenates_to_texts(load_fixture_model(model_name), case)


def test_thread_count_does_not_change_results(model_name="t5_v1_1"):
    import fasttx
    from conftest import FIXTURES

    case = expected(model_name)["logits"][0]
    outs = []
    for threads in (1, 2, 3):
        model = fasttx.load(FIXTURES / model_name, threads=threads)
        assert model.threads == threads
        outs.append(
            model.logits(
                np.array(case["input_ids"]),
                decoder_input_ids=np.array(case["decoder_input_ids"]),
                attention_mask=np.array(case["attention_mask"]),
            )
        )
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[0], outs[2])
