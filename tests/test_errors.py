"""Bad input fails with a clear Python exception naming the cause, never a crash."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

import fasttx
from conftest import FIXTURES

MODEL = "t5_v1_0"


@pytest.fixture
def model_copy(tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(FIXTURES / MODEL, dst)
    return dst


@pytest.fixture(scope="module")
def model():
    return fasttx.load(FIXTURES / MODEL, threads=1)


def test_missing_path():
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        fasttx.load("/nonexistent/no-such-dir")


def test_missing_config(model_copy):
    (model_copy / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        fasttx.load(model_copy)


def test_missing_weights(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        fasttx.load(model_copy)


def test_truncated_weights(model_copy):
    path = model_copy / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(fasttx.ModelFormatError, match="truncated|outside"):
        fasttx.load(model_copy)


def test_header_claims_more_than_file(model_copy):
    path = model_copy / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 1 << 40)
    path.write_bytes(bytes(data))
    with pytest.raises(fasttx.ModelFormatError, match="header"):
        fasttx.load(model_copy)


def test_garbage_header(model_copy):
    path = model_copy / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 5) + b"{oops" + b"\0" * 64)
    with pytest.raises(fasttx.ModelFormatError, match="JSON"):
        fasttx.load(model_copy)


def test_tiny_file(model_copy):
    (model_copy / "model.safetensors").write_bytes(b"abc")
    with pytest.raises(fasttx.ModelFormatError, match="not a safetensors"):
        fasttx.load(model_copy)


def test_unknown_model_type(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["model_type"] = "bert"
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(fasttx.ModelFormatError, match="bert"):
        fasttx.load(model_copy)


def test_config_shape_mismatch_names_tensor(model_copy):
    cfg = json.loads((model_copy / "config.json").read_text())
    cfg["d_ff"] += 1
    (model_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(fasttx.ModelFormatError, match="DenseReluDense"):
        fasttx.load(model_copy)


def test_invalid_json_config(model_copy):
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(fasttx.ModelFormatError, match="config.json"):
        fasttx.load(model_copy)


def test_model_format_error_is_value_error():
    assert issubclass(fasttx.ModelFormatError, ValueError)


def test_bad_load_arguments():
    with pytest.raises(ValueError, match="dtype"):
        fasttx.load(FIXTURES / MODEL, dtype="f64")
    with pytest.raises(ValueError, match="threads"):
        fasttx.load(FIXTURES / MODEL, threads=0)


def test_token_out_of_vocabulary(model):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.generate_ids([[5, model.vocab_size + 3]], max_new_tokens=2)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        model.logits([[5, 6]], decoder_input_ids=[[0, model.vocab_size]])


def test_negative_token(model):
    with pytest.raises(ValueError, match="negative"):
        model.generate_ids([[5, -1]], max_new_tokens=2)


def test_empty_batch_and_empty_sequence(model):
    with pytest.raises(ValueError, match="empty batch"):
        model.generate_ids([], max_new_tokens=2)
    with pytest.raises(ValueError, match="empty"):
        model.generate_ids([[5, 6], []], max_new_tokens=2)
    with pytest.raises(ValueError, match="empty batch"):
        model.generate([], max_new_tokens=2)


def test_flat_list_is_rejected_with_a_hint(model):
    with pytest.raises(ValueError, match="flat list"):
        model.generate_ids([5, 6, 7], max_new_tokens=2)


def test_unknown_and_invalid_options(model):
    with pytest.raises(ValueError, match="num_beam"):
        model.generate_ids([[5, 6]], num_beam=3)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate_ids([[5, 6]], num_beams=0)
    with pytest.raises(ValueError, match="num_return_sequences"):
        model.generate_ids([[5, 6]], num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="early_stopping"):
        model.generate_ids([[5, 6]], num_beams=2, early_stopping="sometimes")
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate_ids([[5, 6]], max_new_tokens=-1)
    with pytest.raises(ValueError, match="eos_token_id"):
        model.generate_ids([[5, 6]], eos_token_id=10**9)


def test_mask_shape_mismatch(model):
    with pytest.raises(ValueError, match="attention_mask"):
        model.generate_ids(np.array([[5, 6, 7]]), attention_mask=np.array([[1, 1]]), max_new_tokens=2)


def test_logits_needs_decoder_ids(model):
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model.logits([[5, 6]])


def test_non_integer_ids(model):
    with pytest.raises(ValueError, match="integers|token id"):
        model.generate_ids(np.array([[0.5, 1.0]]), max_new_tokens=2)
    with pytest.raises(ValueError, match="token id"):
        model.generate_ids([["a", "b"]], max_new_tokens=2)


def test_sampling_refuses_rows_without_a_usable_score():
    """As transformers' multinomial does: NaN logits, or every token ruled out, is an error rather
    than a silent token."""
    model = fasttx.load(FIXTURES / "llama_gqa")
    for fill, cause in ((np.nan, "NaN"), (-np.inf, "ruled out")):
        scores = np.zeros((2, model.vocab_size), dtype=np.float32)
        scores[1] = fill  # row 0 is fine; row 1 is not
        with pytest.raises(ValueError, match=f"row 1 .*{cause}"):
            model._native.sample_rows(scores, [0.5, 0.5], 1.0, 0, 1.0, None, 1)
