"""A corrupt tokenizer (in GGUF metadata, or a tokenizer.json beside a model) is a
``fasttx.ModelFormatError`` naming the file and the problem, never tokenizers' bare ``Exception``,
a ``TypeError`` or a ``ValueError`` from deep inside (issue 11, Found 7). Hostile GGUF files are the
committed fixture with some metadata values re-encoded."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import fasttx
from fasttx import ModelFormatError
from fasttx.gguf_tokenizer import tokenizer_from_gguf

FIXTURES = Path(__file__).parent / "fixtures"
GGUF = FIXTURES / "llama_gguf_q8_0" / "model.gguf"

# GGUF metadata value types.
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
_SCALAR = {_U8: "B", _I8: "b", _U16: "H", _I16: "h", _U32: "I", _I32: "i", _F32: "f", _BOOL: "?", _U64: "Q", _I64: "q", _F64: "d"}


def _string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _value_end(data: bytes, pos: int, kind: int) -> int:
    if kind == _STR:
        return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
    if kind == _ARR:
        inner, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if inner == _STR:
            for _ in range(count):
                pos = _value_end(data, pos, _STR)
            return pos
        return pos + count * struct.calcsize("<" + _SCALAR[inner])
    return pos + struct.calcsize("<" + _SCALAR[kind])


def encode(kind: int, value) -> bytes:
    """A metadata value as GGUF stores it (type tag included)."""
    if kind == _STR:
        return struct.pack("<I", _STR) + _string(value)
    if kind == _ARR:
        inner, items = value
        body = b"".join(_string(v) if inner == _STR else struct.pack("<" + _SCALAR[inner], v) for v in items)
        return struct.pack("<IIQ", _ARR, inner, len(items)) + body
    return struct.pack("<I" + _SCALAR[kind], kind, value)


def rewrite_gguf(src: Path, dst: Path, changes: dict[str, bytes]) -> Path:
    """``src`` with the metadata values of ``changes`` (key -> ``encode(...)``) replaced or added;
    tensor infos and data are copied, re-aligned."""
    data = src.read_bytes()
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data, 0)
    pos = 24
    kvs = []
    for _ in range(n_kv):
        key_len = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8 : pos + 8 + key_len].decode()
        pos += 8 + key_len
        kind = struct.unpack_from("<I", data, pos)[0]
        end = _value_end(data, pos + 4, kind)
        kvs.append((key, data[pos:end]))
        pos = end
    infos_start = pos
    for _ in range(n_tensors):
        pos = _value_end(data, pos, _STR)
        n_dims = struct.unpack_from("<I", data, pos)[0]
        pos += 4 + 8 * n_dims + 4 + 8
    alignment = 32
    data_start = (pos + alignment - 1) // alignment * alignment
    merged = dict(kvs)
    merged.update(changes)
    head = struct.pack("<4sIQQ", magic, version, n_tensors, len(merged))
    head += b"".join(_string(k) + v for k, v in merged.items()) + data[infos_start:pos]
    head += b"\0" * (-len(head) % alignment)
    dst.write_bytes(head + data[data_start:])
    return dst


def _meta():
    return fasttx._native.gguf_metadata(GGUF)


# ------------------------------------------------------------------------------ whole files


def test_gguf_tokens_stored_as_a_number_is_a_format_error(tmp_path):
    path = rewrite_gguf(GGUF, tmp_path / "model.gguf", {"tokenizer.ggml.tokens": encode(_U32, 5)})
    with pytest.raises(ModelFormatError, match=r"model\.gguf.*tokenizer\.ggml\.tokens"):
        fasttx.load(path, threads=1)


def test_gguf_merges_of_unknown_tokens_are_a_format_error(tmp_path):
    # tokenizers refuses these with its bare Exception ("Token `...` out of vocabulary").
    merges = encode(_ARR, (_STR, ["zzzq qqqz"]))
    path = rewrite_gguf(GGUF, tmp_path / "model.gguf", {"tokenizer.ggml.merges": merges})
    with pytest.raises(ModelFormatError, match=r"model\.gguf.*tokenizer"):
        fasttx.load(path, threads=1)


def test_corrupt_tokenizer_json_beside_gguf_is_a_format_error(tmp_path):
    shutil.copy(GGUF, tmp_path / "model.gguf")
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 5}}')
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json"):
        fasttx.load(tmp_path / "model.gguf", threads=1)


def test_tokenizer_json_that_is_not_json_beside_gguf_is_a_format_error(tmp_path):
    shutil.copy(GGUF, tmp_path / "model.gguf")
    (tmp_path / "tokenizer.json").write_bytes(b"\xff\xfe{oops")
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json"):
        fasttx.load(tmp_path / "model.gguf", threads=1)


def test_corrupt_tokenizer_json_beside_safetensors_is_a_format_error(tmp_path):
    target = tmp_path / "gpt2"
    shutil.copytree(FIXTURES / "gpt2", target)
    (target / "tokenizer.json").write_text("[1, 2, 3]")
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json"):
        fasttx.load(target, threads=1)


# ------------------------------------------------------------------------------ metadata values


@pytest.mark.parametrize(
    "key,value",
    [
        ("tokenizer.ggml.tokens", 5),
        ("tokenizer.ggml.tokens", "abc"),
        ("tokenizer.ggml.tokens", [1, 2, 3]),
        ("tokenizer.ggml.token_type", 3),
        ("tokenizer.ggml.token_type", ["x"] * 10),
        ("tokenizer.ggml.merges", 7),
        ("tokenizer.ggml.merges", ["zzzq qqqz"]),
        ("tokenizer.ggml.pre", ["llama3"]),
        ("tokenizer.ggml.model", ["gpt2"]),
        ("tokenizer.ggml.bos_token_id", "1"),
        ("tokenizer.ggml.add_bos_token", "yes"),
    ],
)
def test_gguf_tokenizer_metadata_of_the_wrong_kind_is_a_format_error(key, value):
    meta = dict(_meta())
    if key == "tokenizer.ggml.token_type" and isinstance(value, list):
        value = value[:1] * len(meta["tokenizer.ggml.tokens"])
    meta[key] = value
    with pytest.raises(ModelFormatError, match=key.replace(".", r"\.") + "|tokenizer"):
        tokenizer_from_gguf(meta)


def test_gguf_scores_that_are_not_numbers_are_a_format_error():
    spm = fasttx._native.gguf_metadata(FIXTURES / "smollm2" / "tiny_spm.gguf")
    meta = dict(spm, **{"tokenizer.ggml.scores": ["x"] * len(spm["tokenizer.ggml.tokens"])})
    with pytest.raises(ModelFormatError, match="tokenizer.ggml.scores"):
        tokenizer_from_gguf(meta)


def test_gguf_tokenizer_accepts_any_sequence_of_strings():
    # Metadata arrays may come as numpy arrays or lazy sequences instead of lists.
    meta = dict(_meta())
    expected = tokenizer_from_gguf(meta).encode("hello world").ids
    meta["tokenizer.ggml.tokens"] = np.array(meta["tokenizer.ggml.tokens"], dtype=object)
    meta["tokenizer.ggml.token_type"] = np.array(meta["tokenizer.ggml.token_type"], dtype=np.int32)
    meta["tokenizer.ggml.merges"] = tuple(meta["tokenizer.ggml.merges"])
    assert tokenizer_from_gguf(meta).encode("hello world").ids == expected
