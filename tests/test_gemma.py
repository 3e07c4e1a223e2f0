"""fasttx against transformers on tiny random Gemma 2 and Gemma 3 (text) models, from Hugging Face
directories and from GGUF files: logits within 1e-4, generated tokens (greedy, beam, processors)
and decoded texts identical, every row of a left-padded batch alone as in the batch.

The fixtures (tests/fixtures/README-gemma.md, made by scripts/make_gemma_fixtures.py) vary the
knobs a wrong implementation would get wrong: soft-caps on (small enough to act) and off, sliding
windows shorter than the prompts, Gemma 2's alternating and explicit layer types, Gemma 3's
pattern and its separate local/global rotary bases with linear scaling on the global one,
query_pre_attn_scalar != head_dim, head_dim * heads != hidden, GQA and MQA, attention biases,
tied and untied heads, gelu (tanh and erf), several EOS ids; float32/float16/bfloat16 weights;
GGUF F16 and Q8_0 (norms stored as 1 + w)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIXTURES, expected, expected_logits

HF_MODELS = ["gemma2_softcap", "gemma2_nocap", "gemma3_hub", "gemma3_nested"]
GGUF_MODELS = ["gemma2_gguf_f16", "gemma3_gguf_q8_0"]
MODELS = HF_MODELS + GGUF_MODELS


def model_path(name: str):
    return FIXTURES / name / "model.gguf" if name in GGUF_MODELS else FIXTURES / name


@pytest.fixture(scope="module")
def load():
    import fasttx

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            cache[name] = fasttx.load(model_path(name), dtype="f32", threads=2)
        return cache[name]

    return get


def _cases(kind: str, batched_only: bool = False):
    return [
        pytest.param(model, case, id=f"{model}-{case['name']}")
        for model in MODELS
        for case in expected(model)[kind]
        if not batched_only or len(case["input_ids"]) > 1
    ]


def test_fixtures_present():
    for name in MODELS:
        assert (FIXTURES / name / "expected.json").is_file(), name
        assert model_path(name).exists(), name


@pytest.mark.parametrize("model_name,case", _cases("logits"))
def test_logits_match_transformers(load, model_name, case):
    model = load(model_name)
    want = expected_logits(model_name)[case["name"]]
    mask = np.array(case["attention_mask"])
    got = model.logits(np.array(case["input_ids"]), attention_mask=mask)
    assert got.dtype == np.float32 and got.shape == want.shape
    # Real positions only: transformers' values at right-padding positions are not defined by the
    # model (its float64 run gives NaN there).
    real = mask.astype(bool)
    scale = np.abs(want[real]).max()
    np.testing.assert_allclose(got[real], want[real], rtol=0, atol=1e-4 * max(1.0, scale / 20))


@pytest.mark.parametrize("model_name,case", _cases("generate"))
def test_generate_ids_match_transformers(load, model_name, case):
    assert load(model_name).generate_ids(case["input_ids"], **case["options"]) == case["sequences"]


@pytest.mark.parametrize("model_name,case", _cases("generate", batched_only=True))
def test_each_row_alone_matches_its_batch_result(load, model_name, case):
    model = load(model_name)
    n = case["options"].get("num_return_sequences", 1)
    for i, ids in enumerate(case["input_ids"]):
        assert model.generate_ids([ids], **case["options"]) == case["sequences"][i * n : (i + 1) * n]


@pytest.mark.parametrize("model_name,case", _cases("text"))
def test_text_generation_matches_transformers(load, model_name, case):
    model = load(model_name)
    assert model.generate(case["prompts"], **case["options"]) == case["texts"]


@pytest.mark.parametrize("model_name", ["gemma2_softcap", "gemma3_hub"])
def test_seeded_sampling_is_reproducible_and_batch_independent(load, model_name):
    """Sampling draws from the same distributions: a seed gives the same tokens every time, and
    (one generator per row) a row sampled in a batch as alone."""
    model = load(model_name)
    case = next(c for c in expected(model_name)["generate"] if len(c["input_ids"]) > 1)
    opts = dict(do_sample=True, temperature=0.9, top_k=20, max_new_tokens=10)
    first = model.generate_ids(case["input_ids"], seed=7, **opts)
    assert model.generate_ids(case["input_ids"], seed=7, **opts) == first


def _config(name: str) -> dict:
    return json.loads((FIXTURES / name / "config.json").read_text())


@pytest.mark.parametrize(
    "name,edit,key",
    [
        ("gemma2_softcap", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ("gemma2_softcap", {"hidden_activation": "silu"}, "hidden_activation"),
        ("gemma2_softcap", {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}, "rope_parameters.rope_type"),
        ("gemma2_softcap", {"sliding_window": None}, "sliding_window"),
        ("gemma3_hub", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling.rope_type"),
        ("gemma3_nested", {"layer_types": ["full_attention"] * 3 + ["chunked_attention"]}, "layer_types"),
    ],
)
def test_unsupported_knobs_are_refused_naming_the_key(tmp_path, name, edit, key):
    import shutil

    import fasttx

    src = FIXTURES / name
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    config = _config(name)
    config.update(edit)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(fasttx.ModelFormatError, match=key.replace(".", r"\.")):
        fasttx.load(tmp_path)
