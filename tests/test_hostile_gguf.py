"""Crafted GGUF files (issue 11): every one gives fasttx.ModelFormatError naming the file and the
problem, never a panic, and metadata costs memory in proportion to its keys, not its values.

The files are built here from the committed fixtures with a small GGUF reader/writer (the header
is re-encoded, the tensor data copied unchanged), so each test states the one thing it breaks.
Memory is measured in subprocesses (VmHWM), so that the rest of the test run does not count.
"""

from __future__ import annotations

import copy
import json
import struct
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

import fasttx
from fasttx import _native

FIXTURES = Path(__file__).parent / "fixtures"
F16 = FIXTURES / "llama_gguf_f16" / "model.gguf"

# GGUF value type ids.
U8, U32, F32, STRING, ARRAY, U64 = 0, 4, 6, 8, 9, 10
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


# ------------------------------------------------------------------------------ a tiny GGUF codec


def _skip(buf: bytes, pos: int, ty: int) -> int:
    """The offset just past one value of type `ty` at `pos`."""
    if ty in _FIXED:
        return pos + _FIXED[ty]
    if ty == STRING:
        return pos + 8 + struct.unpack_from("<Q", buf, pos)[0]
    elem, count = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if elem in _FIXED:
        return pos + count * _FIXED[elem]
    for _ in range(count):
        pos = _skip(buf, pos, elem)
    return pos


