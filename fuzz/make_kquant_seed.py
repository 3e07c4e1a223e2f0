"""Writes fuzz/corpus/gguf_reader/kquant_types.gguf: one small tensor of every block type beyond
Q4_0/Q4_1/Q8_0 (random blocks, realistic f16 scales), so the fuzzers start from each layout.
Needs only numpy and gguf (the test extras): python fuzz/make_kquant_seed.py"""

from pathlib import Path

import gguf
import numpy as np

T = gguf.GGMLQuantizationType
# The byte offsets of each block's f16 scales (random bytes there could be inf/NaN).
TYPES = {
    T.Q5_0: [0], T.Q5_1: [0, 2], T.IQ4_NL: [0], T.Q2_K: [80, 82], T.Q3_K: [108],
    T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208], T.IQ4_XS: [0],
}

rng = np.random.default_rng(12)
out = Path(__file__).parent / "corpus" / "gguf_reader" / "kquant_types.gguf"
w = gguf.GGUFWriter(str(out), "llama")
for qt, f16_at in TYPES.items():
    block_values, block_bytes = gguf.GGML_QUANT_SIZES[qt]
    rows, cols = 2, max(block_values, 64)
    blocks = rng.integers(0, 256, (rows * cols // block_values, block_bytes), dtype=np.uint8)
    for at in f16_at:
        blocks[:, at:at + 2] = (rng.standard_normal(len(blocks)) * 0.01).astype(np.float16).view(np.uint8).reshape(-1, 2)
    w.add_tensor(qt.name.lower(), blocks.reshape(rows, -1), raw_dtype=qt)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out, out.stat().st_size, "bytes")
