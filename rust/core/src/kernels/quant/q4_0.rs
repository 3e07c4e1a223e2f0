//! Q4_0 (ggml's `block_q4_0`): 32 values in 18 bytes, `f16 d; u8 qs[16]`, each value
//! `w = (nibble - 8)·d`. Byte `j` holds value `j` in its low nibble and value `j + 16` in its high
//! nibble (not adjacent pairs).

use half::f16;

use super::types::{BlockFacts, QuantFormat};

const VALUES: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q4_0,
    ggml_id: 2,
    name: "Q4_0",
    block_values: VALUES,
    block_bytes: 2 + VALUES / 2,
    dequantize,
    packed_kernels: true,
    transcode: None,
    super_block: None,
};

/// `x[j] = ((qs[j] & 0xF) - 8)·d`, `x[j + 16] = ((qs[j] >> 4) - 8)·d` (ggml's
/// `dequantize_row_q4_0`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let (lo, hi) = y.split_at_mut(VALUES / 2);
        for ((q, l), h) in b[2..].iter().zip(lo).zip(hi) {
            *l = ((q & 0x0F) as i32 - 8) as f32 * d;
            *h = ((q >> 4) as i32 - 8) as f32 * d;
        }
    }
}
