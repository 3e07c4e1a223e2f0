"""GGUF files quantized by llama.cpp's own quantizer into the types people download (K-quant mixes,
IQ4_XS, IQ4_NL, Q5_0, Q5_1): fasttx against transformers (exact dequantization) and llama.cpp (its
quantized kernels) on the same files, and the errors for files fasttx cannot run.

Fixtures: ``tests/fixtures/kquant/`` (``scripts/make_kquant_fixtures.py``; the dtype="auto"
tolerance: ``scripts/derive_kquant_tolerance.py``). Each ``<name>.gguf`` is one tiny Llama; its
``<name>.json`` / ``<name>.npz`` hold the prompts and what transformers and llama.cpp computed.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import fasttx

KQUANT = Path(__file__).parent / "fixtures" / "kquant"
FILES = sorted(p.stem for p in KQUANT.glob("*.gguf"))
TOLERANCE = json.loads((KQUANT / "tolerance.json").read_text())
# f32 against transformers: the repo's f32 parity tolerance (test_decoder_parity.py).
F32_ATOL = 1e-4
# llama.cpp's greedy choice is a near-tie when its top-2 logits are closer than this: its own
# batched and single-token kernels may order such candidates either way (issue 12).
NEAR_TIE = 0.25


def expected(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(KQUANT / f"{name}.npz") as z:
        return json.loads((KQUANT / f"{name}.json").read_text()), {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def load():
    cache: dict = {}

    def get(name: str, dtype: str):
        if (name, dtype) not in cache:
            cache[name, dtype] = fasttx.load(KQUANT / f"{name}.gguf", dtype=dtype, threads=2)
        return cache[name, dtype]

    return get


def test_fixtures_cover_every_type():
    held = set()
    for name in FILES:
        held |= set(expected(name)[0]["tensor_types"].values())
    want = {"Q4_K", "Q5_K", "Q6_K", "Q3_K", "Q2_K", "IQ4_XS", "IQ4_NL", "Q5_0", "Q5_1"}
    assert want <= held, want - held
    assert set(TOLERANCE["files"]) == set(FILES)


@pytest.mark.parametrize("name", FILES)
def test_f32_matches_transformers(load, name):
    meta, arrays = expected(name)
    model = load(name, "f32")
    for i, prompt in enumerate(meta["prompts"]):
        got = model.logits([prompt])[0]
        np.testing.assert_allclose(got, arrays[f"hf_{i}"], rtol=0, atol=F32_ATOL, err_msg=f"{name} prompt {i}")
        tokens = model.generate_ids([prompt], max_new_tokens=16, do_sample=False)[0]
        assert tokens == meta["transformers"]["greedy"][i], f"{name} prompt {i}"


@pytest.mark.parametrize("name", FILES)
def test_auto_logits_match_llama_cpp(load, name):
    meta, arrays = expected(name)
    atol = TOLERANCE["files"][name]["atol"]
    model = load(name, "auto")
    for i, prompt in enumerate(meta["prompts"]):
        got = model.logits([prompt])[0]
        np.testing.assert_allclose(got, arrays[f"llama_{i}"], rtol=0, atol=atol, err_msg=f"{name} prompt {i}")


def first_divergence(got: list[int], want: list[int]) -> int | None:
    """The first step where the two greedy runs differ (in a token or in length), or None."""
    for step, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return step
    return None if len(got) == len(want) else min(len(got), len(want))


@pytest.mark.parametrize("name", FILES)
def test_auto_greedy_tokens_match_llama_cpp_except_at_near_ties(load, name):
    meta, _ = expected(name)
    model = load(name, "auto")
    ties = []
    for i, prompt in enumerate(meta["prompts"]):
        want, gaps = meta["llama_cpp"]["greedy"][i], meta["llama_cpp"]["gaps"][i]
        got = model.generate_ids([prompt], max_new_tokens=16, do_sample=False)[0]
        step = first_divergence(got, want)
        if step is None:
            continue
        # Past the divergence the two runs continue different texts: only the first one counts.
        assert step < len(gaps) and gaps[step] < NEAR_TIE, (
            f"{name} prompt {i}: fasttx {got} and llama.cpp {want} part at step {step}, where "
            f"llama.cpp's top-2 gap is {gaps[step] if step < len(gaps) else 'n/a'} (no near-tie)"
        )
        ties.append(f"prompt {i} step {step} (llama.cpp gap {gaps[step]:.3f})")
    if ties:
        print(f"{name}: greedy tokens part from llama.cpp's at near-ties only: {'; '.join(ties)}")


# ------------------------------------------------------------------------------ errors


def write_gguf(path: Path, name: str, data: np.ndarray, qtype) -> None:
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_k_quant_rows_that_are_not_whole_super_blocks_are_refused(tmp_path):
    gguf = pytest.importorskip("gguf")
    path, name = tmp_path / "rows.gguf", "blk.0.attn_q.weight"
    # gguf's writer only writes whole blocks: write [2, 256] of Q4_K, then make its rows 288 long
    # (a Q5_0-legal length, which llama.cpp would have stored as Q5_0).
    write_gguf(path, name, np.zeros((2, 144), np.uint8), gguf.GGMLQuantizationType.Q4_K)
    buf = bytearray(path.read_bytes())
    at = buf.index(name.encode()) + len(name)
    assert struct.unpack_from("<IQ", buf, at) == (2, 256)
    struct.pack_into("<Q", buf, at + 4, 288)
    path.write_bytes(bytes(buf))
    with pytest.raises(fasttx.ModelFormatError) as e:
        fasttx.load(path)
    msg = str(e.value)
    assert f"tensor '{name}'" in msg and "row length 288" in msg and "Q4_K block size 256" in msg, msg


@pytest.mark.parametrize("qtype, row_bytes", [("IQ2_XXS", 66), ("TQ1_0", 54)])
def test_types_fasttx_lacks_are_named(tmp_path, qtype, row_bytes):
    gguf = pytest.importorskip("gguf")
    path, name = tmp_path / f"{qtype}.gguf", "blk.0.ffn_up.weight"
    write_gguf(path, name, np.zeros((2, row_bytes), np.uint8), gguf.GGMLQuantizationType[qtype])
    with pytest.raises(fasttx.ModelFormatError) as e:
        fasttx.load(path)
    msg = str(e.value)
    assert f"tensor '{name}'" in msg and f"({qtype}) is not supported" in msg, msg


@pytest.mark.parametrize("cut", [1, 5000, 40000])
def test_truncated_quantized_tensor_names_tensor_and_type(tmp_path, cut):
    gguf = pytest.importorskip("gguf")
    src = KQUANT / "q4_k_m.gguf"
    reader = gguf.GGUFReader(str(src))
    size = src.stat().st_size
    # The tensors whose bytes the cut removes; the reader names one of them.
    cut_off = {
        t.name: t.tensor_type.name for t in reader.tensors if int(t.data_offset) + int(t.n_bytes) > size - cut
    }
    assert any(ty != "F32" for ty in cut_off.values())
    path = tmp_path / "cut.gguf"
    path.write_bytes(src.read_bytes()[: size - cut])
    with pytest.raises(fasttx.ModelFormatError) as e:
        fasttx.load(path)
    msg = str(e.value)
    assert "truncated" in msg, msg
    assert any(f"tensor '{n}'" in msg and f"({ty} data" in msg for n, ty in cut_off.items()), (msg, cut_off)
