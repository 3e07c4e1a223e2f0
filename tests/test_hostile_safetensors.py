"""Hostile safetensors files and shard indexes: refused with a ModelFormatError naming the file and
the problem; nothing outside the model directory is opened (issue 11, Found 5, 6 and 7)."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

import fasttx
from conftest import FIXTURES

PASSWD = b"root:x:0:0:root:/root:/bin/bash\n"


def copy(tmp_path, fixture: str, name: str = "model"):
    dst = tmp_path / name
    shutil.copytree(FIXTURES / fixture, dst)
    return dst


def read_header(path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_file(path, header_text: str, data: bytes) -> None:
    raw = header_text.encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def refused(directory, *words: str) -> str:
    with pytest.raises(fasttx.ModelFormatError) as e:
        fasttx.load(directory, threads=1)
    msg = str(e.value)
    assert all(w in msg for w in words), msg
    return msg


# ------------------------------------------------------------------ Found 6: outside the directory


def test_shard_index_entry_outside_the_model_directory_is_refused(tmp_path):
    model = copy(tmp_path, "t5_sharded")
    other = copy(tmp_path, "t5_sharded", "other")  # a real model it could otherwise read
    index = model / "model.safetensors.index.json"
    cfg = json.loads(index.read_text())
    first = next(iter(cfg["weight_map"]))
    cfg["weight_map"][first] = "../other/" + cfg["weight_map"][first]
    index.write_text(json.dumps(cfg))
    assert (other / "model-00001-of-00002.safetensors").is_file()
    refused(model, "model.safetensors.index.json", "'../other/", "outside the model directory")


def test_shard_index_entry_with_an_absolute_path_is_refused(tmp_path):
    model = copy(tmp_path, "t5_sharded")
    secret = tmp_path / "passwd"
    secret.write_bytes(PASSWD)
    index = model / "model.safetensors.index.json"
    cfg = json.loads(index.read_text())
    for key in cfg["weight_map"]:
        cfg["weight_map"][key] = str(secret)
    index.write_text(json.dumps(cfg))
    msg = refused(model, "outside the model directory")
    assert str(struct.unpack("<Q", PASSWD[:8])[0]) not in msg


def test_shard_index_entry_that_is_not_a_name_is_refused(tmp_path):
    model = copy(tmp_path, "t5_sharded")
    index = model / "model.safetensors.index.json"
    cfg = json.loads(index.read_text())
    cfg["weight_map"][next(iter(cfg["weight_map"]))] = 7
    index.write_text(json.dumps(cfg))
    refused(model, "weight_map values must be shard file names")


def test_weights_linked_to_outside_the_model_directory_are_refused(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    other = copy(tmp_path, "llama_gqa", "other")
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").symlink_to(other / "model.safetensors")
    refused(model, "model.safetensors", "outside the model directory")


def test_config_linked_to_outside_the_model_directory_is_refused(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    secret = tmp_path / "secret.json"
    secret.write_text('{"model_type": "llama"}')
    (model / "config.json").unlink()
    (model / "config.json").symlink_to(secret)
    refused(model, "config.json", "outside the model directory")


def test_links_inside_the_model_directory_still_load(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    (model / "model.safetensors").rename(model / "weights.bin.real")
    (model / "model.safetensors").symlink_to("weights.bin.real")
    fasttx.load(model, threads=1)


def test_hub_cache_snapshot_links_into_its_blobs_still_load(tmp_path):
    """The Hugging Face cache keeps files in ``blobs/`` and links them from ``snapshots/<rev>/``."""
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for f in (FIXTURES / "llama_gqa").iterdir():
        blob = repo / "blobs" / f"blob-{f.name}"
        shutil.copyfile(f, blob)
        (snapshot / f.name).symlink_to(f"../../blobs/{blob.name}")
    fasttx.load(snapshot, threads=1)


def test_a_non_safetensors_file_is_refused_without_echoing_its_bytes(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    (model / "model.safetensors").write_bytes(PASSWD)
    msg = refused(model, "model.safetensors", "header length exceeds")
    assert str(struct.unpack("<Q", PASSWD[:8])[0]) not in msg


# ------------------------------------------------------------------ the format's own rules


def test_overlapping_data_offsets_are_refused(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    path = model / "model.safetensors"
    header, data = read_header(path)
    a, b = "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"
    header[b]["data_offsets"] = header[a]["data_offsets"]  # the same size: only the tiling tells
    write_file(path, json.dumps(header), data)
    refused(model, "model.safetensors", "overlap")


def test_duplicate_tensor_names_are_refused(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    path = model / "model.safetensors"
    header, data = read_header(path)
    name = "model.norm.weight"
    text = json.dumps(header)
    # A second entry for the name, first in the object: a parser keeping the last one would use
    # the real entry; another reader keeping the first would see different weights.
    fake = dict(header[name], data_offsets=header["model.embed_tokens.weight"]["data_offsets"])
    text = "{" + json.dumps(name) + ": " + json.dumps(fake) + ", " + text[1:]
    write_file(path, text, data)
    refused(model, "model.safetensors", f"'{name}' is listed twice")


def test_header_length_shortened_into_its_padding_is_refused(tmp_path):
    """The JSON still parses, but every tensor would be read a few bytes early (NaN logits)."""
    model = copy(tmp_path, "llama_gqa")
    path = model / "model.safetensors"
    data = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    assert data[8 + n - 1 : 8 + n] == b" "
    data[:8] = struct.pack("<Q", n - 1)
    path.write_bytes(bytes(data))
    refused(model, "model.safetensors", "corrupt header length")


def test_norm_retyped_as_bf16_is_refused(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    path = model / "model.safetensors"
    header, data = read_header(path)
    header["model.norm.weight"]["dtype"] = "BF16"
    write_file(path, json.dumps(header), data)
    refused(model, "model.safetensors", "model.norm.weight", "needs")


def test_bytes_beyond_the_last_tensor_are_refused(tmp_path):
    model = copy(tmp_path, "gpt2")
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    refused(model, "model.safetensors", "data bytes")


# ------------------------------------------------------------------ Found 7 (safetensors side)


def test_corrupt_tokenizer_json_beside_safetensors_is_a_format_error(tmp_path):
    model = copy(tmp_path, "llama_gqa")
    (model / "tokenizer.json").write_text('{"model": {"type": "nonsense"}}')
    refused(model, "tokenizer.json")
