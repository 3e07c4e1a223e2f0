//! Q5_1 (ggml's `block_q5_1`): 32 values in 24 bytes, `f16 d; f16 m; u8 qh[4]; u8 qs[16]`, each
//! value `w = q·d + m` with the 5-bit unsigned `q` split as Q5_0's ([`q5_0::value`]).
//! llama.cpp's fallback for Q5_K tensors whose rows are not whole 256-value super-blocks.
//!
//! The packed kernels run it as Q4_1 with a fifth bit: `qh` is one more 4-byte piece of the
//! packed layout (`pack.rs`), from which the kernels set bit 4 of each nibble.

use half::f16;

use super::q5_0;
use super::types::{BlockFacts, QuantFormat};

const VALUES: usize = 32;

pub(super) const FACTS: BlockFacts = BlockFacts {
    format: QuantFormat::Q5_1,
    ggml_id: 7,
    name: "Q5_1",
    block_values: VALUES,
    block_bytes: 2 + 2 + 4 + VALUES / 2,
    dequantize,
    packed_kernels: true,
    transcode: None,
    super_block: None,
};

/// `x[v] = d·q[v] + m`, the product rounded to `f32` before the sum (ggml's
/// `dequantize_row_q5_1`).
fn dequantize(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src
        .chunks_exact(FACTS.block_bytes)
        .zip(dst.chunks_exact_mut(VALUES))
    {
        let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
        let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        for (v, x) in y.iter_mut().enumerate() {
            *x = d * q5_0::value(qh, &b[8..], v) as f32 + m;
        }
    }
}