def _string(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


class Gguf:
    """A GGUF file as editable parts: metadata (key -> type id + encoded value) and tensor infos
    (name, ggml dims, type, offset), plus the data section as it was."""

    def __init__(self, path: Path):
        buf = path.read_bytes()
        _, _, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
        pos = 24
        self.kvs: dict[bytes, bytes] = {}
        for _ in range(n_kv):
            n = struct.unpack_from("<Q", buf, pos)[0]
            key = buf[pos + 8 : pos + 8 + n]
            pos += 8 + n
            (ty,) = struct.unpack_from("<I", buf, pos)
            end = _skip(buf, pos + 4, ty)
            self.kvs[key] = buf[pos:end]
            pos = end
        self.tensors = []
        for _ in range(n_tensors):
            n = struct.unpack_from("<Q", buf, pos)[0]
            name = buf[pos + 8 : pos + 8 + n].decode()
            pos += 8 + n
            (n_dims,) = struct.unpack_from("<I", buf, pos)
            dims = list(struct.unpack_from(f"<{n_dims}Q", buf, pos + 4))
            pos += 4 + 8 * n_dims
            ty, offset = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            self.tensors.append({"name": name, "dims": dims, "type": ty, "offset": offset})
        self.data = buf[(pos + 31) // 32 * 32 :]  # the fixtures use the default alignment, 32

    def set(self, key: str, ty: int, payload: bytes) -> "Gguf":
        self.kvs[key.encode()] = struct.pack("<I", ty) + payload
        return self

    def tensor(self, name: str) -> dict:
        return next(t for t in self.tensors if t["name"] == name)

    def write(self, path: Path, more_kvs: tuple[int, bytes] = (0, b"")) -> Path:
        """`more_kvs`: that many metadata pairs, already encoded, appended to the others."""
        n_more, encoded = more_kvs
        out = bytearray(struct.pack("<4sIQQ", b"GGUF", 3, len(self.tensors), len(self.kvs) + n_more))
        for key, value in self.kvs.items():
            out += _string(key) + value
        out += encoded
        for t in self.tensors:
            out += _string(t["name"].encode()) + struct.pack(f"<I{len(t['dims'])}Q", len(t["dims"]), *t["dims"])
            out += struct.pack("<IQ", t["type"], t["offset"])
        out += bytes(-len(out) % 32)
        path.write_bytes(bytes(out) + self.data)
        return path


def _format_error(path: Path, match: str) -> str:
    with pytest.raises(fasttx.ModelFormatError, match=match) as info:
        fasttx.load(path, dtype="f32", threads=1)
    message = str(info.value)
    assert str(path) in message, message
    return message


def test_codec_round_trips_the_fixture(tmp_path):
    path = Gguf(F16).write(tmp_path / "model.gguf")
    assert path.read_bytes() == F16.read_bytes()


# ------------------------------------------------------------------------------ tensor sizes


@pytest.mark.parametrize("tensor", ["blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight"])
def test_gguf_zero_dimension_is_a_format_error(tmp_path, tensor):
    """A zero row count used to divide by zero while undoing llama.cpp's q/k permutation."""
    g = Gguf(F16)
    g.tensor(tensor)["dims"][1] = 0  # ggml order: [cols, rows]
    path = g.write(tmp_path / "model.gguf")
    message = _format_error(path, "blk.0.attn_|self_attn")
    assert "internal error" not in message


def test_gguf_scalar_projection_is_a_format_error(tmp_path):
    g = Gguf(F16)
    t = g.tensor("blk.0.attn_q.weight")
    t["dims"] = []
    _format_error(g.write(tmp_path / "model.gguf"), "attn_q|q_proj")


def test_gguf_tensor_shape_must_match_the_config(tmp_path):
    g = Gguf(F16)
    dims = g.tensor("blk.0.ffn_up.weight")["dims"]
    dims[1] //= 2
    _format_error(g.write(tmp_path / "model.gguf"), "shape")


# ------------------------------------------------------------------------------ hyper-parameters


@pytest.mark.parametrize(
    "ty,payload,shown",
    [
        (STRING, _string(b"2"), "string"),
        (F32, struct.pack("<f", 2.0), "f32"),
        (ARRAY, struct.pack("<IQ", U32, 2) + struct.pack("<II", 2, 2), "array of 2 u32"),
    ],
)
def test_gguf_non_integer_hyperparameter_is_a_format_error(tmp_path, ty, payload, shown):
    path = Gguf(F16).set("llama.block_count", ty, payload).write(tmp_path / "model.gguf")
    message = _format_error(path, r"llama\.block_count must be a non-negative integer")
    assert shown in message, message
    with pytest.raises(fasttx.ModelFormatError, match="llama.block_count"):
        _native.gguf_config(path)


def test_gguf_string_epsilon_is_a_format_error(tmp_path):
    path = Gguf(F16).set("llama.attention.layer_norm_rms_epsilon", STRING, _string(b"1e-5")).write(tmp_path / "m.gguf")
    _format_error(path, r"layer_norm_rms_epsilon must be a number")


# ------------------------------------------------------------------------------ lazy metadata


def test_gguf_metadata_arrays_are_lazy_read_only_sequences():
    meta = _native.gguf_metadata(F16)
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert isinstance(tokens, _native.GgufArray) and isinstance(tokens, Sequence)
    assert tokens.type == "string" and types.type in ("i32", "u32")
    listed = tokens.tolist()
    assert len(tokens) == len(listed) > 0
    assert tokens[0] == listed[0] and tokens[-1] == listed[-1]
    assert tokens[1:4] == listed[1:4] and tokens[::-7] == listed[::-7]
    assert list(tokens) == listed and tokens == listed and tokens == tuple(listed)
    with pytest.raises(IndexError):
        tokens[len(listed)]
    numbers = np.asarray(types)
    assert numbers.shape == (len(listed),) and numbers.tolist() == types.tolist()
    assert np.asarray(types, dtype=np.int64).dtype == np.int64
    strings = np.asarray(tokens)  # strings: one object per element, as np.array(list, dtype=object)
    assert strings.dtype == object and strings.shape == (len(listed),) and strings.tolist() == listed
    # Immutable: copies are the array itself, so model.config can still be deep-copied.
    assert copy.deepcopy(meta)["tokenizer.ggml.tokens"] is tokens
    with pytest.raises(TypeError):
        tokens[0] = "x"  # type: ignore[index]


def test_gguf_model_config_keeps_the_metadata():
    model = fasttx.load(F16, threads=1)
    assert model.config["general.architecture"] == "llama"
    assert len(model.config["tokenizer.ggml.tokens"]) == model.tokenizer.get_vocab_size(with_added_tokens=False)


_MEASURE = textwrap.dedent(
    """
    import json, sys, time
    import fasttx
    from fasttx import _native

    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    before, start = hwm(), time.perf_counter()
    outcome = "loaded"
    try:
        meta = _native.gguf_metadata(sys.argv[1])
        sizes = {k: len(v) for k, v in meta.items() if hasattr(v, "__len__")}
        fasttx.load(sys.argv[1], threads=1)
    except fasttx.ModelFormatError as e:
        outcome = str(e)
    print(json.dumps({"growth": hwm() - before, "seconds": time.perf_counter() - start, "outcome": outcome}))
    """
)


def _measure(path: Path) -> dict:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc/self/status (Linux) to read peak memory")
    run = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_gguf_huge_u8_array_costs_no_memory_until_read(tmp_path):
    """A 50 MB u8 array used to become 32 bytes per element in Rust and a list in Python."""
    n = 50 << 20
    g = Gguf(F16).set("junk.bytes", ARRAY, struct.pack("<IQ", U8, n) + bytes(n))
    path = g.write(tmp_path / "model.gguf")
    result = _measure(path)
    assert result["growth"] < path.stat().st_size // 2, result
    assert result["seconds"] < 5, result


def test_gguf_million_tiny_keys_are_refused_without_memory(tmp_path):
    """1M keys (16 MB) used to take ~200 bytes each in Rust and again in Python."""
    n = 1_000_000
    # Each pair: key length 7, key "k" + 6 hex digits of i, type u8, value 1 (20 bytes), built
    # with numpy because a Python loop over a million keys takes seconds on CI.
    pairs = np.zeros((n, 20), dtype=np.uint8)
    pairs[:, 0] = 7
    pairs[:, 8] = ord("k")
    digits = (np.arange(n)[:, None] >> (4 * np.arange(5, -1, -1))) & 0xF
    pairs[:, 9:15] = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits]
    pairs[:, 15] = U8
    pairs[:, 19] = 1
    path = Gguf(F16).write(tmp_path / "model.gguf", (n, pairs.tobytes()))
    result = _measure(path)
    assert "limit of 65536 keys" in result["outcome"] and str(path) in result["outcome"], result
    assert result["growth"] < path.stat().st_size // 2, result
    assert result["seconds"] < 2, result
