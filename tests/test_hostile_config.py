"""Hostile config.json values: sizes whose products wrap, and meaningless values, are refused at
load with a ModelFormatError naming config.json and the key (issue 11, Found 1 and 5)."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

import fasttx
from conftest import FIXTURES


def model_with_config(tmp_path, fixture: str, **changes):
    """A copy of ``fixture`` whose config.json has ``changes`` applied (``None`` deletes a key)."""
    dst = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, dst)
    path = dst / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return dst


def refused(directory, *words: str) -> str:
    with pytest.raises(fasttx.ModelFormatError) as e:
        fasttx.load(directory, threads=1)
    msg = str(e.value)
    assert "config.json" in msg and all(w in msg for w in words), msg
    return msg


# ------------------------------------------------------------------ Found 1: products that wrap
# Each value makes a product wrap to exactly the fixture's real projection size (llama_gqa: 6 heads
# x head_dim 12 = 72; t5_v1_0: 4 heads x d_kv 12 = 48): unchecked, the shape checks pass, and the
# first forward step indexes out of bounds.


def test_llama_head_count_whose_product_wraps_is_refused(tmp_path):
    model = model_with_config(tmp_path, "llama_gqa", num_attention_heads=2**62 + 6)
    refused(model, "num_attention_heads", "head_dim", "overflows")


def test_llama_head_and_kv_head_counts_whose_products_wrap_are_refused(tmp_path):
    model = model_with_config(tmp_path, "llama_gqa", num_attention_heads=3 * 2**62 + 6, num_key_value_heads=2**62 + 2)
    refused(model, "num_attention_heads", "overflows")


def test_llama_head_dim_whose_product_wraps_is_refused(tmp_path):
    model = model_with_config(tmp_path, "llama_gqa", head_dim=2**63 + 12)
    refused(model, "head_dim", "overflows")


def test_t5_d_kv_whose_product_wraps_is_refused(tmp_path):
    model = model_with_config(tmp_path, "t5_v1_0", d_kv=2**62 + 12)
    refused(model, "num_heads", "d_kv", "overflows")


def test_gpt2_width_whose_products_overflow_is_refused(tmp_path):
    model = model_with_config(tmp_path, "gpt2", n_embd=2**62, n_head=1)
    refused(model, "n_embd", "overflows")


def test_sizes_beyond_64_bits_are_refused(tmp_path):
    model = model_with_config(tmp_path, "llama_gqa", hidden_size=2**64 + 48)
    refused(model, "hidden_size", "non-negative integer")


# ------------------------------------------------------------------ Found 5: meaningless values

LLAMA_MEANINGLESS = [
    ({"rope_theta": 0}, "rope_theta"),
    ({"rope_theta": -10000.0}, "rope_theta"),
    ({"rms_norm_eps": -1}, "rms_norm_eps"),
    ({"rms_norm_eps": -1e-5}, "rms_norm_eps"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 0}}, "rope_scaling.factor"),
    ({"rope_scaling": {"rope_type": "linear", "factor": -2.0}}, "rope_scaling.factor"),
    (
        {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0}},
        "high_freq_factor",
    ),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": -1.0}}, "rope_theta"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
    ({"num_hidden_layers": -2}, "num_hidden_layers"),
    ({"num_attention_heads": 0}, "num_attention_heads"),
    ({"num_key_value_heads": 0}, "num_key_value_heads"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"intermediate_size": 0}, "intermediate_size"),
    ({"max_position_embeddings": 0}, "max_position_embeddings"),
    ({"head_dim": 13}, "head_dim"),
    ({"hidden_act": 7}, "hidden_act"),
]


@pytest.mark.parametrize("changes, key", LLAMA_MEANINGLESS, ids=[json.dumps(c) for c, _ in LLAMA_MEANINGLESS])
def test_llama_meaningless_config_values_are_refused(tmp_path, changes, key):
    refused(model_with_config(tmp_path, "llama_gqa", **changes), key)


T5_MEANINGLESS = [
    ({"layer_norm_epsilon": -1}, "layer_norm_epsilon"),
    ({"num_layers": 0}, "num_layers"),
    ({"num_decoder_layers": 0}, "num_decoder_layers"),
    ({"num_heads": -1}, "num_heads"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"d_model": 0}, "d_model"),
    ({"relative_attention_num_buckets": 2**64 - 1}, "relative_attention_num_buckets"),
    ({"feed_forward_proj": ["relu"]}, "feed_forward_proj"),
]


@pytest.mark.parametrize("changes, key", T5_MEANINGLESS, ids=[json.dumps(c) for c, _ in T5_MEANINGLESS])
def test_t5_meaningless_config_values_are_refused(tmp_path, changes, key):
    refused(model_with_config(tmp_path, "t5_v1_0", **changes), key)


GPT2_MEANINGLESS = [
    ({"layer_norm_epsilon": -1e-5}, "layer_norm_epsilon"),
    ({"n_layer": 0}, "n_layer"),
    ({"n_head": 0}, "n_head"),
    ({"vocab_size": 0}, "vocab_size"),
    ({"n_positions": 0}, "n_positions"),
    ({"n_inner": 0}, "n_inner"),
    ({"scale_attn_weights": "yes"}, "scale_attn_weights"),
]


@pytest.mark.parametrize("changes, key", GPT2_MEANINGLESS, ids=[json.dumps(c) for c, _ in GPT2_MEANINGLESS])
def test_gpt2_meaningless_config_values_are_refused(tmp_path, changes, key):
    refused(model_with_config(tmp_path, "gpt2", **changes), key)


def test_refusals_quote_the_value(tmp_path):
    msg = refused(model_with_config(tmp_path, "llama_gqa", rms_norm_eps=-1), "rms_norm_eps")
    assert "-1" in msg, msg


def test_absent_keys_still_take_the_class_defaults(tmp_path):
    """Checks apply to the value in use, so a config that leaves keys out still loads."""
    model = model_with_config(tmp_path, "llama_gqa", rope_theta=None, rms_norm_eps=None, rope_scaling=None)
    fasttx.load(model, threads=1)


def test_gguf_metadata_values_are_checked_like_config_json(tmp_path):
    """A GGUF file's config is built from its metadata and checked the same way; the refusal
    names the file."""
    data = bytearray((FIXTURES / "llama_gguf_f16" / "model.gguf").read_bytes())
    key = b"llama.attention.layer_norm_rms_epsilon"
    at = data.find(key) + len(key)
    assert struct.unpack("<I", data[at : at + 4]) == (6,)  # GGUF f32
    data[at + 4 : at + 8] = struct.pack("<f", -1.0)
    path = tmp_path / "model.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(fasttx.ModelFormatError) as e:
        fasttx.load(path, threads=1)
    msg = str(e.value)
    assert str(path) in msg and "rms_norm_eps" in msg and "config.json" not in msg, msg
