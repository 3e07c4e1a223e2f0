"""The architecture registry as Python sees it (fasttx._native.architectures, gguf_config and the
models' max_positions): the names, GGUF mapping and position limits come from the native module,
and they are transformers' (config classes' defaults, GGUF_CONFIG_MAPPING)."""

from __future__ import annotations

import json
import shutil

import pytest

import fasttx
from fasttx import _native
from conftest import FIXTURES

# What transformers supports under these names, and which GGUF architectures it maps to them.
EXPECTED = {
    "t5": (True, None),
    "llama": (False, "llama"),
    "mistral": (False, None),
    "qwen2": (False, "qwen2"),
    "gpt2": (False, None),
    "qwen3": (False, "qwen3"),
    "smollm3": (False, None),
    "phi3": (False, "phi3"),
    "gemma2": (False, "gemma2"),
    "gemma3_text": (False, "gemma3"),
    "bart": (True, None),
    "mbart": (True, None),
    "marian": (True, None),
    "m2m_100": (True, None),
}


def test_architectures_lists_each_model_type_once():
    listed = _native.architectures()
    assert {a["model_type"]: (a["encoder_decoder"], a["gguf"]) for a in listed} == EXPECTED
    assert len(listed) == len(EXPECTED)


@pytest.mark.parametrize(
    "name, key",
    [
        ("llama_gqa", "max_position_embeddings"),
        ("llama_untied", "max_position_embeddings"),
        ("qwen2", "max_position_embeddings"),
        ("gpt2", "n_positions"),
        ("gpt2_scaled", "n_positions"),
        ("bart", "max_position_embeddings"),
        ("marian", "max_position_embeddings"),
        ("m2m100", "max_position_embeddings"),
    ],
)
def test_max_positions_is_the_configs(load_fixture_model, name, key):
    config = json.loads((FIXTURES / name / "config.json").read_text())
    assert load_fixture_model(name).max_positions == config[key]


def test_t5_has_no_position_limit(load_fixture_model):
    assert load_fixture_model("t5_v1_0").max_positions is None


@pytest.mark.parametrize("model_type, default", [("llama", 2048), ("mistral", 4096 * 32)])
def test_max_positions_defaults_like_transformers_config_class(tmp_path, model_type, default):
    """A config.json without max_position_embeddings gets the config class's default
    (LlamaConfig: 2048, MistralConfig: 131072), as transformers' generate sees it."""
    model = tmp_path / "model"
    shutil.copytree(FIXTURES / "llama_untied", model)
    config = json.loads((model / "config.json").read_text())
    del config["max_position_embeddings"]
    config["model_type"] = model_type
    (model / "config.json").write_text(json.dumps(config))
    assert fasttx.load(model, threads=1).max_positions == default


@pytest.mark.parametrize("name", ["llama_gguf_q4_0", "llama_gguf_f16"])
def test_gguf_config_follows_transformers_mapping(name):
    path = FIXTURES / name / "model.gguf"
    meta = _native.gguf_metadata(path)
    model_type, config = _native.gguf_config(path)
    assert model_type == config["model_type"] == "llama"
    # transformers' GGUF_CONFIG_MAPPING for llama.
    mapping = {
        "hidden_size": "llama.embedding_length",
        "intermediate_size": "llama.feed_forward_length",
        "num_hidden_layers": "llama.block_count",
        "num_attention_heads": "llama.attention.head_count",
        "num_key_value_heads": "llama.attention.head_count_kv",
        "max_position_embeddings": "llama.context_length",
        "rms_norm_eps": "llama.attention.layer_norm_rms_epsilon",
        "rope_theta": "llama.rope.freq_base",
    }
    for hf, key in mapping.items():
        if key in meta:
            assert config[hf] == meta[key], hf
    assert config["tie_word_embeddings"] is False
    assert config["eos_token_id"] == meta["tokenizer.ggml.eos_token_id"]
    assert fasttx.load(path, threads=1).max_positions == config["max_position_embeddings"]


def test_gguf_of_an_unsupported_architecture_is_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "gemma.gguf"
    writer = gguf.GGUFWriter(str(path), "gemma")
    writer.add_block_count(1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(fasttx.ModelFormatError, match="unsupported GGUF architecture 'gemma'; fasttx runs llama, qwen2"):
        _native.gguf_config(path)
    with pytest.raises(fasttx.ModelFormatError, match="gemma"):
        fasttx.load(path)


def test_safetensors_only_architectures_refuse_gguf():
    path = FIXTURES / "llama_gguf_q4_0" / "model.gguf"
    with pytest.raises(fasttx.ModelFormatError, match="gpt2 models are read from safetensors, not GGUF"):
        _native.NativeModel("gpt2", "{}", [str(path)], "auto", 1)
    with pytest.raises(fasttx.ModelFormatError, match="does not load as qwen2"):
        _native.NativeModel("qwen2", "{}", [str(path)], "auto", 1)
