"""fasttx against transformers on tiny random Llama-family variants (issue 13): Qwen3 (q/k norms,
explicit head_dim, sliding layers), SmolLM3 (layers without RoPE, sliding layers), Mistral with a
window shorter than every prompt, Phi-3 (fused projections, partial rotary, LongRoPE), and GGUF
files of llama.cpp's qwen3 and phi3 architectures. Logits within 1e-4, generated tokens and text
identical, batched rows independent of their company; unsupported knobs refused by name.

Fixtures: scripts/make_llama_variant_fixtures.py (tests/fixtures/README-decoder.md lists them)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import fasttx
from conftest import (
    FIXTURES,
    assert_each_row_alone_matches_its_batch,
    assert_fixtures_present,
    cached_loader,
    expected,
    expected_logits,
    parity_cases,
)

HF_MODELS = ["qwen3_window", "qwen3_tied", "smollm3", "mistral_window", "phi3_partial", "phi3_longrope"]
GGUF_MODELS = ["qwen3_gguf", "phi3_gguf"]
MODELS = HF_MODELS + GGUF_MODELS
# LongRoPE picks its frequencies per forward pass from the batch's largest position (transformers
# does so; fasttx reproduces it), so a row's result depends on its company there.
COMPANY_DEPENDENT = {"phi3_longrope"}
WINDOWED = {"qwen3_window", "smollm3", "mistral_window"}


@pytest.fixture(scope="module")
def load():
    return cached_loader(GGUF_MODELS)


def cases(kind: str, batched_only: bool = False, models=MODELS):
    return parity_cases(models, kind, batched_only)


def test_fixtures_present():
    assert_fixtures_present(MODELS, GGUF_MODELS)


@pytest.mark.parametrize("name,case", cases("logits"))
def test_logits_match_transformers(load, name, case):
    """At every real position. (A right-padding position whose window holds no real token attends
    to nothing: transformers' own eager and sdpa attention disagree there by up to 14 on
    mistral_window, so those logits are not compared; without a window they are.)"""
    want = expected_logits(name)[case["name"]]
    mask = np.array(case["attention_mask"])
    got = load(name).logits(np.array(case["input_ids"]), attention_mask=mask)
    assert got.shape == want.shape
    np.testing.assert_allclose(got[mask == 1], want[mask == 1], rtol=0, atol=1e-4)
    if name not in WINDOWED:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name,case", cases("generate"))
def test_generate_ids_match_transformers(load, name, case):
    assert load(name).generate_ids(case["input_ids"], **case["options"]) == case["sequences"]


@pytest.mark.parametrize(
    "name,case", cases("generate", batched_only=True, models=[m for m in MODELS if m not in COMPANY_DEPENDENT])
)
def test_each_row_alone_matches_its_batch_result(load, name, case):
    assert_each_row_alone_matches_its_batch(load(name), case)


@pytest.mark.parametrize("name,case", cases("text"))
def test_text_matches_transformers(load, name, case):
    assert load(name).generate(case["prompts"], **case["options"]) == case["texts"]


@pytest.mark.parametrize("name", [m for m in MODELS if m not in COMPANY_DEPENDENT])
def test_seeded_sampling_is_reproducible_and_independent_of_company(load, name):
    model = load(name)
    prompts = [c["input_ids"] for c in expected(name)["generate"] if len(c["input_ids"]) == 3][0]
    options = dict(do_sample=True, temperature=0.9, top_k=20, max_new_tokens=12, seed=11)
    together = model.generate_ids(prompts, **options)
    assert together == model.generate_ids(prompts, **options)
    assert together == [model.generate_ids([p], **options)[0] for p in prompts]


def test_every_mistral_case_passes_the_window():
    """The window must matter: every batch holds a prompt longer than it."""
    window = json.loads((FIXTURES / "mistral_window" / "config.json").read_text())["sliding_window"]
    for case in expected("mistral_window")["generate"]:
        assert max(len(r) for r in case["input_ids"]) > window, case["name"]


# ------------------------------------------------------------------ knobs fasttx refuses


def with_config(tmp_path, fixture: str, **changes):
    dst = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, dst)
    path = dst / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return dst


def refused(directory, *words: str):
    with pytest.raises(fasttx.ModelFormatError) as e:
        fasttx.load(directory, threads=1)
    msg = str(e.value)
    assert "config.json" in msg and all(w in msg for w in words), msg


def test_unknown_rope_type_is_refused_naming_the_key(tmp_path):
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    refused(with_config(tmp_path, "qwen3_tied", rope_parameters=rope), "rope_parameters.rope_type", "dynamic")


def test_yarn_is_refused_outside_phi3(tmp_path):
    rope = {"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0}
    refused(with_config(tmp_path, "mistral_window", rope_parameters=rope), "rope_type", "yarn")


def test_partial_rotary_is_refused_where_the_architecture_ignores_it(tmp_path):
    refused(with_config(tmp_path, "qwen3_tied", partial_rotary_factor=0.5), "partial_rotary_factor")


def test_unknown_layer_type_is_refused(tmp_path):
    types = ["full_attention", "chunked_attention", "full_attention"]
    refused(with_config(tmp_path, "qwen3_window", layer_types=types), "layer_types", "chunked_attention")


def test_sliding_layers_without_a_window_are_refused(tmp_path):
    types = ["full_attention", "sliding_attention"]
    refused(with_config(tmp_path, "qwen3_tied", layer_types=types), "sliding_window")


def test_longrope_factors_of_the_wrong_length_are_refused(tmp_path):
    config = json.loads((FIXTURES / "phi3_longrope" / "config.json").read_text())
    key = "rope_parameters" if "rope_parameters" in config else "rope_scaling"
    rope = dict(config[key], short_factor=[1.0, 2.0])
    refused(with_config(tmp_path, "phi3_longrope", **{key: rope}), "short_factor")


def test_no_rope_layers_of_the_wrong_length_are_refused(tmp_path):
    refused(with_config(tmp_path, "smollm3", no_rope_layers=[1, 0]), "no_rope_layers")
