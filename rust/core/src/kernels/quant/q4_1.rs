//! Q4_1 (ggml's `block_q4_1`): 32 values in 20 bytes, `f16 d; f16 m; u8 qs[16]`, each value
//! `w = nibble·d + m`, the nibbles in Q4_0's order (byte `j`: values `j` and `j + 16`).

use half::f16;

use super::types::{BlockFacts, QuantFormat};

const VALUES: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q4_1,
    ggml_id: 3,
    name: "Q4_1",
    block_values: VALUES,
    block_bytes: 4 + VALUES / 2,
    dequantize,
    packed_kernels: true,
    transcode: None,
    super_block: None,
};

/// `x[j] = (qs[j] & 0xF)·d + m`, `x[j + 16] = (qs[j] >> 4)·d + m` (ggml's
/// `dequantize_row_q4_1`). Multiply then add (two roundings, no FMA), as that reference compiles
/// on x86-64.
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let (lo, hi) = y.split_at_mut(VALUES / 2);
        for ((q, l), h) in b[4..].iter().zip(lo).zip(hi) {
            *l = (q & 0x0F) as f32 * d + m;
            *h = (q >> 4) as f32 * d + m;
        }
    }
}
